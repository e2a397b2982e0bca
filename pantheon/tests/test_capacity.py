"""A worker's limit on the requests it serves at once (`pantheon.capacity`); the live test of a
worker full of waiting turns is in sessions_app/tests/test_turn_streaming.py."""

import asyncio
import json

import pytest

from pantheon.capacity import Capacity, connection_cap
from pantheon.threads import PantheonASGIHandler


def test_a_place_is_given_back_however_the_request_ends():
    capacity = Capacity(limit=1)
    with pytest.raises(RuntimeError), capacity.admit() as admitted:
        assert admitted
        with capacity.admit() as second:
            assert not second  # the one place is taken
        raise RuntimeError("the view failed")
    assert capacity.in_flight == 0
    with capacity.admit() as admitted:
        assert admitted


def test_without_a_limit_every_request_is_admitted():
    capacity = Capacity()
    with capacity.admit() as first, capacity.admit() as second:
        assert first and second
        assert capacity.in_flight == 2


def test_uvicorns_cap_on_connections_leaves_room_above_the_requests():
    assert connection_cap(1000) == 1250
    assert connection_cap(3) == 19


def _refused(path: str) -> tuple[dict, bytes]:
    handler = PantheonASGIHandler()
    handler.capacity.limit = 0
    sent: list[dict] = []

    async def receive():
        raise AssertionError("a refused request's body is never read")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    asyncio.run(handler(scope, receive, send))
    start, body = sent
    return start, body["body"]


def test_a_refused_api_request_gets_the_apis_error_body():
    start, body = _refused("/api/v1/sessions/x/turns")
    headers = dict(start["headers"])
    assert start["status"] == 503
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"retry-after"] == b"2"
    assert headers[b"connection"] == b"close"
    assert json.loads(body)["detail"]["code"] == "over_capacity"


def test_a_refused_page_elsewhere_gets_plain_text():
    start, body = _refused("/admin/")
    assert start["status"] == 503
    assert dict(start["headers"])[b"content-type"].startswith(b"text/plain")
    assert body == b"Service Unavailable"
