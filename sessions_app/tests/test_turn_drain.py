"""A deploy stops the production server (SIGTERM to the gunicorn master) with turns in flight,
against PostgreSQL and a stub provider: turns that end within the graceful timeout end as
usual, a client that hung up included; the others end `interrupted` before the worker is
killed, their calls in flight `lost`, their sessions free and their clients told. `make run`'s
server (`pantheon.serve`) stops the same way.

Before, uvicorn waited for open connections only: a turn whose client had hung up was killed
at once, and the others at `graceful_timeout`, all of them left `running` (the session refused
new turns until the stale limit), their ledger rows `pending`, their clients cut off."""

import os
import signal
import threading
import time

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import (
    AppServer,
    free_port,
    make_run_command,
    postgres_url,
    start_make_run,
)
from pantheon.testing.sse import events
from sessions_app.models import IdempotencyKey, Turn
from sessions_app.tests.conftest import point_at_stub, wait_for
from usage.models import LlmCallEvent

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]

# The worker waits 4 s for its turns (gunicorn's graceful_timeout less its margin), gives
# those it then cancels 2 s to record their ending, and is killed at 8 s.
GRACEFUL_TIMEOUT = 8


def _sessions(owner, make_agent, make_session, stub, *, slow: list[str]) -> dict:
    """Sessions named `slow` with an agent whose provider outlasts the graceful timeout, and
    "quick" and "hung_up" with one whose provider answers within it."""
    point_at_stub(stub, "slow-60000", "qwen")
    point_at_stub(stub, "slow-2000", "llama")
    slow_agent = make_agent(owner, "slow", model_alias="qwen")
    quick_agent = make_agent(owner, "quick", model_alias="llama")
    sessions = {name: make_session(owner, agent=slow_agent) for name in slow}
    for name in ["quick", "hung_up"]:
        sessions[name] = make_session(owner, agent=quick_agent)
    return sessions


def _assert_the_quick_ended_as_if_nothing_happened(outcome: dict, sessions: dict) -> None:
    """Turns that ended within the graceful timeout: as if nothing happened."""
    assert outcome["quick"].status_code == 201, outcome["quick"].text
    assert outcome["quick"].json()["status"] == "completed"
    assert isinstance(outcome["hung_up"], httpx.TimeoutException)
    assert Turn.objects.get(session=sessions["hung_up"]).status == "completed"


