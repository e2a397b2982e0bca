"""Database work from async code: short synchronous sections that hold a connection only while
they run.

Under ASGI a turn spends most of its life awaiting its LLM provider. Its database work runs in
`database(...)` sections, off the event loop, each returning its connection to the pool when it
ends, so a waiting turn holds no connection (the pool is bounded: `DB_POOL_MAX_SIZE`).

At most `PANTHEON_DB_SECTIONS` sections of a process run at once; the others wait, the oldest
request's first (`SectionGate`). Sections are CPU work under one GIL: run all at once, they
share the core, so every one of them takes as long as all of them together, and a burst of new
requests slows the turns already under way. Admitted oldest first, a turn that has started
goes on to its provider call, and to its answer, before the requests that came after it. A
request's time is its arrival at the ASGI handler (`request_arrival`), which the turn it starts
inherits; work a client can keep asking for (a follower's polls) queues as new each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import heapq
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import psycopg
from asgiref.local import _Storage
from asgiref.sync import AsyncToSync, SyncToAsync, sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, NotSupportedError, OperationalError, connection, connections
from psycopg._cmodule import _psycopg as _c_loaders
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool

P = ParamSpec("P")
R = TypeVar("R")

# When the request (or the turn it started, which inherits its context) arrived
# (`request_arrival`): its sections' place in the queue. Unset: each section queues as new.
_arrival: ContextVar[float | None] = ContextVar("pantheon_db_arrival", default=None)
# Set while a section runs (on its thread, and in async code it calls back into).
_inside_section: ContextVar[bool] = ContextVar("pantheon_db_inside_section", default=False)


def release_connection() -> None:
    """Give this thread's connection back (to the pool, when there is one), unless a
    transaction is open around us (a test's)."""
    if not connection.in_atomic_block:
        connection.close()


# What PostgreSQL says when it ends a connection or will not take one: class 08 (connection
# exception), 57P01 admin_shutdown (`pg_terminate_backend`, a fast shutdown or a failover),
# 57P02 crash_shutdown (another backend crashed), 57P03 cannot_connect_now (starting up, shutting
# down, in recovery), 57P05 idle_session_timeout (a server's `idle_session_timeout` ended a pooled
# connection) and 53300 too_many_connections. Not its other operational errors: 57014
# (a statement timeout, a cancelled query), 55P03 (a lock timeout), 40P01 (a deadlock) and the
# like failed the statement, not the connection, and a retry of the same request may well meet
# them again.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "57P05", "53300"})


def connection_lost(exc: BaseException | None) -> bool:
    """Whether `exc` (a psycopg error, or Django's wrapping of one) says the database connection
    was lost or could not be made: a restart, a failover, `pg_terminate_backend`, a network cut,
    no connection from the pool in time. A transient outage, which a retry soon after gets past,
    not a fault of the request or a bug.

    psycopg raises these as OperationalError: with PostgreSQL's SQLSTATE when the server said
    why (`_UNAVAILABLE_STATES`), without one when psycopg itself found the connection gone or
    could not open one (`psycopg_pool.PoolTimeout` included). Its InterfaceError is a misuse of
    a connection or cursor (one already closed by our own code), never a lost connection."""
    cause = exc if isinstance(exc, psycopg.Error) else getattr(exc, "__cause__", None)
    if not isinstance(exc, OperationalError | psycopg.OperationalError) or not isinstance(
        cause, psycopg.OperationalError
    ):
        return False
    state = cause.sqlstate
    return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES


# How long work that found the database gone waits between tries to reach it again: 1, 2, 4,
# then every 8 s (a turn's ending, the turns of exited workers).
OUTAGE_RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0)


def outage_pause(attempt: int, schedule: tuple[float, ...] = OUTAGE_RETRY_SECONDS) -> float:
    """The wait before try `attempt` (from 0) of `schedule`, its last pause repeated."""
    return schedule[min(attempt, len(schedule) - 1)]


# PostgreSQL's answer when a prepared statement's result columns changed type under it (a
# migration's ALTER COLUMN ... TYPE run by another connection).
_CHANGED_RESULT_TYPE = "cached plan must not change result type"


def replan_after_schema_change(execute, sql, params, many, context):
    """An execute wrapper for pooled connections with prepared statements
    (`DB_PREPARED_STATEMENTS`): a statement prepared before a migration changed the type of a
    column it returns fails on that connection until its prepared statements are dropped, and a
    pooled connection lives for an hour. Outside a transaction the statement is prepared again
    and run once more; inside one, the transaction fails and its rollback drops them (psycopg
    forgets its prepared statements on ROLLBACK as on DEALLOCATE ALL)."""
    try:
        return execute(sql, params, many, context)
    except NotSupportedError as exc:
        wrapper = context["connection"]
        if _CHANGED_RESULT_TYPE not in str(exc) or wrapper.in_atomic_block:
            raise
        wrapper.connection.execute("DEALLOCATE ALL")
        return execute(sql, params, many, context)


