"""`recover_turns` ending a turn whose worker is alive and waiting on its provider (an age
shorter than a call takes): a real gunicorn, a stub provider on 127.0.0.1, PostgreSQL.

The client hears what a client whose turn was interrupted hears (a 503 `turn_interrupted`, or
`turn_failed` of that code on a stream), its Idempotency-Key runs the turn afresh, and the
call's ledger row, marked lost by the recovery with its input estimate, takes the usage and
cost the provider reported once the answer arrives."""

import json
import threading
import time

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events
from sessions_app.models import Turn, TurnFailure, TurnStatus
from sessions_app.tests.conftest import point_at_stub, wait_for
from usage.models import LlmCallEvent

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]

ANSWER_WORDS = 7  # the stub's answer, and the output tokens it reports


def _recover_while_the_call_runs(stub, post, capsys) -> dict:
    """Post in a thread; once the provider has the call, recover every running turn."""
    outcome: dict = {}

    def run():
        try:
            outcome["answer"] = post()
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    client = threading.Thread(target=run)
    client.start()
    wait_for(lambda: stub.requests == 1, "the provider to get the call")
    time.sleep(1)
    call_command("recover_turns", "--older-than", "0")
    assert "Interrupted 1 turn(s)" in capsys.readouterr().out
    lost = LlmCallEvent.objects.get()
    assert (lost.status, lost.output_tokens, lost.attempts) == ("lost", 0, 0)  # in doubt
    outcome["estimate"] = lost.input_tokens_fresh
    client.join(60)
    assert "error" not in outcome, outcome
    return outcome


def _assert_the_lost_call_has_the_providers_usage(estimate: int, log) -> Turn:
    turn = Turn.objects.get(turn_index=1)
    assert (turn.status, turn.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.INTERRUPTED)
    assert list(turn.messages.values_list("role", flat=True)) == ["user"]
    row = LlmCallEvent.objects.get(turn=turn)
    assert row.status == "lost"
    assert row.credits == 0  # the user never got the answer
    assert row.attempts == 1
    assert row.output_tokens == ANSWER_WORDS
    assert row.input_tokens_fresh > 0 and row.input_tokens_fresh != estimate
    assert row.provider_cost_usd > 0 and row.priced
    # The turn's totals follow its rows (reconcile compares them).
    totals = LlmCallEvent.objects.filter(turn=turn).aggregate(
        output=Sum("output_tokens"), cost=Sum("provider_cost_usd")
    )
    assert (turn.output_tokens, turn.provider_cost_usd) == (totals["output"], totals["cost"])
    assert turn.input_tokens == row.input_tokens_fresh + row.input_tokens_cached
    # The worker says what became of its call.
    said = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    taken = [line for line in said if line["logger"] == "sessions_app.turns"]
    assert [(line["level"], line["turn_id"]) for line in taken] == [("WARNING", str(turn.pk))]
    assert "taken over (turn_interrupted) while its agent call for ada ran" in taken[0]["message"]
    return turn


@pytest.fixture
def server(tmp_path):
    log = tmp_path / "server.log"
    server = AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key"},
        log_path=log,
    ).start()
    server.log = log  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def session(owner, make_agent, make_session):
    return make_session(owner, agent=make_agent(owner, "ada", model_alias="llama"))


@pytest.fixture
def headers(owner):
    return {
        "Authorization": f"Token {Token.objects.create(user=owner).key}",
        "Idempotency-Key": "recovered-mid-call",
    }


def test_a_plain_turn_recovered_mid_call_answers_503_turn_interrupted_and_bills_what_it_heard(
    server, session, headers, stub, capsys
):
    """Before: the client got 409 "Turn creation conflicted…" for a turn that was created and
    ran; the lost row kept the input estimate and no output although the provider answered; no
    line said the turn had been taken from its worker."""
    point_at_stub(stub, f"slow-3000-words-{ANSWER_WORDS}", "llama")
    url = f"{server.url}/api/v1/sessions/{session.pk}/turns"

    outcome = _recover_while_the_call_runs(
        stub, lambda: httpx.post(url, json={"message": "go"}, headers=headers, timeout=60), capsys
    )

    answer = outcome["answer"]
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"]["code"] == "turn_interrupted"
    assert answer.headers["Retry-After"] == "2"
    _assert_the_lost_call_has_the_providers_usage(outcome["estimate"], server.log)
    # Its Idempotency-Key runs the turn afresh, as after a restart.
    point_at_stub(stub, "slow-0", "llama")
    retry = httpx.post(url, json={"message": "go"}, headers=headers, timeout=60)
    assert retry.status_code == 201, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    assert (retry.json()["turn_index"], retry.json()["status"]) == (2, "completed")


def test_a_streamed_turn_recovered_mid_call_ends_turn_interrupted_and_bills_what_it_heard(
    server, session, headers, stub, capsys
):
    point_at_stub(stub, f"stream-500-words-{ANSWER_WORDS}", "llama")
    url = f"{server.url}/api/v1/sessions/{session.pk}/turns"

    def post():
        with httpx.stream(
            "POST",
            url,
            json={"message": "go"},
            headers={**headers, "Accept": "text/event-stream"},
            timeout=60,
        ) as response:
            return response.status_code, list(events(response))

    outcome = _recover_while_the_call_runs(stub, post, capsys)

    status, heard = outcome["answer"]
    assert status == 201
    assert (heard[-1].name, heard[-1].data["code"]) == ("turn_failed", "turn_interrupted")
    assert heard[-1].data["turn"]["status"] == "interrupted"
    _assert_the_lost_call_has_the_providers_usage(outcome["estimate"], server.log)
    point_at_stub(stub, "slow-0", "llama")
    retry = httpx.post(url, json={"message": "go"}, headers=headers, timeout=60)
    assert retry.status_code == 201, retry.text
    assert retry.json()["turn_index"] == 2
