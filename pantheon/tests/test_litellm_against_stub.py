"""A call through the gateway and litellm against an OpenAI-compatible provider
(`pantheon.testing.stub_llm`), with litellm's per-call bookkeeping made cheaper by
`orchestration.litellm_loader`: its answer, its usage as the provider said it, its price, its
errors mapped to litellm's kinds, its retries, its timeout, the API base litellm notes."""

import asyncio

import httpx
import pytest

from orchestration.gateway import LiteLLMGateway
from orchestration.litellm_loader import load_litellm
from orchestration.types import (
    CallStatus,
    ChatMessage,
    ErrorKind,
    LlmCall,
    Role,
)
from pantheon.testing.stub_llm import StubLLM, stub_call

PROMPT = "Tell me about the weather in the hills today"


MESSAGES = (ChatMessage(Role.SYSTEM, "You are terse."), ChatMessage(Role.USER, PROMPT))


def a_call(stub: StubLLM, model: str) -> LlmCall:
    return stub_call(stub, model, MESSAGES, agent_key="a", context_window=32768)


def said_by_the_provider(stub: StubLLM, model: str) -> tuple[str, dict]:
    """The stub's own answer and usage for the call, read without litellm."""
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": PROMPT},
        ],
    }
    reply = httpx.post(f"{stub.base_url}/chat/completions", json=body, timeout=10).json()
    return reply["choices"][0]["message"]["content"], reply["usage"]


def run(coroutine):
    return asyncio.run(coroutine)


async def no_sleep(seconds: float) -> None:
    return None


@pytest.mark.parametrize("streamed", [False, True])
def test_a_call_through_litellm_reads_the_providers_answer_usage_and_price(stub, streamed):
    model = "gpt-4o-mini"  # in litellm's price table: the call is priced
    text, usage = said_by_the_provider(stub, model)
    gateway = LiteLLMGateway(timeout_seconds=10, max_retries=0)
    call = a_call(stub, model)
    pieces: list[str] = []
    if streamed:
        result = run(gateway.stream(call, pieces.append))
        assert "".join(pieces) == text
    else:
        result = run(gateway.complete(call))
    assert result.status == CallStatus.SUCCESS
    assert result.text == text
    assert result.input_tokens_fresh + result.input_tokens_cached == usage["prompt_tokens"]
    assert result.output_tokens == usage["completion_tokens"]
    assert result.attempts == 1
    assert result.provider_cost_usd is not None and result.provider_cost_usd > 0


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("http-400", ErrorKind.CONTEXT_WINDOW_EXCEEDED),
        ("http-401", ErrorKind.BAD_REQUEST),
        ("http-503", ErrorKind.PROVIDER_ERROR),
        ("not-json", ErrorKind.PROVIDER_ERROR),
    ],
)
def test_a_providers_error_is_mapped_to_its_kind(stub, model, kind):
    gateway = LiteLLMGateway(timeout_seconds=10, max_retries=0)
    result = run(gateway.complete(a_call(stub, model)))
    assert result.status != CallStatus.SUCCESS
    assert result.error_kind == kind


def test_a_rate_limited_call_is_retried_and_answered(stub):
    gateway = LiteLLMGateway(timeout_seconds=10, max_retries=2, sleep=no_sleep)
    result = run(gateway.complete(a_call(stub, "limited-1-calls-retried")))
    assert result.status == CallStatus.SUCCESS
    assert result.attempts == 2


def test_a_call_slower_than_its_timeout_times_out(stub):
    gateway = LiteLLMGateway(timeout_seconds=0.3, max_retries=0)
    result = run(gateway.complete(a_call(stub, "slow-3000")))
    assert result.status == CallStatus.TIMEOUT
    assert result.error_kind == ErrorKind.TIMEOUT


def test_the_api_base_noted_on_a_reply_is_the_one_given_without_validating_the_call(
    stub, monkeypatch
):
    """litellm validated all of a call's arguments into a `LiteLLM_Params` after its reply
    to read back the API base it was given (about 20 us); it reads it from them."""
    litellm = load_litellm()
    from litellm.litellm_core_utils.llm_response_utils import get_api_base

    built: list[dict] = []
    params = get_api_base.LiteLLM_Params

    class Counted(params):  # type: ignore[misc,valid-type]
        def __init__(self, **values):
            built.append(values)
            super().__init__(**values)

    monkeypatch.setattr(get_api_base, "LiteLLM_Params", Counted)

    async def call():
        return await litellm.acompletion(
            model="openai/gpt-4o-mini",
            api_base=stub.base_url,
            api_key="stub-key",
            messages=[{"role": "user", "content": PROMPT}],
        )

    reply = run(call())
    assert reply._hidden_params["api_base"] == stub.base_url
    assert built == []