@pytest.mark.parametrize(
    "stop",
    [signal.SIGTERM, signal.SIGQUIT, signal.SIGINT, "Ctrl-C"],
    ids=["SIGTERM", "quick: SIGQUIT", "quick: SIGINT", "quick: Ctrl-C to every process"],
)
def test_a_stopping_server_finishes_the_turns_it_can_and_interrupts_the_rest_cleanly(
    owner, make_agent, make_session, stub, tmp_path, stop
):
    """SIGTERM: a deploy. SIGQUIT or SIGINT to the master is gunicorn's quick shutdown: the
    workers served on, new turns included, until its SIGKILL at the graceful timeout left their
    turns running with no worker to replace them (the soak tester's catch); they now end them
    at once, cleanly."""
    quick = stop != signal.SIGTERM
    sessions = _sessions(owner, make_agent, make_session, stub, slow=["plain", "streamed"])
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    server = AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={
            "PANTHEON_LLM_BACKEND": "live",
            "STUB_API_KEY": "stub-key",
            "GUNICORN_GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT),
        },
        log_path=tmp_path / "server.log",
    ).start()
    outcome: dict = {}

    def url(name: str) -> str:
        return f"{server.url}/api/v1/sessions/{sessions[name].pk}/turns"

    def post(name: str, timeout: float = 60, **extra) -> None:
        try:
            outcome[name] = httpx.post(
                url(name), json={"message": "go"}, headers={**headers, **extra}, timeout=timeout
            )
        except httpx.HTTPError as exc:
            outcome[name] = exc

    def stream() -> None:
        with httpx.stream(
            "POST",
            url("streamed"),
            json={"message": "go"},
            headers={**headers, "Accept": "text/event-stream"},
            timeout=60,
        ) as response:
            outcome["streamed"] = [(event.name, event.data) for event in events(response)]

    clients = [
        threading.Thread(target=post, args=("plain",), kwargs={"Idempotency-Key": "k-1"}),
        threading.Thread(target=stream),
        threading.Thread(target=post, args=("quick",)),
        # Hangs up after a second; its turn runs on, detached from any request.
        threading.Thread(target=post, args=("hung_up", 1)),
    ]
    try:
        for client in clients:
            client.start()
        wait_for(lambda: stub.requests == 4)  # every turn is waiting on its provider
        wait_for(lambda: "hung_up" in outcome)
        stopping = time.monotonic()
        if stop == "Ctrl-C":  # a terminal signals its whole process group
            os.killpg(server.process.pid, signal.SIGINT)
        else:
            os.kill(server.process.pid, stop)
        for client in clients:
            client.join(30)
        server.process.wait(GRACEFUL_TIMEOUT + 10)
        stopping_took = time.monotonic() - stopping
    finally:
        server.stop()

    if quick:
        # Nothing waited for: the quick turn is interrupted too, and well before the timeout.
        assert stopping_took < GRACEFUL_TIMEOUT - 2, stopping_took
        for name in ("quick", "hung_up"):
            ended = Turn.objects.get(session=sessions[name])
            assert (ended.status, ended.failure_code) == ("interrupted", "turn_interrupted")
    else:
        _assert_the_quick_ended_as_if_nothing_happened(outcome, sessions)
    # Outlasting it: ended `interrupted`, each client told so by a code.
    assert outcome["plain"].status_code == 503, outcome["plain"].text
    assert outcome["plain"].json()["detail"]["code"] == "turn_interrupted"
    assert outcome["plain"].headers["Retry-After"] == "2"  # as the schema requires of a 503
    names = [name for name, _ in outcome["streamed"]]
    assert names[0] == "turn_started" and names[-1] == "turn_failed"
    assert outcome["streamed"][-1][1]["code"] == "turn_interrupted"
    assert outcome["streamed"][-1][1]["turn"]["status"] == "interrupted"
    for name in ("plain", "streamed"):
        turn = Turn.objects.get(session=sessions[name])
        assert (turn.status, turn.failure_code) == ("interrupted", "turn_interrupted")
        rows = LlmCallEvent.objects.filter(turn=turn)
        assert [(row.status, row.attempts) for row in rows] == [("lost", 1)]  # was 0 attempts
    # Nothing left running or pending: every session takes its next turn now, and a retry with
    # the interrupted request's Idempotency-Key runs it afresh.
    assert not Turn.objects.filter(status="running").exists()
    assert not LlmCallEvent.objects.filter(status="pending").exists()
    assert not IdempotencyKey.objects.filter(key="k-1").exists()
    # The worker ended before gunicorn's kill (the master exits 0 either way), and a deploy is
    # no server fault: its lines are warnings, not errors.
    log = (tmp_path / "server.log").read_text()
    assert "SIGKILL" not in log, log
    assert '"level": "ERROR"' not in log and "[ERROR]" not in log, log


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_make_runs_server_drains_its_turns_as_production_does(
    owner, make_agent, make_session, stub, tmp_path, stop
):
    """`make run`'s server (uvicorn alone, `pantheon.serve`), stopped as a terminal stops it
    (the signal to its process group) with turns in flight: it drains as a production worker
    does. Before, a turn whose client had hung up was dropped at once (left `running` on
    SIGTERM, ended `interrupted` at once on Ctrl-C, however close to its answer), and a turn
    whose client waited held the server until it ended, however long."""
    sessions = _sessions(owner, make_agent, make_session, stub, slow=["plain"])
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "DATABASE_URL": postgres_url(connection.settings_dict),
        "PANTHEON_LLM_BACKEND": "live",
        "STUB_API_KEY": "stub-key",
        "LOG_LEVEL": "WARNING",
    }
    # `exec env`: the process waited for is the server, not a shell around it.
    command = f"exec env {make_run_command(port)} --graceful-timeout {GRACEFUL_TIMEOUT}"
    process = start_make_run(command, env, tmp_path / "server.log")
    outcome: dict = {}

    def post(name: str, timeout: float = 60) -> None:
        try:
            outcome[name] = httpx.post(
                f"{base}/api/v1/sessions/{sessions[name].pk}/turns",
                json={"message": "go"},
                headers=headers,
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            outcome[name] = exc

    clients = [
        threading.Thread(target=post, args=("plain",)),
        threading.Thread(target=post, args=("quick",)),
        # Hangs up after a second; its turn runs on, detached from any request.
        threading.Thread(target=post, args=("hung_up", 1)),
    ]
    try:
        wait_for(lambda: _healthy(base), "make run's server to start")
        for client in clients:
            client.start()
        wait_for(lambda: stub.requests == 3)  # every turn is waiting on its provider
        wait_for(lambda: "hung_up" in outcome)
        stopped_at = time.monotonic()
        os.killpg(process.pid, stop)
        process.wait(GRACEFUL_TIMEOUT + 10)
        stopping_took = time.monotonic() - stopped_at
        for client in clients:
            client.join(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    _assert_the_quick_ended_as_if_nothing_happened(outcome, sessions)
    # Outlasting it: ended `interrupted`, its client told so, and the server gone in time.
    assert outcome["plain"].status_code == 503, outcome["plain"].text
    assert outcome["plain"].json()["detail"]["code"] == "turn_interrupted"
    turn = Turn.objects.get(session=sessions["plain"])
    assert (turn.status, turn.failure_code) == ("interrupted", "turn_interrupted")
    assert [row.status for row in LlmCallEvent.objects.filter(turn=turn)] == ["lost"]
    assert stopping_took < GRACEFUL_TIMEOUT + 2
    assert not Turn.objects.filter(status="running").exists()
    assert not LlmCallEvent.objects.filter(status="pending").exists()
    log = (tmp_path / "server.log").read_text()
    assert '"level": "ERROR"' not in log and "Traceback" not in log, log
