"""The 70 % trigger of a summary: a prompt's history since the latest summary must be what takes
it to 70 % of its budget. A prompt that its system prompt, question and the turn's earlier answers
take past the line alone stays past it whatever a summary folds: a summary then waits for the
eighth turn, rather than being made (and billed) on every turn for nothing.

A small window throughout: 2,000 tokens with answers of 256 leave an input budget of 720, whose
70 % is 504 tokens."""

from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync

from conftest import FakeGateway
from orchestration.budget import SUMMARIZE_AT, ContextBudget, estimate_tokens
from orchestration.metering import compute_credits, compute_oe
from rooms.models import RoomMode
from sessions_app.models import SessionSummary, TurnContextAudit
from sessions_app.selectors import session_for_turn
from sessions_app.turns import turn_run
from usage.models import BillingProfile, LlmCallEvent
from usage.selectors import alias_pricing
from usage.services import model_alias_set

pytestmark = pytest.mark.django_db

LINE = ContextBudget.for_window(2000, 256).input_budget * SUMMARIZE_AT  # 504 tokens


@pytest.fixture(autouse=True)
def small_window():
    model_alias_set(alias="qwen", context_window=2000, max_output_tokens=256)


@pytest.fixture
def talk(owner):
    """Runs `turns` turns of the session; the indexes of the turns that made a summary call."""

    def run(session, gateway: FakeGateway, turns: int) -> list[int]:
        for index in range(1, turns + 1):
            fresh = session_for_turn(user=owner, session_id=session.pk)
            async_to_sync(turn_run)(
                session=fresh, user=owner, message=f"question {index}", gateway=gateway
            )
        return sorted(
            LlmCallEvent.objects.filter(turn__session=session, purpose="summary").values_list(
                "turn__turn_index", flat=True
            )
        )

    return run


def answering(gateway: FakeGateway, answers: dict[str, str]) -> FakeGateway:
    reply = gateway.reply_for
    gateway.reply_for = lambda call: answers.get(call.agent_key or "") or reply(call)  # type: ignore[method-assign]
    return gateway


def test_a_seat_past_the_line_on_the_turns_answers_alone_brings_no_summary(
    owner, make_agent, make_room, make_session, talk
):
    """The tester's room: the last seat of a roundtable on a small window reads the two long
    answers given before it in the turn, past 70 % of its budget with no history at all. Every
    turn from the second made a summary call: the history it folded was never what filled the
    prompt, which the next turn's answers filled again."""
    agents = [
        make_agent(owner, "ada"),
        make_agent(owner, "grace"),
        make_agent(owner, "linus", model_alias="qwen"),
    ]
    session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))
    long = "word " * 160  # 250 tokens, about what an answer of 256 holds
    gateway = answering(FakeGateway(), {"ada": long, "grace": long})

    summarized = talk(session, gateway, 9)

    assert summarized == [8]  # every eighth turn still
    audits = TurnContextAudit.objects.filter(turn__session=session).order_by("turn__turn_index")
    assert all(audit.estimated_tokens_before >= LINE for audit in audits)  # past 70 % each turn
    assert [audit.summary_triggered for audit in audits] == [False] * 7 + [True, False]


def test_a_system_prompt_past_the_line_alone_brings_no_summary(
    owner, make_agent, make_room, make_session, talk
):
    """Every seat on the small window, with a room goal that takes each prompt past 70 % before
    any history or answer: a summary relieves none of them."""
    agents = [make_agent(owner, key, model_alias="qwen") for key in ("ada", "grace", "linus")]
    goal = "Settle the plan. " + "goal " * 300  # about 470 tokens
    room = make_room(owner, agents, mode=RoomMode.ROUNDTABLE, goal=goal)
    session = make_session(owner, room=room)

    assert talk(session, FakeGateway(), 9) == [8]


def test_history_that_fills_a_prompt_still_brings_a_summary(
    owner, make_agent, make_room, make_session, talk
):
    """Two seats on the small window: Ada's prompt fills with the history of short exchanges
    until it passes 70 % (the third exchange takes it there), while Grace's long role keeps hers
    past the line whatever the history. Ada's brings a summary on each time it is there; Grace's
    brought one on every turn."""
    agents = [
        make_agent(owner, "ada", model_alias="qwen"),
        make_agent(owner, "grace", model_alias="qwen", role_prompt="Careful. " + "role " * 320),
    ]
    session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))
    short = "word " * 40  # about 63 tokens
    gateway = answering(FakeGateway(), {"ada": short, "grace": short})

    summarized = talk(session, gateway, 9)

    ada = [
        sum(estimate_tokens(message.content) for message in call.messages)
        for call in gateway.calls_for("agent")
        if call.agent_key == "ada"
    ]
    assert summarized == [4, 6, 8]  # not every turn, as Grace's prompt had it
    # Ada's prompts: 195, 330, 465 and 600 tokens (past the line), then the summary and one
    # exchange (374), two (509, past it again), ...: the turns that were summarized.
    assert [index for index, tokens in enumerate(ada, start=1) if tokens >= LINE] == summarized
    first = SessionSummary.objects.filter(session=session).earliest("created_at")
    assert (first.from_sequence, first.to_sequence) == (1, 9)  # the three exchanges before it


def test_a_capped_turn_holds_no_summary_its_prompt_cannot_bring_on(owner, make_agent, make_session):
    """A capped user's turn holds a summary call only when it may make one: not when its
    prompt is past the line before any history (its floor: system prompt and question). On the
    demo backend a call reports its prompt's estimate: the hold is the call made."""
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1000"))
    role = "Careful. " + "role " * 320
    session = make_session(
        owner, agent=make_agent(owner, "ada", model_alias="qwen", role_prompt=role)
    )

    for index in (1, 2):
        fresh = session_for_turn(user=owner, session_id=session.pk)
        turn = async_to_sync(turn_run)(session=fresh, user=owner, message=f"q{index}").turn

    turn.refresh_from_db()
    calls = LlmCallEvent.objects.filter(turn=turn)
    assert list(calls.values_list("purpose", flat=True)) == ["agent"]
    made = Decimal("0")
    for call in calls:
        pricing = alias_pricing(aliases=[call.model_alias])[call.model_alias]
        oe = compute_oe(
            fresh=call.input_tokens_fresh, cached=0, output=pricing.alias.max_output_tokens
        )
        made += compute_credits(oe=oe, multiplier=pricing.multiplier)
    assert turn.reserved_credits == made
