"""A one-line name, title or key holds no control character (C0, DEL, C1): `POST agents
{"name": "a\\u0001b\\u001b[31m"}` was a 201, stored as sent, and an escape sequence in a name
reached every terminal and log viewer that showed it. Refused with a 400 naming the field (and
the character), in the API and in the console; trimming still takes white space off the ends
("Ada\\n" is "Ada"), and multi-line texts (a role prompt, a goal, a message) keep their tabs and
line breaks."""

from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from rooms.models import Agent, Room
from sessions_app.models import Session
from usage.models import ModelAlias, PricingVersion

pytestmark = pytest.mark.django_db

# Inside a name: refused, whichever control it is.
CONTROLS = [
    ("a\u0001b\u001b[31m", "U+0001"),
    ("Ada\u001b[2J", "U+001B"),
    ("Ad\ta", "U+0009"),
    ("Ad\na", "U+000A"),
    ("Ad\ra", "U+000D"),
    ("Ad\u007fa", "U+007F"),
    ("Ad\u0085a", "U+0085"),  # next line (C1, white space to Python)
    ("Ad\u009b31ma", "U+009B"),  # the C1 control sequence introducer
    ("\u0007", "U+0007"),  # a bell alone: no white space, nothing trims it
    (" \u200b\u0008Ada", "U+0008"),  # after what trimming takes off
]


def refusal(code_point: str) -> str:
    return (
        "May not hold a control character (U+0000 to U+001F, U+007F to U+009F: a tab, a "
        f"line break, an escape...): this holds {code_point}."
    )


def agent_body(**overrides) -> dict:
    return {"agent_key": "ada", "name": "Ada", "model_alias": "deepseek", **overrides}


@pytest.mark.parametrize("name, code_point", CONTROLS)
def test_names_and_titles_with_a_control_character_are_refused(
    owner_client, owner, make_agent, make_room, name, code_point
):
    bo = make_agent(owner, "bo")
    room = make_room(owner, name="Keep")

    answers = {
        "room": owner_client.post("/api/v1/rooms", {"name": name}, format="json"),
        "room patched": owner_client.patch(
            f"/api/v1/rooms/{room.pk}", {"name": name}, format="json"
        ),
        "agent": owner_client.post("/api/v1/agents", agent_body(name=name), format="json"),
        "agent patched": owner_client.patch(
            f"/api/v1/agents/{bo.pk}", {"name": name}, format="json"
        ),
    }
    titles = [
        owner_client.post(f"/api/v1/agents/{bo.pk}/sessions", {"title": name}, format="json"),
        owner_client.post(f"/api/v1/rooms/{room.pk}/sessions", {"title": name}, format="json"),
    ]

    assert {key: answer.status_code for key, answer in answers.items()} == dict.fromkeys(
        answers, 400
    )
    assert [answer.json() for answer in answers.values()] == [{"name": [refusal(code_point)]}] * 4
    assert [(title.status_code, title.json()) for title in titles] == [
        (400, {"title": [refusal(code_point)]})
    ] * 2
    assert list(Room.objects.values_list("name", flat=True)) == ["Keep"]
    assert list(Agent.objects.values_list("name", flat=True)) == ["Bo"]
    assert not Session.objects.exists()


def test_a_tool_name_with_a_control_character_is_refused(owner_client):
    response = owner_client.post(
        "/api/v1/agents", agent_body(tool_permissions=["web\u001bsearch"]), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"tool_permissions": {"0": [refusal("U+001B")]}}


def test_the_refusal_has_a_code_of_its_own():
    from rest_framework import serializers

    from rooms.serializers import RoomSerializer

    with pytest.raises(serializers.ValidationError) as refused:
        RoomSerializer().fields["name"].run_validation("a\u0001b")

    assert refused.value.get_codes() == ["control_character"]


def test_white_space_at_a_names_ends_is_still_trimmed(owner_client):
    response = owner_client.post("/api/v1/rooms", {"name": "\tResearch\r\n"}, format="json")

    assert response.status_code == 201
    assert response.json()["name"] == "Research"