# One purge of the pool at a time: requests that find dead connections together need only one.
_purging = threading.Lock()


def check_pooled_connection(conn: psycopg.Connection) -> None:
    """The pool's check of each connection it hands out (psycopg's: one empty query), as
    `CONN_HEALTH_CHECKS` asks. A connection found dead means PostgreSQL ended its clients (a
    restart, a failover, `pg_terminate_backend`, a proxy's idle timeout): the connections idle
    beside it are dead too, as a rule, and psycopg's pool would hand them over one by one, 1, 2,
    4, 8 s apart, to the request that found the first (with 16 idle, it waited 30 s for a 503,
    and the next request 28 s). The idle ones are all checked now, the dead replaced, so that
    request waits one pause (about a second) for a new connection, and the next none."""
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        if _purging.acquire(blocking=False):
            try:
                pool = getattr(connections[DEFAULT_DB_ALIAS], "pool", None)
                if pool is not None:
                    pool.check()
            finally:
                _purging.release()
        raise


def install_pool_check(sender, connection, **kwargs) -> None:
    """`connection_created` receiver: the pool checks the connections it hands out with
    `check_pooled_connection` rather than psycopg's own, which Django gives it when
    CONN_HEALTH_CHECKS is on (and passes itself, so that a check in the pool's options would be
    given twice). Swapped on the pool's first connection, before a worker takes traffic."""
    pool = getattr(connection, "pool", None)  # PostgreSQL's wrapper has one (None: no pool)
    if pool is not None and pool._check not in (None, check_pooled_connection):
        pool._check = check_pooled_connection


def install_replanning(sender, connection, **kwargs) -> None:
    """`connection_created` receiver: every PostgreSQL connection that prepares statements
    recovers from a schema change (`replan_after_schema_change`)."""
    prepares = connection.settings_dict.get("OPTIONS", {}).get("prepare_threshold") is not None
    if (
        connection.vendor == "postgresql"
        and prepares
        and replan_after_schema_change not in connection.execute_wrappers
    ):
        connection.execute_wrappers.append(replan_after_schema_change)


# psycopg keeps its conversion of a statement's placeholders (%s to $1, found by a regular
# expression over the whole SQL) in a cache of 128 statements, but only for statements of at
# most 4096 bytes and 50 parameters (`psycopg._queries.MAX_CACHED_STATEMENT_*`: it keeps an ORM's
# bulk inserts, whose SQL varies with their rows, from filling it). A turn's last step is one
# statement of 60 parameters (`pantheon.compiled.Chain`): psycopg converted it afresh on every
# turn, about 130 us of CPU (1.5 % of a turn). Up to `CACHED_STATEMENT_PARAMS` parameters are
# cached here; the length limit stays (it bounds the cache's memory: 128 statements of at most
# 4 KiB). The psycopg whose module this was read against: another fails test_statement_cache.
PSYCOPG_READ_AGAINST = "3.3.9"
# The Django whose `create_cursor` and `get_adapters_template` `load_timestamps_in_c` was read
# against: another fails test_timestamp_loading.
DJANGO_READ_AGAINST = "5.2.19"
CACHED_STATEMENT_PARAMS = 100


def cache_statement_conversions() -> None:
    """Let psycopg cache the conversion of statements of up to `CACHED_STATEMENT_PARAMS`
    parameters (run once at startup, `PantheonConfig.ready`)."""
    from psycopg import _queries

    if _queries.MAX_CACHED_STATEMENT_PARAMS < CACHED_STATEMENT_PARAMS:
        _queries.MAX_CACHED_STATEMENT_PARAMS = CACHED_STATEMENT_PARAMS


class UtcTimestamptzLoader(Loader):
    """Django's loader of a timestamptz (`psycopg_any.register_tzloader`'s, with USE_TZ and the
    connection's time zone UTC), by psycopg's C loader: the same datetimes, tzinfo UTC. Django's
    subclasses psycopg's pure Python loader (psycopg uses its C twin only for its own classes),
    which parsed each value with a regular expression: 8.7 us a value against 0.5 us. Django
    sets every connection's TimeZone to UTC; one set to another zone still gets Django's
    values (the wall time read in that zone, labelled UTC)."""

    timezone = UTC  # what Django's `create_cursor` compares with its connection's own

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._parse = _c_loaders.TimestamptzLoader(oid, context).load

    def load(self, data: Any) -> datetime:
        value = self._parse(data)
        return value if value.tzinfo is UTC else value.replace(tzinfo=UTC)


