"""What the gateway makes of a provider that answers 200 with something other than a whole
answer (the stub on 127.0.0.1 plays each), and what such a call leaves on the ledger."""

import asyncio
import logging
import re
import time
from decimal import Decimal

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from conftest import FakeGateway
from orchestration.gateway import LiteLLMGateway
from orchestration.types import ChatMessage
from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events
from pantheon.testing.stub_llm import stub_call
from sessions_app.models import Message
from sessions_app.tests.conftest import direct_turn, point_at_stub, streamed_text
from usage.models import LlmCallEvent, ModelAlias

MESSAGES = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there, friend"))


def call_stub(stub, model: str, *, streamed: bool, retries: int = 1, max_output_tokens: int = 1024):
    call = stub_call(stub, model, MESSAGES, max_output_tokens=max_output_tokens)
    gateway = LiteLLMGateway(timeout_seconds=1.0, max_retries=retries, backoff_seconds=0)
    heard: list[str] = []
    if streamed:
        return asyncio.run(gateway.stream(call, heard.append)), heard
    return asyncio.run(gateway.complete(call)), heard


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_whole_answer_is_a_success_with_the_providers_usage(stub, streamed):
    result, _ = call_stub(stub, "fine", streamed=streamed)

    assert (result.status, result.attempts) == ("success", 1)
    assert result.text.startswith("Stub answer")
    assert result.output_tokens == 12  # the stub's own count


@pytest.mark.parametrize(
    "model, streamed, attempts",
    [
        # The stub's reply without choices says it used 12 output tokens: billed for nothing,
        # it is not asked again (`gateway._billed_for_no_answer`).
        ("no-choices", False, 1),
        ("no-choices", True, 1),  # a plain JSON body where a stream was asked for
        ("not-json", True, 2),  # an HTML page where a stream was asked for: retried once
    ],
)
def test_a_200_without_an_answer_is_a_provider_error_retried_like_a_5xx(
    stub, model, streamed, attempts
):
    """These were successes with an empty answer (and, streamed, the turn `completed`)."""
    result, heard = call_stub(stub, model, streamed=streamed)

    assert (result.status, result.error_kind) == ("error", "provider_error")
    assert result.attempts == attempts  # nothing reached the client
    assert result.text == "" and heard == []


def test_a_stream_that_ends_before_the_provider_finished_is_not_a_whole_answer(stub):
    """The stream closed cleanly halfway: litellm adds a finish of its own, so the cut answer
    was stored as complete. What the client already saw is not said again (no retry)."""
    result, heard = call_stub(stub, "unfinished", streamed=True)

    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 1)
    assert result.text == "".join(heard) and result.text.startswith("Stub answer")
    # The provider took the prompt and spoke: what it used is estimated, as it bills it.
    assert result.input_tokens_fresh > 0 and result.output_tokens > 0


def test_a_stream_whose_connection_is_cut_midway_is_billed_for_what_was_heard(stub):
    """The provider's connection closed after two words (a proxy restarting), no last chunk:
    what the client already saw is not said again (no retry), and it is billed."""
    result, heard = call_stub(stub, "drop-mid-stream-20", streamed=True)

    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 1)
    assert heard == ["Stub", " answer"] and result.text == "Stub answer"
    assert result.input_tokens_fresh > 0 and result.output_tokens > 0


def test_a_chunk_that_is_not_json_is_skipped_and_the_answer_is_whole(stub):
    result, heard = call_stub(stub, "bad-chunk", streamed=True)

    assert (result.status, result.attempts) == ("success", 1)
    assert "".join(heard) == result.text == STUB_ANSWER
    assert result.output_tokens == 12  # the provider's usage, which came after it


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_prompt_the_provider_finds_too_long_is_not_retried(stub, streamed):
    """Its 400 `context_length_exceeded` (the window configured is larger than the model's):
    the same prompt would be refused again."""
    result, _ = call_stub(stub, "http-400", streamed=streamed)

    assert (result.status, result.error_kind, result.attempts) == (
        "error",
        "context_window_exceeded",
        1,
    )
    assert stub.requests == 1


