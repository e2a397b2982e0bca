"""A streamed turn's events as its own request writes them (`api_turns._LiveEvents`)."""

import asyncio

from sessions_app import events
from sessions_app.api_turns import _LiveEvents


def _step(clock: events.StepClock, text: str) -> list[events.TurnEvent]:
    started = events.step_started(clock, sequence=2, agent={"agent_key": "ada"})
    words = text.split(" ")
    deltas, start = [], 0
    for index, word in enumerate(words):
        piece = word if index == len(words) - 1 else word + " "
        deltas.append(events.step_delta(clock, sequence=2, text=piece, start=start))
        start += len(piece)
    return [started, *deltas, events.step_completed(clock, {"content": text})]


def test_events_queued_before_the_stream_is_read_go_out_together_in_order():
    """A fast provider's words are queued faster than the stream is read: they go out in one
    write, the same bytes as one a piece, and the stream ends with the turn's last event."""
    clock = events.StepClock()
    turn = [*_step(clock, "Hello there, Grace"), events.turn_failed(code="cancelled", body=None)]
    live = _LiveEvents()
    for event in turn:
        live.send(event)
    live.send(events.step_delta(clock, sequence=2, text="late", start=99))  # after the end

    async def read() -> list[str]:
        return [text async for text in live.stream()]

    writes = asyncio.run(read())

    assert writes == ["".join(event.sse() for event in turn)]


def test_an_event_sent_while_the_stream_waits_is_written_at_once(settings):
    settings.PANTHEON_SSE_HEARTBEAT_SECONDS = 0.05
    clock = events.StepClock()
    first, *_ = _step(clock, "Hi")
    live = _LiveEvents()

    async def read() -> list[str]:
        stream = live.stream()
        heard = [await anext(stream)]  # nothing queued: a heartbeat after 50 ms
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.01)
        live.send(first)
        heard.append(await asyncio.wait_for(waiting, 1))
        live.send(events.turn_failed(code="cancelled", body=None))
        heard.extend([text async for text in stream])
        return heard

    heard = asyncio.run(read())

    assert heard == [
        ": heartbeat\n\n",
        first.sse(),
        events.turn_failed(code="cancelled", body=None).sse(),
    ]
