"""Slow clients on the production server hold nothing that other users need: one that sends its
body a byte at a time takes no place among the worker's requests (`GUNICORN_WORKER_CONNECTIONS`)
until its body is whole, and one that reads a large answer slowly holds no database connection
while it reads (`pantheon.threads.PantheonASGIHandler`). Before, a thousand clients trickling
their bodies turned every other request away with 503 `over_capacity`, and as many slow readers
of a large page as the pool has connections (16) made every other request wait
`DB_POOL_TIMEOUT`, then fail 503 `database_unavailable`."""

import json
import socket
import time

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, forget_throttle_history, postgres_url
from rooms.models import Agent
from sessions_app.tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def _no_throttle_history():
    yield
    forget_throttle_history()


def _status_line(sock: socket.socket) -> bytes:
    """The answer's "HTTP/1.1 NNN", looked at and left unread."""
    sock.settimeout(30)
    return sock.recv(12, socket.MSG_PEEK)


def test_clients_that_send_their_bodies_slowly_take_no_place():
    env = {
        "GUNICORN_WORKER_CONNECTIONS": "2",
        "PANTHEON_REQUEST_READ_TIMEOUT_SECONDS": "60",
        "LOG_LEVEL": "WARNING",
    }
    body = json.dumps({"username": "nobody", "password": "wrong"}).encode()
    with AppServer(database_url=postgres_url(connection.settings_dict), env=env) as server:
        slow = []
        for _ in range(3):  # more than the worker's places
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(
                b"POST /api/v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % len(body)
                + body[:1]
            )
            slow.append(sock)
        time.sleep(1)  # the server has read their headers and the first byte of each body

        health = httpx.get(f"{server.url}/api/v1/health", timeout=10)
        assert health.status_code == 200, health.text

        # Each is answered as usual once its body has come whole (one after the other: three
        # whole requests at once would be one too many).
        for sock in slow:
            sock.sendall(body[1:])
            assert _status_line(sock) == b"HTTP/1.1 400"
            sock.close()
            time.sleep(0.2)  # its answer sent, its place given back


def test_a_client_that_reads_a_large_page_slowly_holds_no_database_connection(owner):
    # 200 agents whose role prompts JSON writes six bytes a character: a page of about 10 MB,
    # more than the kernel's buffers hold for a client that reads nothing.
    Agent.objects.bulk_create(
        Agent(
            owner=owner,
            agent_key=f"agent{number}",
            name=f"Agent {number}",
            model_alias="deepseek",
            role_prompt="\x01" * 8000,
        )
        for number in range(200)
    )
    token = Token.objects.create(user=owner).key
    env = {
        "DB_POOL_MAX_SIZE": "2",
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_TIMEOUT": "3",
        "PANTHEON_WRITE_TIMEOUT_SECONDS": "60",
        "LOG_LEVEL": "WARNING",
    }
    with AppServer(database_url=postgres_url(connection.settings_dict), env=env) as server:
        stalled = []
        for _ in range(2):  # as many as the pool has connections
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(
                f"GET /api/v1/agents?page_size=200 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Token {token}\r\n\r\n".encode()
            )
            assert _status_line(sock) == b"HTTP/1.1 200"
            stalled.append(sock)

        # Their pages wait for them to read; the pool's connections do not.
        started = time.monotonic()
        page = httpx.get(
            f"{server.url}/api/v1/agents?page_size=1",
            headers={"Authorization": f"Token {token}"},
            timeout=30,
        )
        assert page.status_code == 200, page.text
        assert time.monotonic() - started < 2
        wait_for(
            lambda: httpx.get(f"{server.url}/api/v1/health", timeout=10).status_code == 200,
            "the health check",
        )
        for sock in stalled:
            sock.close()