def test_a_provider_that_sends_its_headers_and_then_nothing_is_a_timeout(stub):
    result, _ = call_stub(stub, "hang-headers", streamed=False)

    assert (result.status, result.error_kind) == ("timeout", "timeout")
    assert result.text == "" and result.output_tokens == 0


def test_a_stream_that_goes_silent_is_a_timeout(stub):
    """The socket's read timeout reaches us wrapped twice by litellm: it was a provider error,
    while the README promises `timeout`."""
    result, heard = call_stub(stub, "stall", streamed=True)

    assert (result.status, result.error_kind, result.attempts) == ("timeout", "timeout", 1)
    assert heard == ["Stub", " answer"]
    assert result.input_tokens_fresh > 0 and result.output_tokens > 0  # was 0 and 0


def test_the_failed_calls_line_says_what_streamed_and_no_status_no_provider_sent(stub, caplog):
    """A stream gone silent after two words, and a connection reset before any reply. The
    line said "HTTP 408" and "HTTP 500", statuses litellm makes up for them (no provider sent
    one: the operator looked for a provider's error page, not the network), and not that the
    user had seen words before the failure, which is why the call is billed and not retried."""
    # Time enough for the first words on a loaded machine; the stall lasts a minute.
    gateway = LiteLLMGateway(timeout_seconds=3.0, max_retries=0)
    heard: list[str] = []
    with caplog.at_level(logging.WARNING, logger="orchestration.gateway"):
        stalled = asyncio.run(gateway.stream(stub_call(stub, "stall", MESSAGES), heard.append))
        reset = asyncio.run(gateway.complete(stub_call(stub, "reset-1", MESSAGES)))

    silent, dropped = caplog.records
    assert re.fullmatch(
        r"LLM call agent/ada for stubbed failed \(timeout\) after 1 attempt\(s\) in \d+ ms, "
        r"11 characters streamed to its listener before "
        r"\(provider request id req_stub_[0-9a-f]+\): .*",
        silent.getMessage(),
    )
    assert "".join(heard) == "Stub answer"
    assert (silent.streamed_chars, silent.provider_status) == (11, None)
    assert stalled.output_tokens > 0  # billed for what was streamed
    assert re.fullmatch(
        r"LLM call agent/ada for stubbed failed \(provider_error\) after 1 attempt\(s\) in "
        r"\d+ ms: .*",
        dropped.getMessage(),
    )
    assert (dropped.streamed_chars, dropped.provider_status) == (0, None)
    assert reset.error_kind == "provider_error"


def test_a_call_that_failed_before_its_first_word_is_metered_as_the_provider_said(stub):
    """No text and no usage: nothing. No choices but a usage block: the provider's figures,
    not an estimate (nor 0), of its one attempt (billed for output, it is not retried)."""
    page, _ = call_stub(stub, "not-json", streamed=True)
    empty, _ = call_stub(stub, "no-choices", streamed=False)

    assert (page.input_tokens_fresh, page.output_tokens) == (0, 0)
    assert (empty.status, empty.input_tokens_fresh, empty.output_tokens) == ("error", 8, 12)
    assert empty.attempts == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", ["tool-calls", "empty-content"])
def test_a_200_without_text_is_a_provider_error_billed_as_the_provider_reported(
    stub, model, streamed
):
    """A tool call instead of an answer, or no text at all: a tool call was a success with an
    empty answer. The provider took the prompt and bills it: its usage (8 prompt tokens, 12
    completion). It billed output for no answer, so it is not asked again (it was, and both
    replies were billed)."""
    result, heard = call_stub(stub, model, streamed=streamed)

    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 1)
    assert result.text == "" and heard == []
    assert (result.input_tokens_fresh, result.output_tokens) == (8, 12)
    assert "no text; finish" in result.error_message


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    "model", ["null-content-finish-content_filter", "empty-content-finish-length"]
)
def test_an_answer_filtered_away_or_cut_before_its_text_stays_an_empty_answer(
    stub, model, streamed
):
    """Filtered away, or the output limit reached before any text (a reasoning model): asked
    again, a provider would as a rule think the limit away again, billed again."""
    result, heard = call_stub(stub, model, streamed=streamed)

    assert (result.status, result.text, result.attempts) == ("success", "", 1)
    assert heard == []


