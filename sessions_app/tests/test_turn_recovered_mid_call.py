"""`recover_turns` ending a turn whose worker is alive and waiting on its provider (an age
shorter than a call takes): a real gunicorn, a stub provider on 127.0.0.1, PostgreSQL.

The client hears what a client whose turn was interrupted hears (a 503 `turn_interrupted`, or
`turn_failed` of that code on a stream), its Idempotency-Key runs the turn afresh, and the
call's ledger row, marked lost by the recovery with its input estimate, takes the usage and
cost the provider reported once the answer arrives."""

import json
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import F, Sum
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


def _streamed(url: str, headers: dict, message: str = "go"):
    """A streamed turn's POST, to be entered: its response as the events come."""
    return httpx.stream(
        "POST",
        url,
        json={"message": message},
        headers={**headers, "Accept": "text/event-stream"},
        timeout=60,
    )


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
    # In doubt: it was sent (it said 0 attempts), nothing heard back yet.
    assert (lost.status, lost.output_tokens, lost.attempts, lost.provider) == ("lost", 0, 1, "")
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
    # What became of its call, then how the turn ended (its one line at its end).
    assert [(line["level"], line["turn_id"]) for line in taken] == [("WARNING", str(turn.pk))] * 2
    assert "taken over (turn_interrupted) while its agent call for ada ran" in taken[0]["message"]
    assert f"turn {turn.pk} ended interrupted" in taken[1]["message"]
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
        with _streamed(url, headers) as response:
            return response.status_code, list(events(response))

    outcome = _recover_while_the_call_runs(stub, post, capsys)

    status, heard = outcome["answer"]
    assert status == 201
    assert (heard[-1].name, heard[-1].data["code"]) == ("turn_failed", "turn_interrupted")
    assert heard[-1].data["turn"]["status"] == "interrupted"
    # The client is told before its provider has finished; the row takes its usage then.
    wait_for(lambda: LlmCallEvent.objects.get().provider != "", "the provider's late usage")
    _assert_the_lost_call_has_the_providers_usage(outcome["estimate"], server.log)
    point_at_stub(stub, "slow-0", "llama")
    retry = httpx.post(url, json={"message": "go"}, headers=headers, timeout=60)
    assert retry.status_code == 201, retry.text
    assert retry.json()["turn_index"] == 2


@pytest.mark.parametrize("ended_by", ["recover_turns", "a later turn"])
def test_a_streamed_turn_ended_mid_answer_stops_its_deltas_and_ends_at_once(
    server, session, headers, stub, capsys, ended_by
):
    """Before: the live client of a turn `recover_turns` ended got 29 more deltas of the
    discarded answer over 8.5 s, then its `turn_failed` 12 s in, while the turn's replay had
    long ended without them (its stream saves went on landing for a turn no longer running);
    so did one whose stalled session a later turn took over. Now the next save finds the turn
    ended: no more deltas, the ending at once, the same one the replay ends with; the
    provider's stream is still read to its end, for the lost row's usage."""
    words = 40
    point_at_stub(stub, f"stream-300-words-{words}", "llama")
    url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
    heard: list = []

    def post():
        with _streamed(url, headers) as response:
            assert response.status_code == 201
            heard.extend(events(response))

    client = threading.Thread(target=post)
    client.start()
    wait_for(lambda: sum(event.name == "step_delta" for event in heard) >= 5, "a few words")
    turn = Turn.objects.get()
    if ended_by == "recover_turns":
        call_command("recover_turns", "--older-than", "0")
        assert "Interrupted 1 turn(s)" in capsys.readouterr().out
        code = "turn_interrupted"
    else:  # its progress as old as a stalled turn's: the next turn takes the session over
        Turn.objects.filter(pk=turn.pk).update(progress_at=F("progress_at") - timedelta(hours=1))
        later_headers = {"Authorization": headers["Authorization"]}
        with _streamed(url, later_headers, "again") as later:  # claimed once it has started
            assert (later.status_code, next(events(later)).name) == (201, "turn_started")
        code = "turn_conflict"
    ended_at = time.monotonic()
    client.join(60)

    ending = heard[-1]
    assert (ending.name, ending.data["code"]) == ("turn_failed", code)
    assert ending.received_at - ended_at < 2, "the ending waited for the provider"
    late = [e for e in heard if e.name == "step_delta" and e.received_at > ended_at]
    assert len(late) <= 2, f"{len(late)} deltas after the turn was ended"
    # What it was shown ends as the replay does, which has no answer.
    with httpx.stream(
        "GET",
        f"{server.url}/api/v1/turns/{turn.pk}/events",
        headers={"Authorization": headers["Authorization"], "Accept": "text/event-stream"},
        timeout=30,
    ) as response:
        replayed = list(events(response))
    assert [event.name for event in replayed] == ["turn_started", "turn_failed"]
    assert (replayed[-1].id, replayed[-1].data) == (ending.id, ending.data)
    # The provider's stream was read to its end, not closed: the lost row has its usage.
    lost = LlmCallEvent.objects.filter(turn=turn)
    wait_for(lambda: lost.get().provider != "", "the provider's late usage")
    row = lost.get()
    assert (row.status, row.credits, row.output_tokens) == ("lost", 0, words)
    assert stub.hung_up == 0
    turn.refresh_from_db()
    assert turn.output_tokens == words
