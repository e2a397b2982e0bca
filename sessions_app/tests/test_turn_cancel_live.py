"""A user's "Stop" on real servers: gunicorn on PostgreSQL, a slow provider stub on 127.0.0.1.

A chat UI's browser aborts its streamed `POST sessions/{id}/turns` (a minute-long answer), or
another of its connections cancels it: `POST turns/{id}/cancel` ends the turn at once, and the
worker running it abandons its provider call at once (the stub sees its caller hang up) when it
is the same process, or at its next save of the answer's text when it runs on another host;
the session takes the next message at once. Before, there was no cancel, the answer ran (and
was billed) to its end, and every message meanwhile was refused 409."""

import threading
import time

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events
from sessions_app.models import Turn, TurnFailure, TurnStatus
from sessions_app.tests.conftest import point_at_stub, wait_for
from usage.models import LlmCallEvent, MonthlyUsage
from usage.reconcile import reconcile

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]

# A minute-long answer: a word every half second.
MINUTE_LONG = "stream-500-words-120"


def _server() -> AppServer:
    return AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key"},
    )


@pytest.fixture
def server():
    with _server() as server:
        yield server


@pytest.fixture
def session(owner, make_agent, make_session):
    return make_session(owner, agent=make_agent(owner, "ada", model_alias="llama"))


@pytest.fixture
def auth(owner) -> dict:
    return {"Authorization": f"Token {Token.objects.create(user=owner).key}"}


class StreamedTurn:
    """A streamed POST of a turn in a thread of its own, its events gathered as they come."""

    def __init__(self, base: str, session, auth: dict, message: str = "tell me everything"):
        self.heard: list = []
        self.error: Exception | None = None
        self._args = (f"{base}/api/v1/sessions/{session.pk}/turns", message, auth)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        url, message, auth = self._args
        headers = {**auth, "Accept": "text/event-stream"}
        try:
            with httpx.stream(
                "POST", url, json={"message": message}, headers=headers, timeout=90
            ) as response:
                assert response.status_code == 201
                for event in events(response):
                    self.heard.append(event)
        except Exception as exc:  # said by the test
            self.error = exc

    def deltas(self) -> int:
        return sum(event.name == "step_delta" for event in self.heard)

    def join(self) -> None:
        self._thread.join(90)
        assert not self._thread.is_alive()
        assert self.error is None, self.error


def _cancel(base: str, auth: dict, turn_id) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/turns/{turn_id}/cancel", headers=auth, timeout=30)


def _next_turn(base: str, session, auth: dict, stub) -> httpx.Response:
    point_at_stub(stub, "slow-0", "llama")
    return httpx.post(
        f"{base}/api/v1/sessions/{session.pk}/turns",
        json={"message": "something else"},
        headers=auth,
        timeout=30,
    )


def _assert_cancelled_with_its_call_lost(turn: Turn) -> LlmCallEvent:
    turn.refresh_from_db()
    assert (turn.status, turn.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.CANCELLED)
    assert list(turn.messages.values_list("role", flat=True)) == ["user"]
    row = LlmCallEvent.objects.get(turn=turn)
    assert (row.status, row.credits, row.attempts) == ("lost", 0, 1)
    return row


def _assert_cancelled_and_billed_for_its_words(turn: Turn) -> LlmCallEvent:
    """A streamed answer cancelled after its first words reached its user: its row is billed
    for them (the input estimate and an estimate of the words), as a stream that failed after
    its first words is, and the month's counter moved with it."""
    turn.refresh_from_db()
    assert (turn.status, turn.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.CANCELLED)
    assert list(turn.messages.values_list("role", flat=True)) == ["user"]
    row = LlmCallEvent.objects.get(turn=turn)
    assert (row.status, row.error_type, row.provider, row.attempts) == (
        "error",
        "cancelled",
        "openai",
        1,
    )
    assert row.input_tokens_fresh > 0 and row.output_tokens > 0 and row.credits > 0
    assert (turn.output_tokens, turn.credits) == (row.output_tokens, row.credits)
    return row


