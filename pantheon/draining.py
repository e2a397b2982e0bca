"""Work that outlives its request, and how a stopping worker lets it end.

A turn runs as a task of its own, detached from the request that started it: a client that
hangs up does not stop it (`sessions_app.api_turns`). When gunicorn stops a worker (a deploy,
a restart: SIGTERM, SIGHUP to the master), uvicorn stops accepting connections and waits for
the ones it has; `drain` waits for the detached work as well (no connection may hold it any
more), up to a deadline inside gunicorn's `graceful_timeout`. What is still running then is
cancelled and given a moment to record how it ended: a turn ends `interrupted`, its calls in
flight marked lost, and says so to its client. Before, gunicorn killed the worker at
`graceful_timeout` with such turns still `running`: their sessions were refused new turns
(409) until the stale limit, and their streams stopped mid-event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

# The most of gunicorn's `graceful_timeout` kept for what follows the wait for detached work.
MARGIN_SECONDS = 5.0
# How often a drain looks whether it was told to stop waiting (a second signal).
_LOOK_SECONDS = 0.5

_running: set[asyncio.Task] = set()
_stopping = False
# What stops each piece of detached work that can be stopped on request (a turn, by its id),
# with the event loop it runs on.
_stoppers: dict[Hashable, tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = {}


def detach(work: Coroutine[Any, Any, Any]) -> asyncio.Task:
    """Run `work` to its end whatever happens to the request that started it; a stopping
    worker waits for it (`drain`)."""
    task = asyncio.ensure_future(work)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


@contextmanager
def stoppable(key: Hashable, stop: Callable[[], None]) -> Iterator[None]:
    """While inside, `stop(key)` calls `stop` on this event loop: detached work (a turn, keyed
    by its id) that another request of this process may end (a user's cancel)."""
    entry = (asyncio.get_running_loop(), stop)
    _stoppers[key] = entry
    try:
        yield
    finally:
        if _stoppers.get(key) is entry:
            del _stoppers[key]


def stop(key: Hashable) -> bool:
    """Stop the work `key` names, if this process runs it (`stoppable`): whether it does. The
    work runs on in another process or host (a worker behind the same proxy), which this cannot
    reach: it finds that it was ended at its next write."""
    entry = _stoppers.get(key)
    if entry is None:
        return False
    loop, stopper = entry
    if loop.is_closed():
        return False
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        stopper()
    else:  # another thread's loop (a test client's request inside another's)
        loop.call_soon_threadsafe(stopper)
    return True


def stopping() -> bool:
    """Whether this worker is stopping (its drain has begun): a stream that may go elsewhere
    (a follower's) ends now, and its client resumes on another host from its Last-Event-ID."""
    return _stopping


async def pause(seconds: float) -> bool:
    """Wait `seconds`, or less if the worker starts to stop meanwhile: whether it is not
    stopping (work that would hold up the drain makes no more tries)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not _stopping:
        left = deadline - loop.time()
        if left <= 0:
            return True
        await asyncio.sleep(min(left, _LOOK_SECONDS))
    return False


def running() -> int:
    """How many detached tasks this process runs."""
    return len(_running)


def turns_running() -> int:
    """How many turns this process runs (`stoppable`), their clients there or gone."""
    return len(_stoppers)


def drain_seconds(graceful_timeout: float) -> tuple[float, float]:
    """For gunicorn's `graceful_timeout`, after which it kills the worker: (how long a stopping
    worker waits for detached work, how long it then gives what it cancels to wind down). The
    requests still open after both are uvicorn's to cancel, before the kill."""
    margin = min(MARGIN_SECONDS, graceful_timeout / 2)
    return graceful_timeout - margin, margin / 2


def requests_seconds(graceful_timeout: float) -> float:
    """How long a stopping server waits for the requests still open before it cancels them
    (uvicorn's `timeout_graceful_shutdown`): the drain and its wind-down, so that the cancelled
    turns' requests answer first, and a quarter of the margin left, so that the cancelled
    requests end before gunicorn's kill."""
    drain, wind_down = drain_seconds(graceful_timeout)
    return drain + wind_down + (graceful_timeout - drain) / 4


async def drain(
    *, seconds: float, wind_down: float, give_up: Callable[[], bool] = lambda: False
) -> int:
    """Wait up to `seconds` for the detached work to end (less if `give_up()` turns true),
    then cancel what is left and give it up to `wind_down` seconds to record its ending.
    Returns how many were cancelled."""
    global _stopping
    _stopping = True
    began = time.monotonic()
    deadline = began + seconds
    while _running and not give_up() and (left := deadline - time.monotonic()) > 0:
        await asyncio.wait(set(_running), timeout=min(left, _LOOK_SECONDS))
    left_running = [task for task in _running if not task.done()]
    if not left_running:
        return 0
    # The turns among them, by id (those still stoppable: running in this process), so that
    # an operator knows which turns a deploy interrupted.
    turns = sorted(str(key) for key in _stoppers)
    logger.warning(
        "stopping: %d detached task(s) still running after %.0f s are cancelled%s",
        len(left_running),
        time.monotonic() - began,
        f" (turns {', '.join(turns)})" if turns else "",
    )
    for task in left_running:
        task.cancel()
    await asyncio.wait(left_running, timeout=wind_down)
    return len(left_running)