def load_timestamps_in_c() -> None:
    """Django's adapters for every PostgreSQL connection (the map each copies when made) load
    timestamps with `UtcTimestamptzLoader` (run once at startup, `PantheonConfig.ready`, before
    the first connection), where Django's loader would tag them UTC: USE_TZ on, the database's
    TIME_ZONE UTC, psycopg's C module present."""
    wrapper = connections[DEFAULT_DB_ALIAS]
    if wrapper.vendor != "postgresql" or _c_loaders is None:
        return
    if not settings.USE_TZ or wrapper.timezone != UTC:
        return
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        get_adapters_template,
    )

    template = get_adapters_template(settings.USE_TZ, wrapper.timezone)
    template.register_loader("timestamptz", UtcTimestamptzLoader)


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


def sections_now() -> dict[str, int]:
    """This process's database sections (`SectionGate`) as they stand: how many run, how many
    wait for a place, and how many may run at once (0: no limit). For the health check, read
    from any thread: a glance at counters the event loop keeps, never a wait."""
    size = settings.PANTHEON_DB_SECTIONS
    running = waiting = 0
    try:
        gates = list(_gates.values())
    except RuntimeError:  # a gate made for a new loop as it was read
        gates = []
    for gate in gates:
        running += gate.running
        waiting += len(gate._waiting)
    return {"running": running, "waiting": waiting, "limit": max(size, 0)}


def pool_now() -> dict[str, int] | None:
    """This process's connection pool as it stands (psycopg's measures): connections open,
    idle, the most it may open, and the requests waiting for one. None without a pool (SQLite,
    `DB_POOL_MAX_SIZE=0`, the tests' own connection)."""
    pool = getattr(connections[DEFAULT_DB_ALIAS], "pool", None)
    if pool is None:
        return None
    stats = pool.get_stats()
    return {
        "size": stats.get("pool_size", 0),
        "idle": stats.get("pool_available", 0),
        "max": stats.get("pool_max", 0),
        "waiting": stats.get("requests_waiting", 0),
    }


def _section_ended(gate: SectionGate, work: asyncio.Future) -> None:
    gate.leave()
    if not work.cancelled():
        work.exception()  # its awaiter may be gone: never "exception was never retrieved"


def carry_back(context: contextvars.Context) -> None:
    """What the section changed in its context (the log context's ids, say) into ours, as a
    plain `await sync_to_async(...)` would have. A `Local`'s storage (Django's active language,
    URLconf, script prefix) is owned by this thread again, as asgiref re-homes it."""
    here = None
    for variable, value in context.items():
        try:
            current = variable.get()
        except LookupError:
            current = None
        else:
            if current is value:
                continue
        if type(value) is _Storage:
            if here is None:
                here = threading.get_ident()
            if value.thread_id != here:
                if type(current) is _Storage and current.data is value.data:
                    continue  # the same data, already ours
                value = _Storage(here, value.data)
        variable.set(value)


