"""A reasoning model (DeepSeek's reasoner, say) streams its reasoning before its answer
(`reasoning_content`, no text); the stub plays one (`reasoning-<n>` in its model name). The
reasoning is neither shown nor stored, but it is the provider at work: it keeps the turn from
being taken for a dead one, and it does not use up the chunks its answer may take."""

import asyncio

import pytest

from orchestration import gateway as gateway_module
from orchestration.gateway import AnswerLimit, LiteLLMGateway
from orchestration.types import AliasConfig, ChatMessage, LlmCall
from sessions_app.tests.conftest import wait_for

MESSAGES = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there, friend"))
# The stub's answer to MESSAGES: twelve words.
ANSWER = "Stub answer to «Hello there, friend»: one two three four five six"


def call_stub(stub, model: str, *, streamed: bool, max_output_tokens: int = 1024):
    """The stub's answer through the gateway: (result, the text pieces heard, how many chunks
    of reasoning were heard)."""
    alias = AliasConfig(
        alias="stubbed",
        litellm_model=f"openai/{model}",
        api_base=stub.base_url,
        api_key="sk-x",
        max_output_tokens=max_output_tokens,
    )
    call = LlmCall(alias=alias, messages=MESSAGES, purpose="agent", agent_key="ada")
    gateway = LiteLLMGateway(timeout_seconds=5.0, max_retries=0)
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
