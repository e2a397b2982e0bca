"""A stream litellm hands the gateway, once dropped, is finalized by whichever thread's garbage
collection finds it, in the middle of whatever that thread runs. Its finalizer set two context
variables there, and a `ContextVar.set` run from inside another one's allocation frees the
context's variables under it on CPython 3.11: a segmentation fault (CI crashed twice in a
database write of a turn whose stream had timed out, most likely so). It sets none now."""

import asyncio
import contextvars
import gc
import weakref

import pytest

from orchestration.litellm_loader import load_litellm


def test_a_stream_the_garbage_collector_finalizes_sets_no_context_variable():
    litellm = load_litellm()

    async def open_a_stream():
        return await litellm.acompletion(
            model="openai/stub",
            api_key="sk-x",
            messages=[{"role": "user", "content": "Hello there"}],
            mock_response="General Kenobi",
            stream=True,
        )

    def drop_a_stream() -> tuple[set, set, bool]:
        stream = asyncio.run(open_a_stream())
        # Found by the cyclic collector only, as a timed-out stream is (its traceback holds it).
        stream.cycle = stream
        collected = weakref.ref(stream)
        before = set(contextvars.copy_context())
        del stream
        gc.collect()
        return before, set(contextvars.copy_context()), collected() is None

    before, after, collected = contextvars.Context().run(drop_a_stream)

    assert collected
    assert after - before == set()


def test_a_streams_reply_is_rebuilt_on_the_event_loop(monkeypatch):
    """At a stream's end litellm rebuilds its whole reply from its chunks (the usage of the
    last chunk it hands on is read from it) in a worker thread: a trip there and back, and the
    event loop woken up by it, on every stream. It is rebuilt where the stream is read, and
    the stream hands on the same chunks."""
    import threading

    litellm = load_litellm()
    built_on: list[int] = []
    build = litellm.stream_chunk_builder

    def stream_chunk_builder(*args, **kwargs):
        built_on.append(threading.get_ident())
        return build(*args, **kwargs)

    monkeypatch.setattr(litellm, "stream_chunk_builder", stream_chunk_builder)

    text, usage, loop_thread = asyncio.run(
        _read_mock_stream(litellm, "General Kenobi, you are a bold one")
    )
    assert text == "General Kenobi, you are a bold one"
    assert usage.prompt_tokens > 0 and usage.completion_tokens == 9
    assert built_on and set(built_on) == {loop_thread}


def test_litellms_usage_chunk_is_the_last_thing_its_stream_hands_on():
    """The gateway stops reading a stream once litellm's wrapper says it handed on its usage
    (`sent_stream_usage`): a litellm that hands anything on after it (more text, another
    usage) fails here, before an answer is cut short."""
    litellm = load_litellm()

    async def read() -> list[tuple[bool, object, object]]:
        stream = await litellm.acompletion(
            model="openai/stub",
            api_key="sk-x",
            messages=[{"role": "user", "content": "Hello there"}],
            mock_response="General Kenobi, you are a bold one",
            stream=True,
            stream_options={"include_usage": True},
        )
        seen = []
        async for chunk in stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            seen.append(
                (
                    stream.sent_stream_usage,
                    getattr(chunk, "usage", None),
                    getattr(delta, "content", None),
                )
            )
        return seen

    seen = asyncio.run(read())
    assert [sent for sent, _, _ in seen].count(True) == 1
    assert seen[-1][0] is True and seen[-1][1] is not None and not seen[-1][2]
    assert all(usage is None for _, usage, _ in seen[:-1])


def test_a_long_streams_reply_is_rebuilt_off_the_event_loop(monkeypatch):
    """Rebuilt on the event loop, the reply of a long stream (a reasoning model's tens of
    thousands of chunks) held the loop for seconds: every other answer streaming through that
    worker froze meanwhile. A long stream's reply is rebuilt in a worker thread, as litellm
    does; the stream hands on the same answer and usage."""
    import threading

    from orchestration.litellm_loader import BUILT_IN_PLACE_CHUNKS

    litellm = load_litellm()
    built_on: list[tuple[int, int]] = []
    build = litellm.stream_chunk_builder

    def stream_chunk_builder(*args, **kwargs):
        built_on.append((threading.get_ident(), len(kwargs["chunks"])))
        return build(*args, **kwargs)

    monkeypatch.setattr(litellm, "stream_chunk_builder", stream_chunk_builder)
    words = ["word"] * (BUILT_IN_PLACE_CHUNKS + 10)

    text, usage, loop_thread = asyncio.run(_read_mock_stream(litellm, " ".join(words)))
    assert text == " ".join(words)
    assert usage.completion_tokens > BUILT_IN_PLACE_CHUNKS  # litellm's count of the words
    assert built_on and all(chunks > BUILT_IN_PLACE_CHUNKS for _, chunks in built_on)
    assert loop_thread not in {thread for thread, _ in built_on}


