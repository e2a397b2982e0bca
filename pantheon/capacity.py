"""How many requests one worker serves at once, and the answer to the one past that.

A worker holds each waiting turn and open stream as a coroutine: cheap, but not free (memory,
a socket, a place in the database sections' queue). `GUNICORN_WORKER_CONNECTIONS` bounds the
requests a worker serves at once (`PantheonWorker` hands it to the ASGI handler); the next one
is answered at once with 503 and a Retry-After, in the API's own error body under `/api/`, so a
client backs off and tries again (another host behind the balancer may have room). It is
refused before Django sees it: nothing is read, written or claimed.

uvicorn keeps a cap of its own on open connections (idle keep-alive ones included), set higher
than this one: only a flood of connections that send no request reaches it, and gets uvicorn's
plain-text 503.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("pantheon.request")

OVER_CAPACITY = "over_capacity"
# Seconds a refused client is asked to wait: turns end (and free their places) in seconds.
RETRY_AFTER_SECONDS = 2


def connection_cap(requests: int) -> int:
    """uvicorn's cap on open connections for a worker serving `requests` at once: far enough
    above it that keep-alive connections between requests do not reach it first."""
    return requests + max(requests // 4, 16)


class Capacity:
    """The requests in flight in one worker against its limit (None: no limit). Used from the
    event loop's thread only."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.in_flight = 0

    @contextmanager
    def admit(self) -> Iterator[bool]:
        """True, and a place held until the block ends; False when every place is taken."""
        if self.limit is not None and self.in_flight >= self.limit:
            yield False
            return
        self.in_flight += 1
        try:
            yield True
        finally:
            self.in_flight -= 1


async def refuse(scope, send, in_flight: int) -> None:
    """Answer a request the worker has no room for: 503, Retry-After, and the connection closed
    (a worker this busy sheds connections rather than keeping them alive)."""
    # Here, not at the top: the middleware imports the ASGI handler, which imports this.
    from pantheon.middleware import is_api_path

    path = scope.get("path", "")
    logger.warning(
        "over capacity: %d requests in flight, %s %s refused with 503",
        in_flight,
        scope.get("method", "-"),
        path,
    )
    if is_api_path(path):
        body = json.dumps(
            {
                "detail": {
                    "code": OVER_CAPACITY,
                    "message": "This server is serving as many requests as it can. Try again "
                    "in a moment.",
                }
            }
        ).encode()
        content_type = b"application/json"
    else:
        body, content_type = b"Service Unavailable", b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", b"%d" % len(body)),
                (b"retry-after", b"%d" % RETRY_AFTER_SECONDS),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
