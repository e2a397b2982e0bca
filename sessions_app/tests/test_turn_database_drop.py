"""A turn whose database connection PostgreSQL ends mid-turn (a restart, a failover, an
operator's `pg_terminate_backend`), on the production server: the turn ends `interrupted` with
its call in flight `lost`, the client is told `database_unavailable` (a 503, or the stream's
`turn_failed`), and a retry with the same Idempotency-Key runs the turn afresh."""

import json
import threading
from pathlib import Path

import httpx
import pytest
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, end_other_connections, postgres_url
from pantheon.testing.sse import events
from sessions_app import events as turn_events
from sessions_app.models import IdempotencyKey, Message, Turn
from sessions_app.tests.conftest import point_at_stub, wait_for
from usage.models import LlmCallEvent

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]


@pytest.fixture
def headers(owner):
    return {
        "Authorization": f"Token {Token.objects.create(user=owner).key}",
        "Idempotency-Key": "key-1",
    }


@pytest.fixture
def session(owner, make_agent, make_session, stub):
    point_at_stub(stub, "slow-1500", "deepseek")  # the provider thinks, then answers at once
    return make_session(owner, agent=make_agent(owner, "ada", model_alias="deepseek"))


def _serve(log: Path | None = None) -> AppServer:
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub"}
    return AppServer(database_url=postgres_url(connection.settings_dict), env=env, log_path=log)


def _serve_through(tcp_proxy, **env: str) -> AppServer:
    """A server that reaches the database through `tcp_proxy`."""
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub", **env}
    return AppServer(database_url=tcp_proxy.database_url(connection.settings_dict), env=env)


def _ended_once_the_database_is_back(lost: httpx.Response, tcp_proxy) -> Turn:
    """`lost`: the 503 of a turn whose database was still away when it ended (the proxy cut).
    The turn stays `running` until the proxy carries connections again, then its worker ends
    it."""
    assert lost.status_code == 503, lost.text
    assert lost.json()["detail"]["code"] == "database_unavailable"
    assert Turn.objects.get().status == "running"  # nothing could be written

    tcp_proxy.restore()
    wait_for(lambda: Turn.objects.get().status != "running", "the turn to be ended", timeout=30)
    turn = Turn.objects.get()
    assert turn.failure_code == "database_unavailable"
    return turn


def _tracebacks(log: Path) -> list[str]:
    """The messages of the server's log lines that carry a traceback."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line["message"] for line in lines if "exc_info" in line]


def _drop_the_steps_connection(stub) -> None:
    """While the provider thinks, the turn holds no connection. Hold its row so that the step
    that stores the answer waits on it, then end that step's connection mid-transaction."""
    wait_for(lambda: stub.requests == 1, "the provider call")
    with transaction.atomic():
        Turn.objects.select_for_update(no_key=True).get()
        wait_for(
            lambda: end_other_connections(waiting_on_a_lock=True), "the step waiting on the lock"
        )


def _assert_the_turn_was_interrupted_and_the_key_freed(turn: Turn) -> None:
    assert turn.status == "interrupted"
    assert turn.completed_at is not None
    # The answer's transaction went with its connection: no message, and its call is `lost`,
    # not left pending: at no credit (the user never got the answer), with the usage the
    # provider reported (it answered, and bills it), not the input estimate alone.
    assert list(Message.objects.filter(turn=turn).values_list("role", flat=True)) == ["user"]
    [call] = LlmCallEvent.objects.filter(turn_id=turn.pk)
    assert (call.status, call.credits) == ("lost", 0)
    assert call.output_tokens > 0 and call.attempts == 1
    assert call.total_tokens == call.input_tokens_fresh + call.output_tokens
    # The turn's totals are its ledger row's (they kept the input estimate).
    assert (turn.input_tokens, turn.output_tokens, turn.provider_cost_usd) == (
        call.input_tokens_fresh + call.input_tokens_cached,
        call.output_tokens,
        call.provider_cost_usd,
    )
    assert not IdempotencyKey.objects.exists()


def _post_meanwhile(url: str, headers) -> tuple[threading.Thread, list[httpx.Response]]:
    """A turn posted on a thread of its own; its answer lands in the list."""
    answers: list[httpx.Response] = []
    poster = threading.Thread(
        target=lambda: answers.append(
            httpx.post(url, json={"message": "hello"}, headers=headers, timeout=60)
        )
    )
    poster.start()
    return poster, answers