def test_a_plain_200_that_is_not_json_is_retried_like_a_5xx(stub):
    result, _ = call_stub(stub, "not-json", streamed=False)

    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 2)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_an_answer_without_usage_is_estimated_not_a_silent_zero(stub, streamed):
    result, _ = call_stub(stub, "no-usage", streamed=streamed)

    assert result.status == "success"
    assert result.input_tokens_fresh > 0 and result.output_tokens > 0


@pytest.mark.django_db
def test_a_provider_that_says_the_prompt_is_too_long_fails_the_answer_at_no_cost(
    owner, ada, make_session, owner_client, stub, monkeypatch
):
    """OpenAI's 400 `context_length_exceeded` (an alias whose `context_window` is set above its
    model's): litellm's ContextWindowExceededError, asked once (a retry would be refused
    alike), a turn that answers 201 `failed` with the answer's `error_code`
    `context_window_exceeded`, and a ledger row of no tokens and no credits."""
    point_at_stub(stub, "context-exceeded", ada.model_alias)
    monkeypatch.setenv("STUB_API_KEY", "sk-x")
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=2, backoff_seconds=0)
    monkeypatch.setattr("sessions_app.turns.get_gateway", lambda: gateway)
    session = make_session(owner, agent=ada)

    response = owner_client.post(
        f"/api/v1/sessions/{session.pk}/turns", {"message": "hello"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "failed"
    answer = response.json()["messages"][-1]
    assert (answer["status"], answer["error_code"]) == ("error", "context_window_exceeded")
    row = LlmCallEvent.objects.get()
    assert (row.status, row.error_type, row.attempts) == ("error", "context_window_exceeded", 1)
    assert (row.input_tokens_fresh, row.output_tokens, row.credits) == (0, 0, Decimal("0"))
    assert stub.requests == 1


@pytest.mark.django_db
def test_a_turn_on_a_provider_that_sends_no_usage_still_costs_credits(
    owner, ada, make_session, owner_client, stub, monkeypatch
):
    """Its ledger row was a `success` with 0 tokens and 0 credits, priced: a silent $0."""
    point_at_stub(stub, "no-usage", ada.model_alias)
    monkeypatch.setenv("STUB_API_KEY", "sk-x")
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=0)
    monkeypatch.setattr("sessions_app.turns.get_gateway", lambda: gateway)
    session = make_session(owner, agent=ada)

    response = owner_client.post(
        f"/api/v1/sessions/{session.pk}/turns", {"message": "hello"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "completed"
    row = LlmCallEvent.objects.get()
    assert row.status == "success"
    assert row.input_tokens_fresh > 0 and row.output_tokens > 0
    assert row.credits > Decimal("0")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_a_streamed_turn_whose_provider_goes_silent_records_a_timeout_and_what_it_used(
    owner, ada, make_session, stub
):
    point_at_stub(stub, "stall", ada.model_alias)
    session = make_session(owner, agent=ada)
    headers = {
        "Authorization": f"Token {Token.objects.create(user=owner).key}",
        "Accept": "text/event-stream",
    }
    env = {
        "PANTHEON_LLM_BACKEND": "live",
        "STUB_API_KEY": "sk-x",
        "PANTHEON_LLM_TIMEOUT_SECONDS": "3",  # 1 s timed out before the first words at a load of 15
    }
    with AppServer(database_url=postgres_url(connection.settings_dict), env=env) as server:
        url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
        body = {"message": "hello"}
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
            assert response.status_code == 201
            streamed = list(events(response))

    assert [e.data["text"] for e in streamed if e.name == "step_delta"] == ["Stub", " answer"]
    answer = Message.objects.get(role="assistant")
    assert (answer.status, answer.error_code, answer.content) == ("error", "timeout", "Stub answer")
    row = LlmCallEvent.objects.get()
    assert (row.status, row.error_type) == ("timeout", "timeout")
    assert row.input_tokens_fresh > 0 and row.output_tokens > 0 and row.credits > 0


# --- turns on a misbehaving provider, through the gateway and the stub --------------------------


def stub_turn(owner, ada, make_session, stub, model: str, *, streamed: bool) -> tuple:
    """A direct turn with ada, whose alias (max_output_tokens 1024) the stub answers as `model`
    with one retry: (the turn, its answer, its ledger row, the text its listener heard)."""
    ModelAlias.objects.filter(alias=ada.model_alias).update(max_output_tokens=1024)
    point_at_stub(stub, model, ada.model_alias)
    session = make_session(owner, agent=ada)
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=1, backoff_seconds=0)
    outcome, heard = direct_turn(owner, session, gateway, listen=streamed)
    deltas = streamed_text(heard)
    answer = Message.objects.get(turn=outcome.turn, role="assistant")
    return outcome.turn, answer, LlmCallEvent.objects.get(turn=outcome.turn), deltas


STUB_ANSWER = "Stub answer to «Hello there, friend»: one two three four five six"


@pytest.mark.django_db
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", ["huge-usage", "text-usage", "over-cached"])
def test_usage_no_call_can_have_used_is_metered_on_an_estimate(
    owner, ada, make_session, stub, monkeypatch, caplog, model, streamed
):
    """Usage of 10^15 tokens was capped at 500,000,000 each and billed: 67,500 credits for one
    call. Counts that are text made litellm refuse the reply: plain, a provider_error retried
    and metered at 0 though the provider had answered; streamed, the answer an error. Five
    times the prompt cached was metered as no fresh input and all of that cached."""
    monkeypatch.setenv("STUB_API_KEY", "sk-x")

    turn, answer, row, deltas = stub_turn(owner, ada, make_session, stub, model, streamed=streamed)

    assert turn.status == "completed"
    assert (answer.status, answer.error_code, answer.content) == ("ok", "", STUB_ANSWER)
    assert (row.status, row.error_type, row.attempts) == ("success", "", 1)
    # An estimate of the prompt and the answer, as for a reply without usage.
    assert 0 < row.input_tokens_fresh < 1000 and row.input_tokens_cached == 0
    assert 0 < row.output_tokens <= 1024
    assert 0 < row.credits < Decimal("0.1") and turn.credits == row.credits
    assert deltas == (STUB_ANSWER if streamed else "")
    assert "metered on an estimate" in caplog.text


@pytest.mark.django_db
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_reply_that_finished_with_no_text_is_a_provider_error(
    owner, ada, make_session, stub, monkeypatch, streamed
):
    """`content: null` and `finish_reason: "stop"` (streamed: no text at all, then "stop") was
    stored as an empty answer, ok, and the turn completed."""
    monkeypatch.setenv("STUB_API_KEY", "sk-x")

    turn, answer, row, deltas = stub_turn(
        owner, ada, make_session, stub, "null-content", streamed=streamed
    )

    assert turn.status == "failed"
    assert (answer.status, answer.error_code, answer.content) == ("error", "provider_error", "")
    # Billed 12 output tokens for no answer: not asked again.
    assert (row.status, row.error_type, row.attempts) == ("error", "provider_error", 1)
    assert stub.requests == 1 and deltas == ""


def next_prompt(owner, session) -> list[tuple[str, str]]:
    """The prompt of the agent's call in the session's next turn: (role, content) a message."""
    gateway = FakeGateway()
    direct_turn(owner, session, gateway, message="And now?", listen=False)
    return [(str(message.role), message.content) for message in gateway.calls[0].messages]


@pytest.mark.django_db
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", ["tool-calls", "empty-content"])
def test_a_turn_whose_provider_answered_no_text_fails_and_leaves_no_empty_answer_behind(
    owner, ada, make_session, stub, monkeypatch, model, streamed
):
    """The answer was stored ok and empty, the turn completed, its row a success; and every
    later prompt replayed it as `{"role": "assistant", "content": ""}`, which Anthropic-style
    APIs refuse."""
    monkeypatch.setenv("STUB_API_KEY", "sk-x")

    turn, answer, row, deltas = stub_turn(owner, ada, make_session, stub, model, streamed=streamed)

    assert turn.status == "failed"
    assert (answer.status, answer.error_code, answer.content) == ("error", "provider_error", "")
    assert (row.status, row.error_type, row.attempts) == ("error", "provider_error", 1)
    # What the provider reported (12 output tokens), as it bills them; not asked again.
    assert row.input_tokens_fresh > 0 and row.output_tokens == 12
    assert row.credits > 0 and turn.credits == row.credits
    assert stub.requests == 1 and deltas == ""
    prompt = next_prompt(owner, turn.session)
    assert prompt[1:] == [("user", "Hello there, friend"), ("user", "And now?")]


@pytest.mark.django_db
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    "model", ["null-content-finish-content_filter", "empty-content-finish-length"]
)
def test_an_empty_answer_is_kept_but_left_out_of_later_prompts(
    owner, ada, make_session, stub, monkeypatch, model, streamed
):
    """A provider that filtered its answer away, or ran out of tokens before its first word,
    gave an empty answer, ok; the next turn's prompt sent it back as an empty assistant
    message."""
    monkeypatch.setenv("STUB_API_KEY", "sk-x")

    turn, answer, row, deltas = stub_turn(owner, ada, make_session, stub, model, streamed=streamed)

    assert turn.status == "completed"
    assert (answer.status, answer.error_code, answer.content) == ("ok", "", "")
    assert (row.status, row.attempts) == ("success", 1)
    prompt = next_prompt(owner, turn.session)
    assert prompt[1:] == [("user", "Hello there, friend"), ("user", "And now?")]


@pytest.mark.django_db
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_5xx_is_retried_whatever_its_body_says(
    owner, ada, make_session, stub, monkeypatch, streamed
):
    """A 500 whose body said "invalid_request_error" is a BadRequestError to litellm: it was
    stored bad_request after one attempt, never retried."""
    monkeypatch.setenv("STUB_API_KEY", "sk-x")

    turn, answer, row, _ = stub_turn(
        owner, ada, make_session, stub, "http-500-invalid-request", streamed=streamed
    )

    assert turn.status == "failed"
    assert (answer.status, answer.error_code) == ("error", "provider_error")
    assert (row.status, row.error_type, row.attempts) == ("error", "provider_error", 2)
    assert stub.requests == 2
    assert (row.input_tokens_fresh, row.output_tokens, row.credits) == (0, 0, 0)


@pytest.mark.django_db
def test_a_stream_that_repeats_one_chunk_is_an_answer_as_it_is_plain(
    owner, ada, make_session, stub, monkeypatch
):
    """litellm failed a stream whose text repeated one chunk 100 times ("The model is repeating
    the same chunk"): stored error/provider_error with the first 504 characters, while the same
    answer not streamed was stored whole. The answer limit is what bounds a stream."""
    monkeypatch.setenv("STUB_API_KEY", "sk-x")
    model = "words-500-same-word"

    _, plain, _, _ = stub_turn(owner, ada, make_session, stub, model, streamed=False)
    turn, answer, row, deltas = stub_turn(owner, ada, make_session, stub, model, streamed=True)

    assert plain.content == " ".join(["word"] * 500)
    assert turn.status == "completed"
    assert (answer.status, answer.error_code, answer.content) == ("ok", "", plain.content)
    assert deltas == answer.content
    assert (row.status, row.attempts, row.output_tokens) == ("success", 1, 500)  # the stub's usage


# --- connections the provider drops ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_request_whose_connection_was_reset_is_an_attempt_on_the_ledger(
    owner, ada, make_session, stub, monkeypatch, streamed
):
    """A connection reset before the answer: litellm's HTTP handler sent the request again at
    once, on a new connection, behind the gateway's back: the provider got two requests and
    the ledger said one attempt. Now the gateway retries it, counted, after its backoff."""
    monkeypatch.setenv("STUB_API_KEY", "sk-x")

    turn, answer, row, _ = stub_turn(owner, ada, make_session, stub, "reset-1", streamed=streamed)

    assert turn.status == "completed" and answer.content == STUB_ANSWER
    assert (row.status, row.attempts, stub.requests) == ("success", 2, 2)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_provider_that_resets_every_connection_gets_one_request_an_attempt(stub, streamed):
    """It got six requests for three counted attempts, each attempt taking twice as long."""
    result, heard = call_stub(stub, "reset-100", streamed=streamed, retries=2)

    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 3)
    assert stub.requests == 3
    assert heard == [] and (result.input_tokens_fresh, result.output_tokens) == (0, 0)


