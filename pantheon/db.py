"""Database work from async code: short synchronous sections that hold a connection only while
they run.

Under ASGI a turn spends most of its life awaiting its LLM provider. Its database work runs in
`database(...)` sections, off the event loop, each returning its connection to the pool when it
ends, so a waiting turn holds no connection (the pool is bounded: `DB_POOL_MAX_SIZE`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

P = ParamSpec("P")
R = TypeVar("R")


def release_connection() -> None:
    """Give this thread's connection back (to the pool, when there is one), unless a
    transaction is open around us (a test's)."""
    if not connection.in_atomic_block:
        connection.close()


def database(function: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`function` as an awaitable section of database work. Sections of one request run on
    that request's own thread, one after the other (asgiref's thread-sensitive mode)."""

    @functools.wraps(function)
    def section(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        finally:
            release_connection()

    return sync_to_async(section, thread_sensitive=True)
