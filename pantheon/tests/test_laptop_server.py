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
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from pantheon.testing.processes import run_production
from pantheon.testing.servers import (
    free_port,
    json_objects,
    make_run_command,
    start_make_run,
    wait_healthy,
)


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
        wait_healthy(url, process, timeout=30, name=shlex.quote(command))
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


def test_make_runs_server_takes_concurrent_writes_without_database_is_locked(tmp_path):
    """Rosters replaced and rooms created from several threads at once, as a browser's tabs or a
    script would: each waits its turn at SQLite's write lock. A transaction that read first
    (a roster's, a new room's) got "database is locked" at its first write instead, a 500 in
    Django's HTML debug page."""
    database_url = f"sqlite:///{tmp_path / 'laptop.sqlite3'}"
    for command in ("migrate", "seed_demo"):
        result = run_production(
            ["manage.py", command], DATABASE_URL=database_url, DEBUG="true", LOG_LEVEL="ERROR"
        )
        assert result.returncode == 0, result.stderr[-3000:]
    with (
        _laptop_server(tmp_path, DATABASE_URL=database_url) as port,
        httpx.Client(timeout=60) as client,
    ):
        url = f"http://127.0.0.1:{port}/api/v1"
        token = client.post(
            f"{url}/auth/token", json={"username": "demo", "password": "pantheon-demo"}
        ).json()["token"]
        client.headers["Authorization"] = f"Token {token}"
        agents = [agent["id"] for agent in client.get(f"{url}/agents").json()["results"]]
        assert len(agents) == 4
        room = client.post(
            f"{url}/rooms", json={"name": "seats", "mode": "roundtable", "agent_ids": agents[:2]}
        ).json()["id"]
        rosters = [[agents[i % 4], agents[(i + 1) % 4], agents[(i + 2) % 4]] for i in range(8)]

        def write(index: int) -> httpx.Response:
            if index < len(rosters):
                return client.put(f"{url}/rooms/{room}/agents", json={"agent_ids": rosters[index]})
            return client.post(
                f"{url}/rooms",
                json={"name": f"cr{index}", "mode": "roundtable", "agent_ids": agents[:3]},
            )

        answers = []
        for _ in range(3):
            with ThreadPoolExecutor(8) as pool:
                answers += pool.map(write, range(len(rosters) + 12))

        failures = [
            (answer.status_code, answer.headers.get("content-type"), answer.text[:200])
            for answer in answers
            if not answer.is_success or answer.headers.get("content-type") != "application/json"
        ]
        assert failures == []
        seats = client.get(f"{url}/rooms/{room}").json()["agents"]
        assert [seat["id"] for seat in seats] in rosters  # one roster whole, not a mix
        assert [seat["position"] for seat in seats] == [0, 1, 2]
        created = [
            item
            for item in client.get(f"{url}/rooms?page_size=100").json()["results"]
            if item["name"].startswith("cr")
        ]
        assert len(created) == 36
        for item in created:
            assert [(seat["id"], seat["position"]) for seat in item["agents"]] == [
                (agent, position) for position, agent in enumerate(agents[:3])
            ]


def test_the_servers_help_says_what_each_option_takes_and_its_default():
    """`python -m pantheon.serve --help` listed `--host HOST` and `--port PORT` with no word
    of what they are or what leaving them out means."""
    shown = run_production(["-m", "pantheon.serve", "--help"])

    assert shown.returncode == 0, shown.stderr
    options = " ".join(shown.stdout.split())
    assert (
        "--host HOST address to listen on; 0.0.0.0 for every interface (default: 127.0.0.1)"
        in options
    )
    assert "--port PORT port to listen on (default: 8000)" in options


@pytest.mark.parametrize("debug", ["true", "false"])
def test_the_server_stops_on_a_refused_setting_in_one_line(debug, tmp_path):
    """`PANTHEON_TURN_RATE=10/fortnight make run` printed 50 lines of traceback (DEBUG on: the
    app's settings read as uvicorn loads it), the refusal last; with DEBUG off the same
    traceback came before gunicorn's "Pantheon did not start" line."""
    stopped = run_production(
        ["-m", "pantheon.serve", "--port", str(free_port())],
        timeout=120,
        DEBUG=debug,
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        PANTHEON_TURN_RATE="10/fortnight",
    )

    assert stopped.returncode == 1
    assert stopped.stderr.strip().splitlines() == [
        "Pantheon did not start: django.core.exceptions.ImproperlyConfigured: "
        "PANTHEON_TURN_RATE='10/fortnight': must be N/second, N/minute, N/hour or N/day "
        "(N at least 1)"
    ]


@pytest.mark.parametrize(
    "option, value, says",
    [
        # uvicorn said "running on http://127.0.0.1:99999" and listened on no port.
        ("--port", "99999", "expected a port from 1 to 65535, not '99999'"),
        ("--port", "0", "expected a port from 1 to 65535, not '0'"),
        # A traceback (math.ceil of inf, of nan).
        ("--graceful-timeout", "inf", "expected a number of seconds from 0 to 3153600000"),
        ("--graceful-timeout", "nan", "expected a number of seconds from 0 to 3153600000"),
        # Taken: the server stopped without waiting for its turns.
        ("--graceful-timeout", "-5", "expected a number of seconds from 0 to 3153600000"),
    ],
)
def test_the_server_refuses_a_port_or_a_graceful_timeout_it_cannot_use(option, value, says):
    refused = run_production(["-m", "pantheon.serve", option, value], timeout=60)

    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"python -m pantheon.serve: error: argument {option}: {says}")
    assert "Traceback" not in refused.stderr


def test_the_server_on_a_port_already_taken_stops_at_once_in_one_line(tmp_path):
    """A second `make run` (or another app on 8000) warmed the app up for 15 to 40 s, then
    stopped on uvicorn's "[Errno 98] error while attempting to bind"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stopped = run_production(
            ["-m", "pantheon.serve", "--port", str(port)],
            timeout=120,
            DEBUG="true",
            LOG_LEVEL="INFO",
            DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        )

    assert stopped.returncode == 3
    assert "warmed up" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"Pantheon did not start: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another server on it? --port, or PORT=N make run, serves on another)"
    )