# --- usage litellm counts itself -------------------------------------------------------------


def test_a_stream_with_no_answer_and_no_usage_is_metered_as_nothing(stub):
    """`choices: []`, then `[DONE]`, three times: litellm ends each stream with usage it counted
    itself (the prompt's tokens), which was billed as the provider's: 3 × 18 input tokens for a
    call that failed before its first word, with no usage reported."""
    result, heard = call_stub(stub, "empty-stream", streamed=True, retries=2)

    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 3)
    assert heard == [] and stub.requests == 3
    assert (result.input_tokens_fresh, result.input_tokens_cached, result.output_tokens) == (
        0,
        0,
        0,
    )


@pytest.mark.parametrize("model", ["no-usage", "no-usage-words-40", "no-usage-reasoning-5"])
def test_an_answer_without_usage_is_metered_alike_streamed_or_not(stub, model):
    """Streamed, it was metered on litellm's own count (18 in / 16 out for `no-usage`), plain on
    Pantheon's estimate (9 in / 25 out), which runs above a tokenizer's count on purpose."""
    plain, _ = call_stub(stub, model, streamed=False)
    streamed, _ = call_stub(stub, model, streamed=True)

    assert plain.text == streamed.text and streamed.status == "success"
    metered = [
        (r.input_tokens_fresh, r.input_tokens_cached, r.output_tokens) for r in (plain, streamed)
    ]
    assert metered[0] == metered[1] and metered[0][0] > 0


