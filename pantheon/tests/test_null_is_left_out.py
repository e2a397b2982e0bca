"""An optional field of a request body sent as null is the field left out (NullIsLeftOut):
generated clients write an unset optional field as null, and each of these bodies was a 400
"This field may not be null."; a required field's null is still refused, and the schema says
which fields take null (request bodies only: an answer never holds one)."""

import pytest
from rest_framework.test import APIClient

from rooms.models import Agent, Room, RoomMode
from sessions_app.models import Session

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(owner, make_agent):
    return make_agent(owner, "ada")


def test_a_room_created_with_null_goal_mode_and_agent_ids_takes_their_defaults(owner_client):
    response = owner_client.post(
        "/api/v1/rooms", {"name": "Plans", "goal": None, "mode": None, "agent_ids": None}
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["goal"], body["current_mode"], body["agents"]) == ("", RoomMode.MANUAL, [])
    assert Room.objects.get().goal == ""


def test_an_agent_created_with_null_role_prompt_and_tools_takes_their_defaults(owner_client):
    response = owner_client.post(
        "/api/v1/agents",
        {
            "agent_key": "ada",
            "name": "Ada",
            "model_alias": "deepseek",
            "role_prompt": None,
            "tool_permissions": None,
        },
    )

    assert response.status_code == 201, response.json()
    agent = Agent.objects.get()
    assert (agent.role_prompt, agent.tool_permissions) == ("", [])


def test_sessions_opened_with_a_null_title_have_none(owner_client, owner, ada, make_room):
    room = make_room(owner, [ada])

    in_room = owner_client.post(f"/api/v1/rooms/{room.pk}/sessions", {"title": None})
    direct = owner_client.post(f"/api/v1/agents/{ada.pk}/sessions", {"title": None})

    assert (in_room.status_code, direct.status_code) == (201, 201), direct.json()
    assert [in_room.json()["title"], direct.json()["title"]] == ["", ""]
    assert Session.objects.count() == 2


def test_a_patch_with_nulls_changes_only_the_other_fields(owner_client, owner, ada, make_room):
    room = make_room(owner, [ada], goal="Ship it.")

    agent = owner_client.patch(
        f"/api/v1/agents/{ada.pk}",
        {"name": "Ada L.", "agent_key": None, "model_alias": None, "role_prompt": None},
    )
    patched_room = owner_client.patch(
        f"/api/v1/rooms/{room.pk}",
        {"name": None, "goal": "Ship it twice.", "mode": None, "pending_mode": None},
    )

    assert agent.status_code == 200, agent.json()
    ada.refresh_from_db()
    assert (ada.name, ada.agent_key, ada.model_alias) == ("Ada L.", "ada", "deepseek")
    assert ada.role_prompt == "Ada helps with research."
    assert patched_room.status_code == 200, patched_room.json()
    room.refresh_from_db()
    assert (room.name, room.goal) == ("Room", "Ship it twice.")


def test_a_required_field_sent_as_null_is_still_refused(owner_client, owner, ada, make_room):
    room = make_room(owner, [ada])

    responses = {
        "rooms": owner_client.post("/api/v1/rooms", {"name": None}),
        "agents": owner_client.post(
            "/api/v1/agents", {"agent_key": "x", "name": "X", "model_alias": None}
        ),
        "seats": owner_client.put(f"/api/v1/rooms/{room.pk}/agents", {"agent_ids": None}),
        "mode": owner_client.put(f"/api/v1/rooms/{room.pk}/mode", {"mode": None}),
        "turn": owner_client.post(
            f"/api/v1/sessions/{Session.objects.create(started_by=owner, room=room).pk}/turns",
            {"message": None},
        ),
    }

    assert {name: r.status_code for name, r in responses.items()} == dict.fromkeys(responses, 400)
    assert responses["rooms"].json() == {"name": ["This field may not be null."]}
    assert responses["seats"].json() == {"agent_ids": ["This field may not be null."]}


@pytest.fixture
def components() -> dict:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    return response.json()["components"]["schemas"]


@pytest.mark.parametrize(
    ("name", "nullable"),
    [
        ("RoomRequest", {"goal", "mode", "agent_ids"}),
        ("PatchedRoomUpdateRequest", {"name", "goal"}),
        ("AgentRequest", {"role_prompt", "tool_permissions"}),
        (
            "PatchedAgentRequest",
            {"agent_key", "name", "model_alias", "role_prompt", "tool_permissions"},
        ),
        ("SessionCreateRequest", {"title"}),
        ("TurnCreateRequest", {"model_alias_override"}),
        ("RoomAgentsRequest", set()),
        ("RoomModeRequest", set()),
        ("Agent", set()),
        ("Room", {"pending_mode"}),
    ],
)
def test_the_schema_says_which_fields_take_null(components, name, nullable):
    properties = components[name]["properties"]
    assert {field for field, described in properties.items() if described.get("nullable")} == (
        nullable
    )
