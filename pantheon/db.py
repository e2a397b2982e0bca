"""Database work from async code: short synchronous sections that hold a connection only while
they run.

Under ASGI a turn spends most of its life awaiting its LLM provider. Its database work runs in
`database(...)` sections, off the event loop, each returning its connection to the pool when it
ends, so a waiting turn holds no connection (the pool is bounded: `DB_POOL_MAX_SIZE`).

At most `PANTHEON_DB_SECTIONS` sections of a process run at once; the others wait, the oldest
request's first (`SectionGate`). Sections are CPU work under one GIL: run all at once, they
share the core, so every one of them takes as long as all of them together, and a burst of new
requests slows the turns already under way. Admitted oldest first, a turn that has started
goes on to its provider call, and to its answer, before the requests that came after it.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import time
import weakref
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

P = ParamSpec("P")
R = TypeVar("R")

# When the request (or the turn it started, which inherits its context) first asked for a
# section: its place in the queue for all of its sections.
_arrival: ContextVar[float | None] = ContextVar("pantheon_db_arrival", default=None)


def release_connection() -> None:
    """Give this thread's connection back (to the pool, when there is one), unless a
    transaction is open around us (a test's)."""
    if not connection.in_atomic_block:
        connection.close()


class SectionGate:
    """At most `size` sections at once; those that wait are let in by their request's arrival,
    earliest first. Used from its event loop's thread only."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.running = 0
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # among equal arrivals, first come first served

    async def enter(self, arrival: float) -> None:
        if self.running < self.size and not self._waiting:
            self.running += 1
            return
        admitted = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (arrival, next(self._order), admitted))
        try:
            await admitted
        except asyncio.CancelledError:
            if admitted.done() and not admitted.cancelled():
                self.leave()  # let in just as it was cancelled: the place goes to the next
            raise

    def leave(self) -> None:
        """A section ended: its place goes straight to the earliest waiting one."""
        while self._waiting:
            admitted = heapq.heappop(self._waiting)[2]
            if not admitted.done():  # not cancelled while it waited
                admitted.set_result(None)
                return
        self.running -= 1


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SectionGate] = (
    weakref.WeakKeyDictionary()
)


def section_gate() -> SectionGate | None:
    """The running event loop's gate (one per worker process), None when unlimited."""
    size = settings.PANTHEON_DB_SECTIONS
    if size <= 0:
        return None
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = SectionGate(size)
    return gate


def _section_ended(gate: SectionGate, work: asyncio.Future) -> None:
    gate.leave()
    if not work.cancelled():
        work.exception()  # its awaiter may be gone: never "exception was never retrieved"


def database(function: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`function` as an awaitable section of database work. Sections of one request run on
    that request's own thread, one after the other (asgiref's thread-sensitive mode), and wait
    for a place at the process's `SectionGate`."""

    @functools.wraps(function)
    def section(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        finally:
            release_connection()

    run = sync_to_async(section, thread_sensitive=True)

    @functools.wraps(function)
    async def admitted(*args: P.args, **kwargs: P.kwargs) -> R:
        gate = section_gate()
        if gate is None:
            return await run(*args, **kwargs)
        arrival = _arrival.get()
        if arrival is None:
            arrival = time.monotonic()
            _arrival.set(arrival)
        await gate.enter(arrival)
        work = asyncio.ensure_future(run(*args, **kwargs))
        # The place is given back when the section's thread is done with it, even if the
        # awaiting request is cancelled first (a thread cannot be stopped midway).
        work.add_done_callback(functools.partial(_section_ended, gate))
        return await asyncio.shield(work)

    return admitted