def test_multi_line_texts_keep_their_tabs_and_line_breaks(
    owner_client, owner, make_agent, make_room, make_session, fake_gateway
):
    text = "First:\n\t- one\r\n\t- two"
    bo = make_agent(owner, "bo")
    session = make_session(owner, agent=bo)

    room = owner_client.patch(
        f"/api/v1/rooms/{make_room(owner, [bo]).pk}", {"goal": text}, format="json"
    )
    agent = owner_client.patch(f"/api/v1/agents/{bo.pk}", {"role_prompt": text}, format="json")
    turn = owner_client.post(
        f"/api/v1/sessions/{session.pk}/turns", {"message": text}, format="json"
    )

    assert (room.status_code, room.json()["goal"]) == (200, text)
    assert (agent.status_code, agent.json()["role_prompt"]) == (200, text)
    assert (turn.status_code, turn.json()["user_input"]) == (201, text)


# --- the console --------------------------------------------------------------------------------


@pytest.fixture
def boss(make_operator):
    return client_for(make_operator("Owner", "boss"))


def test_the_console_refuses_them_too(boss, staff, owner, make_agent, make_room, make_session):
    ada = make_agent(owner, "ada")
    room = make_room(owner, name="Research")
    session = make_session(owner, title="Kickoff")
    agent_form = {
        "agent_key": "ada",
        "name": "Ada\u001b[31m",
        "model_alias": "deepseek",
        "role_prompt": "",
        "tool_permissions": "[]",
    }
    room_form = {
        "name": "Re\nsearch",
        "goal": "",
        "current_mode": room.current_mode,
        "seats-TOTAL_FORMS": "0",
        "seats-INITIAL_FORMS": "0",
    }

    agent_page = boss.post(url(Agent, "change", ada.pk), agent_form)
    room_page = boss.post(url(Room, "change", room.pk), room_form)
    session_page = client_for(staff).post(url(Session, "change", session.pk), {"title": "a\u0085b"})

    assert [agent_page.status_code, room_page.status_code, session_page.status_code] == [200] * 3
    assert agent_page.context["adminform"].form.errors["name"] == [refusal("U+001B")]
    assert room_page.context["adminform"].form.errors["name"] == [refusal("U+000A")]
    assert session_page.context["adminform"].form.errors["title"] == [refusal("U+0085")]
    ada.refresh_from_db()
    room.refresh_from_db()
    session.refresh_from_db()
    assert (ada.name, room.name, session.title) == ("Ada", "Research", "Kickoff")


def test_a_price_list_name_or_an_aliases_model_with_a_control_character_is_refused(boss):
    starts = datetime(2100, 1, 1, 9, 30, tzinfo=UTC)
    list_page = boss.post(
        url(PricingVersion, "add"),
        {
            "name": "2027\u0007list",
            "default_multiplier": "1",
            "effective_from_0": f"{starts:%Y-%m-%d}",
            "effective_from_1": f"{starts:%H:%M:%S}",
            "prices-TOTAL_FORMS": "0",
            "prices-INITIAL_FORMS": "0",
        },
    )
    alias_page = boss.post(
        url(ModelAlias, "add"),
        {
            "alias": "tiny",
            "litellm_model": "openai/\u001b[8mtiny",
            "context_window": "8192",
            "max_output_tokens": "512",
            "enabled": "on",
        },
    )

    assert list_page.context["adminform"].form.errors["name"] == [refusal("U+0007")]
    assert alias_page.context["adminform"].form.errors["litellm_model"] == [refusal("U+001B")]
    assert not PricingVersion.objects.filter(name__startswith="2027").exists()
    assert not ModelAlias.objects.filter(alias="tiny").exists()
    with pytest.raises(CommandError, match="U\\+0001"):
        call_command("set_model_alias", "tiny", "--model=openai/a\u0001b", stdout=StringIO())
