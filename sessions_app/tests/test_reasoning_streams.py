"""A reasoning model (DeepSeek's reasoner, say) streams its reasoning before its answer
(`reasoning_content`, no text); the stub plays one (`reasoning-<n>` in its model name). The
reasoning is neither shown nor stored, but it is the provider at work: it keeps the turn from
being taken for a dead one, and it does not use up the chunks its answer may take. The provider
bills it as output: a call metered on an estimate counts it, and so does a call retried after an
attempt that reasoned."""

import asyncio
import logging
import threading
import time
from decimal import Decimal

import httpx
import psycopg
import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from conftest import FakeGateway
from orchestration import gateway as gateway_module
from orchestration.budget import estimate_tokens
from orchestration.gateway import AnswerLimit, LiteLLMGateway
from orchestration.metering import compute_credits, compute_oe, compute_price_usd
from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events
from pantheon.testing.stub_llm import stub_call
from sessions_app.models import Message, Turn, TurnStatus
from sessions_app.tests.conftest import direct_turn, point_at_stub, streamed_text, wait_for
from sessions_app.tests.test_provider_replies import MESSAGES
from sessions_app.turns import _StreamedStep
from usage.models import LlmCallEvent, MonthlyUsage
from usage.selectors import alias_pricing

# The stub's answer to MESSAGES: twelve words.
ANSWER = "Stub answer to «Hello there, friend»: one two three four five six"
# What the stub's answer to MESSAGES estimates at (no usage): prompt and answer tokens.
PROMPT_ESTIMATE = 9


def reasoning(thoughts: int) -> str:
    """The stub's reasoning of `thoughts` chunks, as it streams it."""
    return " ".join(f"thought {index}." for index in range(1, thoughts + 1))


def estimated(text: str) -> int:
    """Tokens in `text` as the gateway estimates them for the stub's models (litellm does not
    know them)."""
    return estimate_tokens(text, "openai/stub")


def call_stub(
    stub,
    model: str,
    *,
    streamed: bool,
    max_output_tokens: int = 1024,
    timeout: float = 5.0,
    retries: int = 0,
):
    """The stub's answer through the gateway: (result, the text pieces heard, how many chunks
    of reasoning were heard)."""
    call = stub_call(stub, model, MESSAGES, max_output_tokens=max_output_tokens)
    gateway = LiteLLMGateway(timeout_seconds=timeout, max_retries=retries, backoff_seconds=0)
    gateway.warm_up()  # as a server does: litellm's first call loads it, for seconds
    heard: list[str] = []
    reasoned: list[None] = []
    if streamed:
        result = asyncio.run(gateway.stream(call, heard.append, lambda: reasoned.append(None)))
    else:
        result = asyncio.run(gateway.complete(call))
    return result, heard, len(reasoned)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_reasoning_models_answer_is_its_text_and_its_usage_counts_the_reasoning(stub, streamed):
    result, heard, reasoned = call_stub(stub, "reasoning-5", streamed=streamed)

    assert (result.status, result.text) == ("success", ANSWER)
    assert "".join(heard) == (ANSWER if streamed else "")  # not a word of the reasoning
    assert reasoned == (5 if streamed else 0)
    assert result.output_tokens == 12 + 5  # the provider bills its reasoning as output


def test_a_long_reasoning_phase_does_not_use_up_the_chunks_of_a_short_answer(stub):
    """Reasoning chunks counted with the answer's: 96 of them (16 tokens' worth) and the
    stream was cut before the answer's first word, a success with no text."""
    result, heard, reasoned = call_stub(stub, "reasoning-300", streamed=True, max_output_tokens=16)

    assert AnswerLimit(chars=16 * 16, chunks=16 * 2 + 64).chunks < 300
    assert (result.status, result.text, reasoned) == ("success", ANSWER, 300)
    assert "".join(heard) == ANSWER
    assert result.output_tokens == 12 + 300  # read to its end: the provider's own usage
    assert stub.hung_up == 0


def test_a_provider_that_reasons_without_end_is_cut_at_its_reasoning_limit(stub, monkeypatch):
    """The bound litellm's memory needs (it keeps every chunk), on the reasoning too."""
    monkeypatch.setattr(gateway_module, "REASONING_TOKENS", 64)

    result, heard, reasoned = call_stub(
        stub, "reasoning-200000", streamed=True, max_output_tokens=16
    )

    assert (result.status, result.error_kind, result.text, heard) == ("success", None, "", [])
    assert reasoned == 64 * 2 + 64
    wait_for(lambda: stub.hung_up == 1, "the stub to see its stream closed")
    # Its usage never came: the reasoning it streamed is estimated, up to the reasoning's own
    # bound in tokens (64 here), as the answer's is up to max_tokens. It was metered as 0.
    assert estimated(reasoning(reasoned)) > 64
    assert (result.input_tokens_fresh, result.output_tokens) == (PROMPT_ESTIMATE, 64)


