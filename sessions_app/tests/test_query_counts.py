"""Query-count guards of the session endpoints: the same SQL with 3 rows and with 30.

Each guard was seen failing once with what it protects removed (see the helper
`assert_constant_queries` in the root conftest.py). The turn itself has its own guard in
test_turn_queries.py.
"""

import pytest

from sessions_app.models import Message, MessageRole, SessionSummary, Turn, TurnStatus

pytestmark = pytest.mark.django_db


def add_turn(session, turn_index: int, *, messages: int = 2) -> Turn:
    """A finished turn with `messages` messages: the user's, then the answers."""
    turn = Turn.objects.create(
        session=session,
        turn_index=turn_index,
        mode="manual",
        status=TurnStatus.COMPLETED,
        user_input=f"question {turn_index}",
    )
    add_messages(turn, range(messages))
    return turn


def add_messages(turn: Turn, new) -> None:
    """Messages of the turn, numbered after the session's last one; the first is the user's."""
    last = Message.objects.filter(session=turn.session).count()
    Message.objects.bulk_create(
        Message(
            session=turn.session,
            turn=turn,
            sequence=last + offset + 1,
            role=MessageRole.USER if index == 0 else MessageRole.ASSISTANT,
            agent_key="" if index == 0 else "ada",
            content=f"message {index}",
        )
        for offset, index in enumerate(new)
    )


@pytest.fixture
def session(owner, room, make_session):
    return make_session(owner, room=room)


@pytest.fixture
def sessions_with_a_turn(owner, make_session):
    """`grow` for a guard: opens sessions (`room=` or `agent=`), each with one turn."""

    def grow_where(**where):
        def grow(new):
            for _ in new:
                add_turn(make_session(owner, **where), 1)

        return grow

    return grow_where


# --- sessions -------------------------------------------------------------------------------


def test_sessions_list(
    owner, owner_client, room, make_agent, make_session, assert_constant_queries
):
    def grow(new):
        for index in new:
            # Room sessions and direct ones, each direct one with an agent of its own.
            if index % 2:
                session = make_session(owner, agent=make_agent(owner, f"agent_{index}"))
            else:
                session = make_session(owner, room=room)
            add_turn(session, 1)
            add_turn(session, 2)

    # One statement: sessions with room, agent, turn count and last activity.
    responses = assert_constant_queries(
        lambda: owner_client.get("/api/v1/sessions"), grow=grow, expected=1
    )

    assert [len(response.json()["results"]) for response in responses] == [3, 30]
    items = responses[-1].json()["results"]
    assert {item["turn_count"] for item in items} == {2}
    assert all((item["room"] or item["agent"])["name"] for item in items)


def test_sessions_list_filtered_by_room(
    owner_client, room, sessions_with_a_turn, assert_constant_queries
):
    responses = assert_constant_queries(
        lambda: owner_client.get("/api/v1/sessions", {"room": str(room.id)}),
        grow=sessions_with_a_turn(room=room),
        expected=1,
    )

    assert [len(response.json()["results"]) for response in responses] == [3, 30]


def test_session_detail(owner_client, session, assert_constant_queries):
    # The session with its room, agent, turn count and last activity, however many turns.
    responses = assert_constant_queries(
        lambda: owner_client.get(f"/api/v1/sessions/{session.id}"),
        grow=lambda new: [add_turn(session, index + 1) for index in new],
        expected=1,
    )

    assert [response.json()["turn_count"] for response in responses] == [3, 30]
    assert responses[-1].json()["room"]["name"] == "Lab"


def test_agent_sessions(owner_client, ada, sessions_with_a_turn, assert_constant_queries):
    # The agent, then its direct sessions.
    responses = assert_constant_queries(
        lambda: owner_client.get(f"/api/v1/agents/{ada.id}/sessions"),
        grow=sessions_with_a_turn(agent=ada),
        expected=2,
    )

    assert [len(response.json()["results"]) for response in responses] == [3, 30]
    assert {item["agent"]["agent_key"] for item in responses[-1].json()["results"]} == {"ada"}


def test_room_sessions(owner_client, room, sessions_with_a_turn, assert_constant_queries):
    # The room, the count, the page.
    responses = assert_constant_queries(
        lambda: owner_client.get(f"/api/v1/rooms/{room.id}/sessions"),
        grow=sessions_with_a_turn(room=room),
        expected=3,
    )

    assert [response.json()["count"] for response in responses] == [3, 30]
    assert {item["turn_count"] for item in responses[-1].json()["results"]} == {1}


# --- timeline, turns, summary ---------------------------------------------------------------


def test_messages(owner_client, session, assert_constant_queries):
    turn = add_turn(session, 1, messages=0)

    # The session, then the page (a cursor: no count).
    responses = assert_constant_queries(
        lambda: owner_client.get(f"/api/v1/sessions/{session.id}/messages?page_size=200"),
        grow=lambda new: add_messages(turn, new),
        expected=2,
        sizes=(3, 120),
    )

    assert [len(response.json()["results"]) for response in responses] == [3, 120]


def test_session_turns(owner_client, session, assert_constant_queries):
    # The session, the count, the page of turns, their messages.
    responses = assert_constant_queries(
        lambda: owner_client.get(f"/api/v1/sessions/{session.id}/turns"),
        grow=lambda new: [add_turn(session, index + 1, messages=3) for index in new],
        expected=4,
    )

    assert [response.json()["count"] for response in responses] == [3, 30]
    turns = responses[-1].json()["results"]
    assert [len(turn["messages"]) for turn in turns] == [3] * 30
    assert turns[-1]["messages"][0]["sequence"] == 88


def test_turn_detail(owner_client, session, assert_constant_queries):
    turn = add_turn(session, 1, messages=0)

    # The turn, then its messages.
    responses = assert_constant_queries(
        lambda: owner_client.get(f"/api/v1/turns/{turn.id}"),
        grow=lambda new: add_messages(turn, new),
        expected=2,
    )

    assert [len(response.json()["messages"]) for response in responses] == [3, 30]


def test_summary(owner_client, session, assert_constant_queries):
    def grow(new):
        SessionSummary.objects.bulk_create(
            SessionSummary(
                session=session,
                from_sequence=1,
                to_sequence=index + 1,
                summary_text=f"up to {index + 1}",
            )
            for index in new
        )

    # The session, then its latest summary.
    responses = assert_constant_queries(
        lambda: owner_client.get(f"/api/v1/sessions/{session.id}/summary"),
        grow=grow,
        expected=2,
    )

    assert [response.json()["to_sequence"] for response in responses] == [3, 30]