@pytest.mark.django_db
def test_a_streamed_turn_whose_provider_sent_nothing_costs_nothing(
    owner, ada, make_session, stub, monkeypatch
):
    """Its row was charged the input litellm counted for each attempt."""
    monkeypatch.setenv("STUB_API_KEY", "sk-x")

    turn, answer, row, _ = stub_turn(owner, ada, make_session, stub, "empty-stream", streamed=True)

    assert turn.status == "failed" and answer.error_code == "provider_error"
    assert (row.status, row.error_type, row.attempts) == ("error", "provider_error", 2)
    assert (row.input_tokens_fresh, row.output_tokens, row.provider_cost_usd, row.credits) == (
        0,
        0,
        0,
        0,
    )


# --- a provider that asks for a pause ----------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    "wait, pause", [("wait-1", 1.0), ("wait-ms-700", 0.7), ("wait-date-2", 1.0)]
)
def test_a_rate_limited_call_is_retried_once_its_provider_said_it_may(stub, streamed, wait, pause):
    """It was retried after the backoff (0 here), refused again at once. (An HTTP date counts
    whole seconds: 2 s ahead may be a little over 1 s.)"""
    started = time.monotonic()
    result, _ = call_stub(stub, f"limited-1-{wait}", streamed=streamed)

    assert (result.status, result.attempts, stub.requests) == ("success", 2, 2)
    assert time.monotonic() - started >= pause


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("wait", ["wait-45", "wait-date-45", "wait-ms-45000"])
def test_a_call_whose_provider_asks_a_longer_pause_than_it_waits_ends_at_once(stub, streamed, wait):
    """A 429 asking for 45 s (past the 30 s a call waits for its provider): was asked again
    right away as often as the retries allowed."""
    started = time.monotonic()
    result, _ = call_stub(stub, f"limited-9-{wait}", streamed=streamed, retries=2)

    assert (result.status, result.error_kind, result.attempts) == (
        "rate_limited",
        "rate_limited",
        1,
    )
    assert stub.requests == 1 and time.monotonic() - started < 5


@pytest.mark.django_db
def test_a_turn_whose_provider_asks_a_long_pause_records_one_attempt_rate_limited(
    owner, ada, make_session, stub, monkeypatch
):
    monkeypatch.setenv("STUB_API_KEY", "sk-x")

    turn, answer, row, _ = stub_turn(
        owner, ada, make_session, stub, "limited-9-wait-45", streamed=True
    )

    assert turn.status == "failed" and answer.error_code == "rate_limited"
    assert (row.status, row.error_type, row.attempts, row.credits) == (
        "rate_limited",
        "rate_limited",
        1,
        0,
    )
    assert stub.requests == 1
