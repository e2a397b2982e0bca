"""A reload (SIGHUP to the gunicorn master) under the production server, on PostgreSQL with a
stub provider: the old worker goes on taking requests until the new one has warmed up, then
stops; no request waits for the warm-up (`pantheon.handoff`).

Before, gunicorn told the old worker to stop as it forked the new one: requests that arrived
during the new one's warm-up (3–7 s, 10–14 s on a busy host) waited in the listen backlog."""

import os
import signal
import time

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from sessions_app.models import Turn
from sessions_app.tests.conftest import point_at_stub, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]


def _served_by(turn_id: str) -> int:
    """The pid of the worker that ran the turn (its recorded name: host:pid:token)."""
    return int(Turn.objects.get(pk=turn_id).worker.split(":")[-2])


def test_a_reloads_old_worker_takes_requests_until_the_new_one_is_ready(
    owner, make_agent, make_session, stub, tmp_path
):
    point_at_stub(stub, "slow-0", "llama")
    session = make_session(owner, agent=make_agent(owner, "quick", model_alias="llama"))
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    server = AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key", "LOG_LEVEL": "INFO"},
        log_path=tmp_path / "server.log",
    ).start()
    url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
    try:
        [old] = server.worker_pids()
        os.kill(server.process.pid, signal.SIGHUP)
        # The new worker is forked (after the reload collected static files), and loads the
        # app: seconds, litellm's import alone. The old one has been told to stop meanwhile.
        wait_for(lambda: len(server.worker_pids()) == 2, "the new worker's fork", timeout=60)
        time.sleep(1)
        during = httpx.post(url, json={"message": "during"}, headers=headers, timeout=60)
        assert during.status_code == 201, during.text
        assert _served_by(during.json()["id"]) == old  # not held until the new one was warm

        # Once the new worker is ready, the old one stops (its turns drained: none here).
        wait_for(lambda: old not in server.worker_pids(), "the old worker's exit", timeout=60)
        [new] = server.worker_pids()
        after = httpx.post(url, json={"message": "after"}, headers=headers, timeout=60)
        assert after.status_code == 201, after.text
        assert _served_by(after.json()["id"]) == new
        log = (tmp_path / "server.log").read_text()
        assert "until the new workers were ready" in log
    finally:
        server.stop()