def test_a_reasoning_stream_cut_at_its_answer_limit_counts_its_reasoning_too(stub):
    """Only the text kept was estimated (the 16 tokens asked for): the fifty thoughts before
    it, which the provider bills, were not."""
    result, heard, reasoned = call_stub(
        stub, "reasoning-50-words-2000", streamed=True, max_output_tokens=16
    )

    assert (result.status, reasoned, len(result.text)) == ("success", 50, 16 * 16)
    assert result.output_tokens == 16 + estimated(reasoning(50))


def test_a_stream_that_goes_silent_while_it_reasons_is_metered_on_its_reasoning(stub):
    """Two thoughts, then nothing: a timeout before the answer's first word, metered as 0
    tokens and $0 while the provider billed the prompt and the reasoning."""
    result, heard, reasoned = call_stub(stub, "reasoning-5-stall", streamed=True, timeout=1.0)

    assert (result.status, result.error_kind, result.text, heard) == ("timeout", "timeout", "", [])
    assert reasoned == 2
    assert (result.input_tokens_fresh, result.output_tokens) == (
        PROMPT_ESTIMATE,
        estimated(reasoning(2)),
    )


def test_a_whole_answer_without_usage_counts_the_reasoning_it_came_with(stub):
    result, _, _ = call_stub(stub, "reasoning-5-no-usage", streamed=False)

    assert (result.status, result.text) == ("success", ANSWER)
    assert result.output_tokens == estimated(ANSWER) + estimated(reasoning(5))


def test_an_attempt_that_reasoned_and_failed_is_metered_with_the_retry(stub):
    """The provider's error came after five thoughts and before any text: retried, and the
    call was metered on the retry's usage alone (12 + 5), as if the first attempt, which
    took the prompt and reasoned, had cost nothing."""
    result, heard, reasoned = call_stub(stub, "reasoning-5-fail-1", streamed=True, retries=1)

    assert (result.status, result.attempts, result.text) == ("success", 2, ANSWER)
    assert "".join(heard) == ANSWER and reasoned == 5 + 5
    assert result.input_tokens_fresh == 8 + PROMPT_ESTIMATE  # the stub's count, the estimate
    assert result.output_tokens == 12 + 5 + estimated(reasoning(5))


def test_a_call_whose_every_attempt_reasoned_and_failed_is_metered_on_all_of_them(stub):
    result, heard, reasoned = call_stub(stub, "reasoning-5-fail-2", streamed=True, retries=1)

    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 2)
    assert (result.text, heard, reasoned) == ("", [], 5 + 5)
    assert result.input_tokens_fresh == 2 * PROMPT_ESTIMATE
    assert result.output_tokens == 2 * estimated(reasoning(5))


class ReasoningGateway(FakeGateway):
    """The fake provider's answer after `thoughts` chunks of reasoning, all at once."""

    def __init__(self, thoughts: int) -> None:
        super().__init__()
        self.thoughts = thoughts

    async def stream(self, call, on_delta, on_reasoning=None):
        for _ in range(self.thoughts):
            if on_reasoning is not None:
                on_reasoning()
        return await super().stream(call, on_delta)


