"""A summary catches up with history that no turn reads any more.

A turn's prompt shows the latest summary and the newest PANTHEON_CONTEXT_HISTORY_LIMIT messages
after it. What lies between (older than that read, newer than the summary) reaches the agents
only once a summary folds it in. A summary every eighth turn folds at most
SUMMARY_TRANSCRIPT_LIMIT messages: a room of many seats adds more than that in eight turns (50
seats: 408 messages), and a session whose summaries stopped for a while (its summarizer's alias
disabled, its calls failing) holds thousands. The summary then fell further behind with each
turn, and the agents never saw the middle of the conversation at all. Now a turn whose read of
the history came back full (there may be more before it) is followed by a summary, whatever its
index, until the summary has caught up."""

from decimal import Decimal

import pytest
from django.test import override_settings

from orchestration.budget import estimate_tokens
from orchestration.metering import compute_credits, compute_oe
from rooms.models import RoomMode
from sessions_app.models import Message, SessionSummary, Turn, TurnStatus
from usage.models import BillingProfile
from usage.selectors import alias_pricing

pytestmark = pytest.mark.django_db

LIMIT = 40  # PANTHEON_CONTEXT_HISTORY_LIMIT's default


def _grow(session, turns: int, speakers: list[str]) -> int:
    """`turns` finished exchanges, each a question and one short answer a speaker; returns the
    last sequence."""
    sequence = 0
    for index in range(1, turns + 1):
        turn = Turn.objects.create(
            session=session,
            turn_index=index,
            mode="direct" if len(speakers) == 1 else RoomMode.ROUNDTABLE,
            status=TurnStatus.COMPLETED,
            user_input=f"question {index}",
        )
        rows = [("user", "", f"question {index}")]
        rows += [("assistant", key, f"{key} answers {index}") for key in speakers]
        for role, key, content in rows:
            sequence += 1
            Message.objects.create(
                session=session,
                turn=turn,
                sequence=sequence,
                role=role,
                agent_key=key,
                agent_name=key.title(),
                content=content,
                token_estimate=4,
            )
    return sequence


def _history_of(call) -> list[str]:
    """The texts of a call's messages between its system prompt and its last question."""
    return [message.content for message in call.messages[1:-1]]


def test_a_backlog_past_what_a_turn_reads_is_summarized_at_once(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn
):
    """60 exchanges no summary ever folded (its summarizer was away): turn 61 read the newest 40
    messages, and the 80 before them reached no agent, nor would until the eighth turn, which
    folds what it can. Now the turn sums up the backlog (the whole of it, here)."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    last = _grow(session, 60, ["ada"])

    assert post_turn(owner_client, session, "question 61").status_code == 201

    summary = owner_client.get(f"/api/v1/sessions/{session.id}/summary")
    assert summary.status_code == 200
    assert (summary.json()["from_sequence"], summary.json()["to_sequence"]) == (1, last)
    # The next turn's agent reads the summary, then the history right after it: no gap.
    assert post_turn(owner_client, session, "question 62").status_code == 201
    agent_calls = fake_gateway.calls_for("agent")
    assert "They talked." in agent_calls[-1].messages[0].content
    assert _history_of(agent_calls[-1])[0] == "question 61"


@override_settings(PANTHEON_CONTEXT_HISTORY_LIMIT=4)
def test_a_room_whose_exchanges_outgrow_the_read_is_summarized_every_turn(
    owner, owner_client, make_agent, make_room, make_session, fake_gateway, post_turn
):
    """Three seats (four messages an exchange) and a read of four messages, as 50 seats (51
    messages an exchange) against the default read of 40: each turn's read held the last
    exchange alone, and the turns before it reached no agent, neither raw nor summed up, until
    the eighth turn's summary, which is all the while further behind in a room of 50 seats.
    Each turn whose read came back full now leaves a summary of what came before it."""
    agents = [make_agent(owner, key) for key in ("ada", "grace", "linus")]
    room = make_room(owner, agents, mode=RoomMode.ROUNDTABLE)
    session = make_session(owner, room=room)
    _grow(session, 4, ["ada", "grace", "linus"])

    assert post_turn(owner_client, session, "question 5").status_code == 201
    assert post_turn(owner_client, session, "question 6").status_code == 201

    summaries = SessionSummary.objects.filter(session=session).order_by("to_sequence")
    assert [(s.from_sequence, s.to_sequence) for s in summaries] == [(1, 16), (17, 20)]
    # Turn 6's first seat read the summary of turns 1-4, then turn 5 whole.
    first_seat = [c for c in fake_gateway.calls_for("agent") if c.agent_key == "ada"][-1]
    assert "They talked." in first_seat.messages[0].content
    assert _history_of(first_seat)[0] == "question 5"


def test_a_capped_users_turn_holds_the_summary_of_its_backlog(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn
):
    """A capped user's running turn holds every call it may make: the summary of a backlog too,
    else the turn spends past what it held against the cap."""
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1000"))
    session = make_session(owner, agent=make_agent(owner, "ada"))
    _grow(session, 60, ["ada"])

    response = post_turn(owner_client, session, "question 61")

    assert response.status_code == 201
    assert [call.purpose for call in fake_gateway.calls] == ["agent", "summary"]

    def worst_case(call) -> Decimal:
        pricing = alias_pricing(aliases=[call.alias.alias])[call.alias.alias]
        prompt = sum(estimate_tokens(message.content) for message in call.messages)
        oe = compute_oe(fresh=prompt, cached=0, output=pricing.alias.max_output_tokens)
        return compute_credits(oe=oe, multiplier=pricing.multiplier)

    held = Turn.objects.get(pk=response.json()["id"]).reserved_credits
    assert held >= sum(worst_case(call) for call in fake_gateway.calls)
