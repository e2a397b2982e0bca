"""How many requests one worker serves at once, and the answer to the ones past that.

A worker holds each waiting turn and open stream as a coroutine: cheap, but not free (memory,
a socket, a place in the database sections' queue). The ASGI handler counts the requests in
flight (`PROCESS.hold()`, from the arrival of a request's whole body to its answer's end, a
streamed one included: a body sent slowly holds no place), and
`pantheon.middleware.CapacityMiddleware` answers one that finds more in flight than
`GUNICORN_WORKER_CONNECTIONS` (`PantheonWorker` sets the limit) with 503 `over_capacity` and a
Retry-After, before anything reads, writes or claims: the client backs off and tries again
(another host behind the balancer may have room). The middleware comes right after the request
id and CORS, so the refusal carries both, and its access line, like every request's.

A turn whose client hung up runs on to its end outside the count (one per session at most, and
turns are throttled per user). Open connections are not counted: one kept alive between
requests takes no place. uvicorn's own limit is off (`PantheonWorker`): it counted open
connections when a request arrived, and past it answered every request a plain-text 503, the
worker idle or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Plain Python only: the gunicorn master imports this (through the worker class) before it
# forks, and whatever it imports stays in its memory, next to the workers'. The refusal's body
# is `pantheon.exceptions.OverCapacity`.

# Seconds a refused client is asked to wait: turns end (and free their places) in seconds.
RETRY_AFTER_SECONDS = 2


class Capacity:
    """The requests in flight in one process against its limit (None: no limit). Used from the
    event loop's thread only."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.in_flight = 0
        # Whether the request held in this context found every place taken when it arrived.
        self._arrived_full: ContextVar[bool | None] = ContextVar(
            "pantheon_arrived_full", default=None
        )
        # What the request held in this context gives back when it ends (`at_end`).
        self._at_end: ContextVar[list[Callable[[], None]] | None] = ContextVar(
            "pantheon_at_end", default=None
        )

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Count a request in flight until the block ends, however it ends. Whether it is one
        too many is decided as it arrives: requests that arrive together are all counted before
        the first of them reaches the middleware, and the ones within the limit must not be
        refused for those that came after them."""
        arrived_full = self._arrived_full.set(
            self.limit is not None and self.in_flight >= self.limit
        )
        at_end = self._at_end.set([])
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            for give_back in self._at_end.get() or ():
                give_back()
            self._at_end.reset(at_end)
            self._arrived_full.reset(arrived_full)

    def at_end(self, give_back: Callable[[], None]) -> bool:
        """Call `give_back` when the request held in this context ends, however it ends (a
        client that hangs up mid-stream included, where Django closes no response). False, and
        nothing registered, outside a `hold` (a request not served by the ASGI handler)."""
        waiting = self._at_end.get()
        if waiting is None:
            return False
        waiting.append(give_back)
        return True

    @property
    def exceeded(self) -> bool:
        """The request being served arrived past the limit. Outside a `hold` (no request
        counted): more requests in flight than the limit allows."""
        arrived_full = self._arrived_full.get()
        if arrived_full is not None:
            return arrived_full
        return self.limit is not None and self.in_flight > self.limit


# This process's count: the ASGI handler holds a place per request, the worker sets the limit.
PROCESS = Capacity()
