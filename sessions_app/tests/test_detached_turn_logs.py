"""A turn runs detached from its request (`sessions_app.api_turns`): its failure is logged
once, by the request that answers with it or, the request gone, as the turn's own."""

import asyncio
import logging
from types import SimpleNamespace

import pytest

from sessions_app.api_turns import SessionTurnsView


@pytest.mark.parametrize("rounds", [0, 1, 2])
def test_a_turn_failing_as_its_request_is_cancelled_is_logged_once(caplog, rounds):
    """The turn fails and the request is cancelled (its client hung up) in the same round of
    the event loop, or a round or two apart: the request's handler may run before the turn's
    done callback, or after it. Either way one line (two, when the handler ran first)."""

    async def scenario():
        view = SessionTurnsView()
        fail = asyncio.Event()

        async def failing_post(request, session_id, stream):
            await fail.wait()
            raise RuntimeError("boom")

        view._post = failing_post
        # A request whose body is read before its turn is detached (`post`).
        posted = SimpleNamespace(body=b'{"message": "go"}')
        request = asyncio.ensure_future(view.post(posted, "s"))
        await asyncio.sleep(0.05)  # the request waits for its turn
        fail.set()  # the turn's step is queued for the next round...
        for _ in range(rounds):
            await asyncio.sleep(0)
        request.cancel()  # ...and the request's cancellation after it
        await asyncio.gather(request, return_exceptions=True)
        await asyncio.sleep(0.1)

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    lines = [r for r in caplog.records if r.getMessage() == "a detached turn failed"]
    assert len(lines) == 1, len(lines)
