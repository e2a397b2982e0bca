"""A streamed call against an OpenAI-compatible provider (the stub), read through litellm: the
answer, its usage and its request id as the provider gave them, and no work of litellm's past
the usage it ends the stream with. litellm's wrapper rebuilt the whole reply from its chunks
once more after that chunk, for its own success log and cache (Pantheon keeps neither), and
the gateway read on for it."""

import asyncio

from orchestration.gateway import LiteLLMGateway
from orchestration.litellm_loader import load_litellm
from orchestration.types import ChatMessage
from pantheon.testing.stub_llm import stub_call

PROMPT = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there, stub"))


def _stream(stub, model: str) -> tuple[list[str], object]:
    call = stub_call(stub, model, PROMPT, agent_key=None, context_window=32768)
    heard: list[str] = []
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=0, backoff_seconds=0)
    result = asyncio.run(gateway.stream(call, heard.append))
    return heard, result


def test_a_stream_is_read_to_its_usage_and_no_further(stub, monkeypatch):
    litellm = load_litellm()
    rebuilt = []
    build = litellm.stream_chunk_builder

    def stream_chunk_builder(*args, **kwargs):
        rebuilt.append(args or kwargs)
        return build(*args, **kwargs)

    monkeypatch.setattr(litellm, "stream_chunk_builder", stream_chunk_builder)

    heard, result = _stream(stub, "ok")

    answer = "Stub answer to «Hello there, stub»: one two three four five six"
    assert result.ok and "".join(heard) == result.text == answer
    # The stub's usage: a token each 4 characters of the prompt (and one), one each word.
    prompt = sum(len(message.content) for message in PROMPT) // 4 + 1
    assert (result.input_tokens_fresh, result.input_tokens_cached) == (prompt, 0)
    assert result.output_tokens == len(answer.split())
    assert result.request_id == stub.request_ids[-1]
    assert len(rebuilt) == 1  # 2 before: once more after the usage, for nothing


def test_a_stream_without_usage_is_still_read_to_its_end_and_estimated(stub):
    heard, result = _stream(stub, "no-usage")

    assert result.ok and "".join(heard) == result.text
    assert result.text.endswith("five six")
    assert result.input_tokens_fresh > 0 and result.output_tokens > 0  # an estimate


def test_a_stream_whose_usage_comes_before_its_last_words_is_read_whole(stub):
    """A provider may send its usage before the answer's last words and its finish: the gateway
    stops reading at the usage litellm hands on, which must be the one it ends the stream
    with, not the provider's as it comes (the answer would be cut after its first word)."""
    heard, result = _stream(stub, "early-usage")

    answer = "Stub answer to «Hello there, stub»: one two three four five six"
    assert result.ok and "".join(heard) == result.text == answer
    prompt = sum(len(message.content) for message in PROMPT) // 4 + 1
    assert (result.input_tokens_fresh, result.output_tokens) == (prompt, len(answer.split()))
    assert result.request_id == stub.request_ids[-1]
