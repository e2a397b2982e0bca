"""Warm threads for the synchronous work of async requests.

Under ASGI Django gives every request a thread of its own for its synchronous parts (database
sections, sync views, sync middleware hooks): a thread started and stopped per request, which
costs more CPU than many API requests do. Here each request (and each detached turn) borrows a
single-thread executor from a per-process pool and gives it back when it ends: the same
isolation, no thread spawned per request. asgiref's `ThreadSensitiveContext(executor=...)` is
the public way to hand it an executor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar

from asgiref.sync import AsyncToSync, ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.cache import BaseCache, caches, close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, ASGIRequest, get_script_prefix
from django.core.handlers.base import reset_urlconf
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection, connections, reset_queries
from django.db.backends.signals import connection_created
from django.http import HttpRequest
from django.template.response import SimpleTemplateResponse
from django.urls import set_script_prefix

from pantheon.capacity import PROCESS
from pantheon.db import release_connection, request_arrival

# Idle threads kept warm per process; beyond this, a returned one is shut down.
IDLE_THREADS = 64


class _ExecutorPool:
    """Used from the event loop's thread only."""

    def __init__(self, idle_max: int) -> None:
        self.idle_max = idle_max
        self._idle: list[ThreadPoolExecutor] = []

    def take(self) -> ThreadPoolExecutor:
        if self._idle:
            return self._idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="pantheon-sync")

    def give(self, executor: ThreadPoolExecutor) -> None:
        if len(self._idle) < self.idle_max:
            self._idle.append(executor)
        else:
            executor.shutdown(wait=False)


_pool = _ExecutorPool(IDLE_THREADS)


@asynccontextmanager
async def own_thread() -> AsyncIterator[None]:
    """Thread-sensitive work inside runs on one warm thread of its own. Called from synchronous
    code (the test client, `async_to_sync`), that code's thread serves it instead, as asgiref
    would (tests see their own transaction)."""
    if getattr(AsyncToSync.executors, "current", None) is not None:
        async with ThreadSensitiveContext():
            yield
        return
    executor = _pool.take()
    try:
        async with ThreadSensitiveContext(executor=executor):
            yield
    finally:
        _pool.give(executor)


# Set in the scope of a request whose undeclared (chunked) body ran past the size limit.
BODY_TOO_LARGE = "pantheon.body_too_large"


