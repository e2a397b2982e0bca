"""A 201 says where its new object is (`Location`, a path): following it answers the object the
201 showed. A client that keeps links rather than building paths from ids had nothing to follow
(the API client author's find at stop 37)."""

import pytest

from rooms.models import RoomMode

pytestmark = pytest.mark.django_db

API = "/api/v1"


def followed(client, created) -> dict:
    """The object at the 201's `Location`, which must be the one the 201 answered."""
    assert created.status_code == 201, created.content
    found = client.get(created["Location"])
    assert found.status_code == 200, (created["Location"], found.content)
    assert found.json()["id"] == created.json()["id"]
    return found.json()


def test_a_created_agent_and_room_are_where_their_201_says(owner_client):
    agent = owner_client.post(
        f"{API}/agents",
        {
            "agent_key": "ada",
            "name": "Ada",
            "role_prompt": "Checks proofs.",
            "model_alias": "deepseek",
        },
        format="json",
    )
    assert agent.status_code == 201, agent.content
    assert agent["Location"] == f"{API}/agents/{agent.json()['id']}"
    assert followed(owner_client, agent)["agent_key"] == "ada"

    room = owner_client.post(f"{API}/rooms", {"name": "Launch"}, format="json")
    assert room["Location"] == f"{API}/rooms/{room.json()['id']}"
    assert followed(owner_client, room)["name"] == "Launch"


def test_a_session_opened_in_a_room_or_with_an_agent_is_where_its_201_says(
    owner, owner_client, make_agent, make_room
):
    agent = make_agent(owner, "ada")
    in_room = owner_client.post(
        f"{API}/rooms/{make_room(owner, [agent]).pk}/sessions", {"title": "Plan"}, format="json"
    )
    direct = owner_client.post(f"{API}/agents/{agent.pk}/sessions", {}, format="json")

    for created in (in_room, direct):
        assert created["Location"] == f"{API}/sessions/{created.json()['id']}"
        followed(owner_client, created)
    assert followed(owner_client, in_room)["title"] == "Plan"


def test_a_turn_and_its_replay_by_key_say_where_the_turn_is(
    owner, owner_client, make_agent, make_room, make_session
):
    room = make_room(owner, [make_agent(owner, "ada")], mode=RoomMode.MANUAL)
    session = make_session(owner, room=room)

    def post():
        return owner_client.post(
            f"{API}/sessions/{session.pk}/turns",
            {"message": "@ada hello"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="k-1",
        )

    first, again = post(), post()

    assert first["Location"] == f"{API}/turns/{first.json()['id']}"
    assert followed(owner_client, first)["status"] == "completed"
    assert again["Idempotent-Replayed"] == "true"
    assert again["Location"] == first["Location"]


def test_a_refused_create_says_no_location(owner_client):
    refused = owner_client.post(f"{API}/rooms", {"name": ""}, format="json")

    assert refused.status_code == 400
    assert "Location" not in refused


def test_a_browser_page_of_an_allowed_origin_may_read_the_location(owner_client, settings):
    """A browser hides from a page of another origin every response header CORS does not
    expose (`Location` is not among those it always shows): the 201's link was there for
    every client but the browser ones `CORS_ALLOWED_ORIGINS` serves."""
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]

    room = owner_client.post(
        f"{API}/rooms", {"name": "Launch"}, format="json", HTTP_ORIGIN="https://app.example.com"
    )

    assert room.status_code == 201
    assert room["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Location" in room["Access-Control-Expose-Headers"].split(", ")
