"""A chat app's "Delete chat" during a turn, on real servers: gunicorn on PostgreSQL, a slow
provider stub on 127.0.0.1.

`DELETE sessions/{id}` (or `DELETE rooms/{id}`, which takes its sessions with it) while a
roundtable's turn runs ends that turn at once, as `POST turns/{id}/cancel` does: `interrupted`,
ended by `turn_cancelled`, the answers it had finished kept, the call in flight abandoned (its
ledger row billed for the words its stream had given, as a cancel's is) and no further agent
called. The stream of the request that posted it and
every follower's end with `turn_failed` of that code. Before, the turn ran its remaining calls
to its end and they were billed, its poster's stream ended `turn_completed` for a turn that
was a 404, a follower's stream was cut with no ending, and the cancel was a 404 (the turn went
with its session): a deleted chat could not stop spending. `forget_user`, run by an operator
in a process of its own, ends the user's running turn the same way."""

import threading
import time
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events
from rooms.models import RoomMode
from sessions_app.models import Message, Turn, TurnFailure, TurnStatus, TurnStreamChunk
from sessions_app.tests.conftest import point_at_stub, wait_for
from usage.models import LlmCallEvent
from usage.reconcile import reconcile

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]

# Each agent answers in three seconds: 30 words, one every 100 ms.
SLOW_ANSWER = "stream-100-words-30"


@pytest.fixture
def server():
    with AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key"},
    ) as server:
        yield server


@pytest.fixture
def auth(owner) -> dict:
    return {"Authorization": f"Token {Token.objects.create(user=owner).key}"}


@pytest.fixture
def roundtable(owner, make_agent, make_room, stub):
    """A roundtable of three agents on the stub."""
    agents = [make_agent(owner, key, model_alias="llama") for key in ("ada", "grace", "linus")]
    point_at_stub(stub, SLOW_ANSWER, "llama")
    return make_room(owner, agents, mode=RoomMode.ROUNDTABLE)


class Stream:
    """A streamed request in a thread of its own, its events gathered as they come."""

    def __init__(self, method: str, url: str, auth: dict, body: dict | None = None) -> None:
        self.heard: list = []
        self.status: int | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(method, url, auth, body))
        self._thread.start()

    def _run(self, method: str, url: str, auth: dict, body: dict | None) -> None:
        headers = {**auth, "Accept": "text/event-stream"}
        try:
            with httpx.stream(method, url, json=body, headers=headers, timeout=60) as response:
                self.status = response.status_code
                for event in events(response):
                    self.heard.append(event)
        except Exception as exc:  # said by the test
            self.error = exc

    def names(self) -> list[str]:
        return [event.name for event in self.heard]

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive()
        assert self.error is None, self.error


def _post_turn(base: str, session, auth: dict) -> Stream:
    url = f"{base}/api/v1/sessions/{session.pk}/turns"
    return Stream("POST", url, auth, {"message": "each of you, at length"})


def _follow(base: str, turn: Turn, auth: dict) -> Stream:
    return Stream("GET", f"{base}/api/v1/turns/{turn.pk}/events", auth)


def _in_the_second_answer(poster: Stream) -> None:
    """Until the first agent has answered and the second is a few words in."""

    def there() -> bool:
        names = poster.names()
        if "step_completed" not in names:
            return False
        return names[names.index("step_completed") :].count("step_delta") >= 3

    wait_for(there, "the second agent's first words")


def _a_turn_in_its_second_answer(base: str, session, auth: dict) -> tuple[Stream, Turn, Stream]:
    """The session's turn posted and followed, its second agent's answer streaming."""
    poster = _post_turn(base, session, auth)
    wait_for(lambda: Turn.objects.exists(), "the turn's claim")
    turn = Turn.objects.get()
    follower = _follow(base, turn, auth)
    _in_the_second_answer(poster)
    return poster, turn, follower


def _assert_ended_as_cancelled(stream: Stream, deleted_at: float) -> None:
    stream.join()
    assert stream.status in (200, 201)
    ending = stream.heard[-1]
    assert (ending.name, ending.data["code"]) == ("turn_failed", "turn_cancelled"), stream.names()
    assert ending.data["turn"]["status"] == "interrupted"
    assert ending.received_at - deleted_at < 2, "the ending waited for the provider"


