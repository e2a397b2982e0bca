"""litellm's `acompletion` sets each call up (`completion`: its parameters, the request's
coroutine) in the event loop's default executor, a trip to a thread and back per call. Marked
with `setup_here` (the gateway marks its calls), that setup runs on the event loop's thread,
and the executor's other work still goes to its threads."""

import asyncio
import threading

from orchestration.litellm_loader import load_litellm, setup_here


def test_a_marked_call_is_set_up_on_the_event_loop_and_nothing_else_is(monkeypatch):
    litellm = load_litellm()
    setup_threads: list[int] = []
    original = litellm.main.completion

    def completion(*args, **kwargs):
        setup_threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(litellm.main, "completion", completion)

    async def call(marked: bool) -> tuple[str, int, int]:
        request = {
            "model": "openai/stub",
            "api_key": "sk-x",
            "messages": [{"role": "user", "content": "Hello there"}],
            "mock_response": "General Kenobi",
        }
        if marked:
            with setup_here():
                response = await asyncio.wait_for(litellm.acompletion(**request), 10)
        else:
            response = await litellm.acompletion(**request)
        # What the task sends to the executor afterwards goes to a thread.
        later = await asyncio.get_running_loop().run_in_executor(None, threading.get_ident)
        return response.choices[0].message.content, threading.get_ident(), later

    text, loop_thread, later = asyncio.run(call(marked=True))
    assert text == "General Kenobi"
    assert setup_threads == [loop_thread]
    assert later != loop_thread

    setup_threads.clear()
    text, loop_thread, later = asyncio.run(call(marked=False))
    assert text == "General Kenobi"
    assert setup_threads != [loop_thread] and later != loop_thread
