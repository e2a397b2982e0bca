"""The orchestrator's manager reads the previous exchange, so that a follow-up can be routed.

It read the roster and the current message alone: "Elaborate on that." named nobody, and went
to the first agent whoever had answered the question it followed up."""

import pytest

from conftest import FakeGateway
from rooms.models import Agent, RoomMode

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


def test_a_follow_up_goes_to_who_answered_by_their_key_now_not_to_a_newcomer_given_the_old_one(
    owner, owner_client, orchestrated, make_agent, post_turn
):
    """Grace answered, then became @hopper, and a newcomer took @grace: the exchange named
    the answer "[Grace @grace]", and the demo manager sent the follow-up to the newcomer."""
    first = post_turn(owner_client, orchestrated, "Grace, can you review this code?")
    assert first.json()["routing"]["selected_agent_keys"] == ["grace"]
    grace = Agent.objects.get(owner=owner, agent_key="grace")
    assert (
        owner_client.patch(
            f"/api/v1/agents/{grace.pk}", {"agent_key": "hopper"}, format="json"
        ).status_code
        == 200
    )
    newcomer = make_agent(owner, "grace", name="Chef", role_prompt="Cooks pasta.")
    seats = [*orchestrated.room.seats.order_by("position").values_list("agent_id", flat=True)]
    assert (
        owner_client.put(
            f"/api/v1/rooms/{orchestrated.room_id}/agents",
            {"agent_ids": [str(agent) for agent in [*seats, newcomer.pk]]},
            format="json",
        ).status_code
        == 200
    )

    follow_up = post_turn(owner_client, orchestrated, "Elaborate on that.")

    assert follow_up.status_code == 201, follow_up.json()
    assert follow_up.json()["routing"]["selected_agent_keys"] == ["hopper"]