def _retry(url: str, headers) -> httpx.Response:
    retried = httpx.post(url, json={"message": "hello"}, headers=headers, timeout=60)
    assert retried.status_code == 201, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    assert retried.json()["turn_index"] == 2
    assert retried.json()["status"] == "completed"
    return retried


def test_a_turn_that_loses_its_connection_answers_503_and_its_key_runs_a_retry(
    session, stub, headers, tmp_path
):
    log = tmp_path / "server.log"
    with _serve(log) as server:
        url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
        poster, answers = _post_meanwhile(url, headers)
        _drop_the_steps_connection(stub)
        poster.join(60)

        [lost] = answers
        assert lost.status_code == 503, lost.text
        assert lost.json()["detail"]["code"] == "database_unavailable"
        assert lost.headers["Retry-After"] == "2"
        _assert_the_turn_was_interrupted_and_the_key_freed(Turn.objects.get())
        # Its failure is logged once, with its 503 (it was logged as a detached turn's too).
        assert _tracebacks(log) == ["the database connection was lost: answered 503"]

        _retry(url, headers)

    assert stub.requests == 2
    assert IdempotencyKey.objects.get().response_status == 201


def test_a_streamed_turn_that_loses_its_connection_ends_with_turn_failed(
    session, stub, headers, tmp_path
):
    log = tmp_path / "server.log"
    with _serve(log) as server:
        url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
        streamed: list = []

        def stream() -> None:
            with httpx.stream(
                "POST",
                url,
                json={"message": "hello"},
                headers={**headers, "Accept": "text/event-stream"},
                timeout=60,
            ) as response:
                assert response.status_code == 201
                streamed.extend(events(response))

        poster = threading.Thread(target=stream)
        poster.start()
        _drop_the_steps_connection(stub)
        poster.join(60)

        # The answer's text came as deltas, then its step broke off: no step_completed.
        names = [event.name for event in streamed]
        assert names[:2] == ["turn_started", "step_started"]
        assert set(names[2:-1]) == {"step_delta"}
        assert names[-1] == "turn_failed"
        failed = streamed[-1].data
        assert failed["code"] == "database_unavailable"
        # The database was back for the turn's ending: the event holds the turn, as its
        # replay's does (it keeps the code).
        assert failed["turn"]["status"] == "interrupted"
        turn = Turn.objects.get()
        assert turn.failure_code == "database_unavailable"
        assert turn_events.turn_replay(turn).events[-1].data == failed
        _assert_the_turn_was_interrupted_and_the_key_freed(turn)
        # Its request answered 201 with the stream: the turn's failure is logged as its own,
        # once its task has ended, which may come after the stream's last event reached us.
        wait_for(lambda: _tracebacks(log), "the turn's failure in the server's log", timeout=10)
        assert _tracebacks(log) == ["a detached turn failed"]

        _retry(url, headers)

    assert stub.requests == 2


@pytest.mark.parametrize("keyed", [True, False], ids=["with a key", "without a key"])
def test_a_turn_whose_database_stays_away_is_ended_once_it_is_back(
    session, stub, headers, keyed, tcp_proxy
):
    """PostgreSQL stopped while the provider thinks, and still away when the turn's failure
    path runs: the turn cannot be ended then. The client gets its 503 all the same, and the
    worker ends the turn (`interrupted`, its call `lost`) and frees its key as soon as the
    database is back, so the session and the key take a turn again at once. It stayed
    `running` until the stale limit (10 minutes): the session answered 409, the key
    `idempotency_key_in_use`."""
    if not keyed:
        del headers["Idempotency-Key"]
    with _serve_through(tcp_proxy, DB_POOL_TIMEOUT="1") as server:
        turns = f"{server.url}/api/v1/sessions/{session.pk}/turns"
        poster, answers = _post_meanwhile(turns, headers)
        wait_for(lambda: stub.requests == 1, "the provider call")
        tcp_proxy.cut()
        poster.join(60)
        [lost] = answers
        turn = _ended_once_the_database_is_back(lost, tcp_proxy)
        _assert_the_turn_was_interrupted_and_the_key_freed(turn)

        _retry(turns, headers)

    assert stub.requests == 2


