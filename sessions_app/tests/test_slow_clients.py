"""Clients that send their requests slowly, or not at all, on the production server (gunicorn,
ASGI workers): each has PANTHEON_REQUEST_READ_TIMEOUT_SECONDS to send a whole request, then
gets a 408 and its connection closed (`pantheon.protocol`); a request that did arrive is
answered however long its turn takes."""

import socket
import time

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from sessions_app.models import Turn
from sessions_app.tests.conftest import point_at_stub

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]

READ_TIMEOUT = 2


@pytest.fixture
def token(owner):
    return Token.objects.create(user=owner).key


def _connect(server: AppServer, first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT * 5)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """What the server sends before it closes the connection (a timeout if it never does)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    sock.close()
    return received


def test_connections_that_do_not_send_their_requests_are_answered_408_and_closed(
    owner, make_agent, make_session, token
):
    """Four clients on a worker serving two requests at once: one connects and sends nothing,
    one sends half its headers, two their headers and a tenth of their body. Before, all three
    were held as long as they liked, and the two with headers in took both of the worker's
    places: every other client got 503 over_capacity, the health check included. Now none of
    them takes a place (a request counts once its body has come whole,
    `pantheon/tests/test_slow_clients_hold_nothing.py`) and each is cut off at the deadline."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    body = b'{"message": "hello there, this is a body that never arrives in full"}'
    post = (
        f"POST /api/v1/sessions/{session.pk}/turns HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    env = {
        "PANTHEON_REQUEST_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "GUNICORN_WORKER_CONNECTIONS": "2",
    }
    database = postgres_url(connection.settings_dict)
    with AppServer(database_url=database, env=env) as server:
        silent = _connect(server)
        half_headers = _connect(server, b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        trickles = [_connect(server, post + body[:7]) for _ in range(2)]
        time.sleep(0.5)
        # The two requests waiting for their bodies hold no place.
        assert httpx.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200
        started = time.monotonic()

        answers = [_read_until_closed(sock) for sock in (silent, half_headers, *trickles)]

        waited = time.monotonic() - started
        assert waited < READ_TIMEOUT * 3, waited
        # The one that sent nothing is closed quietly (a preconnect must not read an answer
        # nobody asked for as its next request's); the others are told why.
        assert answers.pop(0) == b""
        for answer in answers:
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), answer
            assert b"connection: close" in head.lower()
            assert b'"code": "request_timeout"' in payload
        # Their places are free, and nothing of the cut-off turns was written.
        assert httpx.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200
        assert not Turn.objects.exists()


def test_a_request_that_arrived_is_answered_however_long_its_turn_takes(
    owner, make_agent, make_session, stub, token
):
    """The deadline is for the client's sending, not the server's answering: a turn whose
    provider takes longer than it answers 201, and the kept-alive connection's next request,
    sent at once, is answered too."""
    point_at_stub(stub, f"slow-{READ_TIMEOUT * 1500}", "deepseek")
    session = make_session(owner, agent=make_agent(owner, "ada", model_alias="deepseek"))
    env = {
        "PANTHEON_REQUEST_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "PANTHEON_LLM_BACKEND": "live",
        "STUB_API_KEY": "stub",
    }
    database = postgres_url(connection.settings_dict)
    with (
        AppServer(database_url=database, env=env) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Token {token}"}, timeout=30
        ) as client,
    ):
        started = time.monotonic()
        answer = client.post(f"/api/v1/sessions/{session.pk}/turns", json={"message": "hi"})
        assert answer.status_code == 201, answer.text
        assert time.monotonic() - started > READ_TIMEOUT * 1.5
        assert answer.json()["status"] == "completed"
        assert client.get("/api/v1/health").status_code == 200
