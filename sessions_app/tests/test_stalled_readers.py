"""A client that stops reading a stream (its socket open, nothing read) on the production server:
once a write has waited `PANTHEON_WRITE_TIMEOUT_SECONDS` for it, its connection is closed and its
request leaves the worker's count (`pantheon.protocol`). Before, uvicorn waited for it for ever:
the request held its place, and its turn's events queued behind it."""

import fcntl
import json
import socket
import struct
import termios
import time

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from sessions_app.models import Message, Turn
from sessions_app.tests.conftest import point_at_stub, wait_for
from usage.models import LlmCallEvent, ModelAlias

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]

# 3,000 words of 1,000 characters: 3 MB of text, which the stream sends three times (its deltas,
# the stored message, the turn's body): more than the kernel's buffers for a client that reads
# nothing hold (4 MB at most on Linux, tcp_wmem), and the transport's (64 KB).
LONG_ANSWER = "words-3000-long-1000"
TCP_ESTABLISHED = 1


def _stalled_client(server: AppServer, request: str) -> socket.socket:
    """A connection that sends `request` and never reads, once its answer is a 201 or 200
    stream: a receive buffer of a few KB (set before connecting, so the window it offers stays
    that small) that fills and stays full. One refused as over capacity is sent again: the
    request before it (the health check that saw the place free) may still be finishing."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(request.encode())
        status = _status_line(sock)
        if status != b"HTTP/1.1 503":
            assert status in (b"HTTP/1.1 201", b"HTTP/1.1 200"), status
            return sock
        sock.close()
        time.sleep(0.2)
    raise AssertionError("the worker stayed full")


def _status_line(sock: socket.socket) -> bytes:
    """The answer's "HTTP/1.1 NNN", looked at and left unread."""
    wait_for(lambda: _unread(sock) >= 12, "the answer's status line")
    return sock.recv(12, socket.MSG_PEEK)


def _open(sock: socket.socket) -> bool:
    """Whether the connection is still established, asked of the kernel (reading it would
    unblock the server)."""
    state = struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]
    return state == TCP_ESTABLISHED


def _unread(sock: socket.socket) -> int:
    """Bytes that arrived and wait in the socket, unread."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0" * 4))[0]


def _health(server: AppServer) -> int:
    return httpx.get(f"{server.url}/api/v1/health", timeout=10).status_code


def test_a_client_that_stops_reading_is_cut_off_and_its_turn_goes_on(
    owner, ada, make_session, stub, tmp_path
):
    ModelAlias.objects.filter(alias=ada.model_alias).update(
        context_window=500_000,
        max_output_tokens=250_000,  # an answer limit of 4M characters
    )
    point_at_stub(stub, LONG_ANSWER, ada.model_alias)
    session = make_session(owner, agent=ada)
    token = Token.objects.create(user=owner).key
    env = {
        "PANTHEON_LLM_BACKEND": "live",
        "STUB_API_KEY": "sk-x",
        "PANTHEON_WRITE_TIMEOUT_SECONDS": "2",
        # One request at a time: while the stalled one holds its place, the next is refused.
        "GUNICORN_WORKER_CONNECTIONS": "1",
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "server.log"
    with AppServer(
        database_url=postgres_url(connection.settings_dict), env=env, log_path=log
    ) as server:
        body = json.dumps({"message": "hello"})
        posted = _stalled_client(
            server,
            f"POST /api/v1/sessions/{session.pk}/turns HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {token}\r\nAccept: text/event-stream\r\n"
            "X-Request-ID: stalled-stream\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}",
        )
        wait_for(lambda: _health(server) == 503, "the stalled stream to hold the worker's place")
        stalled_at = time.monotonic()
        wait_for(lambda: not _open(posted), "the server to close the stalled connection")
        assert time.monotonic() - stalled_at < 20
        wait_for(lambda: _health(server) == 200, "the worker's place to be free again")

        # The turn went on to its end without its client.
        wait_for(lambda: Turn.objects.get().status != "running", "the turn to end", timeout=120)
        turn = Turn.objects.get()
        assert turn.status == "completed"
        answer = Message.objects.get(role="assistant")
        assert answer.status == "ok" and len(answer.content.split()) == 3_000
        row = LlmCallEvent.objects.get()
        assert (row.status, row.output_tokens) == ("success", 3_000)  # the stub's usage
        assert turn.llm_calls == 1 and turn.output_tokens == 3_000

        # A replay of the finished turn, its 9 MB never read: cut off the same way.
        replay = _stalled_client(
            server,
            f"GET /api/v1/turns/{turn.pk}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {token}\r\nAccept: text/event-stream\r\n"
            "X-Request-ID: stalled-replay\r\n\r\n",
        )
        wait_for(lambda: _health(server) == 503, "the stalled replay to hold the worker's place")
        wait_for(lambda: not _open(replay), "the server to close the stalled replay")
        wait_for(lambda: _health(server) == 200, "the worker's place to be free again")
        posted.close()
        replay.close()

    logged = log.read_text()
    assert logged.count("read too little of its response for 2s") == 2
    # Each reset's line names its request, its user and their address, as the request's own
    # line does (it named none of them).
    resets = [
        line
        for line in map(json.loads, filter(None, logged.splitlines()))
        if "read too little" in line["message"]
    ]
    assert [
        (line["request_id"], line["user_id"], line["client"], line["method"], line["path"])
        for line in resets
    ] == [
        (
            "stalled-stream",
            str(owner.pk),
            "127.0.0.1",
            "POST",
            f"/api/v1/sessions/{session.pk}/turns",
        ),
        ("stalled-replay", str(owner.pk), "127.0.0.1", "GET", f"/api/v1/turns/{turn.pk}/events"),
    ]
    assert '"level": "ERROR"' not in logged and "Traceback" not in logged
