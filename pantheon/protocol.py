"""uvicorn's HTTP protocol with a deadline for clients to send their requests.

uvicorn times out nothing before a request has arrived: a connection that sends no bytes, or
sends its headers or body a byte at a time, is held open as long as its peer likes (its
keep-alive timeout starts only after a response). Each such connection costs the worker a
file descriptor and, with its headers in, a request in flight against
GUNICORN_WORKER_CONNECTIONS, so a few hundred slow clients could refuse everyone else the
worker. nginx and Apache bound the same wait (`client_header_timeout`/`client_body_timeout`,
`RequestReadTimeout`); here a client gets `read_timeout` seconds from its connection (or from
the first byte of its next request on a kept-alive one) to send the whole request, then a
408 and the connection closed.
"""

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The worker sets it from GUNICORN_REQUEST_READ_TIMEOUT (`pantheon.workers`).
DEFAULT_READ_TIMEOUT = 20.0

_TIMEOUT_BODY = json.dumps(
    {
        "detail": {
            "code": "request_timeout",
            "message": "The request did not arrive in time; send it again.",
        }
    }
).encode()
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n"
    b"connection: close\r\n"
    b"\r\n" + _TIMEOUT_BODY
)


class ReadDeadlineProtocol(HttpToolsProtocol):
    """httptools' protocol whose clients have `read_timeout` seconds to send each request."""

    read_timeout: float = DEFAULT_READ_TIMEOUT

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_deadline()  # the first request's bytes are awaited from now

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_read_deadline()  # a kept-alive connection's next request: its own time

    def on_message_complete(self) -> None:
        self._disarm_read_deadline()  # all in: the app's to answer, however long that takes
        super().on_message_complete()

    def _arm_read_deadline(self) -> None:
        self._disarm_read_deadline()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_deadline_passed)

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_deadline_passed(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete and not cycle.more_body
        if answering or self.pipeline:
            # A request that did arrive is still being answered, and the one that is late is
            # pipelined behind it (uvicorn reads no more of it until that answer ends): not
            # the client's delay. Wait on.
            self._arm_read_deadline()
            return
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(_TIMEOUT_RESPONSE)
        # With its headers in, the app sees the client gone (`http.disconnect`).
        self.transport.close()
