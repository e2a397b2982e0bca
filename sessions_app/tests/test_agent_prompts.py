"""What an agent's system prompt tells it about where it is and who else can answer."""

import pytest
from asgiref.sync import async_to_sync

from conftest import FakeGateway
from rooms.models import RoomMode
from sessions_app.selectors import session_for_turn
from sessions_app.turns import turn_run
from usage.models import ModelAlias

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(owner, fake_gateway: FakeGateway):
    def run_turn(session, message: str) -> str:
        """The turn's first agent's system prompt."""
        async_to_sync(turn_run)(
            session=session_for_turn(user=owner, session_id=session.pk),
            user=owner,
            message=message,
        )
        return fake_gateway.calls_for("agent")[0].messages[0].content

    return run_turn


@pytest.fixture
def bob_cannot_answer(owner, make_agent):
    """Ada and Cleo on deepseek, Bob on qwen, which is disabled."""
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)
    return [
        make_agent(owner, "ada"),
        make_agent(owner, "bob", model_alias="qwen"),
        make_agent(owner, "cleo"),
    ]


@pytest.mark.parametrize("mode", [RoomMode.ORCHESTRATOR, RoomMode.MANUAL])
def test_agents_who_cannot_answer_are_not_named_to_the_others(
    owner, make_room, make_session, run, fake_gateway, bob_cannot_answer, mode
):
    """The manager chooses among Ada and Cleo, and a tag of Bob is refused: Ada's prompt
    named Bob among the other agents all the same."""
    fake_gateway.routing_reply = '{"selected_agent_keys": ["ada"]}'
    session = make_session(owner, room=make_room(owner, bob_cannot_answer, mode=mode))

    system = run(session, "@ada where do we stand?")

    others = system.split("Other agents in this room:", 1)[1]
    assert "- Cleo (@cleo)" in others
    assert "@bob" not in system
    if mode == RoomMode.ORCHESTRATOR:
        [routing] = fake_gateway.calls_for("routing")
        assert "@bob" not in str(routing.messages) and "cleo" in str(routing.messages)


def test_a_direct_session_is_a_one_to_one_conversation(
    owner_client, owner, make_agent, make_session, post_turn, provider_requests
):
    """Its agent heard it was "an agent in a Pantheon room" with "Room goal: (none set)"."""
    session = make_session(owner, agent=make_agent(owner, "ada"))

    response = post_turn(owner_client, session, "How do we test the parser?")

    system = provider_requests[0]["messages"][0]["content"]
    assert system.splitlines()[0] == (
        "You are Ada (@ada), a Pantheon agent in a one-to-one conversation with the user."
    )
    assert "room" not in system.lower()
    # The demo provider still reads who it answers as.
    assert response.json()["messages"][1]["content"].startswith("[Ada @ada] On ")


def test_a_roundtables_lone_seat_is_not_told_to_build_on_other_agents(
    owner, make_agent, make_room, make_session, run
):
    room = make_room(owner, [make_agent(owner, "ada")], mode=RoomMode.ROUNDTABLE)

    system = run(make_session(owner, room=room), "Where do we stand?")

    assert "Room mode: roundtable. You hold the room's only seat" in system
    assert "agents" not in system