@pytest.mark.parametrize("keyed", [True, False], ids=["with a key", "without a key"])
def test_a_claim_committed_as_its_connection_dropped_is_ended_not_left_running(
    session, stub, headers, keyed, tcp_proxy
):
    """The claim's COMMIT reached PostgreSQL and went through, and the connection was lost
    before its answer came back: the request cannot tell, and answers 503. The turn it claimed
    is ended at once (`interrupted`, `database_unavailable`) and its key freed: it stayed
    `running`, with no one to run it, and the session answered 409 for the stale limit (10
    minutes), to a retry with the key too."""
    if not keyed:
        del headers["Idempotency-Key"]
    tcp_proxy.cut_once_sent(b'INSERT INTO "sessions_app_turn"', b"COMMIT")
    with _serve_through(tcp_proxy) as server:
        turns = f"{server.url}/api/v1/sessions/{session.pk}/turns"
        lost = httpx.post(turns, json={"message": "hello"}, headers=headers, timeout=60)
        assert lost.status_code == 503, lost.text
        assert lost.json()["detail"]["code"] == "database_unavailable"
        assert lost.headers["Retry-After"] == "2"

        # The claim was committed: the trap cut after its COMMIT. Its end is written at once, on
        # a new connection; on a loaded machine that one may not be ready yet, and the end is
        # written by the worker's next tries (1, 2, 4 s apart, each waiting for the pool's new
        # connection): within half a minute as a rule, as once the database is back, not after
        # the stale limit (10 minutes). A minute and a half: on a machine loaded by other work
        # (a CI run beside four servers) each try's new connection was slow enough to miss 30 s.
        wait_for(lambda: Turn.objects.get().status != "running", "the turn to be ended", timeout=90)
        turn = Turn.objects.get()
        assert turn.status == "interrupted"
        assert turn.failure_code == "database_unavailable"
        # Its first call's row was open, and its provider never called: nothing is billed.
        [call] = LlmCallEvent.objects.filter(turn_id=turn.pk)
        assert (call.status, call.credits) == ("lost", 0)
        assert stub.requests == 0
        assert not IdempotencyKey.objects.exists()

        _retry(turns, headers)

    assert stub.requests == 1


@pytest.mark.parametrize("reached", [True, False], ids=["stored", "not stored"])
def test_a_finished_turn_whose_key_could_not_be_stored_still_answers(
    session, stub, headers, reached, tcp_proxy
):
    """The turn completed, and the connection was lost as its answer was stored for its key
    (the statement ran, or never reached PostgreSQL). The client gets the turn's 201 all the
    same (it got a 503 and, as the key was left running, a retry got 409 for the stale limit,
    then the turn again); the key keeps that answer for retries, stored in the background if
    it was not."""
    tcp_proxy.cut_once_sent(b'UPDATE "sessions_app_idempotencykey" SET "state"', passed_on=reached)
    with _serve_through(tcp_proxy) as server:
        turns = f"{server.url}/api/v1/sessions/{session.pk}/turns"
        answered = httpx.post(turns, json={"message": "hello"}, headers=headers, timeout=60)
        assert answered.status_code == 201, answered.text
        assert answered.json()["status"] == "completed"

        wait_for(
            lambda: IdempotencyKey.objects.get().state == IdempotencyKey.State.DONE,
            "the key's answer",
        )
        retried = httpx.post(turns, json={"message": "hello"}, headers=headers, timeout=60)
        assert retried.status_code == 201, retried.text
        assert retried.headers["Idempotent-Replayed"] == "true"
        assert retried.json()["id"] == answered.json()["id"]
        # The very answer the client got, its balance included (rebuilt from the turn, the
        # key's answer had none).
        assert retried.json() == answered.json()

    assert stub.requests == 1
    assert IdempotencyKey.objects.get().response_status == 201


def test_a_claim_committed_as_the_database_went_away_is_ended_once_it_is_back(
    session, stub, headers, tcp_proxy
):
    """As above, and the database is away when the request tries to end the turn: the 503
    comes all the same, and the worker ends the turn and frees the key once it is back."""
    tcp_proxy.cut_once_sent(b'INSERT INTO "sessions_app_turn"', b"COMMIT", away=True)
    with _serve_through(tcp_proxy, DB_POOL_TIMEOUT="1") as server:
        turns = f"{server.url}/api/v1/sessions/{session.pk}/turns"
        lost = httpx.post(turns, json={"message": "hello"}, headers=headers, timeout=60)
        _ended_once_the_database_is_back(lost, tcp_proxy)
        assert not IdempotencyKey.objects.exists()

        _retry(turns, headers)

    assert stub.requests == 1