def _section(function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """One section's work, on its thread: marked as inside a section while it runs, its
    connection given back when it ends."""
    inside = _inside_section.set(True)
    try:
        return function(*args, **kwargs)
    except StopIteration as error:
        # An asyncio future refuses StopIteration (`next()` on an empty iterator): its awaiter
        # would wait forever. A RuntimeError from it instead, as Python 3.12's futures do.
        raise RuntimeError("a database section raised StopIteration") from error
    finally:
        _inside_section.reset(inside)
        release_connection()


# One for every section (asgiref's wrapper checks and copies its function when made: a dozen
# microseconds that a wrapper made per call, as `database(self.answer)` is, spent each time).
_run_section = sync_to_async(_section, thread_sensitive=True)


# The asgiref whose internals `_request_thread`, `_hop` and `carry_back` were read against
# (its executors, thread marks and `Local` storage): another one fails test_db_hop until they
# are read again.
ASGIREF_READ_AGAINST = "3.13.0"


def _request_thread() -> Any:
    """The executor that asgiref's thread-sensitive mode would run this request's sections on,
    when it has one already: the synchronous caller's own thread (the test client,
    `async_to_sync`), or the request's thread (`ThreadSensitiveContext`, `own_thread`). None
    otherwise (asgiref then picks or makes one, as before)."""
    current = getattr(AsyncToSync.executors, "current", None)
    if current is not None:
        return current
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None:
        return None
    # None for a context that has exited (asgiref takes its executor out): asgiref then
    # refuses the section, as it refuses a task that outlived its request.
    return SyncToAsync.context_to_thread_executor.get(context)


def _section_on_thread(context: contextvars.Context, function, args, kwargs):
    """`_section` inside the section's context, on its thread, after the context's `Local`
    storage is moved to this thread (asgiref's `_restore_context`), so that the section sees
    the request's active language, URLconf and script prefix."""
    here = threading.get_ident()
    for variable, value in context.items():
        if type(value) is _Storage and value.thread_id != here:
            variable.set(_Storage(here, value.data))
    return _section(function, *args, **kwargs)


def _hop(loop, landed, context, function, args, kwargs) -> None:
    """On the request's thread: run the section, then hand its outcome to the event loop. The
    thread is marked as serving that loop, as asgiref's `thread_handler` does, so that an
    `async_to_sync` inside the section runs its coroutine there."""
    threadlocal = SyncToAsync.threadlocal
    threadlocal.main_event_loop = loop
    threadlocal.main_event_loop_pid = os.getpid()
    threadlocal.task_context = []
    outcome: tuple[Any, BaseException | None]
    try:
        result = context.run(_section_on_thread, context, function, args, kwargs)
    except BaseException as error:
        outcome = (None, error)
    else:
        outcome = (result, None)
    with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody waits for it
        loop.call_soon_threadsafe(landed, *outcome)


def _landed(gate: SectionGate, ended: asyncio.Future, result: Any, error: Any) -> None:
    """On the event loop: a section's thread is done. Its place goes to the next section,
    its outcome to its awaiter, if that was not cancelled meanwhile."""
    gate.leave()
    if ended.cancelled():
        return
    if error is None:
        ended.set_result(result)
    else:
        ended.set_exception(error)


def database(
    function: Callable[P, R], *, queue_as_new: bool = False
) -> Callable[P, Coroutine[Any, Any, R]]:
    """`function` as an awaitable section of database work. Sections of one request run on
    that request's own thread, one after the other (asgiref's thread-sensitive mode), and wait
    for a place at the process's `SectionGate` in the order their requests arrived.
    `queue_as_new`: work that recurs for as long as a client likes (a follower's polls)
    queues as if it had just arrived, so it never starves newer requests."""

    @functools.wraps(function)
    async def admitted(*args: P.args, **kwargs: P.kwargs) -> R:
        gate = section_gate()
        # A section that calls back into async code (async_to_sync) holds its place: one it
        # starts from there runs at once, or a full gate would wait for itself.
        if gate is None or _inside_section.get():
            return await _run_section(function, *args, **kwargs)
        arrival = None if queue_as_new else _arrival.get()
        await gate.enter(time.monotonic() if arrival is None else arrival)
        executor = _request_thread()
        if executor is not None:
            return await _hop_to(executor, gate, function, args, kwargs)
        # Its own task, so that the place is given back when the section's thread is done,
        # even if the awaiting request is cancelled first (a thread cannot be stopped midway).
        context = contextvars.copy_context()
        work = asyncio.get_running_loop().create_task(
            _run_section(function, *args, **kwargs), context=context
        )
        work.add_done_callback(functools.partial(_section_ended, gate))
        try:
            return await asyncio.shield(work)
        finally:
            if work.done():
                carry_back(context)

    return admitted


async def _hop_to(executor: Any, gate: SectionGate, function, args, kwargs) -> Any:
    """Run a section admitted at `gate` on `executor` (the request's thread) and await it: one
    trip there and back, its place given back when the thread is done, even if the awaiting
    request is cancelled first (a thread cannot be stopped midway; its outcome is then
    dropped). asgiref's wrapper, with a task and a shield around it, did the same in more
    steps: the section's context copied twice, Local storage moved back and forth."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    context = contextvars.copy_context()
    try:
        executor.submit(
            _hop, loop, functools.partial(_landed, gate, ended), context, function, args, kwargs
        )
    except BaseException:
        gate.leave()
        raise
    try:
        return await ended
    finally:
        if ended.done() and not ended.cancelled():
            carry_back(context)


@contextmanager
def request_arrival() -> Iterator[None]:
    """Mark the request that starts here, and everything it starts (a detached turn inherits
    its context), as arriving now: their sections queue by this time."""
    token = _arrival.set(time.monotonic())
    try:
        yield
    finally:
        _arrival.reset(token)