@pytest.mark.django_db
def test_reasoning_writes_nothing_until_progress_is_due(owner, ada, make_session, settings):
    """Progress moves at most every tenth of the stale limit: a thousand chunks of reasoning
    within it cost the turn no statement (one a chunk would be a thousand)."""
    settings.PANTHEON_TURN_STALE_SECONDS = 600

    def statements(gateway: FakeGateway) -> int:
        session = make_session(owner, agent=ada)
        with CaptureQueriesContext(connection) as queries:
            outcome, heard = direct_turn(owner, session, gateway, message="hello")
        assert outcome.turn.status == TurnStatus.COMPLETED
        assert heard[-1].name == "turn_completed"
        return len(queries)

    statements(FakeGateway())  # the user's first turn also opens their month's usage row
    assert statements(ReasoningGateway(thoughts=1000)) == statements(FakeGateway())


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_a_turn_whose_provider_reasons_past_the_stale_limit_is_not_taken_for_a_stale_one(
    owner, ada, make_session, stub
):
    """Only text moved a streamed turn's progress: four seconds of reasoning under a stale
    limit of two, and the session's next turn interrupted this one (201), whose answer and
    usage were then thrown away. Now the next turn is refused (409) as for any running turn,
    and this one completes with its answer and its call on the ledger."""
    point_at_stub(stub, "stream-100-reasoning-40", ada.model_alias)  # 4 s, then 12 words
    session = make_session(owner, agent=ada)
    token = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    url = f"/api/v1/sessions/{session.pk}/turns"
    streamed: dict[str, list] = {}
    env = {
        "PANTHEON_LLM_BACKEND": "live",
        "STUB_API_KEY": "sk-x",
        "PANTHEON_TURN_STALE_SECONDS": "2",
    }

    def stream(base: str) -> None:
        headers = {**token, "Accept": "text/event-stream"}
        body = {"message": "Hello there, friend"}
        with httpx.stream("POST", base + url, json=body, headers=headers, timeout=60) as response:
            assert response.status_code == 201
            streamed["live"] = list(events(response))

    with AppServer(database_url=postgres_url(connection.settings_dict), env=env) as server:
        first = threading.Thread(target=stream, args=(server.url,))
        first.start()
        wait_for(lambda: Turn.objects.exists(), "the first turn to be claimed")
        time.sleep(3)  # past the stale limit, in the middle of the reasoning
        assert not Message.objects.filter(role="assistant").exists()
        second = httpx.post(server.url + url, json={"message": "again"}, headers=token, timeout=30)
        first.join(timeout=30)

    assert second.status_code == 409, second.text
    assert second.json() == {
        "detail": "Turn creation conflicted with concurrent writes. Please retry.",
        "code": "turn_in_progress",
        "turn_id": str(Turn.objects.get().pk),
    }
    live = streamed["live"]
    assert [e.name for e in live][-2:] == ["step_completed", "turn_completed"]
    assert "".join(e.data["text"] for e in live if e.name == "step_delta") == ANSWER
    turn = Turn.objects.get()
    assert turn.status == "completed"
    answer = Message.objects.get(role="assistant")
    assert (answer.status, answer.content) == ("ok", ANSWER)
    row = LlmCallEvent.objects.get()
    assert (row.status, row.turn_id, row.output_tokens) == ("success", turn.pk, 12 + 40)
    assert row.credits > 0 and turn.credits == row.credits


def priced(row: LlmCallEvent) -> tuple[Decimal, Decimal]:
    """What a ledger row's tokens cost at its alias's price: (USD, credits)."""
    pricing = alias_pricing(aliases=[row.model_alias])[row.model_alias]
    assert pricing.input_usd_per_mtok is not None and pricing.output_usd_per_mtok is not None
    cost = compute_price_usd(
        fresh=row.input_tokens_fresh,
        cached=row.input_tokens_cached,
        output=row.output_tokens,
        input_per_mtok=pricing.input_usd_per_mtok,
        cached_input_per_mtok=pricing.cached_input_usd_per_mtok,
        output_per_mtok=pricing.output_usd_per_mtok,
    )
    oe = compute_oe(
        fresh=row.input_tokens_fresh, cached=row.input_tokens_cached, output=row.output_tokens
    )
    return cost, compute_credits(oe=oe, multiplier=pricing.multiplier)


@pytest.fixture
def stream_turn(owner, ada, make_session, stub, monkeypatch):
    """A streamed turn of a new session with ada, through the real gateway to the stub as
    `model`: (the turn, its ledger row, the answer's text the listener heard)."""
    monkeypatch.setenv("STUB_API_KEY", "sk-x")

    def run(model: str, *, timeout: float = 5.0, retries: int = 1):
        point_at_stub(stub, model, ada.model_alias)
        session = make_session(owner, agent=ada)
        gateway = LiteLLMGateway(timeout_seconds=timeout, max_retries=retries, backoff_seconds=0)
        gateway.warm_up()  # as a server does: litellm's first call loads it, for seconds
        outcome, heard = direct_turn(owner, session, gateway)
        turn = Turn.objects.get(pk=outcome.turn.pk)
        row = LlmCallEvent.objects.get(turn=turn)
        text = streamed_text(heard)
        return turn, row, text

    return run


def assert_totals(turn: Turn, row: LlmCallEvent) -> None:
    """The turn's totals are its one row's, and the row is charged to its user's month."""
    assert (turn.llm_calls, turn.input_tokens, turn.output_tokens) == (
        1,
        row.input_tokens_fresh + row.input_tokens_cached,
        row.output_tokens,
    )
    assert (turn.credits, turn.provider_cost_usd) == (row.credits, row.provider_cost_usd)