def test_a_streamed_turn_cancelled_from_another_connection_stops_at_once(
    server, session, auth, stub
):
    point_at_stub(stub, MINUTE_LONG, "llama")
    poster = StreamedTurn(server.url, session, auth)
    wait_for(lambda: poster.deltas() >= 3, "a few words")
    turn = Turn.objects.get()

    cancelled_at = time.monotonic()
    cancel = _cancel(server.url, auth, turn.pk)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "interrupted"
    # This process runs it: its provider call is abandoned at once, not read to its end.
    wait_for(lambda: stub.hung_up == 1, "the stub to see its caller hang up", timeout=5)
    assert time.monotonic() - cancelled_at < 2
    poster.join()

    ending = poster.heard[-1]
    assert (ending.name, ending.data["code"]) == ("turn_failed", "turn_cancelled")
    assert ending.data["turn"]["status"] == "interrupted"
    assert ending.received_at - cancelled_at < 2
    assert stub.in_flight == 0
    # Abandoned after its first words: billed for those its user got, on an estimate.
    row = _assert_cancelled_and_billed_for_its_words(turn)
    spoken = sum(event.name == "step_delta" for event in poster.heard)
    assert row.output_tokens >= spoken
    assert MonthlyUsage.objects.get(user=turn.session.started_by).credits == row.credits
    # The session takes the next message at once.
    following = _next_turn(server.url, session, auth, stub)
    assert following.status_code == 201, following.text
    assert following.json()["turn_index"] == 2
    # A replay ends as the live stream did.
    with httpx.stream(
        "GET",
        f"{server.url}/api/v1/turns/{turn.pk}/events",
        headers={**auth, "Accept": "text/event-stream"},
        timeout=30,
    ) as response:
        replayed = list(events(response))
    assert (replayed[-1].id, replayed[-1].data) == (ending.id, ending.data)
    report = reconcile()
    assert report.clean, [check for check in report.checks if not check.clean]


def test_a_plain_turn_whose_client_hung_up_is_cancelled_and_its_call_abandoned(
    server, session, auth, stub
):
    """The browser aborted its POST after a moment; the turn runs on detached (a hang-up does
    not stop it) until its user cancels it."""
    point_at_stub(stub, "slow-60000", "llama")
    url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={"message": "a slow one"}, headers=auth, timeout=2)
    turn = Turn.objects.get()
    assert turn.status == TurnStatus.RUNNING and stub.in_flight == 1

    cancel = _cancel(server.url, auth, turn.pk)

    assert cancel.status_code == 200, cancel.text
    wait_for(lambda: stub.hung_up == 1, "the stub to see its caller hang up", timeout=5)
    row = _assert_cancelled_with_its_call_lost(turn)
    assert (row.provider, row.output_tokens) == ("", 0)
    assert _next_turn(server.url, session, auth, stub).status_code == 201


def test_the_next_message_names_the_running_turn_which_the_ui_cancels_then_posts_again(
    server, session, auth, stub
):
    """The front-end developer's report: a streamed turn (a minute-long answer) aborted by the
    browser after a moment runs on; the next message got a 409 with nothing to act on, for as
    long as the answer ran. Now the 409 names the running turn, which the UI cancels, and the
    message it posts again is taken."""
    point_at_stub(stub, MINUTE_LONG, "llama")
    url = f"{server.url}/api/v1/sessions/{session.pk}/turns"
    headers = {**auth, "Accept": "text/event-stream"}
    with httpx.stream("POST", url, json={"message": "go"}, headers=headers, timeout=30) as aborted:
        assert aborted.status_code == 201
        started = next(events(aborted))  # the browser's AbortController, after the first event
    running = Turn.objects.get()
    assert running.status == TurnStatus.RUNNING  # a hang-up does not stop a turn

    refused = httpx.post(url, json={"message": "next"}, headers=auth, timeout=30)

    assert refused.status_code == 409
    assert refused.json() == {
        "detail": "Turn creation conflicted with concurrent writes. Please retry.",
        "code": "turn_in_progress",
        "turn_id": started.data["turn_id"],
    }
    assert "Retry-After" not in refused.headers
    assert _cancel(server.url, auth, refused.json()["turn_id"]).status_code == 200
    wait_for(lambda: stub.hung_up == 1, "the stub to see its caller hang up", timeout=5)
    again = _next_turn(server.url, session, auth, stub)
    assert again.status_code == 201, again.text
    assert again.json()["turn_index"] == 2
    row = LlmCallEvent.objects.get(turn=running)
    if row.status == "lost":  # cancelled before the provider's first word
        row = _assert_cancelled_with_its_call_lost(running)
        assert row.output_tokens == 0
    else:  # a word had reached the turn's stream (its client gone): billed, as a hang-up is
        _assert_cancelled_and_billed_for_its_words(running)


def test_another_users_cancel_is_404_and_changes_nothing(server, session, auth, stub, outsider):
    point_at_stub(stub, "slow-3000", "llama")
    poster = StreamedTurn(server.url, session, auth)
    wait_for(lambda: Turn.objects.exists() and stub.in_flight == 1, "the call to be made")
    turn = Turn.objects.get()
    stranger = {"Authorization": f"Token {Token.objects.create(user=outsider).key}"}

    refused = _cancel(server.url, stranger, turn.pk)

    assert refused.status_code == 404
    # As every turn endpoint answers a turn that is not the caller's.
    read = httpx.get(f"{server.url}/api/v1/turns/{turn.pk}", headers=stranger, timeout=30)
    assert (read.status_code, read.json()) == (404, refused.json())
    poster.join()
    assert poster.heard[-1].name == "turn_completed"
    assert stub.hung_up == 0
    again = _cancel(server.url, auth, turn.pk)
    assert again.status_code == 409
    assert again.json()["detail"]["status"] == "completed"


