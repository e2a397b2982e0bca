"""A worker killed with SIGKILL in the middle of a provider call (a real gunicorn, a real stub
provider on 127.0.0.1, PostgreSQL): the ledger keeps a row for the call in flight."""

import os
import signal
import threading

import httpx
import pytest
from django.core.management import call_command
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

CONFLICT = {"detail": "Turn creation conflicted with concurrent writes. Please retry."}


def test_a_worker_killed_mid_call_leaves_the_call_on_the_ledger_and_recovery_frees_the_session(
    owner, make_agent, make_room, make_session, stub, capsys
):
    point_at_stub(stub, "slow-0", "llama")  # Ada answers at once
    point_at_stub(stub, "slow-60000", "qwen")  # Grace's provider hangs
    ada = make_agent(owner, "ada", model_alias="llama")
    grace = make_agent(owner, "grace", model_alias="qwen")
    session = make_session(owner, room=make_room(owner, [ada, grace], mode=RoomMode.ROUNDTABLE))
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    server = AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key"},
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
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        client.join(30)
        assert "error" in outcome or outcome["response"].status_code >= 500

        turn = Turn.objects.get()
        assert turn.status == "running"
        assert list(turn.messages.values_list("role", "agent_key")) == [
            ("user", ""),
            ("assistant", "ada"),
        ]
        events = {e.agent_key: e for e in LlmCallEvent.objects.all()}
        assert events["ada"].status == "success" and events["ada"].output_tokens > 0
        assert events["grace"].status == "pending"
        assert events["grace"].input_tokens_fresh > 0  # the input estimate

        # The session stays blocked until recovery (or the stale limit).
        server.wait_healthy()
        blocked = httpx.post(url, json={"message": "again"}, headers=headers, timeout=30)
        assert (blocked.status_code, blocked.json()) == (409, CONFLICT)

        call_command("recover_turns", "--older-than", "0")
        assert "Interrupted 1 turn(s)" in capsys.readouterr().out
        turn.refresh_from_db()
        assert turn.status == "interrupted"
        assert (turn.llm_calls, turn.credits) == (2, events["ada"].credits)
        grace_row = LlmCallEvent.objects.get(agent_key="grace")
        assert grace_row.status == "lost"
        assert grace_row.input_tokens_fresh == events["grace"].input_tokens_fresh
        ada_row = LlmCallEvent.objects.get(agent_key="ada")
        assert (ada_row.status, ada_row.credits) == ("success", events["ada"].credits)

        point_at_stub(stub, "slow-0", "qwen")
        retry = httpx.post(url, json={"message": "again"}, headers=headers, timeout=30)
        assert retry.status_code == 201, retry.text
        assert retry.json()["turn_index"] == 2
    finally:
        server.stop()
