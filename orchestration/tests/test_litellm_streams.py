"""A stream litellm hands the gateway, once dropped, is finalized by whichever thread's garbage
collection finds it, in the middle of whatever that thread runs. Its finalizer set two context
variables there, and a `ContextVar.set` run from inside another one's allocation frees the
context's variables under it on CPython 3.11: a segmentation fault (CI crashed twice in a
database write of a turn whose stream had timed out, most likely so). It sets none now."""

import asyncio
import contextvars
import gc
import weakref

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
