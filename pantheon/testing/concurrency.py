"""Tests that force an interleaving of real PostgreSQL connections: work on a thread of its own
(its own connection, committing as production does), and a look at whether it is blocked on a
lock yet."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection, connections

# How long a test looks for a connection waiting on a lock: every use expects one, so a long
# wait costs only a failing run, and a loaded machine (3 s was missed at a load of 20) still
# finds it.
LOCK_WAIT_SECONDS = 15.0


def in_thread(work) -> tuple[threading.Thread, list]:
    """`work` run on a thread of its own (its own database connection); the list gets what it
    returned or raised."""
    outcome: list = []

    def run():
        try:
            outcome.append(work())
        except Exception as exc:
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def finished(thread: threading.Thread) -> None:
    """`thread` joined, and done: one still blocked (on a lock, say) fails the test here."""
    thread.join(timeout=30)
    assert not thread.is_alive(), f"{thread.name} is still running"


def someone_waits_on_a_lock(count: int = 1) -> bool:
    """Whether another connection to the database waits on a lock (within LOCK_WAIT_SECONDS);
    with `count`, whether that many do."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            # Read afresh each time, also inside a transaction (which keeps its first read).
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= count:
                return True
        time.sleep(0.02)
    return False


def all_at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """`work(0)` … `work(count - 1)` let go at once, each on a thread and connection of its
    own: what each returned, in the order they finished."""
    gate = threading.Barrier(count)
    results: list[Any] = []

    def one(index: int) -> None:
        try:
            gate.wait()
            results.append(work(index))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