def _assert_stopped_after_the_first_answer(turn: Turn) -> None:
    turn.refresh_from_db()
    assert (turn.status, turn.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.CANCELLED)
    # The first answer is kept; the second, in flight, is not stored.
    assert list(turn.messages.values_list("role", "agent_key")) == [
        ("user", ""),
        ("assistant", "ada"),
    ]
    rows = dict(LlmCallEvent.objects.filter(turn=turn).values_list("agent_key", "status"))
    # Grace's words had reached the client (the test waited for them): billed for them, as a
    # cancel bills them, before her stream's `turn_failed` was sent.
    assert rows["ada"] == "success" and rows["grace"] == "error"
    grace = LlmCallEvent.objects.get(turn=turn, agent_key="grace")
    assert grace.error_type == "cancelled" and grace.output_tokens > 0 and grace.credits > 0
    assert set(rows) == {"ada", "grace"}
    assert turn.llm_calls == 2


def test_deleting_the_session_ends_its_running_turn_as_a_cancel_does(
    server, owner, roundtable, make_session, auth, stub
):
    session = make_session(owner, room=roundtable)
    poster, turn, follower = _a_turn_in_its_second_answer(server.url, session, auth)

    deleted_at = time.monotonic()
    deleted = httpx.delete(f"{server.url}/api/v1/sessions/{session.pk}", headers=auth, timeout=30)

    assert (deleted.status_code, deleted.content) == (204, b"")
    assert time.monotonic() - deleted_at < 2
    # This process runs it: the provider call is abandoned at once, no other agent is called.
    wait_for(lambda: stub.hung_up == 1, "the stub to see its caller hang up", timeout=5)
    _assert_ended_as_cancelled(poster, deleted_at)
    _assert_ended_as_cancelled(follower, deleted_at)
    assert follower.heard[-1].data == poster.heard[-1].data
    time.sleep(3.5)  # as long as the third agent's answer would take
    assert (stub.requests, stub.in_flight) == (2, 0)
    _assert_stopped_after_the_first_answer(turn)
    # The session and its turn are gone from the API, as before.
    assert httpx.get(f"{server.url}/api/v1/turns/{turn.pk}", headers=auth).status_code == 404
    gone = httpx.post(f"{server.url}/api/v1/turns/{turn.pk}/cancel", headers=auth, timeout=30)
    assert gone.status_code == 404
    report = reconcile()
    assert report.clean, [check for check in report.checks if not check.clean]


def test_deleting_the_room_ends_the_running_turns_of_its_sessions(
    server, owner, roundtable, make_session, auth, stub
):
    first, second = make_session(owner, room=roundtable), make_session(owner, room=roundtable)
    posters = [_post_turn(server.url, first, auth), _post_turn(server.url, second, auth)]
    wait_for(lambda: Turn.objects.count() == 2, "both turns' claims")
    followers = [_follow(server.url, turn, auth) for turn in Turn.objects.all()]
    for poster in posters:
        _in_the_second_answer(poster)

    deleted_at = time.monotonic()
    deleted = httpx.delete(f"{server.url}/api/v1/rooms/{roundtable.pk}", headers=auth, timeout=30)

    assert (deleted.status_code, deleted.content) == (204, b"")
    wait_for(lambda: stub.hung_up == 2, "the stub to see its callers hang up", timeout=5)
    for stream in [*posters, *followers]:
        _assert_ended_as_cancelled(stream, deleted_at)
    time.sleep(3.5)
    assert (stub.requests, stub.in_flight) == (4, 0)
    for turn in Turn.objects.all():
        _assert_stopped_after_the_first_answer(turn)
    report = reconcile()
    assert report.clean, [check for check in report.checks if not check.clean]


def test_forgetting_a_user_mid_turn_ends_it_and_leaves_nothing_written_after(
    server, owner, roundtable, make_session, auth, stub
):
    session = make_session(owner, room=roundtable)
    poster, turn, follower = _a_turn_in_its_second_answer(server.url, session, auth)

    forgotten_at = time.monotonic()
    call_command("forget_user", owner.username, stdout=StringIO())

    for stream in (poster, follower):
        stream.join()
        ending = stream.heard[-1]
        assert (ending.name, ending.data["code"]) == ("turn_failed", "turn_cancelled")
    waited = poster.heard[-1].received_at - forgotten_at
    time.sleep(3.5)  # as long as the third agent's answer would take
    assert stub.requests == 2 and stub.in_flight == 0, "an agent was called after the forget"
    turn.refresh_from_db()
    assert (turn.status, turn.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.CANCELLED)
    assert list(turn.messages.values_list("agent_key", flat=True)) == ["", "ada"]
    assert not TurnStreamChunk.objects.exists()  # the words streamed to a forgotten user
    assert Message.objects.filter(session=session).count() == 2
    assert set(LlmCallEvent.objects.filter(turn=turn).values_list("agent_key", "status")) <= {
        ("ada", "success"),
        ("grace", "error"),
        ("grace", "lost"),
    }
    report = reconcile()
    assert report.clean, [check for check in report.checks if not check.clean]
    assert waited < 5, waited
