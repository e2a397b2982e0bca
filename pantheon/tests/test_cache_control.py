"""The API's answers hold users' data (agents, transcripts, usage, a token): none may be kept by a
cache, a browser's or a proxy's. Every answer under /api/v1/ says `Cache-Control: private,
no-store`, the streams too (with `no-transform`), unless its view said otherwise (`auth/token`'s
`no-store`); the health check too (a cached one would hide an outage). The schema and its docs
are the same for everyone and say nothing. Only `auth/token` said anything before."""

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from rest_framework.test import APIClient

from rooms.models import RoomMode

pytestmark = pytest.mark.django_db

PRIVATE = "private, no-store"


@pytest.fixture
def session(owner, make_agent, make_room, make_session):
    room = make_room(owner, [make_agent(owner, "ada")], mode=RoomMode.ROUNDTABLE)
    return make_session(owner, room=room)


def test_authenticated_answers_may_be_kept_by_no_cache(owner_client, session, fake_gateway):
    turn = owner_client.post(
        f"/api/v1/sessions/{session.id}/turns", {"message": "hi"}, format="json"
    )
    answers = {
        "turn": turn,
        "agents": owner_client.get("/api/v1/agents"),
        "rooms": owner_client.get("/api/v1/rooms"),
        "sessions": owner_client.get("/api/v1/sessions"),
        "messages": owner_client.get(f"/api/v1/sessions/{session.id}/messages"),
        "turns": owner_client.get(f"/api/v1/sessions/{session.id}/turns"),
        "usage": owner_client.get("/api/v1/usage"),
        "models": owner_client.get("/api/v1/models"),
        "not found": owner_client.get("/api/v1/sessions/00000000-0000-0000-0000-000000000000"),
        "bad input": owner_client.post("/api/v1/rooms", {"name": ""}, format="json"),
    }

    assert turn.status_code == 201
    assert {name: answer.get("Cache-Control") for name, answer in answers.items()} == dict.fromkeys(
        answers, PRIVATE
    )


def test_a_view_that_says_its_own_keeps_it(owner, owner_client, session, fake_gateway):
    token = APIClient().post(
        "/api/v1/auth/token", {"username": "owner", "password": "owner-pass-123"}, format="json"
    )
    turn = owner_client.post(
        f"/api/v1/sessions/{session.id}/turns", {"message": "hi"}, format="json"
    ).json()

    async def follow():
        response = await AsyncClient().get(
            f"/api/v1/turns/{turn['id']}/events",
            headers={"Authorization": f"Token {token.json()['token']}"},
            HTTP_ACCEPT="text/event-stream",
        )
        body = [chunk async for chunk in response.streaming_content]
        return response, body

    stream, body = async_to_sync(follow)()

    assert (token.status_code, token["Cache-Control"]) == (200, "no-store")
    # It said no-cache, which lets a shared cache keep the transcript (and check it is fresh);
    # no-transform keeps a compressing proxy from holding its events (test_stream_no_transform).
    assert (stream.status_code, stream["Cache-Control"]) == (200, f"{PRIVATE}, no-transform")
    assert b"turn_completed" in b"".join(body)


def test_anonymous_answers_too_and_the_health_check(anon_client):
    assert anon_client.get("/api/v1/agents")["Cache-Control"] == PRIVATE  # 401
    assert anon_client.get("/api/v1/health")["Cache-Control"] == PRIVATE


def test_the_schema_and_its_docs_are_the_same_for_everyone_and_say_nothing(anon_client):
    schema = anon_client.get("/api/schema/")
    docs = anon_client.get("/api/docs/")

    assert (schema.status_code, docs.status_code) == (200, 200)
    assert "Cache-Control" not in schema
    assert "Cache-Control" not in docs