@pytest.mark.django_db
def test_a_turn_whose_provider_goes_silent_while_it_reasons_is_charged_for_the_reasoning(
    owner, stream_turn
):
    """Its ledger row was a timeout with 0 tokens, $0 and no credits: a silent $0 for a call
    the provider billed (the prompt, and the reasoning it streamed)."""
    turn, row, text = stream_turn("reasoning-5-stall", timeout=1.0)

    assert (turn.status, text) == ("failed", "")
    assert (row.status, row.error_type, row.attempts) == ("timeout", "timeout", 1)
    assert row.input_tokens_fresh > 0
    assert row.output_tokens == estimated(reasoning(2))
    cost, credits = priced(row)
    assert row.priced and row.provider_cost_usd == cost > 0 and row.credits == credits > 0
    assert_totals(turn, row)
    assert MonthlyUsage.objects.get(user=owner).credits == row.credits


@pytest.mark.django_db
def test_a_turn_retried_after_its_provider_failed_while_it_reasoned_is_charged_for_both(
    owner, stream_turn
):
    """The first attempt failed after five thoughts, before any text, and was retried: the
    row carried the retry's usage alone, as a call whose provider did not fail."""
    whole, whole_row, _ = stream_turn("reasoning-5")
    turn, row, text = stream_turn("reasoning-5-fail-1")

    assert (turn.status, text) == ("completed", ANSWER)  # the answer once: none came before
    assert (row.status, row.attempts) == ("success", 2)
    assert (whole_row.attempts, whole_row.output_tokens) == (1, 12 + 5)
    # The retry's usage, by the provider, and the failed attempt's, estimated.
    assert row.input_tokens_fresh > whole_row.input_tokens_fresh
    assert row.output_tokens == 12 + 5 + estimated(reasoning(5))
    cost, credits = priced(row)
    assert row.provider_cost_usd == cost > whole_row.provider_cost_usd
    assert row.credits == credits > whole_row.credits
    assert_totals(turn, row)
    month = MonthlyUsage.objects.get(user=owner)
    assert month.credits == whole_row.credits + row.credits


@pytest.fixture
def looks(monkeypatch):
    """The step's looks at its turn while it reasons (`_StreamedStep.look`), counted; one
    numbered in `failing` (from 1) fails as a terminated connection does."""
    seen = {"looks": 0, "failing": set()}
    look = _StreamedStep.look

    def counted(self, value):
        seen["looks"] += 1
        if seen["looks"] in seen["failing"]:
            error = OperationalError("terminating connection due to administrator command")
            error.__cause__ = psycopg.errors.AdminShutdown("terminating connection")
            raise error
        return look(self, value)

    monkeypatch.setattr(_StreamedStep, "look", counted)
    return seen


@pytest.mark.django_db
def test_reasoning_looks_at_its_turn_once_at_a_time(owner, ada, make_session, settings, looks):
    """A look at the turn (a cancel taken elsewhere) runs while no other save or look does: a
    thousand chunks heard during one look cost no other (one each would be a thousand queued
    reads of the turn, a section each)."""
    settings.PANTHEON_STREAM_SAVE_SECONDS = 0  # a look is due at every chunk

    outcome, heard = direct_turn(owner, make_session(owner, agent=ada), ReasoningGateway(1000))

    assert outcome.turn.status == TurnStatus.COMPLETED
    assert heard[-1].name == "turn_completed"
    assert looks["looks"] == 1


@pytest.mark.django_db
def test_a_look_that_loses_its_connection_while_it_reasons_ends_nothing(
    owner, ada, make_session, settings, looks, caplog
):
    """The database away during a look: a warning, and the answer streams whole once the
    provider has reasoned (the first word's own look reads the turn again)."""
    settings.PANTHEON_STREAM_SAVE_SECONDS = 0
    looks["failing"].add(1)

    with caplog.at_level(logging.WARNING):
        outcome, heard = direct_turn(owner, make_session(owner, agent=ada), ReasoningGateway(5))

    answer = Message.objects.get(turn=outcome.turn, role="assistant")
    assert outcome.turn.status == TurnStatus.COMPLETED
    assert looks["looks"] == 1
    assert streamed_text(heard) == answer.content != ""
    [warning] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    # Not "a save of the answer": there was none yet.
    assert "a look at the turn while ada reasons failed" in warning.getMessage()
