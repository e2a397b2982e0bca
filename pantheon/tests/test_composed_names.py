"""A name (a room's, an agent's, a session's title) is kept composed (NFC), and the console's
search reads what is typed so: a room a client named "Cafe\\u0301 cr\\u00e8me" (a decomposed
é, as some keyboards and pastes send it) was stored so, and an operator searching the rooms
for "Caf\\u00e9", as a keyboard types it, found nothing (0 results; the same word, to the eye)."""

import pytest
from django.urls import reverse

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from rooms.models import Agent, Room
from sessions_app.models import Session

pytestmark = pytest.mark.django_db

DECOMPOSED = "Cafe\u0301 cre\u0300me"
COMPOSED = "Caf\u00e9 cr\u00e8me"


def test_names_sent_decomposed_are_stored_composed(owner_client, owner, make_agent):
    room = owner_client.post("/api/v1/rooms", {"name": DECOMPOSED}, format="json")
    agent = owner_client.post(
        "/api/v1/agents",
        {"agent_key": "ada", "name": DECOMPOSED, "model_alias": "deepseek"},
        format="json",
    )
    session = owner_client.post(
        f"/api/v1/agents/{agent.json()['id']}/sessions", {"title": DECOMPOSED}, format="json"
    )

    assert (room.status_code, room.json()["name"]) == (201, COMPOSED)
    assert (agent.status_code, agent.json()["name"]) == (201, COMPOSED)
    assert (session.status_code, session.json()["title"]) == (201, COMPOSED)
    assert Room.objects.get().name == Agent.objects.get().name == COMPOSED
    assert Session.objects.get().title == COMPOSED


def test_the_console_saves_a_name_composed(staff, owner, make_agent):
    ada = make_agent(owner, "ada")
    page = client_for(staff).post(
        url(Agent, "change", ada.pk),
        {
            "agent_key": "ada",
            "name": DECOMPOSED,
            "model_alias": "deepseek",
            "role_prompt": "",
            "tool_permissions": "[]",
        },
    )
    assert page.status_code == 302
    ada.refresh_from_db()
    assert ada.name == COMPOSED


@pytest.mark.parametrize("typed", [COMPOSED[:4], DECOMPOSED[:5]])
def test_the_console_search_finds_a_name_however_its_accent_was_typed(owner_client, staff, typed):
    owner_client.post("/api/v1/rooms", {"name": DECOMPOSED}, format="json")

    listed = client_for(staff).get(reverse("admin:rooms_room_changelist"), {"q": typed})

    assert [room.name for room in listed.context["cl"].result_list] == [COMPOSED]


@pytest.mark.parametrize("typed", [COMPOSED[:4], DECOMPOSED[:5]])
def test_the_console_search_finds_a_name_stored_decomposed_before(owner, staff, make_room, typed):
    """A name stored as sent, before names were kept composed, is found however it is typed."""
    make_room(owner, name=DECOMPOSED)
    make_room(owner, name="Tea room")

    listed = client_for(staff).get(reverse("admin:rooms_room_changelist"), {"q": typed})

    assert [room.name for room in listed.context["cl"].result_list] == [DECOMPOSED]


def test_a_name_that_composes_longer_than_its_limit_is_a_400(owner_client):
    """A few characters compose to two (U+0958 DEVANAGARI LETTER QA is U+0915 U+093C in NFC):
    the limit (200) is checked on what is stored too, a 400, never left to the database."""
    answer = owner_client.post("/api/v1/rooms", {"name": "\u0958" * 150}, format="json")

    assert answer.status_code == 400
    assert answer.json() == {"name": ["Ensure this field has no more than 200 characters."]}
    assert not Room.objects.exists()
