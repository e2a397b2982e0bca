"""A worker's limit on the requests it serves at once (`pantheon.capacity`); the live test of a
worker full of waiting turns is in sessions_app/tests/test_turn_streaming.py."""

import asyncio
import logging

import pytest

from pantheon import capacity
from pantheon.capacity import Capacity

ORIGIN = "https://app.example"


def test_a_place_is_given_back_however_the_request_ends():
    counter = Capacity(limit=1)
    with pytest.raises(RuntimeError), counter.hold():
        assert not counter.exceeded  # the one place, its own
        with counter.hold():
            assert counter.exceeded
        raise RuntimeError("the view failed")
    assert counter.in_flight == 0
    assert not counter.exceeded


def test_requests_that_arrive_together_past_the_limit_leave_the_first_ones_served():
    """Three requests arrive at once at a worker serving two: all are counted before any
    reaches the middleware. The first two are within the limit, the third is not. Before,
    each judged the count as it stood then (3 > 2): all three were refused."""
    counter = Capacity(limit=2)

    async def arrive(everyone_counted: asyncio.Event) -> bool:
        with counter.hold():
            await everyone_counted.wait()  # the middleware runs once all have arrived
            return counter.exceeded

    async def burst() -> list[bool]:
        everyone_counted = asyncio.Event()
        requests = [asyncio.ensure_future(arrive(everyone_counted)) for _ in range(3)]
        await asyncio.sleep(0)
        assert counter.in_flight == 3
        everyone_counted.set()
        return await asyncio.gather(*requests)

    assert asyncio.run(burst()) == [False, False, True]
    assert counter.in_flight == 0


def test_without_a_limit_nothing_is_exceeded():
    counter = Capacity()
    with counter.hold(), counter.hold():
        assert counter.in_flight == 2
        assert not counter.exceeded


@pytest.fixture
def full_worker(monkeypatch):
    """Three requests allowed, and this one the fourth in flight."""
    monkeypatch.setattr(capacity.PROCESS, "limit", 3)
    monkeypatch.setattr(capacity.PROCESS, "in_flight", 4)


@pytest.mark.django_db
def test_a_request_past_the_limit_gets_a_coded_503_with_cors_and_its_id(
    owner_client, full_worker, settings, caplog
):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    with caplog.at_level(logging.INFO):
        response = owner_client.get("/api/v1/agents", HTTP_ORIGIN=ORIGIN)

    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "over_capacity"
    assert response["Retry-After"] == "2"
    assert response["Connection"] == "close"
    # A browser page reads the refusal and when to retry, and the client can quote its id.
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert "Retry-After" in response["Access-Control-Expose-Headers"]
    assert response["X-Request-ID"]
    access = [r for r in caplog.records if r.name == "pantheon.request"]
    assert [(r.levelno, r.status_code) for r in access] == [(logging.WARNING, 503)]


@pytest.mark.django_db
def test_a_refused_post_writes_nothing(owner_client, full_worker):
    from rooms.models import Agent

    response = owner_client.post(
        "/api/v1/agents",
        {"agent_key": "bob", "name": "Bob", "model_alias": "deepseek"},
        format="json",
    )
    assert response.status_code == 503
    assert not Agent.objects.filter(agent_key="bob").exists()


@pytest.mark.django_db
def test_a_refused_page_off_the_api_gets_plain_text(client, full_worker):
    response = client.get("/admin/login/")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert response["Retry-After"] == "2"


@pytest.mark.django_db
def test_within_the_limit_requests_are_served(owner_client, monkeypatch):
    monkeypatch.setattr(capacity.PROCESS, "limit", 3)
    monkeypatch.setattr(capacity.PROCESS, "in_flight", 3)
    assert owner_client.get("/api/v1/agents").status_code == 200
