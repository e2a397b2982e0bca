"""A reload's old workers take requests until its new workers are ready to.

On SIGHUP gunicorn's master forks the new workers and at once tells the old ones to stop
(SIGTERM). A new worker takes requests only once it has loaded the app and warmed up (3–7 s,
mostly importing litellm; 10–14 s on a busy host), so the host took none meanwhile: requests
waited in the listen backlog, and a balancer's health check that timed out sooner marked the
host down. Now an old worker told to stop by a reload goes on taking requests until the new
workers say they are ready (gunicorn's `post_worker_init`, the app loaded and warmed), then
stops as before: stops accepting, serves what it holds, drains its turns
(`pantheon.workers.DrainingServer`). The listening socket is shared, so the kernel hands each
new connection to whichever worker accepts it.

The master and its workers share a few numbers in memory mapped before the first fork:
gunicorn numbers its workers in the order it forks them (`worker.age`); a reload records the
last number before its new workers and how many it starts, and each worker that becomes ready
writes its number in a slot of its own. An old worker waits while fewer than that many
workers numbered after the reload are ready, for at most `HANDOFF_SECONDS`, and in practice
no longer than gunicorn's `graceful_timeout`: gunicorn 27's reload waits that long for its old
workers to exit (running no timeout check and no signal meanwhile), then its master signals
them again, which ends the wait (logged as a warning: the host then takes no request until the
new workers are ready). It does not wait at all when it is stopped for another reason (a
shutdown, fewer workers: no reload since it was forked), or told twice.

Plain Python: gunicorn's master imports it (`gunicorn.conf.py`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("pantheon.handoff")

# The longest an old worker waits for the new ones (gunicorn's default `timeout`); a second
# signal from the master, at the reload's `graceful_timeout`, ends the wait sooner.
HANDOFF_SECONDS = 60.0
# How often a waiting worker looks.
_LOOK_SECONDS = 0.05
# Workers whose readiness is kept apart (by their number modulo this); a reload starting more
# waits for this many.
_SLOTS = 64
_ATTRIBUTE = "pantheon_handoff"


class Handoff:
    """The numbers a master shares with the workers it forks (mapped shared, inherited)."""

    def __init__(self) -> None:
        # The last worker number before the latest reload's new workers, and how many it starts.
        self._reload = multiprocessing.RawArray(ctypes.c_longlong, 2)
        # The numbers of the workers that became ready, each in slot `number % _SLOTS`.
        self._ready = multiprocessing.RawArray(ctypes.c_longlong, _SLOTS)

    def reloading(self, last_number: int, workers: int) -> None:
        """In the master, as a reload begins, before it forks its new workers."""
        self._reload[1] = workers
        self._reload[0] = last_number

    def ready(self, number: int) -> None:
        """In a worker that has loaded the app and is about to take requests."""
        self._ready[number % _SLOTS] = number

    def successors_pending(self, number: int) -> bool:
        """Whether worker `number` was forked before the latest reload and the workers that
        reload started are not all ready yet."""
        last_number, workers = self._reload[0], self._reload[1]
        if number > last_number:
            return False  # no reload since it was forked: a shutdown, or fewer workers
        ready = sum(1 for each in self._ready if each > last_number)
        return ready < min(workers, _SLOTS)


def shared(server: Any) -> Handoff:
    """The master's `Handoff`, made before it forks its first worker (kept on the arbiter, which
    outlives a reload of `gunicorn.conf.py`)."""
    handoff = getattr(server, _ATTRIBUTE, None)
    if handoff is None:
        handoff = Handoff()
        setattr(server, _ATTRIBUTE, handoff)
    return handoff


# --- gunicorn's hooks (gunicorn.conf.py) --------------------------------------------------------


def before_fork(server: Any, worker: Any) -> None:
    """In the master: the worker it forks inherits the shared numbers."""
    setattr(worker, _ATTRIBUTE, shared(server))


def on_reload(server: Any) -> None:
    """In the master, before a reload forks its new workers (their numbers follow this one)."""
    shared(server).reloading(server.worker_age, server.num_workers)


def when_worker_ready(worker: Any) -> None:
    """In a worker, once the app is loaded and warm, before it takes its first request."""
    handoff = getattr(worker, _ATTRIBUTE, None)
    if handoff is not None:
        handoff.ready(worker.age)


async def wait_for_successors(worker: Any, give_up: Callable[[], bool]) -> None:
    """In a worker told to stop: go on taking requests while the workers of a reload begun
    since it was forked are not ready, up to `HANDOFF_SECONDS` (less if `give_up()` turns
    true: told to stop again, or quickly)."""
    handoff: Handoff | None = getattr(worker, _ATTRIBUTE, None)
    if handoff is None or not handoff.successors_pending(worker.age):
        return
    began = time.monotonic()
    deadline = began + HANDOFF_SECONDS
    while handoff.successors_pending(worker.age) and not give_up():
        if time.monotonic() >= deadline:
            logger.warning(
                "reload: the new workers were not ready after %.0f s; this worker stops taking "
                "requests anyway",
                HANDOFF_SECONDS,
            )
            return
        await asyncio.sleep(_LOOK_SECONDS)
    if handoff.successors_pending(worker.age):
        # Told to stop again (gunicorn's master signals the old workers again once its reload
        # has waited `graceful_timeout` for them, and at a shutdown) or quickly: the new
        # workers are not all ready, and the host takes no request until they are.
        logger.warning(
            "reload: took requests for %.1f s more, then was told to stop again before the "
            "new workers were ready; this worker stops taking requests anyway",
            time.monotonic() - began,
        )
        return
    logger.info(
        "reload: took requests for %.1f s more, until the new workers were ready",
        time.monotonic() - began,
    )
