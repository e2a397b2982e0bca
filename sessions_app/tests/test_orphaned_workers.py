"""The gunicorn master killed (SIGKILL, the OOM killer) under a worker with a turn in flight, on
PostgreSQL with a stub provider: the worker stops as at a deploy, its turn ended `interrupted`
and its client told so, and the port is free for the master a supervisor starts again.

Before, uvicorn's worker never looked at its parent: it served on for ever, its turn running
until its provider answered, nothing to replace it if it died, and a master started again on
its port failed to bind ("Connection in use", exit 1)."""

import contextlib
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events
from sessions_app.models import Turn
from sessions_app.tests.conftest import point_at_stub, wait_for
from usage.models import LlmCallEvent

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]


def _running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie no one reaped yet has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_worker_whose_master_is_killed_ends_its_turn_and_frees_the_port(
    owner, make_agent, make_session, stub, tmp_path
):
    point_at_stub(stub, "slow-60000", "qwen")  # the provider outlasts everything here
    session = make_session(owner, agent=make_agent(owner, "slow", model_alias="qwen"))
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    settings = {
        "database_url": postgres_url(connection.settings_dict),
        "env": {
            "PANTHEON_LLM_BACKEND": "live",
            "STUB_API_KEY": "stub-key",
            "GUNICORN_GRACEFUL_TIMEOUT": "8",
        },
        "log_path": tmp_path / "server.log",
    }
    server = AppServer(**settings).start()
    url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
    heard: list = []

    def stream() -> None:
        try:
            with httpx.stream(
                "POST",
                url,
                json={"message": "go"},
                headers={**headers, "Accept": "text/event-stream"},
                timeout=60,
            ) as response:
                heard.extend((event.name, event.data) for event in events(response))
        except httpx.HTTPError as exc:
            heard.append(("error", exc))

    client = threading.Thread(target=stream)
    again = None
    try:
        client.start()
        wait_for(lambda: stub.requests == 1, "the provider to get the call")
        [worker] = server.worker_pids()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)

        wait_for(lambda: not _running(worker), "the orphaned worker to stop", timeout=40)
        client.join(30)
        assert heard[-1][0] == "turn_failed", heard[-1]
        assert heard[-1][1]["code"] == "turn_interrupted"
        turn = Turn.objects.get(session=session)
        assert (turn.status, turn.failure_code) == ("interrupted", "turn_interrupted")
        assert [row.status for row in LlmCallEvent.objects.filter(turn=turn)] == ["lost"]
        log = (tmp_path / "server.log").read_text()
        assert f"the gunicorn master (pid {server.process.pid}) is gone" in log

        # A supervisor starts the server again: the port is free, the session takes turns.
        point_at_stub(stub, "slow-0", "qwen")
        again = AppServer(**settings, port=server.port).start()
        answer = httpx.post(url, json={"message": "again"}, headers=headers, timeout=60)
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "completed"
    finally:
        if again is not None:
            again.stop()
        # The first server's processes, whatever is left of them (its group).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.stop()
