"""The thread hops of a turn served under ASGI: each is a trip from the event loop to the
request's thread and back, CPU spent on every turn (bench/serving.py's CPU per turn)."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def test_a_turns_answer_is_rendered_without_a_trip_to_its_thread(
    monkeypatch, owner, make_agent, make_session, fake_gateway
):
    """Django's ASGI handler renders a DRF response through `sync_to_async`: a hop to the
    request's thread and back to encode the turn's JSON. The answer is the same either way."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    hopped = []

    def recording(function, *args, **kwargs):
        hopped.append(getattr(function, "__name__", repr(function)))
        return sync_to_async(function, *args, **kwargs)

    monkeypatch.setattr("django.core.handlers.base.sync_to_async", recording)
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}

    async def turn():
        return await AsyncClient().post(
            f"/api/v1/sessions/{session.pk}/turns",
            {"message": "hello"},
            content_type="application/json",
            headers=headers,
        )

    response = async_to_sync(turn)()

    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "completed"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][1]["content"]
    assert "render" not in hopped