def test_a_turn_running_on_another_host_stops_at_its_next_save_or_write(session, auth, stub):
    """Two hosts on one database: the cancel reaches the turn's worker through the database
    only. A streamed answer's next save of its text (every PANTHEON_STREAM_SAVE_SECONDS while
    words come) finds it cancelled: its client hears `turn_failed` within a second or two, and
    its provider's stream is closed. A plain call runs to its end, then its step writes
    nothing, and its lost row takes the usage the provider reported."""
    with _server() as running_it, _server() as elsewhere:
        point_at_stub(stub, MINUTE_LONG, "llama")
        poster = StreamedTurn(running_it.url, session, auth)
        wait_for(lambda: poster.deltas() >= 3, "a few words")
        streamed = Turn.objects.get()
        cancelled_at = time.monotonic()
        assert _cancel(elsewhere.url, auth, streamed.pk).status_code == 200
        poster.join()
        ending = poster.heard[-1]
        assert (ending.name, ending.data["code"]) == ("turn_failed", "turn_cancelled")
        assert ending.received_at - cancelled_at < 2, "the ending waited for the provider"
        late = [e for e in poster.heard if e.name == "step_delta" and e.received_at > cancelled_at]
        assert len(late) <= 2, f"{len(late)} deltas after the cancel"
        wait_for(lambda: stub.hung_up == 1, "the stub to see its stream closed", timeout=5)
        _assert_cancelled_and_billed_for_its_words(streamed)

        point_at_stub(stub, "slow-3000-words-7", "llama")
        answer: dict = {}
        url = f"{running_it.url}/api/v1/sessions/{session.pk}/turns"
        plain = threading.Thread(
            target=lambda: answer.update(
                response=httpx.post(url, json={"message": "plain"}, headers=auth, timeout=60)
            )
        )
        plain.start()
        wait_for(lambda: Turn.objects.filter(turn_index=2).exists(), "the plain turn's claim")
        wait_for(lambda: stub.in_flight == 1, "the plain turn's call")
        second = Turn.objects.get(turn_index=2)
        assert _cancel(elsewhere.url, auth, second.pk).status_code == 200
        # Its session is free at once, while the other host still waits on its provider.
        following = _next_turn(elsewhere.url, session, auth, stub)
        assert following.status_code == 201, following.text
        plain.join(60)

    response = answer["response"]
    assert response.status_code == 409, response.text
    assert response.json()["detail"]["code"] == "turn_cancelled"
    row = _assert_cancelled_with_its_call_lost(second)
    # The provider answered after all: its usage on the lost row, once, at no credit.
    assert row.provider != "" and row.output_tokens == 7
    second.refresh_from_db()
    assert second.output_tokens == 7 and second.credits == 0
    assert stub.hung_up == 1
    report = reconcile()
    assert report.clean, [check for check in report.checks if not check.clean]


def test_a_reasoning_turn_on_another_host_stops_while_it_still_reasons(session, auth, stub):
    """A reasoning model's stream shows nothing before its answer (its reasoning is neither
    shown nor saved), and a cancel taken on another host ended it only at the answer's first
    word or at the reasoning's progress save (every tenth of the stale limit: a minute by
    default): the provider reasoned on for up to that minute after the user's "Stop", a call
    whose lost row bills no credit, and the client waited that long for its `turn_failed`.
    A user whose cancels land on another host (any balancer does that half the time with two
    hosts) made a provider think a minute a turn, billed to no one. Now the reasoning looks at
    the turn at the saves' pace: the stream is closed within a second or two."""
    with _server() as running_it, _server() as elsewhere:
        point_at_stub(stub, "stream-100-reasoning-900-words-5", "llama")  # 90 s of reasoning
        poster = StreamedTurn(running_it.url, session, auth)
        wait_for(lambda: stub.in_flight == 1, "the turn's call")
        wait_for(lambda: Turn.objects.exists(), "the turn's claim")
        turn = Turn.objects.get()
        time.sleep(1)  # the call reasons
        cancelled_at = time.monotonic()
        assert _cancel(elsewhere.url, auth, turn.pk).status_code == 200
        poster.join()
        ending = poster.heard[-1]
        assert (ending.name, ending.data["code"]) == ("turn_failed", "turn_cancelled")
        assert ending.received_at - cancelled_at < 10, "the ending waited for the reasoning"
        assert poster.deltas() == 0
        wait_for(lambda: stub.hung_up == 1, "the stub to see its stream closed", timeout=10)
    _assert_cancelled_with_its_call_lost(turn)
    report = reconcile()
    assert report.clean, [check for check in report.checks if not check.clean]
