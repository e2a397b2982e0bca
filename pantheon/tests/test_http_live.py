"""The production server (gunicorn, its uvicorn worker, `pantheon.protocol`) at the HTTP level,
spoken to over raw sockets: what a client that asks `Expect: 100-continue` is told, and requests
sent together on one connection."""

import json
import socket
import time

import pytest
from django.conf import settings
from django.db import connection

from pantheon.testing.servers import AppServer, forget_throttle_history, postgres_url

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

TOO_LARGE = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        with AppServer(database_url=postgres_url(connection.settings_dict)) as running:
            yield running
        forget_throttle_history()


def _connect(server: AppServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_until(sock: socket.socket, done) -> bytes:
    """What the server sends until `done(received)` holds or it closes the connection."""
    received = b""
    while not done(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _read_until_closed(sock: socket.socket) -> bytes:
    return _read_until(sock, lambda received: False)


def _responses(raw: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """The (status line, headers, body) of each response in `raw`, in order; ValueError if
    the last has not all come."""
    responses = []
    while raw:
        head, found, raw = raw.partition(b"\r\n\r\n")
        if not found:
            raise ValueError("a response's head is cut short")
        status, *lines = head.decode().split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            length = int(headers["content-length"])
            if len(raw) < length:
                raise ValueError("a response's body is cut short")
            body, raw = raw[:length], raw[length:]
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size_line, found, raw = raw.partition(b"\r\n")
                if not found or len(raw) < int(size_line, 16) + 2:
                    raise ValueError("a response's body is cut short")
                size = int(size_line, 16)
                body, raw = body + raw[:size], raw[size + 2 :]
                if size == 0:
                    break
        responses.append((status, headers, body))
    return responses


def _complete(count: int):
    """Whether `count` whole responses have come."""

    def done(received: bytes) -> bool:
        try:
            return len(_responses(received)) >= count
        except ValueError:
            return False

    return done


def _post_head(path: str, length: int, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_body_announced_too_large_with_expect_100_continue_is_refused_before_it_is_sent(
    server,
):
    """The client announces 5 MB and waits to be told to send them. It was told `100 Continue`,
    then 413: a client that believes the first sends the 5 MB the second refuses. Now the 413
    comes alone, and the connection is closed after it (what follows could be the body or a
    next request)."""
    sock = _connect(server)
    sock.sendall(_post_head("/api/v1/agents", TOO_LARGE, "Expect: 100-continue"))
    started = time.monotonic()

    raw = _read_until_closed(sock)  # the body is never sent

    assert raw.startswith(b"HTTP/1.1 413 "), raw[:200]
    assert time.monotonic() - started < 3
    assert b"100 Continue" not in raw
    [(status, headers, body)] = _responses(raw)
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "detail": {
            "code": "request_too_large",
            "message": "The request body is larger than this server accepts "
            f"({settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes).",
        }
    }


def test_a_body_within_the_limit_with_expect_100_continue_is_asked_for_then_answered(server):
    body = b'{"username": "nobody"}'
    sock = _connect(server)
    sock.sendall(_post_head("/api/v1/auth/token", len(body), "Expect: 100-continue"))

    interim = _read_until(sock, lambda received: b"\r\n\r\n" in received)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    [(status, headers, answer)] = _responses(_read_until(sock, _complete(1)))

    assert status.startswith("HTTP/1.1 400 ")
    assert json.loads(answer) == {"password": ["This field is required."]}
    assert headers.get("connection") != "close"


def test_a_body_announced_too_large_without_expect_is_refused_before_it_is_sent(server):
    """No `Expect`: the 413 comes as soon as the headers are in, none of the body read (a
    client that watches for an early answer stops sending)."""
    sock = _connect(server)
    sock.sendall(_post_head("/api/v1/agents", TOO_LARGE))

    [(status, _, body)] = _responses(_read_until(sock, _complete(1)))

    assert status.startswith("HTTP/1.1 413 ")
    assert json.loads(body)["detail"]["code"] == "request_too_large"


def test_requests_sent_together_on_one_connection_are_all_answered_in_order(server):
    """Pipelined: three requests in one write, then two more on the kept-alive connection.
    uvicorn queues each behind the one before it (`pantheon.protocol` gives each its own read
    deadline from its turn)."""
    health = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    missing = b"GET /api/v1/no-such-thing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock = _connect(server)

    sock.sendall(health + missing + health)
    first = _responses(_read_until(sock, _complete(3)))
    sock.sendall(missing + health)
    then = _responses(_read_until(sock, _complete(2)))

    statuses = [status.split()[1] for status, _, _ in first + then]
    assert statuses == ["200", "404", "200", "404", "200"]
    assert json.loads(first[0][2])["status"] == "ok"
    assert len({headers["x-request-id"] for _, headers, _ in first + then}) == 5
