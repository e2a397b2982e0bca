"""The HTTP protocol the production worker serves with: uvicorn's (httptools), with a deadline
for clients to send their requests and a timeout for them to read the answers.

uvicorn times out neither.

- **Reading a request.** A connection that sends no bytes, or sends its headers or body a byte
  at a time, is held open as long as its peer likes (uvicorn's keep-alive timeout starts only
  after a response). Each costs the worker a file descriptor and, with its headers in, a place
  of GUNICORN_WORKER_CONNECTIONS, so a few hundred slow clients could refuse everyone else the
  worker. nginx and Apache bound the same wait (`client_header_timeout`/`client_body_timeout`,
  `RequestReadTimeout`); here a client has `PANTHEON_REQUEST_READ_TIMEOUT_SECONDS` from its
  connection (or from the first byte of its next request on a kept-alive one) to send the whole
  request, then gets a 408 and the connection is closed (closed quietly if it sent nothing).
- **Writing a response.** A response larger than what the kernel (up to 4 MB on Linux) and the
  transport buffer for a client that stops reading (its socket open, nothing read) waits for it
  for ever: a turn's stream with long answers, a replay of one, a large page. Each keeps its
  request in flight, its coroutine, what it holds, and everything its transport buffered. Here
  a write that waits `PANTHEON_WRITE_TIMEOUT_SECONDS` for the client to read ends the
  connection with a reset: what is buffered is dropped (a close would keep it, the transport's
  until it is flushed to a client that does not read, the kernel's for minutes after), and the
  app hears the client hang up. Its response ends there; a turn it was streaming goes on to its
  end, as for any client that hangs up. Each wait is timed on its own, from the moment the
  transport's buffer is full, and ends as soon as the client has taken enough for it to take
  more (tens of KB): a client that reads that much in the timeout is never cut, however slow.
  What an answer leaves buffered when it ends is watched the same way, since uvicorn's close
  waits for it to flush.
- **A body announced too large.** A request that declares a Content-Length over
  DATA_UPLOAD_MAX_MEMORY_SIZE is answered 413 by the app without its body being read
  (`PantheonASGIHandler`). uvicorn still sent `100 Continue` to one that asked with
  `Expect: 100-continue` (when the app first listens for the client), inviting the body the
  answer refuses. Here such a request gets no `100 Continue`, and its connection is closed
  after the 413: whether the client then sends the body anyway or not, nothing that follows
  could be told apart from a next request.
- **A request that is not HTTP.** uvicorn answers bytes its parser refuses (a request line or
  a header it cannot read, a Content-Length that is no number or beside a Transfer-Encoding, a
  chunk size that is no number) itself: a plain-text 400, with no request id and no line in
  the request log, written at once, before the answers still owed to requests sent ahead of it
  on the connection. Here it is the API's JSON 400 `malformed_request`, with its request id
  and its line, as the 408, written after those answers; the connection is closed after it.

How long the app takes to answer (a long turn, a stream) is limited by neither.

The worker names this module's protocol by its path (`PantheonWorker`), so only the worker
process imports it, not the gunicorn master; `make run`'s server (`pantheon.serve`) serves with
it too. Neither serves uvicorn's h11 protocol (`http="auto"` would fall back to it without
httptools; this module needs httptools, so a server without it does not start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from django.conf import settings
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from pantheon import logging_context
from pantheon.threads import declared_too_large

logger = logging.getLogger(__name__)
# The request log's (`pantheon.middleware`), for the requests the app never sees.
request_logger = logging.getLogger("pantheon.request")


@dataclass(frozen=True)
class Refusal:
    """An answer the protocol gives itself, to a request the app never sees (or never sees
    whole), worded as the API words a refusal (`pantheon.exceptions`). Its connection is
    closed after it."""

    status: int
    code: str
    message: str

    def response(self, request_id: str) -> bytes:
        body = json.dumps({"detail": {"code": self.code, "message": self.message}}).encode()
        return (
            f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}\r\n".encode()
            + b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"x-request-id: " + request_id.encode() + b"\r\n"
            b"connection: close\r\n"
            b"\r\n" + body
        )


REQUEST_TIMEOUT = Refusal(
    408, "request_timeout", "The request did not arrive in time; send it again."
)
MALFORMED_REQUEST = Refusal(
    400,
    "malformed_request",
    "The request could not be read: it is not valid HTTP/1.1 (its request line, a header, "
    "or the framing of its body).",
)


class TimedFlowControl(FlowControl):
    """uvicorn's flow control, with a clock on each pause: once the transport has asked the
    app to stop writing (its buffer is full), the client has `timeout` seconds to take enough
    for it to ask for more, or the connection is reset. Timed from the pause itself, not from
    the app's next write: the last write of a response has no next one, and uvicorn's close
    after it waits for the buffer to flush, for ever to a client that does not read."""

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        timeout: float,
        answering: Callable[[], dict | None] = lambda: None,
    ) -> None:
        super().__init__(transport)
        self.timeout = timeout
        self.answering = answering  # the scope of the request whose answer is written
        self._deadline: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._deadline is None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self.timeout, self._stalled)

    def resume_writing(self) -> None:
        # Also called when the connection is lost: the clock stops with it.
        super().resume_writing()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _stalled(self) -> None:
        self._deadline = None
        _stalled_reader(self._transport, self.timeout, self.answering())


def _stalled_reader(transport: asyncio.Transport, timeout: float, scope: dict | None) -> None:
    """A client read too little for `timeout` seconds. The protocol hears the connection lost
    at once (the loop's next round): it marks the request's client gone, which the app hears
    as a disconnect, and lets writes on (they are dropped).

    Its line names the request whose answer it was (`scope`), as that request's own line does:
    its request id, user, session and turn, the client's address (as the API's limits count
    it), method and path; the request middleware left them in the scope
    (`logging_context.SCOPE_KEY`). A request the app never answered through it has its peer's
    address and no ids."""
    if transport.is_closing() and transport.get_write_buffer_size() == 0:
        return
    scope = scope or {}
    said = scope.get(logging_context.SCOPE_KEY) or {}
    client = said.get("client")
    if client is None:
        peer = scope.get("client") or transport.get_extra_info("peername") or (None,)
        client = peer[0]
    with logging_context.request_scope(**said.get("ids", {})):
        logger.warning(
            "a client read too little of its response for %gs: its connection is reset",
            timeout,
            extra={
                "method": scope.get("method", "-"),
                "path": scope.get("path", "-"),
                "client": client,
            },
        )
    _reset(transport)


def _reset(transport: asyncio.Transport) -> None:
    """Abort the connection with a reset: with SO_LINGER on and a zero timeout, the kernel drops
    the socket's unsent data when it closes and sends RST, not a FIN queued behind that data."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class PantheonHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read deadline for each request,
    `TimedFlowControl` for its answer, no `100 Continue` for a body announced too large, and
    the API's JSON 400 for a request that is not valid HTTP."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout: float = settings.PANTHEON_REQUEST_READ_TIMEOUT_SECONDS
        self._read_deadline: asyncio.TimerHandle | None = None
        self._flush_watch: asyncio.TimerHandle | None = None
        self._request_begun = False  # a byte of a request has come on this connection
        self._headers_in = False  # the headers of the request arriving now are in
        self._request_since = 0.0  # when the request arriving now began (or the connection)
        self._malformed = False  # bytes that are not HTTP came: nothing more is read
        # The request whose answer is being written (or was last): HTTP/1.1 answers in order,
        # one at a time; `self.cycle` is the newest request, which may be pipelined behind it.
        self._answering: RequestResponseCycle | None = None
        self._owes_400 = False  # and they are answered 400 (the app has not answered them)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = TimedFlowControl(
            transport,
            timeout=settings.PANTHEON_WRITE_TIMEOUT_SECONDS,
            answering=lambda: self._answering.scope if self._answering else None,
        )
        self._request_since = self.loop.time()
        self._arm_read_deadline()  # the first request's bytes are awaited from now

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        self._stop_flush_watch()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._headers_in = False
        self._request_since = self.loop.time()
        self._stop_flush_watch()  # the client is sending again: it is there
        self._arm_read_deadline()  # a kept-alive connection's next request: its own time

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is before or cycle is None:
            return  # an upgrade: no request of its own
        self._headers_in = True
        if cycle.waiting_for_100_continue and declared_too_large(self.headers):
            cycle.waiting_for_100_continue = False
            cycle.keep_alive = False  # the answer says `connection: close`, and closes it

    def on_message_complete(self) -> None:
        self._disarm_read_deadline()  # all in: the app's to answer, however long that takes
        self._headers_in = False
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app) -> None:
        # Where uvicorn starts a request (at once, or once the one before it is answered).
        self._answering = cycle
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        next_one = bool(self.pipeline)  # uvicorn starts the request queued next
        answered = self._answering
        super().on_response_complete()
        if self._malformed:
            if next_one:
                self.flow.pause_reading()  # uvicorn resumed it: nothing more is read
            else:  # the last answer owed before the malformed request
                self._end_malformed()
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            # A pipelined request uvicorn starts only now, its body still arriving (uvicorn
            # stopped reading it meanwhile): its own time from here.
            self._arm_read_deadline()
        # What the answer left in the transport's buffer, below the level at which the flow
        # control pauses: uvicorn's close (or the kept-alive connection) waits for it to flush.
        if self.transport.get_write_buffer_size() > 0 and not self.flow.write_paused:
            scope = answered.scope if answered is not None else None
            self._watch_flush(self.transport.get_write_buffer_size(), scope)

    def _watch_flush(self, size: int, scope: dict | None) -> None:
        self._stop_flush_watch()
        self._flush_watch = self.loop.call_later(
            settings.PANTHEON_WRITE_TIMEOUT_SECONDS, self._flush_checked, size, scope
        )

    def _flush_checked(self, size_before: int, scope: dict | None) -> None:
        self._flush_watch = None
        size = self.transport.get_write_buffer_size()
        if size == 0:
            return
        if size < size_before:  # a slow reader, but a reader
            self._watch_flush(size, scope)
            return
        _stalled_reader(self.transport, settings.PANTHEON_WRITE_TIMEOUT_SECONDS, scope)

    def _stop_flush_watch(self) -> None:
        if self._flush_watch is not None:
            self._flush_watch.cancel()
            self._flush_watch = None

    def _arm_read_deadline(self) -> None:
        self._disarm_read_deadline()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_deadline_passed)

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_deadline_passed(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing() or self._malformed:
            return
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete and not cycle.more_body
        if answering or self.pipeline:
            # A request that did arrive is still being answered, and the one that is late is
            # pipelined behind it (uvicorn reads no more of it until that answer ends): not
            # the client's delay. Wait on.
            self._arm_read_deadline()
            return
        # A connection that sent nothing at all (a browser's preconnect, a pool's spare) is
        # closed quietly: an answer nobody asked for could be read as the next request's.
        # Nor is one whose request was answered before its body came (a 413 for a body
        # announced too large): a second answer to it would be read as the next request's.
        unanswered = cycle is None or cycle.response_complete or not cycle.response_started
        answered_early = self._headers_in and cycle is not None and cycle.response_complete
        if self._request_begun and unanswered and not answered_early:
            self._answer(REQUEST_TIMEOUT, self.read_timeout * 1000)
        # With its headers in, the app sees the client gone (`http.disconnect`).
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refuses (a request line or a header that is not
        HTTP, a Content-Length that is no number or beside a Transfer-Encoding, a chunk size
        that is no number): here the API's JSON 400 `malformed_request`, with a request id and
        its line in the request log, then the connection closed, as a 408. uvicorn's was plain
        text, with neither. Nothing after those bytes is read: where a request ends cannot be
        known any more.

        Answers owed to requests before them on the connection (pipelined) are written first:
        uvicorn wrote its 400 at once, which their client read as the first one's answer (and
        the connection closed under them). A request whose headers the app has, and whose body
        is malformed, is answered 400 unless the app has answered it already, or begun to
        (then the connection is only closed, as for a 408: a second answer would be read as
        the next request's)."""
        if self._malformed:
            return
        self._malformed = True
        self._disarm_read_deadline()
        self.flow.pause_reading()
        cycle = self.cycle  # the malformed request's, when its headers are in
        queued = [entry for entry in self.pipeline if self._headers_in and entry[0] is cycle]
        for entry in queued:  # never to be started
            self.pipeline.remove(entry)
        own = cycle if self._headers_in and not queued else None  # the app has it
        self._owes_400 = own is None or not own.response_started
        waiting = self.pipeline or (cycle is not None and not cycle.response_complete)
        if own is None and waiting:
            return  # written once the answers before it are (`on_response_complete`)
        self._end_malformed()

    def _end_malformed(self) -> None:
        if self.transport.is_closing():
            return
        if self._owes_400:
            self._answer(MALFORMED_REQUEST, (self.loop.time() - self._request_since) * 1000)
        # With its headers in, the app sees the client gone (`http.disconnect`).
        self.transport.close()

    def _answer(self, refusal: Refusal, duration_ms: float) -> None:
        """A refusal, with a request id of its own, and its line in the request log, as the
        app writes one for each request it answers (the app never saw this one, or saw no
        whole request)."""
        request_id = uuid.uuid4().hex
        self.transport.write(refusal.response(request_id))
        scope = self.cycle.scope if self._headers_in and self.cycle is not None else None
        method, path = (scope["method"], scope["path"]) if scope else ("-", "-")
        duration_ms = round(duration_ms, 1)
        with logging_context.request_scope(request_id=request_id):
            request_logger.warning(
                "%s %s %s %.1f ms",
                method,
                path,
                refusal.status,
                duration_ms,
                extra={
                    "method": method,
                    "path": path,
                    "status_code": refusal.status,
                    "duration_ms": duration_ms,
                },
            )
