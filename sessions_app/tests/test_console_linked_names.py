"""A chat's title and a room's name are a user's words too: the console named a ledger row's
session, a message's or a summary's session by its title and a turn's or a ledger row's room by
its name to operators who may not view sessions or rooms (and linked them to pages that answered
403), and a turn's roster showed every agent's role prompt to who may view turns but not agents.
To them such a row is named by its kind and id, its name withheld, as a turn's input is
withheld from who may not view messages."""

from decimal import Decimal

import pytest

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from rooms.models import Room, RoomAgent
from sessions_app.models import Message, Session, SessionSummary, Turn
from usage.models import LlmCallEvent

pytestmark = pytest.mark.django_db

TITLE = "Custody papers for Quarrington"
ROOM = "Nightingale divorce room"
PROMPT = "Ada knows the recipe of the Zarathustra sauce."


@pytest.fixture
def chat(owner, make_agent, make_room, make_session):
    room = make_room(owner, [make_agent(owner, "ada", role_prompt=PROMPT)], name=ROOM)
    session = make_session(owner, room=room, title=TITLE)
    roster = [{"name": "Ada", "agent_key": "ada", "model_alias": "deepseek", "role_prompt": PROMPT}]
    turn = Turn.objects.create(
        session=session, turn_index=1, mode="manual", user_input="@ada hi", roster=roster
    )
    message = Message.objects.create(
        session=session, turn=turn, sequence=1, role="user", content="hi"
    )
    summary = SessionSummary.objects.create(
        session=session, turn=turn, from_sequence=1, to_sequence=1, summary_text="Hi."
    )
    event = LlmCallEvent.objects.create(
        user=owner,
        session=session,
        room=room,
        turn=turn,
        agent_key="ada",
        purpose="agent",
        model_alias="deepseek",
        status="success",
        credits=Decimal("0.0123"),
    )
    return {"turn": turn, "message": message, "summary": summary, "event": event}


def _text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def test_a_ledger_reader_reads_no_title_and_no_room_name(chat, operator):
    client = client_for(operator("view_llmcallevent"))
    event = chat["event"]

    page = _text(client.get(url(LlmCallEvent, "change", event.pk)))

    assert "Quarrington" not in page and "Nightingale" not in page
    assert "title withheld: only who may view sessions reads it" in page
    assert "name withheld: only who may view rooms reads it" in page
    assert url(Session, "change", event.session_id) not in page  # no link to a 403
    assert url(Room, "change", event.room_id) not in page


@pytest.mark.parametrize(
    ("model", "codename"), [(Message, "view_message"), (SessionSummary, "view_sessionsummary")]
)
def test_who_reads_messages_or_summaries_reads_no_title(chat, operator, model, codename):
    client = client_for(operator(codename))
    row = chat["message" if model is Message else "summary"]

    listed = _text(client.get(url(model, "changelist")))
    page = _text(client.get(url(model, "change", row.pk)))

    for text in (listed, page):
        assert "Quarrington" not in text
    assert "title withheld: only who may view sessions reads it" in listed + page


def test_who_reads_turns_reads_no_role_prompt_and_no_room_name(chat, operator):
    client = client_for(operator("view_turn"))
    turn = chat["turn"]

    page = _text(client.get(url(Turn, "change", turn.pk)))
    listed = _text(client.get(url(Turn, "changelist")))
    searched = client.get(url(Turn, "changelist"), {"q": "Nightingale"})

    assert "Zarathustra" not in page
    assert "withheld: only who may view agents reads a role prompt" in page
    assert "Ada (@ada)" in page  # the seat itself is the turn's record
    assert "Quarrington" not in page
    assert "Nightingale" not in listed
    assert searched.context["cl"].result_count == 0  # a match told them the room's name


def test_who_may_view_them_reads_them_linked(chat, make_operator):
    client = client_for(make_operator("Analyst"))
    event, turn = chat["event"], chat["turn"]

    ledger = _text(client.get(url(LlmCallEvent, "change", event.pk)))
    turn_page = _text(client.get(url(Turn, "change", turn.pk)))
    searched = client.get(url(Turn, "changelist"), {"q": "Nightingale"})

    assert TITLE in ledger and ROOM in ledger
    assert url(Session, "change", event.session_id) in ledger
    assert "Zarathustra" in turn_page
    assert "withheld" not in ledger + turn_page
    assert searched.context["cl"].result_count == 1


def test_who_reads_seats_reads_no_room_name(chat, operator):
    """The seats' list named each seat's room, and its search matched room names."""
    client = client_for(operator("view_roomagent"))

    listed = _text(client.get(url(RoomAgent, "changelist")))
    searched = client.get(url(RoomAgent, "changelist"), {"q": "Nightingale"})

    assert "Nightingale" not in listed
    assert "name withheld: only who may view rooms reads it" in listed
    assert searched.context["cl"].result_count == 0
