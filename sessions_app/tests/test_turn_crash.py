"""A worker killed with SIGKILL in the middle of a provider call (a real gunicorn, a real stub
provider on 127.0.0.1, PostgreSQL): the ledger keeps a row for the call in flight, and the
worker gunicorn starts in its place ends the turn, its session free at once."""

import os
import signal
import threading

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from rooms.models import RoomMode
from sessions_app.models import Turn
from sessions_app.tests.conftest import point_at_stub, wait_for
from usage.models import LlmCallEvent

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]


def test_a_worker_killed_mid_call_leaves_its_call_on_the_ledger_and_its_successor_ends_the_turn(
    owner, make_agent, make_room, make_session, stub, tmp_path
):
    point_at_stub(stub, "slow-0", "llama")  # Ada answers at once
    point_at_stub(stub, "slow-60000", "qwen")  # Grace's provider hangs
    ada = make_agent(owner, "ada", model_alias="llama")
    grace = make_agent(owner, "grace", model_alias="qwen")
    session = make_session(owner, room=make_room(owner, [ada, grace], mode=RoomMode.ROUNDTABLE))
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    log = tmp_path / "server.log"
    server = AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key"},
        log_path=log,
    ).start()
    try:
        url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
        outcome = {}

        def post():
            try:
                outcome["response"] = httpx.post(
                    url, json={"message": "go"}, headers=headers, timeout=90
                )
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        client = threading.Thread(target=post)
        client.start()
        # Grace's call has started: its pending row is committed, the provider is waiting.
        wait_for(lambda: LlmCallEvent.objects.filter(agent_key="grace").exists())
        wait_for(lambda: stub.requests == 2)
        [killed] = server.worker_pids()
        turn = Turn.objects.get()
        assert turn.status == "running"
        # The turn names the process that runs it: host, pid, token.
        assert turn.worker.split(":")[1] == str(killed)
        events = {e.agent_key: e for e in LlmCallEvent.objects.all()}
        os.kill(killed, signal.SIGKILL)
        client.join(30)
        assert "error" in outcome or outcome["response"].status_code >= 500

        # gunicorn replaces the worker, and the new one ends, as it starts, the turn the killed
        # one left running: its session takes turns at once, not at the stale limit (nor
        # after an operator's recover_turns).
        server.wait_healthy()
        assert server.worker_pids() != [killed]
        turn.refresh_from_db()
        assert (turn.status, turn.failure_code) == ("interrupted", "turn_interrupted")
        assert list(turn.messages.values_list("role", "agent_key")) == [
            ("user", ""),
            ("assistant", "ada"),
        ]
        assert events["ada"].status == "success" and events["ada"].output_tokens > 0
        assert events["grace"].status == "pending"
        assert events["grace"].input_tokens_fresh > 0  # the input estimate
        assert (turn.llm_calls, turn.credits) == (2, events["ada"].credits)
        # Grace's call was in flight: in doubt, the provider may have billed it.
        grace_row = LlmCallEvent.objects.get(agent_key="grace")
        assert (grace_row.status, grace_row.attempts) == ("lost", 1)  # it was sent: was 0
        assert grace_row.input_tokens_fresh == events["grace"].input_tokens_fresh
        ada_row = LlmCallEvent.objects.get(agent_key="ada")
        assert (ada_row.status, ada_row.credits) == ("success", events["ada"].credits)
        assert (
            f"ended 1 turn(s) interrupted by the exit of worker(s) {turn.worker}; "
            "1 call(s) in flight marked lost"
        ) in log.read_text()

        point_at_stub(stub, "slow-0", "qwen")
        retry = httpx.post(url, json={"message": "again"}, headers=headers, timeout=30)
        assert retry.status_code == 201, retry.text
        assert retry.json()["turn_index"] == 2
        assert Turn.objects.get(turn_index=2).worker.split(":")[1] != str(killed)
    finally:
        server.stop()
