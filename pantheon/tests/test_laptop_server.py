"""`make run`'s server (uvicorn alone, SQLite, the demo backend), started as the Makefile starts
it: it has the production worker's read deadline (`pantheon.protocol`). uvicorn's command line,
which it used, names only uvicorn's own protocols: a client that sent half a request was held
as long as it liked."""

import contextlib
import json
import os
import shlex
import signal
import socket
import time

import httpx
import pytest

from pantheon.testing.servers import free_port, json_objects, make_run_command, start_make_run


@contextlib.contextmanager
def _laptop_server(tmp_path, **env: str):
    """`make run`'s server on a port of its own; yields the port. Its output goes to
    `tmp_path / "server.log"`."""
    port = free_port()
    command = make_run_command(port)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'laptop.sqlite3'}",
        "PANTHEON_LLM_BACKEND": "demo",
        "PANTHEON_REQUEST_READ_TIMEOUT_SECONDS": "1",
        "LOG_LEVEL": "ERROR",
        **env,
    }
    process = start_make_run(command, env, tmp_path / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"{shlex.quote(command)} exited"
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "make run's server did not start"
            time.sleep(0.2)
        yield port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)


@pytest.fixture
def laptop_server(tmp_path):
    with _laptop_server(tmp_path) as port:
        yield port


def test_make_runs_server_answers_408_to_a_request_that_stops_halfway(laptop_server):
    sock = socket.create_connection(("127.0.0.1", laptop_server), timeout=10)
    sock.sendall(
        b"POST /api/v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nhalf"
    )
    started = time.monotonic()

    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk

    assert time.monotonic() - started < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code": "request_timeout"' in body


def test_make_runs_server_serves_the_demo_on_sqlite(laptop_server):
    health = httpx.get(f"http://127.0.0.1:{laptop_server}/api/v1/health", timeout=5)

    assert health.json() == {"status": "ok", "database": "sqlite", "llm_backend": "demo"}


def test_make_runs_server_writes_only_json_lines_with_log_format_json(tmp_path):
    """uvicorn's own lines (its start and stop, its access lines, "Invalid HTTP request
    received.") were in uvicorn's text format among the app's JSON lines."""
    with _laptop_server(tmp_path, LOG_FORMAT="json", LOG_LEVEL="INFO") as port:
        httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"HELLO THERE\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), answer
        assert json.loads(body)["detail"]["code"] == "malformed_request"

    output = (tmp_path / "server.log").read_text().splitlines()
    loggers = {line["logger"] for line in json_objects(output)}
    assert {"uvicorn.error", "uvicorn.access", "pantheon.request"} <= loggers, loggers
