"""What a capped user's running turn holds against the cap: every call it may make, at its
alias's multiplier, with its input estimate and the alias's whole max output. A summary call
belongs in it only when the turn can make one (every eighth turn, or a prompt that may reach
70 % of its budget), with the prompt it would send.

On the demo backend a provider reports exactly the prompt's estimate, so a turn's hold is the
sum, over the calls it made, of each call's reported input with the alias's max output."""

from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync

from conftest import FakeGateway
from orchestration.budget import estimate_tokens
from orchestration.metering import compute_credits, compute_oe
from rooms.models import RoomMode
from sessions_app.models import Turn
from sessions_app.selectors import session_for_turn
from sessions_app.turns import turn_run
from usage.models import BillingProfile, LlmCallEvent, ModelAlias
from usage.selectors import alias_pricing
from usage.services import model_alias_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def capped(owner):
    return BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1000"))


@pytest.fixture
def run(owner, capped):
    def run_turn(session, message: str, gateway=None) -> Turn:
        fresh = session_for_turn(user=owner, session_id=session.pk)
        outcome = async_to_sync(turn_run)(
            session=fresh, user=owner, message=message, gateway=gateway
        )
        return outcome.turn

    return run_turn


def worst_case(alias: str, input_tokens: int) -> Decimal:
    pricing = alias_pricing(aliases=[alias])[alias]
    oe = compute_oe(fresh=input_tokens, cached=0, output=pricing.alias.max_output_tokens)
    return compute_credits(oe=oe, multiplier=pricing.multiplier)


def held_for_its_calls(turn: Turn) -> Decimal:
    """Each call the turn made, with the prompt the provider counted and a whole answer."""
    rows = LlmCallEvent.objects.filter(turn=turn)
    return sum((worst_case(row.model_alias, row.input_tokens_fresh) for row in rows), Decimal("0"))


def purposes(turn: Turn) -> list[str]:
    return list(
        LlmCallEvent.objects.filter(turn=turn)
        .order_by("created_at")
        .values_list("purpose", flat=True)
    )


def test_turns_hold_a_summary_only_when_they_make_one(owner, make_agent, make_session, run):
    """Every turn held a summary at the summarizer's whole budget (52,876 input tokens on
    deepseek, about 2 credits): ten times what a first turn can spend."""
    session = make_session(owner, agent=make_agent(owner, "ada"))

    turns = [run(session, f"question {index}: what next?") for index in range(1, 9)]

    assert [purposes(turn) for turn in turns] == [["agent"]] * 7 + [["agent", "summary"]]
    for turn in turns:
        turn.refresh_from_db()
        assert turn.reserved_credits == held_for_its_calls(turn), turn.turn_index
        assert turn.credits <= turn.reserved_credits
    assert turns[0].reserved_credits < Decimal("0.25")


def test_a_turn_whose_prompt_nears_its_budget_holds_its_summary(
    owner, make_agent, make_session, run
):
    """A summary is due before the eighth turn when the prompt reaches 70 % of its budget."""
    model_alias_set(alias="deepseek", context_window=6000, max_output_tokens=512)
    session = make_session(owner, agent=make_agent(owner, "ada"))

    turns = []
    while not turns or purposes(turns[-1]) == ["agent"]:
        turns.append(run(session, f"{len(turns)}: " + "tell me more about it, " * 60))
        assert len(turns) < 8

    assert purposes(turns[-1]) == ["agent", "summary"]
    assert len(turns) > 1
    for turn in turns:
        turn.refresh_from_db()
        assert turn.reserved_credits == held_for_its_calls(turn), turn.turn_index


def test_answers_of_the_turn_that_may_bring_a_summary_on_are_held_for(
    owner, make_agent, make_room, make_session, run, settings
):
    """In a roundtable the last agent reads the others' answers of the turn: answers as long
    as a call lets through (16 characters a token asked for) bring its prompt past 70 % and
    a summary on, which the turn must have held for before anyone answered."""
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "qwen"
    model_alias_set(alias="deepseek", context_window=8192, max_output_tokens=256)
    agents = [make_agent(owner, key) for key in ("ada", "grace", "linus")]
    gateway = FakeGateway()
    gateway.reply_for = lambda call: (  # type: ignore[method-assign]
        gateway.summary_reply if call.purpose == "summary" else "word " * (256 * 16 // 5)
    )

    def second_turn() -> Turn:
        session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))
        run(session, "first", gateway)
        return run(session, "second", gateway)

    ModelAlias.objects.filter(alias="qwen").update(enabled=False)  # no summary can be made
    without = second_turn()
    ModelAlias.objects.filter(alias="qwen").update(enabled=True)
    summarized = second_turn()

    assert purposes(without) == ["agent"] * 3
    assert purposes(summarized) == ["agent"] * 3 + ["summary"]
    summary_call = gateway.calls_for("summary")[-1]
    prompt = sum(estimate_tokens(message.content) for message in summary_call.messages)
    held_for_the_summary = summarized.reserved_credits - without.reserved_credits
    assert held_for_the_summary == worst_case("qwen", prompt)


def test_a_summary_that_reads_part_of_the_history_is_held_for(
    owner, make_agent, make_session, run, settings, monkeypatch
):
    """A summary reads at most SUMMARY_TRANSCRIPT_LIMIT messages (3 here), the history more
    (PANTHEON_CONTEXT_HISTORY_LIMIT). Its 648 tokens on a 2,000-token qwen hold the first
    exchange and the second question, not the long second answer. The three messages read end
    with that question, whose answer comes next: the summary folds in the first exchange only,
    as the whole history's would (a question folded in without its answer leaves the answer
    first in the raw history, where no prompt shows it); the turn holds for what it sends."""
    monkeypatch.setattr("sessions_app.turns.SUMMARY_TRANSCRIPT_LIMIT", 3)
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "qwen"
    model_alias_set(alias="qwen", context_window=2000, max_output_tokens=256)
    session = make_session(owner, agent=make_agent(owner, "ada"))
    gateway = FakeGateway()
    reply = gateway.reply_for
    gateway.reply_for = lambda call: (  # type: ignore[method-assign]
        "A long second answer. " + "details " * 270
        if call.purpose == "agent" and call.messages[-1].content == "question 2"
        else reply(call)
    )

    turns = [run(session, f"question {index}", gateway) for index in range(1, 9)]

    assert purposes(turns[-1]) == ["agent", "summary"]
    summary_call = gateway.calls_for("summary")[-1]
    transcript = summary_call.messages[-1].content
    assert "[user]: question 1" in transcript and "question 2" not in transcript
    sent = sum(
        worst_case(call.alias.alias, sum(estimate_tokens(m.content) for m in call.messages))
        for call in gateway.calls[-2:]
    )
    turns[-1].refresh_from_db()
    assert turns[-1].reserved_credits >= sent
