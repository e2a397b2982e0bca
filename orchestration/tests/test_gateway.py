import asyncio
import logging
import re
from decimal import Decimal
from unittest.mock import ANY

import httpx
import pytest

from orchestration import gateway as gateway_module
from orchestration.budget import estimate_tokens
from orchestration.gateway import (
    CallTally,
    LiteLLMGateway,
    answer_tokens_at_most,
    classify_error,
)
from orchestration.litellm_loader import load_litellm
from orchestration.tests.conftest import Sleeps, complete
from orchestration.types import AliasConfig, ChatMessage, LlmCall

litellm = load_litellm()

GROQ = AliasConfig(
    alias="deepseek",
    litellm_model="groq/deepseek-r1-distill-llama-70b",
    api_base="https://groq.example/v1",
    api_key="sk-secret-123",
    max_output_tokens=512,
)
CALL = LlmCall(
    alias=GROQ,
    messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hello")),
    purpose="agent",
    agent_key="ada",
)


def reply(text="Hi!", *, model="groq/deepseek-r1-distill-llama-70b", **usage):
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110, **usage}
    return litellm.ModelResponse(
        model=model,
        choices=[
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        usage=usage,
    )


def rate_limit():
    return litellm.RateLimitError(message="slow down", llm_provider="groq", model="m")


def bad_request():
    return litellm.BadRequestError(message="bad", model="m", llm_provider="groq")


def timeout():
    return litellm.Timeout(message="too slow", model="m", llm_provider="groq")


def context_window():
    return litellm.ContextWindowExceededError(message="too long", model="m", llm_provider="groq")


def service_unavailable():
    return litellm.ServiceUnavailableError(message="down", llm_provider="groq", model="m")


def connection_error():
    return litellm.APIConnectionError(message="reset", llm_provider="groq", model="m")


def mid_stream(original):
    return litellm.exceptions.MidStreamFallbackError(
        message="stream failed", model="m", llm_provider="groq", original_exception=original
    )


def self_wrapped():
    error = mid_stream(None)
    error.original_exception = error
    return error


def with_status(error, status):
    """`error` as litellm raises it for a reply of that HTTP status: a 500 whose body says
    "invalid_request_error" is a BadRequestError, its status_code the provider's."""
    error.status_code = status
    return error


def some_response(status):
    return httpx.Response(status, request=httpx.Request("POST", "https://groq.example/v1"))


class ScriptedCompletion:
    """Stands in for litellm.acompletion: raises or returns the scripted outcomes in order."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls: list[dict] = []

    async def __call__(self, **kwargs):
        self.calls.append(kwargs)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def gateway(sleeps):
    return LiteLLMGateway(timeout_seconds=12.5, max_retries=2, sleep=sleeps)


def script(monkeypatch, *outcomes) -> ScriptedCompletion:
    scripted = ScriptedCompletion(*outcomes)
    monkeypatch.setattr(litellm, "acompletion", scripted)
    return scripted


def test_success_sends_the_alias_and_disables_hidden_retries(monkeypatch, gateway):
    scripted = script(monkeypatch, reply("Hi there"))
    result = complete(gateway, CALL)
    assert result.ok
    assert result.text == "Hi there"
    assert scripted.calls == [
        {
            "model": "groq/deepseek-r1-distill-llama-70b",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello"},
            ],
            "api_base": "https://groq.example/v1",
            "api_key": "sk-secret-123",
            "timeout": 12.5,
            "max_tokens": 512,
            "max_retries": 0,
            "num_retries": 0,
            "logger_fn": ANY,  # sees the provider's body (`_complete`)
        }
    ]
    assert result.provider == "groq"
    assert result.provider_model == "groq/deepseek-r1-distill-llama-70b"
    assert result.attempts == 1


def test_cached_tokens_missing_means_all_input_is_fresh(monkeypatch, gateway):
    script(monkeypatch, reply())
    result = complete(gateway, CALL)
    assert (result.input_tokens_fresh, result.input_tokens_cached, result.output_tokens) == (
        100,
        0,
        10,
    )


def test_cached_tokens_are_split_from_fresh(monkeypatch, gateway):
    script(monkeypatch, reply(prompt_tokens_details={"cached_tokens": 40}))
    result = complete(gateway, CALL)
    assert (result.input_tokens_fresh, result.input_tokens_cached) == (60, 40)


def test_anthropic_style_cache_reads_count_as_cached(monkeypatch, gateway):
    script(monkeypatch, reply(cache_read_input_tokens=30))
    result = complete(gateway, CALL)
    assert (result.input_tokens_fresh, result.input_tokens_cached) == (70, 30)


def test_a_prompt_wholly_cached_is_all_cached(monkeypatch, gateway):
    script(monkeypatch, reply(prompt_tokens_details={"cached_tokens": 100}))
    result = complete(gateway, CALL)
    assert (result.input_tokens_fresh, result.input_tokens_cached) == (0, 100)


def test_rate_limit_is_retried_then_succeeds(monkeypatch, gateway, sleeps):
    scripted = script(monkeypatch, rate_limit(), reply("ok"))
    result = complete(gateway, CALL)
    assert result.ok
    assert result.text == "ok"
    assert result.attempts == 2
    assert len(scripted.calls) == 2
    assert sleeps == [0.5]


def test_retries_are_bounded_and_back_off_exponentially(monkeypatch, sleeps):
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=3, backoff_seconds=0.25, sleep=sleeps)
    script(monkeypatch, *[service_unavailable() for _ in range(4)])
    result = complete(gateway, CALL)
    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 4)
    assert sleeps == [0.25, 0.5, 1.0]


def test_last_failure_is_the_one_reported(monkeypatch, gateway):
    script(monkeypatch, service_unavailable(), rate_limit(), rate_limit())
    result = complete(gateway, CALL)
    assert (result.status, result.error_kind, result.attempts) == (
        "rate_limited",
        "rate_limited",
        3,
    )


def test_retry_stops_at_a_non_retryable_error(monkeypatch, gateway):
    script(monkeypatch, connection_error(), bad_request())
    result = complete(gateway, CALL)
    assert (result.status, result.error_kind, result.attempts) == ("error", "bad_request", 2)


def test_bad_request_is_not_retried(monkeypatch, gateway, sleeps):
    scripted = script(monkeypatch, bad_request())
    result = complete(gateway, CALL)
    assert (result.status, result.error_kind, result.attempts) == ("error", "bad_request", 1)
    assert len(scripted.calls) == 1
    assert sleeps == []
    assert result.text == ""
    assert result.input_tokens_fresh == result.output_tokens == 0


def test_timeout_is_not_retried(monkeypatch, gateway, sleeps):
    script(monkeypatch, timeout())
    result = complete(gateway, CALL)
    assert (result.status, result.error_kind, result.attempts) == ("timeout", "timeout", 1)
    assert sleeps == []


def test_context_window_exceeded(monkeypatch, gateway):
    script(monkeypatch, context_window())
    result = complete(gateway, CALL)
    assert (result.status, result.error_kind, result.attempts) == (
        "error",
        "context_window_exceeded",
        1,
    )


def test_unexpected_exception_becomes_a_provider_error(monkeypatch, gateway):
    script(monkeypatch, ValueError("weird"))
    result = complete(gateway, CALL)
    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 1)
    assert "weird" in result.error_message


def test_error_message_is_short_and_hides_the_key(monkeypatch, gateway):
    script(
        monkeypatch,
        litellm.AuthenticationError(
            message="invalid key sk-secret-123 " + "x" * 1000, llm_provider="groq", model="m"
        ),
    )
    result = complete(gateway, CALL)
    assert result.error_kind == "bad_request"
    assert "sk-secret-123" not in result.error_message
    assert "***" in result.error_message
    assert len(result.error_message) <= 300


def test_error_message_writes_control_characters_as_escapes(monkeypatch, gateway):
    """The provider's words go to the operator's log: a terminal escape (which would clear or
    recolour the operator's terminal under the readable LOG_FORMAT), a NUL from a body that is
    not UTF-8, or a right-to-left override (which reorders what the line seems to say) is
    written as its escape, visible and inert."""
    hostile = "\x1b[2J\x1b[31mfake\x00 ok \u202etxt.exe"
    script(monkeypatch, litellm.BadRequestError(message=hostile, llm_provider="groq", model="m"))
    result = complete(gateway, CALL)
    assert result.error_kind == "bad_request"
    assert "\\x1b[2J\\x1b[31mfake\\x00 ok \\u202etxt.exe" in result.error_message
    assert result.error_message.isprintable()


def test_latency_covers_every_attempt(monkeypatch, caplog):
    """The call's latency is all its attempts' and the waits between; the retry's line says
    how long the attempt that failed took (it said only that it failed)."""
    # The call's start, the first attempt's start and failure, the second's start, the end.
    ticks = iter([10.0, 10.0, 10.25, 10.5, 10.75])
    gateway = LiteLLMGateway(
        timeout_seconds=5, max_retries=1, sleep=Sleeps(), clock=lambda: next(ticks)
    )
    script(monkeypatch, rate_limit(), reply())
    with caplog.at_level(logging.INFO, logger="orchestration.gateway"):
        assert complete(gateway, CALL).latency_ms == 750
    line, answered = caplog.records
    assert line.getMessage().startswith(
        "LLM call agent/ada for deepseek: attempt 1 failed (rate_limited, HTTP 429) in 250 ms, "
        "retry 1 of 1 in 0.50s: RateLimitError: litellm.RateLimitError: slow down"
    )
    assert (line.attempt, line.duration_ms, line.provider_status) == (1, 250, 429)
    # And whether the retry got an answer: the retry's line was the call's last word.
    assert answered.getMessage() == (
        "LLM call agent/ada for deepseek answered at attempt 2 in 750 ms in all"
    )
    assert (answered.attempts, answered.duration_ms) == (2, 750)


def test_zero_retries_means_one_attempt(monkeypatch, sleeps):
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=0, sleep=sleeps)
    script(monkeypatch, rate_limit())
    result = complete(gateway, CALL)
    assert (result.status, result.attempts, sleeps) == ("rate_limited", 1, [])


def test_cost_comes_from_litellm_for_a_known_model(monkeypatch, gateway):
    openai = AliasConfig(alias="premium", litellm_model="gpt-4o", api_key="sk-x")
    real_completion = litellm.acompletion

    async def mocked(**kwargs):
        return await real_completion(mock_response="Sure.", **kwargs)

    monkeypatch.setattr(litellm, "acompletion", mocked)
    result = complete(gateway, LlmCall(alias=openai, messages=CALL.messages, purpose="agent"))
    assert result.ok
    assert result.text == "Sure."
    assert result.provider == "openai"
    assert isinstance(result.provider_cost_usd, Decimal)
    assert result.provider_cost_usd > 0
    expected = litellm.completion_cost(
        completion_response=reply(
            model="gpt-4o",
            prompt_tokens=result.input_tokens_fresh,
            completion_tokens=result.output_tokens,
        )
    )
    # The same price as litellm's own calculator, computed exactly from its table (litellm's
    # float carries binary noise in the last digits).
    assert abs(result.provider_cost_usd - Decimal(str(expected))) < Decimal("1E-15")
    entry = litellm.model_cost["gpt-4o"]
    assert result.provider_cost_usd == result.input_tokens_fresh * Decimal(
        str(entry["input_cost_per_token"])
    ) + result.output_tokens * Decimal(str(entry["output_cost_per_token"]))


def test_litellm_prices_and_logs_no_call_of_its_own(monkeypatch, gateway):
    """The gateway prices a call once, from litellm's table; litellm's own pricing of it (for
    the reply's hidden parameters and its success log) and its success logging are not run,
    nor scheduled."""
    from litellm.litellm_core_utils.litellm_logging import Logging

    priced, logged = [], []
    monkeypatch.setattr(litellm, "response_cost_calculator", lambda **kw: priced.append(kw))
    body = Logging._async_success_handler_body

    async def logging(self, *args, **kwargs):
        logged.append(args)
        return await body(self, *args, **kwargs)

    monkeypatch.setattr(Logging, "_async_success_handler_body", logging)
    # Nor is a task scheduled after the call to run its (silenced) async success handler.
    scheduled = []
    helper = litellm.utils._client_async_logging_helper

    def scheduling(**kwargs):
        scheduled.append(kwargs)
        return helper(**kwargs)

    monkeypatch.setattr(litellm.utils, "_client_async_logging_helper", scheduling)
    real_completion = litellm.acompletion

    async def mocked(**kwargs):
        return await real_completion(mock_response="Sure.", **kwargs)

    monkeypatch.setattr(litellm, "acompletion", mocked)
    openai = AliasConfig(alias="premium", litellm_model="gpt-4o", api_key="sk-x")

    async def call_then_let_litellm_log():
        result = await gateway.complete(
            LlmCall(alias=openai, messages=CALL.messages, purpose="agent")
        )
        for _ in range(20):  # litellm logs from a task of its own, after the call returns
            await asyncio.sleep(0.01)
        return result

    result = asyncio.run(call_then_let_litellm_log())
    assert result.ok and result.provider_cost_usd > 0
    assert priced == []
    assert logged == []
    assert scheduled == []


def test_cost_is_none_for_a_model_litellm_does_not_know(monkeypatch, gateway):
    local = AliasConfig(alias="local", litellm_model="openai/my-local-model", api_base="http://x")
    script(monkeypatch, reply(model="my-local-model"))
    result = complete(gateway, LlmCall(alias=local, messages=CALL.messages, purpose="agent"))
    assert result.ok
    assert result.provider_cost_usd is None
    assert result.provider == "openai"


def test_provider_falls_back_to_the_model_prefix(monkeypatch, gateway):
    odd = AliasConfig(alias="odd", litellm_model="nosuchprovider/model-x")
    script(monkeypatch, reply())
    assert (
        complete(gateway, LlmCall(alias=odd, messages=CALL.messages, purpose="agent")).provider
        == "nosuchprovider"
    )
    bare = AliasConfig(alias="bare", litellm_model="model-without-prefix")
    script(monkeypatch, reply())
    assert (
        complete(gateway, LlmCall(alias=bare, messages=CALL.messages, purpose="agent")).provider
        == "unknown"
    )


def test_demo_mode_never_sends_the_alias_key_or_base(monkeypatch):
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=0, demo=True)
    real_completion = litellm.acompletion
    seen = []

    async def spy(**kwargs):
        seen.append(kwargs)
        return await real_completion(**kwargs)

    monkeypatch.setattr(litellm, "acompletion", spy)
    result = complete(gateway, CALL)
    assert result.ok
    assert seen[0]["model"] == "pantheon_demo/deepseek"
    assert seen[0]["api_key"] is None and seen[0]["api_base"] is None


@pytest.mark.parametrize(
    ("make_error", "expected"),
    [
        (timeout, ("timeout", "timeout", False)),
        (rate_limit, ("rate_limited", "rate_limited", True)),
        (context_window, ("error", "context_window_exceeded", False)),
        (bad_request, ("error", "bad_request", False)),
        (
            lambda: litellm.AuthenticationError(message="no", llm_provider="p", model="m"),
            ("error", "bad_request", False),
        ),
        (
            lambda: litellm.NotFoundError(message="no", model="m", llm_provider="p"),
            ("error", "bad_request", False),
        ),
        (
            lambda: litellm.PermissionDeniedError(
                message="no", llm_provider="p", model="m", response=some_response(403)
            ),
            ("error", "bad_request", False),
        ),
        (
            lambda: litellm.UnprocessableEntityError(
                message="no", model="m", llm_provider="p", response=some_response(422)
            ),
            ("error", "bad_request", False),
        ),
        (
            lambda: litellm.ContentPolicyViolationError(message="no", model="m", llm_provider="p"),
            ("error", "bad_request", False),
        ),
        (
            lambda: litellm.InternalServerError(message="x", llm_provider="p", model="m"),
            ("error", "provider_error", True),
        ),
        (service_unavailable, ("error", "provider_error", True)),
        (
            lambda: litellm.BadGatewayError(message="x", llm_provider="p", model="m"),
            ("error", "provider_error", True),
        ),
        (connection_error, ("error", "provider_error", True)),
        (
            lambda: litellm.APIError(status_code=503, message="x", llm_provider="p", model="m"),
            ("error", "provider_error", True),
        ),
        (
            lambda: litellm.APIError(status_code=400, message="x", llm_provider="p", model="m"),
            ("error", "bad_request", False),
        ),
        # The provider's status wins over the words litellm found in its body.
        (lambda: with_status(bad_request(), 500), ("error", "provider_error", True)),
        (lambda: with_status(context_window(), 503), ("error", "provider_error", True)),
        (lambda: with_status(rate_limit(), 502), ("error", "provider_error", True)),
        (lambda: mid_stream(with_status(bad_request(), 500)), ("error", "provider_error", True)),
        (lambda: with_status(bad_request(), 400), ("error", "bad_request", False)),
        (lambda: RuntimeError("boom"), ("error", "provider_error", False)),
        # What litellm raises while a stream is read: the error it wraps decides.
        (lambda: mid_stream(rate_limit()), ("rate_limited", "rate_limited", True)),
        (lambda: mid_stream(bad_request()), ("error", "bad_request", False)),
        (lambda: mid_stream(None), ("error", "provider_error", True)),
        # A raw error inside says less than the wrapper: still a retryable provider error.
        (lambda: mid_stream(httpx.RemoteProtocolError("cut")), ("error", "provider_error", True)),
        (lambda: mid_stream(mid_stream(rate_limit())), ("rate_limited", "rate_limited", True)),
        (lambda: self_wrapped(), ("error", "provider_error", True)),
    ],
)
def test_classify_error(make_error, expected):
    assert classify_error(make_error()) == expected


def test_a_stray_status_code_attribute_is_not_trusted():
    error = RuntimeError("boom")
    error.status_code = 503
    assert classify_error(error) == ("error", "provider_error", False)


def test_nul_characters_are_stripped_from_the_reply(monkeypatch, gateway):
    script(monkeypatch, reply("Hel\x00lo\x00"))
    result = complete(gateway, CALL)
    assert result.ok
    assert result.text == "Hello"


def test_lone_surrogates_become_replacement_characters(monkeypatch, gateway):
    script(monkeypatch, reply("cut \ud83d off"))
    result = complete(gateway, CALL)
    assert result.text == "cut ? off"
    result.text.encode("utf-8")  # storable


def test_an_answer_past_its_estimate_limit_is_cut_there(monkeypatch, gateway):
    """A provider that ignores max_tokens (512) answering 10,000 Chinese characters: 8,192 were
    kept (16 characters a token asked for), estimated at 16,384 tokens, past what a turn counts
    an answer at before it is given (`answer_tokens_at_most`: 2,560 then, 5,120 now)."""
    script(monkeypatch, reply("中" * 10_000))
    result = complete(gateway, CALL)

    assert result.ok and result.text == "中" * 2560
    assert estimate_tokens(result.text) == answer_tokens_at_most(512) == 5120


def test_an_ascii_answer_is_still_cut_at_16_characters_a_token(monkeypatch, gateway):
    script(monkeypatch, reply("word " * 5000))
    result = complete(gateway, CALL)

    assert len(result.text) == 512 * 16


def raw_reply(text="Hi!", *, finish_reason="stop", **fields):
    """A reply as the provider's JSON has it (litellm's objects refuse some of what it may say)."""
    message = {"role": "assistant", "content": text}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}], **fields}


def tool_calls_reply(*, finish_reason="tool_calls", **fields):
    """A reply that calls a tool instead of answering (Pantheon offers its models none)."""
    answer = raw_reply(None, finish_reason=finish_reason, **fields)
    answer["choices"][0]["message"]["tool_calls"] = [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    ]
    return answer


def metered(result) -> tuple[int, int, int]:
    return result.input_tokens_fresh, result.input_tokens_cached, result.output_tokens


# CALL's alias: a window of 8,192 tokens, answers of up to 512 tokens and 32,768 of reasoning.
MOST_OUTPUT = 512 + 32_768
CACHED_50 = {"cached_tokens": 50}


@pytest.mark.parametrize(
    "usage",
    [
        # Was capped at 500,000,000 each and billed: 67,500 credits for a call at the floor.
        {"prompt_tokens": 10**12, "completion_tokens": 10**12},
        {"prompt_tokens": 8_193, "completion_tokens": 10},  # a prompt the window cannot hold
        {"prompt_tokens": 100, "completion_tokens": MOST_OUTPUT + 1},
        {"prompt_tokens": 100, "completion_tokens": 10, "cache_read_input_tokens": 10**9},
        # More of the prompt cached than the prompt held: was metered 0 fresh and 50 cached.
        {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": CACHED_50},
        {"prompt_tokens": 10, "completion_tokens": 3, "cache_read_input_tokens": 50},
        {"prompt_tokens": 100, "completion_tokens": -10},  # was billed as no output at all
        {"prompt_tokens": 100, "completion_tokens": "abc"},  # was billed as no output at all
        {"prompt_tokens": float("nan"), "completion_tokens": 10},  # was a provider_error
        {"prompt_tokens": True, "completion_tokens": 10},
    ],
)
def test_usage_no_call_of_the_alias_can_have_used_is_estimated(monkeypatch, gateway, usage, caplog):
    script(monkeypatch, raw_reply(), raw_reply(usage=usage))
    without_usage = complete(gateway, CALL)

    result = complete(gateway, CALL)

    assert (result.status, result.text, result.attempts) == ("success", "Hi!", 1)
    assert metered(result) == metered(without_usage) == (5, 0, 1)
    assert "LLM call agent/ada for deepseek reported usage it cannot have used" in caplog.text


def test_usage_up_to_what_a_call_of_the_alias_can_use_is_billed_as_reported(monkeypatch, gateway):
    """A whole window of prompt, all of it cached, and an answer of 512 tokens after 32,768 of
    reasoning (or a provider that ignored max_tokens): what the provider bills."""
    usage = {
        "prompt_tokens": 8_192,
        "completion_tokens": MOST_OUTPUT,
        "prompt_tokens_details": {"cached_tokens": 8_192},
    }
    script(monkeypatch, raw_reply(usage=usage))

    assert metered(complete(gateway, CALL)) == (0, 8_192, MOST_OUTPUT)


def test_an_alias_whose_window_is_larger_bills_longer_outputs(monkeypatch, gateway):
    wide = LlmCall(
        alias=AliasConfig(alias="wide", litellm_model="openai/wide", context_window=200_000),
        messages=CALL.messages,
        purpose="agent",
    )
    script(monkeypatch, raw_reply(usage={"prompt_tokens": 150_000, "completion_tokens": 180_000}))

    assert metered(complete(gateway, wide)) == (150_000, 0, 180_000)


@pytest.mark.parametrize(
    "answer",
    [
        raw_reply(None),  # content null
        raw_reply(""),
        raw_reply(None, finish_reason=None),  # litellm reads a missing finish as "stop"
        reply(None, completion_tokens=0),  # billed no output (billed output: not retried)
        # These were ok empty answers, billed, and replayed as empty messages in later prompts.
        tool_calls_reply(),
        tool_calls_reply(finish_reason="stop"),  # a reply that calls tools ended for them
    ],
)
def test_a_reply_without_text_is_no_answer(monkeypatch, gateway, answer):
    script(monkeypatch, answer, reply("Hi there"))

    result = complete(gateway, CALL)

    assert (result.status, result.text, result.attempts) == ("success", "Hi there", 2)


SPOKE = {"prompt_tokens": 40, "completion_tokens": 1000}


@pytest.mark.parametrize("answer", [raw_reply(None, usage=SPOKE), tool_calls_reply(usage=SPOKE)])
def test_a_reply_without_text_billed_for_output_is_not_asked_again(monkeypatch, gateway, answer):
    """The provider took the prompt, spoke (1,000 tokens with `content` null, or a tool call)
    and bills it: asked again it would spend as much for nothing, past what a capped user's
    turn holds for the call (it was asked three times, and billed three times, before)."""
    scripted = script(monkeypatch, answer, answer, answer)

    result = complete(gateway, CALL)

    assert (result.status, result.error_kind, result.attempts) == ("error", "provider_error", 1)
    assert metered(result) == (40, 0, 1000)
    assert len(scripted.calls) == 1


def test_a_reply_without_text_or_billed_output_is_asked_again(monkeypatch, gateway):
    """A reply with no answer and no output billed (a provider's glitch) costs only its
    prompt: it is retried, each reply's usage counted."""
    spent = {"prompt_tokens": 40, "completion_tokens": 0}
    script(monkeypatch, raw_reply(None, usage=spent), reply("Hi there"))

    result = complete(gateway, CALL)

    assert (result.status, result.text, result.attempts) == ("success", "Hi there", 2)


@pytest.mark.parametrize(
    "answer",
    [
        raw_reply(None, finish_reason="content_filter"),
        # The output limit ran out before any text (a reasoning model): asked again, it would
        # think the limit away again, billed again.
        raw_reply(None, finish_reason="length"),
        raw_reply("", finish_reason="length"),
    ],
)
def test_a_reply_filtered_away_or_cut_before_its_text_is_an_empty_answer(
    monkeypatch, gateway, answer
):
    script(monkeypatch, answer, reply("Hi there"))

    result = complete(gateway, CALL)

    assert (result.status, result.text, result.attempts) == ("success", "", 1)


# --- pauses a provider asks for (Retry-After) ------------------------------------------------


def asking(error, **headers):
    """`error` as litellm raises it for a reply with these headers (it keeps them on the error)."""
    error.litellm_response_headers = {
        name.replace("_", "-"): value for name, value in headers.items()
    }
    return error


def test_a_failed_calls_line_names_the_providers_request_id(monkeypatch, gateway, caplog):
    """What a provider's support asks for first: its id of the request. The line quoted the
    error's words alone, which hold it only when the provider writes it there."""
    failed = asking(bad_request(), x_request_id="req_8f3e2a91\x1b[2Jc0ffee " + "9" * 200)
    script(monkeypatch, failed)

    with caplog.at_level(logging.WARNING, logger="orchestration.gateway"):
        result = complete(gateway, CALL)

    assert result.error_kind == "bad_request"
    [record] = caplog.records
    line = record.getMessage()
    assert re.match(
        r"LLM call agent/ada for deepseek failed \(bad_request, HTTP 400\) after 1 attempt\(s\) "
        r"in \d+ ms \(provider request id req_8f3e2a91\[2Jc0ffee 999",
        line,
    )
    request_id = line.split("(provider request id ")[1].split(")")[0]
    assert len(request_id) == 100 and request_id.isprintable()
    # The same, as fields a JSON line carries (`jq 'select(.provider_request_id == ...)'`).
    assert record.provider_request_id == request_id
    assert (record.model_alias, record.llm_purpose, record.agent_key) == (
        "deepseek",
        "agent",
        "ada",
    )
    assert (record.attempts, record.error_kind, record.provider_status) == (1, "bad_request", 400)
    assert record.duration_ms == result.latency_ms


def test_a_failed_calls_line_without_a_request_id_says_none(monkeypatch, gateway, caplog):
    script(monkeypatch, bad_request())

    with caplog.at_level(logging.WARNING, logger="orchestration.gateway"):
        complete(gateway, CALL)

    [line] = caplog.messages
    assert re.fullmatch(
        r"LLM call agent/ada for deepseek failed \(bad_request, HTTP 400\) after 1 attempt\(s\) "
        r"in \d+ ms: BadRequestError: litellm.BadRequestError: bad",
        line,
    )


def test_a_key_the_provider_refuses_is_an_error_that_says_so(monkeypatch, gateway, caplog):
    """A rotated or revoked key fails every call of its alias: it was a WARNING like any
    user's bad request (`bad_request`), which no alert on errors hears, and said only
    "AuthenticationError" in the provider's words."""
    refused = litellm.AuthenticationError(
        message="Incorrect API key provided", llm_provider="openai", model="m"
    )
    script(monkeypatch, asking(refused, x_request_id="req_401"))
    calls = CallTally()
    monkeypatch.setattr(gateway_module, "CALLS", calls)

    with caplog.at_level(logging.WARNING, logger="orchestration.gateway"):
        result = complete(gateway, CALL)

    # The health check's figures count it (`pantheon.health`).
    figures = calls.figures()
    assert (figures["calls"], figures["failed"], figures["refused_key"]) == (1, 1, 1)
    assert figures["last_failure"]["provider_status"] == 401

    assert (result.error_kind, result.attempts) == ("bad_request", 1)
    [record] = caplog.records
    assert record.levelname == "ERROR"
    assert record.getMessage().startswith(
        "LLM call agent/ada for deepseek failed (bad_request, HTTP 401: the provider refused "
        "its key) after 1 attempt(s) in "
    )
    assert (record.provider_status, record.provider_request_id) == (401, "req_401")


def test_a_rate_limit_that_asks_a_pause_is_retried_after_it(monkeypatch, gateway, sleeps):
    """Was retried after 0.5 s, whatever the provider asked: refused again at once."""
    script(monkeypatch, asking(rate_limit(), retry_after="3"), reply("ok"))

    result = complete(gateway, CALL)

    assert (result.status, result.attempts, sleeps) == ("success", 2, [3.0])


def test_a_pause_past_what_a_call_waits_ends_it_at_once(monkeypatch, sleeps):
    """`Retry-After: 30` was retried after 0.3 s and 0.6 s, and the turn failed in about a
    second, three requests to a provider that had asked for half a minute."""
    gateway = LiteLLMGateway(
        timeout_seconds=5,
        max_retries=2,
        backoff_seconds=0.3,
        retry_after_max_seconds=20,
        sleep=sleeps,
    )
    scripted = script(monkeypatch, asking(rate_limit(), retry_after="30"), reply("ok"))

    result = complete(gateway, CALL)

    assert (result.status, result.error_kind, result.attempts) == (
        "rate_limited",
        "rate_limited",
        1,
    )
    assert sleeps == [] and len(scripted.calls) == 1
    assert (result.input_tokens_fresh, result.output_tokens) == (0, 0)


def test_the_pauses_a_call_waits_are_bounded_in_all(monkeypatch, sleeps):
    gateway = LiteLLMGateway(
        timeout_seconds=5, max_retries=3, retry_after_max_seconds=20, sleep=sleeps
    )
    script(monkeypatch, *[asking(rate_limit(), retry_after="8") for _ in range(3)], reply())

    result = complete(gateway, CALL)

    assert (result.status, result.attempts, sleeps) == ("rate_limited", 3, [8.0, 8.0])


@pytest.mark.parametrize(
    "headers, waited",
    [
        ({"retry_after_ms": "1500"}, 1.5),  # OpenAI's, before Retry-After
        ({"retry_after_ms": "1500", "retry_after": "9"}, 1.5),
        ({"Retry-After": "2.5"}, 2.5),  # any case
        ({"retry_after": "Sat, 05 Dec 2026 10:00:07 GMT"}, 7.0),  # a date, 7 s ahead
        ({"retry_after": "Sat, 05 Dec 2026 09:59:00 GMT"}, 0.5),  # a date past: the backoff
        ({"retry_after": "0.1"}, 0.5),  # shorter than the backoff: the backoff
        ({"retry_after": "soon"}, 0.5),  # unreadable: the backoff
        ({"retry_after": "-5"}, 0.5),
        ({"retry_after": "nan"}, 0.5),
    ],
)
def test_each_form_of_a_pause_is_read(monkeypatch, sleeps, headers, waited):
    now = 1796464800.0  # Sat, 05 Dec 2026 10:00:00 GMT
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=1, sleep=sleeps, wall_clock=lambda: now)
    script(monkeypatch, asking(rate_limit(), **headers), reply())

    result = complete(gateway, CALL)

    assert (result.status, result.attempts, sleeps) == ("success", 2, [waited])


def test_a_pause_asked_by_an_error_read_from_a_stream_is_honoured_too(monkeypatch, gateway, sleeps):
    """A 429 before a stream's first chunk comes wrapped (MidStreamFallbackError); a 503 may ask
    a pause as well."""
    script(
        monkeypatch,
        mid_stream(asking(rate_limit(), retry_after="4")),
        asking(service_unavailable(), retry_after="2"),
        reply(),
    )

    result = complete(gateway, CALL)

    assert (result.status, result.attempts, sleeps) == ("success", 3, [4.0, 2.0])


def test_a_stream_abandoned_after_its_first_words_is_metered_on_an_estimate(gateway):
    """Its turn was cancelled and its stream closed, so no usage came: the prompt and the text
    that reached the listener are estimated, as for a stream that failed after its first words,
    and priced from litellm's table."""
    text = " ".join(["word"] * 39)

    result = gateway.abandoned(CALL, text, latency_ms=1200)

    model = GROQ.litellm_model
    prompt = sum(estimate_tokens(message.content, model) for message in CALL.messages)
    assert (result.input_tokens_fresh, result.input_tokens_cached) == (prompt, 0)
    assert result.output_tokens == estimate_tokens(text, model) > 0
    assert (result.status, result.attempts, result.latency_ms) == ("error", 1, 1200)
    assert (result.provider, result.provider_model) == ("groq", model)
    openai = AliasConfig(alias="gpt", litellm_model="openai/gpt-4o", max_output_tokens=512)
    priced = gateway.abandoned(
        LlmCall(alias=openai, messages=CALL.messages, purpose="agent"), text, latency_ms=5
    )
    entry = litellm.model_cost["gpt-4o"]
    assert priced.provider_cost_usd == priced.input_tokens_fresh * Decimal(
        str(entry["input_cost_per_token"])
    ) + priced.output_tokens * Decimal(str(entry["output_cost_per_token"]))
    assert priced.provider_cost_usd > 0
    demo = LiteLLMGateway(timeout_seconds=5, max_retries=0, demo=True)
    assert demo.abandoned(CALL, text, latency_ms=5).provider == "pantheon_demo"


def test_a_models_provider_is_asked_of_litellm_once(monkeypatch, gateway):
    """litellm's `get_llm_provider` walks its provider lists: a model's provider does not change
    while the process runs, and every call of every turn asked it again."""
    from orchestration import gateway as gateway_module

    getattr(gateway_module._provider_of, "cache_clear", lambda: None)()  # a fresh start
    asked = []
    real = litellm.get_llm_provider

    def counting(model, *args, **kwargs):
        asked.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(litellm, "get_llm_provider", counting)
    script(monkeypatch, reply("one"), reply("two"))

    first, second = complete(gateway, CALL), complete(gateway, CALL)

    assert (first.provider, second.provider) == ("groq", "groq")
    assert asked == ["groq/deepseek-r1-distill-llama-70b"]
