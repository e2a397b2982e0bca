"""The orchestrator's manager reads the previous exchange, so that a follow-up can be routed.

It read the roster and the current message alone: "Elaborate on that." named nobody, and went
to the first agent whoever had answered the question it followed up."""

import pytest

from conftest import FakeGateway
from rooms.models import RoomMode

pytestmark = pytest.mark.django_db


@pytest.fixture
def orchestrated(owner, make_agent, make_room, make_session):
    agents = [
        make_agent(owner, "ada", role_prompt="Mathematician who checks proofs."),
        make_agent(owner, "grace", role_prompt="Compiler engineer who reviews code."),
    ]
    return make_session(owner, room=make_room(owner, agents, mode=RoomMode.ORCHESTRATOR))


def test_the_manager_is_shown_the_previous_exchange(
    owner_client, orchestrated, fake_gateway: FakeGateway, post_turn
):
    fake_gateway.routing_reply = '{"selected_agent_keys": ["grace"]}'
    fake_gateway.reply_for = lambda call: (  # type: ignore[method-assign]
        fake_gateway.routing_reply if call.purpose == "routing" else "Use a B-tree index."
    )
    assert post_turn(owner_client, orchestrated, "Which index?").status_code == 201

    assert post_turn(owner_client, orchestrated, "Elaborate on that.").status_code == 201

    first, second = fake_gateway.calls_for("routing")
    assert "previous exchange" not in first.messages[0].content
    system = second.messages[0].content
    assert system.endswith("[user]: Which index?\n[Grace @grace]: Use a B-tree index."), system
    assert second.messages[1].content == "Elaborate on that."


def test_the_demo_manager_sends_a_follow_up_to_who_answered(owner_client, orchestrated, post_turn):
    """With the demo provider, "Elaborate on that." went to Ada, the first seat."""
    first = post_turn(owner_client, orchestrated, "Grace, can you review this code?")
    assert first.json()["routing"]["selected_agent_keys"] == ["grace"]

    follow_up = post_turn(owner_client, orchestrated, "Elaborate on that.")

    assert follow_up.status_code == 201, follow_up.json()
    assert follow_up.json()["routing"]["selected_agent_keys"] == ["grace"]
    assert follow_up.json()["routing"]["fallback_used"] is False