class PantheonASGIHandler(ASGIHandler):
    """Django's ASGI handler, each request on a pooled thread (`own_thread`), a body larger
    than DATA_UPLOAD_MAX_MEMORY_SIZE never read whole (Django's handler reads a whole body, to
    a temporary file past 2.5 MB, before any middleware can refuse it), and each request
    counted in flight for its whole life (`pantheon.capacity`: the middleware refuses one past
    the worker's limit)."""

    def __init__(self) -> None:
        super().__init__()
        _skip_request_started_with_the_pool()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        declared = _declared_length(scope.get("headers", ()))
        if _over_the_limit(declared):
            # The request goes on with an empty body and its declared length: the middleware
            # answers 413 (Django's own check, 400, off the API), while the body is discarded.
            receive = _without_body(receive)
        elif limit is not None and declared is None:
            # No length declared (a chunked upload): read no more than the limit.
            receive = _up_to(limit, receive, scope)
        # The body is read before the request is counted: a client that sends it a byte at a
        # time (for up to PANTHEON_REQUEST_READ_TIMEOUT_SECONDS) costs a socket, not one of
        # the worker's places, so a thousand of them do not turn everyone else away.
        receive = await _body_read_first(receive)
        with PROCESS.hold():
            await self._handle(scope, receive, send)

    async def _handle(self, scope, receive, send):
        connected = _connected.set([])
        try:
            with request_arrival():
                async with own_thread():
                    await self.handle(scope, receive, send)
        finally:
            _connected.reset(connected)

    async def handle(self, scope, receive, send):
        """Django's handling of one request (its body read, the view run while a client's
        disconnect is listened for, the answer sent), the response then closed on the event
        loop when nothing of its close needs the request's thread (`_close`): Django's own
        closes it on that thread, a trip there and back for every request."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        await request_started.asend(sender=self.__class__, scope=scope)
        request, refusal = self.create_request(scope, body_file)
        if request is None:
            assert refusal is not None  # one or the other
            body_file.close()
            await self.send_response(refusal, send)
            await _close(refusal)
            return

        async def answer():
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client left meanwhile
                await self.send_response(response, send)
            return response

        # The listener first: it raises nothing unexpected that would keep the view from
        # being cancelled.
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        answering = asyncio.create_task(answer())
        await asyncio.wait((listening, answering), return_when=asyncio.FIRST_COMPLETED)
        for task in (listening, answering):
            if not task.done():
                task.cancel()  # the view may handle its cancellation
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                continue
            try:
                task.result()
            except RequestAborted:  # the client hung up
                pass
            except AssertionError:
                body_file.close()
                raise
        if answering.cancelled():
            await request_finished.asend(sender=self.__class__)
        else:
            await _close(answering.result())
        body_file.close()

    async def run_get_response(self, request):
        response = await super().run_get_response(request)
        taken = _connected.get()
        if not response.streaming and taken and any(held.connection for held in taken):
            # Its body is whole: the connection the view used goes back to the pool now, on
            # the request's own thread, not once a client that reads slowly (or not at all,
            # for up to PANTHEON_WRITE_TIMEOUT_SECONDS) has taken it all. A few such clients
            # held the whole pool, and every other request waited for it, then failed 503.
            # (A turn's sections gave theirs back as each ended: no trip to its thread.)
            await sync_to_async(_release_pooled_connection, thread_sensitive=True)()
        return response


# `request_finished` receivers that may run on the event loop: Django's own, which close the
# thread's database connections (none is open: `_closes_on_the_loop`), the caches (each one's
# `close` is BaseCache's, which does nothing: `_closes_on_the_loop`) and reset the URLconf of
# the request's context.
_FINISHED_ON_THE_LOOP = frozenset({close_old_connections, close_caches, reset_urlconf})


def _close_on_its_thread(response) -> None:
    response.close()


_close_there = sync_to_async(_close_on_its_thread, thread_sensitive=True)


async def _close(response) -> None:
    """Close `response` (its request, then `request_finished`) here, on the event loop, when
    that is what its thread would do: nothing to close but its request and the signal, whose
    receivers are all Django's own, with no database connection open on the request's threads
    (they gave theirs back: the turn's sections as each ended, a view's before its answer was
    sent) nor here, and caches whose close does nothing. Otherwise on the request's thread, as
    Django does (a connection left open there is closed there when it has outlived
    CONN_MAX_AGE)."""
    if _closes_on_the_loop(response):
        response.close()
    else:
        await _close_there(response)


def _closes_on_the_loop(response) -> bool:
    if not all(map(_closes_on_the_loop_too, response._resource_closers)):
        return False  # a file's, a synchronous iterator's
    sync_receivers, async_receivers = request_finished._live_receivers(response._handler_class)
    if async_receivers or any(r not in _FINISHED_ON_THE_LOOP for r in sync_receivers):
        return False
    taken = _connected.get()
    if taken and any(held.connection is not None for held in taken):
        return False
    if any(held.connection is not None for held in connections.all(initialized_only=True)):
        return False
    return all(type(cache).close is BaseCache.close for cache in caches.all(initialized_only=True))


def _closes_on_the_loop_too(closer) -> bool:
    """Whether `closer` (one of a response's) may run on the event loop: the close of a request
    (Django's handler adds it to every response: its body's files, in memory or local temporary
    ones, closed as the handler closes the body's own file on the event loop), or one that says
    so (`closes_on_the_loop`: the request's log line of a stream, `pantheon.middleware`)."""
    if getattr(closer, "closes_on_the_loop", False):
        return True
    return isinstance(getattr(closer, "__self__", None), HttpRequest) and closer.__name__ == "close"


def _skip_request_started_with_the_pool() -> None:
    """With the database pool, Django's receivers of `request_started` have nothing to do: a
    request's thread gives its connection back to the pool when the request before it ends
    (`request_finished`'s `close_old_connections`, which stays: CONN_MAX_AGE is 0 with the
    pool), and the turns' sections give theirs back as each ends; `reset_queries` clears a
    log kept with DEBUG only. Yet a synchronous receiver costs every request a trip to its
    thread and back (`Signal.asend`), about 1.4% of a turn's CPU. Without the pool (SQLite, a
    laptop) a connection outlives its request, and both stay."""
    if not all("pool" in db.get("OPTIONS", {}) for db in settings.DATABASES.values()):
        return
    request_started.disconnect(close_old_connections)
    if not settings.DEBUG:
        request_started.disconnect(reset_queries)


def rendered_here(request, response):
    """`response` (an async view's) rendered now, on the event loop. Django's ASGI handler
    renders a response that renders late (DRF's) through `sync_to_async`, a trip to the
    request's thread and back for a few microseconds of JSON encoding; a rendered response whose
    `render` is a coroutine function is awaited in place instead. Only under ASGI: Django's
    WSGI handler (the test client's) calls `render` itself and wants the response back."""
    if isinstance(response, SimpleTemplateResponse) and isinstance(
        getattr(request, "_request", request), ASGIRequest
    ):
        response.render()

        async def render():
            return response

        response.render = render  # type: ignore[method-assign]
    return response


# The database connections (Django's wrappers) the request served in this context has taken
# on its thread (`connection_created`, sent as one is opened or taken from the pool): only one
# still open then is given back before its answer is sent, and a request that used none (a
# refusal) or gave its own back (a turn's sections) makes no trip to its thread for it.
_connected: ContextVar[list | None] = ContextVar("pantheon_request_connected", default=None)


def _note_connection(sender, connection, **kwargs) -> None:
    taken = _connected.get()
    if taken is not None and connection not in taken:
        taken.append(connection)


connection_created.connect(_note_connection, dispatch_uid="pantheon.threads.note_connection")


def _release_pooled_connection() -> None:
    """This thread's connection back to its pool (a connection without a pool stays open for
    the next request, as CONN_MAX_AGE says), unless a transaction is open around us."""
    if getattr(connection, "pool", None) is not None:
        release_connection()


async def _body_read_first(receive):
    """Read the request's body (the events up to its last piece, or the client's disconnect)
    and return a `receive` that hands those events over again, then the client's next ones."""
    events = []
    while True:
        message = await receive()
        events.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break

    async def receive_read_first():
        if events:
            return events.pop(0)
        return await receive()

    return receive_read_first


def declared_too_large(headers) -> bool:
    """Whether a request's Content-Length (its headers as ASGI gives them, names in lower case)
    is over DATA_UPLOAD_MAX_MEMORY_SIZE: answered 413 without its body being read, here and by
    the protocol (`pantheon.protocol`: no `100 Continue` for it)."""
    return _over_the_limit(_declared_length(headers))


def _over_the_limit(declared: int | None) -> bool:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return limit is not None and declared is not None and declared > limit


def _declared_length(headers) -> int | None:
    """The Content-Length, None when there is none (0 for one that is not a number, which
    Django reads as an empty body)."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return None


def _without_body(receive):
    """`receive` that hands Django an empty body at once and drops the real one as it comes."""
    handed = False

    async def receive_without_body():
        nonlocal handed
        if not handed:
            handed = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await _next_event_after_the_body(receive)

    return receive_without_body


async def _next_event_after_the_body(receive):
    """The client's next event that is not a piece of the body (a disconnect); the body's
    pieces are dropped as they come."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return message


def _up_to(limit: int, receive, scope):
    """`receive` for a body of unknown length (a chunked upload). Past `limit` bytes it stops:
    Django gets the body cut there, the scope says so (the middleware answers 413 before
    anything reads it), and the rest is dropped as it comes. A body that ends within the limit
    gets its length as Content-Length, which Django needs to read it at all (without one it
    reads any body as empty)."""
    received = 0

    async def receive_up_to():
        nonlocal received
        if scope.get(BODY_TOO_LARGE):
            return await _next_event_after_the_body(receive)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                scope[BODY_TOO_LARGE] = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if received and not message.get("more_body", False):
                # Django builds the request from the scope once the body has ended.
                scope["headers"] = [*scope["headers"], (b"content-length", b"%d" % received)]
        return message

    return receive_up_to