async def _read_mock_stream(litellm, answer: str) -> tuple[str, object, int]:
    """A stream of litellm's mock answering `answer`, read to its end: (its text, the last
    usage it handed on, the thread of the event loop that read it)."""
    import threading

    stream = await litellm.acompletion(
        model="openai/stub",
        api_key="sk-x",
        messages=[{"role": "user", "content": "Hello there"}],
        mock_response=answer,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = getattr(chunk, "usage", None) or usage
    return "".join(pieces), usage, threading.get_ident()


def _chunks_with_usage(litellm, words: list[str]) -> list:
    from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices

    chunks = [
        ModelResponseStream(
            id="chatcmpl-1",
            model="stub",
            choices=[StreamingChoices(index=0, delta=Delta(content=word, role="assistant"))],
        )
        for word in words
    ]
    chunks.append(
        ModelResponseStream(
            id="chatcmpl-1",
            model="stub",
            choices=[StreamingChoices(index=0, delta=Delta(), finish_reason="stop")],
        )
    )
    last = ModelResponseStream(id="chatcmpl-1", model="stub", choices=[])
    last.usage = litellm.Usage(prompt_tokens=41, completion_tokens=len(words), total_tokens=0)
    last.usage.speed = "fast"
    chunks.append(last)
    return chunks


def test_a_streams_usage_is_counted_looking_at_each_chunk_once(monkeypatch):
    """litellm looked for each chunk's usage three times while counting a stream's usage (for
    its counts, then for each of two pricing fields): once now, and the reply rebuilt from the
    chunks has the usage the provider reported, with its pricing field."""
    litellm = load_litellm()
    from litellm.litellm_core_utils.streaming_chunk_builder_utils import ChunkProcessor

    looked_at: list[int] = []
    extract = ChunkProcessor._extract_usage_chunk

    def extract_usage_chunk(chunk):
        looked_at.append(id(chunk))
        return extract(chunk)

    monkeypatch.setattr(ChunkProcessor, "_extract_usage_chunk", staticmethod(extract_usage_chunk))
    words = ["General", " Kenobi", ",", " you", " are", " a", " bold", " one"]
    chunks = _chunks_with_usage(litellm, words)

    reply = litellm.stream_chunk_builder(chunks=chunks, messages=[])
    assert reply.choices[0].message.content == "".join(words)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (41, len(words))
    assert sorted(looked_at) == sorted(id(chunk) for chunk in chunks)

    processor = ChunkProcessor(chunks=chunks, messages=[])
    counted = processor._calculate_usage_per_chunk(chunks)
    assert (counted["prompt_tokens"], counted["completion_tokens"]) == (41, len(words))
    assert counted["speed"] == "fast" and counted["inference_geo"] is None
    assert "_extract_usage_chunk" not in vars(processor)


def test_a_chunk_changed_between_two_counts_is_counted_as_it_is_then():
    """Each count looks for the chunks' usage afresh: a usage set on a chunk after one count
    is found by the next."""
    litellm = load_litellm()
    from litellm.litellm_core_utils.streaming_chunk_builder_utils import ChunkProcessor

    chunks = _chunks_with_usage(litellm, ["one", " two"])
    processor = ChunkProcessor(chunks=chunks, messages=[])
    assert processor._calculate_usage_per_chunk(chunks)["prompt_tokens"] == 41
    chunks[-1].usage = litellm.Usage(prompt_tokens=50, completion_tokens=2, total_tokens=52)
    counted = processor._calculate_usage_per_chunk(chunks)
    assert counted["prompt_tokens"] == 50 and counted["speed"] is None


def test_a_stream_repeating_one_chunk_is_not_checked_for_it_while_that_check_is_off(
    monkeypatch,
):
    """litellm's check for a stream repeating one chunk is set out of its reach (the gateway's
    answer limit bounds a stream): it is not made on each chunk, and the stream is read whole."""
    litellm = load_litellm()
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    check = CustomStreamWrapper.raise_on_model_repetition
    counts: list[int] = []

    def counting_check(self):
        counts.append(self._repeated_messages_count)
        return check(self)

    monkeypatch.setattr(CustomStreamWrapper, "raise_on_model_repetition", counting_check)
    answer = "abc" * 150  # litellm's mock streams it 3 characters a chunk: "abc" 150 times
    text, _, _ = asyncio.run(_read_mock_stream(litellm, answer))
    assert text == answer
    assert len(counts) >= 150 and set(counts) == {1}  # not one repeat counted


def test_a_lower_repetition_limit_fails_a_repeating_stream_as_litellm_does(monkeypatch):
    """With litellm's repetition limit set within reach, its check is made on every chunk and
    fails a stream repeating one chunk that often, as litellm did."""
    litellm = load_litellm()
    monkeypatch.setattr(litellm, "REPEATED_STREAMING_CHUNK_LIMIT", 5)

    # (litellm wraps it for its router: `MidStreamFallbackError`, which the gateway unwraps)
    with pytest.raises(litellm.exceptions.MidStreamFallbackError, match="repeating the same chunk"):
        asyncio.run(_read_mock_stream(litellm, "abc" * 20))
    text, _, _ = asyncio.run(_read_mock_stream(litellm, "one two three four five six seven"))
    assert text == "one two three four five six seven"
