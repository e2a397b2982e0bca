"""Streamed turns on the production server (gunicorn, ASGI workers) against PostgreSQL: event
order, deltas while the provider talks, replays with and without Last-Event-ID, a client that
hangs up, a second instance on the same database, and many waiting turns on a bounded pool."""

import threading
import time
from contextlib import ExitStack

import httpx
import pytest
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, end_other_connections, postgres_url
from pantheon.testing.sse import events
from rooms.models import RoomMode
from sessions_app.models import Message, Turn
from sessions_app.tests.conftest import point_at_stub, wait_for
from usage.models import LlmCallEvent

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]

STREAM = {"Accept": "text/event-stream"}


@pytest.fixture
def token(owner):
    return {"Authorization": f"Token {Token.objects.create(user=owner).key}"}


@pytest.fixture
def roundtable(owner, make_agent, make_room, make_session):
    agents = [
        make_agent(owner, "ada", model_alias="deepseek"),
        make_agent(owner, "grace", model_alias="qwen"),
        make_agent(owner, "linus", model_alias="llama"),
    ]
    return make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))


def _serve(**env) -> AppServer:
    return AppServer(database_url=postgres_url(connection.settings_dict), env=env)


def _stream(base: str, session, headers, message="plan the launch", **extra) -> list:
    with httpx.stream(
        "POST",
        f"{base}/api/v1/sessions/{session.pk}/turns",
        json={"message": message, **extra},
        headers={**headers, **STREAM},
        timeout=60,
    ) as response:
        assert response.status_code == 201, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        told = list(events(response))
    # Where the turn is, as a JSON turn's 201 says it.
    assert response.headers["location"] == f"/api/v1/turns/{told[0].data['turn_id']}"
    return told


def _replay(base: str, turn_id, headers, last_event_id=None) -> list:
    extra = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    with httpx.stream(
        "GET", f"{base}/api/v1/turns/{turn_id}/events", headers={**headers, **extra}, timeout=60
    ) as response:
        assert response.status_code == 200
        return list(events(response))


def test_a_streamed_roundtable_tells_its_story_in_order_and_replays_the_same(roundtable, token):
    with _serve(PANTHEON_LLM_BACKEND="demo") as server:
        live = _stream(server.url, roundtable, token)

        names = [event.name for event in live]
        assert names[0] == "turn_started" and names[-1] == "turn_completed"
        steps = [e for e in live if e.name in ("step_started", "step_completed")]
        assert [(e.name, e.data["agent_key"]) for e in steps] == [
            ("step_started", "ada"),
            ("step_completed", "ada"),
            ("step_started", "grace"),
            ("step_completed", "grace"),
            ("step_started", "linus"),
            ("step_completed", "linus"),
        ]
        ids = [event.id for event in live]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        # Deltas spell each stored answer; the final event is the JSON answer's body.
        body = live[-1].data
        for completed in (e for e in live if e.name == "step_completed"):
            text = "".join(
                e.data["text"]
                for e in live
                if e.name == "step_delta" and e.data["sequence"] == completed.data["sequence"]
            )
            assert text == completed.data["content"]
        assert [m["content"] for m in body["messages"][1:]] == [
            e.data["content"] for e in live if e.name == "step_completed"
        ]
        assert body["status"] == "completed" and body["usage"]["llm_calls"] == 3

        # A replay from the database: the same events and ids, each step's deltas as one.
        replay = _replay(server.url, body["id"], token)
        assert [(e.id, e.name) for e in replay if e.name != "step_delta"] == [
            (e.id, e.name) for e in live if e.name != "step_delta"
        ]
        live_ends = {e.data["sequence"]: e.id for e in live if e.name == "step_delta"}
        assert {e.data["sequence"]: e.id for e in replay if e.name == "step_delta"} == live_ends
        assert replay[-1].data == {**body, "balance": None}  # a replay is read later

        # Resuming in the middle of a delta: only the rest of that text, then what follows.
        first_delta = next(e for e in live if e.name == "step_delta")
        second_delta = [e for e in live if e.name == "step_delta"][1]
        resumed = _replay(server.url, body["id"], token, last_event_id=first_delta.id)
        assert resumed[0].name == "step_delta"
        ada_text = live[next(i for i, e in enumerate(live) if e.name == "step_completed")].data
        assert resumed[0].data["text"] == ada_text["content"][len(first_delta.data["text"]) :]
        assert second_delta.id > first_delta.id
        assert [e.id for e in resumed] == [e.id for e in replay if e.id > first_delta.id]


def test_accepts_q_values_decide_between_the_stream_and_json(
    owner, make_agent, make_session, token
):
    """DRF ranked Accept's ranges by specificity alone: each of these got the turn in JSON (the
    first labelled text/event-stream). A client that refuses both gets a 406 and no turn."""
    session = make_session(owner, agent=make_agent(owner, "ada", model_alias="deepseek"))
    with _serve(PANTHEON_LLM_BACKEND="demo") as server:
        for accept in ("text/event-stream;q=0.9", "application/json;q=0.1, text/event-stream"):
            with httpx.stream(
                "POST",
                f"{server.url}/api/v1/sessions/{session.pk}/turns",
                json={"message": f"try {accept}"},
                headers={**token, "Accept": accept},
                timeout=60,
            ) as response:
                assert response.status_code == 201, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                names = [event.name for event in events(response)]
            assert names[0] == "turn_started" and names[-1] == "turn_completed"

        answers = [
            httpx.post(
                f"{server.url}/api/v1/sessions/{session.pk}/turns",
                json={"message": "json please"},
                headers={**token, "Accept": accept},
                timeout=60,
            )
            for accept in (
                "text/event-stream;q=0, */*",
                "text/event-stream;q=0, application/json;q=0",
            )
        ]

    assert answers[0].status_code == 201
    assert answers[0].headers["content-type"] == "application/json"
    assert answers[0].json()["status"] == "completed"
    assert answers[1].status_code == 406
    assert answers[1].headers["content-type"] == "application/json"
    assert Turn.objects.filter(session=session, status="completed").count() == 3


def test_deltas_arrive_while_the_provider_is_still_talking(
    owner, make_agent, make_session, stub, token
):
    point_at_stub(stub, "stream-200", "deepseek")  # a word every 200 ms, 10 words
    session = make_session(owner, agent=make_agent(owner, "ada", model_alias="deepseek"))
    with _serve(PANTHEON_LLM_BACKEND="live", STUB_API_KEY="stub") as server:
        live = _stream(server.url, session, token, message="hello")

    first_delta = next(e for e in live if e.name == "step_delta")
    completed = next(e for e in live if e.name == "step_completed")
    # The first word came while the other nine (1.8 s of them) were still to come. How soon
    # after the request is a figure `bench/serving.py` prints (time to first delta), not an
    # assertion: a loaded machine took 1.02 s, failing a 1 s bound with nothing wrong.
    assert completed.received_at - first_delta.received_at >= 1.5  # the rest still coming
    deltas = [e for e in live if e.name == "step_delta"]
    assert len(deltas) == 10
    assert "".join(e.data["text"] for e in deltas) == completed.data["content"]
    event = LlmCallEvent.objects.get()
    assert (event.status, event.output_tokens) == ("success", 10)  # usage from the last chunk
    assert event.input_tokens_fresh > 0


def test_a_client_that_hangs_up_mid_step_does_not_stop_the_turn(roundtable, stub, token):
    point_at_stub(stub, "stream-150", "deepseek", "qwen", "llama")
    hung_up_mid_step = False
    with _serve(PANTHEON_LLM_BACKEND="live", STUB_API_KEY="stub") as server:
        with httpx.stream(
            "POST",
            f"{server.url}/api/v1/sessions/{roundtable.pk}/turns",
            json={"message": "go"},
            headers={**token, **STREAM},
            timeout=60,
        ) as response:
            for event in events(response):
                if event.name == "step_delta":
                    hung_up_mid_step = True
                    break
        # Hung up during Ada's answer. The turn goes on to its end on the server.
        deadline = time.monotonic() + 30
        while Turn.objects.get().status == "running":
            assert time.monotonic() < deadline, "the turn stopped with its client"
            time.sleep(0.2)
        turn = Turn.objects.get()
        assert hung_up_mid_step and turn.status == "completed"
        assert list(turn.messages.values_list("agent_key", flat=True)) == [
            "",
            "ada",
            "grace",
            "linus",
        ]
        ledger = LlmCallEvent.objects.filter(turn=turn)
        assert sorted(ledger.values_list("status", flat=True)) == ["success"] * 3
        assert turn.llm_calls == 3
        # The client comes back: the whole turn, from the database.
        replay = _replay(server.url, turn.pk, token)
        assert replay[-1].name == "turn_completed"


def test_a_turn_streaming_a_long_answer_is_not_taken_for_a_stale_one(
    owner, make_agent, make_session, stub, token
):
    """The stream's saves are progress: past the stale limit, mid-answer, the session's next
    turn is still a 409. Before, it interrupted the streaming turn, whose answer and usage
    were then thrown away."""
    point_at_stub(stub, "stream-400", "deepseek")  # a word every 400 ms, 10 words
    session = make_session(owner, agent=make_agent(owner, "ada", model_alias="deepseek"))
    streamed: dict[str, list] = {}
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub"}
    with _serve(**env, PANTHEON_TURN_STALE_SECONDS="2") as server:
        first = threading.Thread(
            target=lambda: streamed.update(live=_stream(server.url, session, token, "hello"))
        )
        first.start()
        time.sleep(3)  # past the stale limit, in the middle of the answer
        second = httpx.post(
            f"{server.url}/api/v1/sessions/{session.pk}/turns",
            json={"message": "again"},
            headers=token,
            timeout=30,
        )
        first.join(timeout=30)

    assert second.status_code == 409
    assert streamed["live"][-1].name == "turn_completed"
    turn = Turn.objects.get()
    assert turn.status == "completed"
    assert LlmCallEvent.objects.get().status == "success"


def test_two_instances_on_one_database_race_to_one_turn_and_replay_each_others(
    owner, make_agent, make_session, stub, token
):
    point_at_stub(stub, "stream-100", "deepseek")
    session = make_session(owner, agent=make_agent(owner, "ada", model_alias="deepseek"))
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub"}
    with _serve(**env) as first, _serve(**env) as second:
        assert first.port != second.port
        barrier = threading.Barrier(8)
        answers = []

        def post(base):
            barrier.wait()
            answers.append(
                httpx.post(
                    f"{base}/api/v1/sessions/{session.pk}/turns",
                    json={"message": "who wins?"},
                    headers=token,
                    timeout=60,
                )
            )

        threads = [
            threading.Thread(target=post, args=(server.url,)) for server in (first, second) * 4
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201] + [409] * 7
        assert Turn.objects.count() == 1 and stub.requests == 1

        # Streamed by the first, followed live by the second while it runs.
        streamed = {}
        reader = threading.Thread(
            target=lambda: streamed.update(events=_stream(first.url, session, token, "next"))
        )
        reader.start()
        deadline = time.monotonic() + 20
        while not Turn.objects.filter(turn_index=2).exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        followed = _replay(second.url, Turn.objects.get(turn_index=2).pk, token)
        reader.join()
        live = streamed["events"]
        assert [(e.id, e.name) for e in followed if e.name != "step_delta"] == [
            (e.id, e.name) for e in live if e.name != "step_delta"
        ]
        text = "".join(e.data["text"] for e in followed if e.name == "step_delta")
        assert text == Message.objects.get(turn__turn_index=2, role="assistant").content


def _connections_to(database: str) -> int:
    """Connections to the test database, this test's own (the watcher's, the test's) aside."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name <> 'pantheon-tests'",
            [database],
        )
        return cursor.fetchone()[0]


def _post_turns_at_once(server, sessions, headers, message) -> tuple[list, list]:
    """A turn in each session, each from a thread of its own (its own connection), all started;
    returns the threads and the list their answers go to."""
    answers: list = []

    def post(session):
        answers.append(
            httpx.post(
                f"{server.url}/api/v1/sessions/{session.pk}/turns",
                json={"message": message},
                headers=headers,
                timeout=60,
            )
        )

    threads = [threading.Thread(target=post, args=(session,)) for session in sessions]
    for thread in threads:
        thread.start()
    return threads, answers


def test_many_waiting_turns_share_a_small_pool(owner, make_agent, make_session, stub, token):
    """40 turns wait 2 s each on one worker whose pool holds at most 4 connections."""
    point_at_stub(stub, "slow-2000", "deepseek")
    agent = make_agent(owner, "ada", model_alias="deepseek")
    sessions = [make_session(owner, agent=agent) for _ in range(40)]
    database = connection.settings_dict["NAME"]
    env = {
        "PANTHEON_LLM_BACKEND": "live",
        "STUB_API_KEY": "stub",
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "4",
    }
    with _serve(**env) as server:
        peak = 0
        done = threading.Event()

        def watch():
            nonlocal peak
            try:
                while not done.is_set():
                    peak = max(peak, _connections_to(database))
                    time.sleep(0.05)
            finally:
                connection.close()

        watcher = threading.Thread(target=watch)
        watcher.start()
        threads, answers = _post_turns_at_once(server, sessions, token, "wait for it")
        for thread in threads:
            thread.join()
        done.set()
        watcher.join()

    assert sorted(answer.status_code for answer in answers) == [201] * 40
    assert stub.requests == 40
    assert 1 <= peak <= 4  # the worker's pool, whatever the number of waiting turns
    # More turns waited on the provider at once than there were connections: a waiting turn
    # holds none.
    assert stub.peak_in_flight > 4


def test_a_worker_full_of_waiting_turns_refuses_more_at_once_with_503(
    owner, make_agent, make_session, stub, token
):
    """GUNICORN_WORKER_CONNECTIONS bounds the requests one worker serves at once: the next is
    answered 503 at once, in the API's error body with a Retry-After, and nothing of it is
    written; connections kept alive between requests take no place; once turns end the worker
    serves again."""
    point_at_stub(stub, "slow-3000", "deepseek")
    agent = make_agent(owner, "ada", model_alias="deepseek")
    sessions = [make_session(owner, agent=agent) for _ in range(4)]
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub"}
    with (
        _serve(GUNICORN_WORKER_CONNECTIONS="3", **env) as server,
        httpx.Client(base_url=server.url, headers=token, timeout=30) as idle,
        httpx.Client(base_url=server.url, headers=token, timeout=30) as other,
    ):
        # Two connections left open, idle, as a client's keep-alive pool leaves them.
        assert idle.get("/api/v1/health").status_code == 200
        assert other.get("/api/v1/health").status_code == 200
        threads, answers = _post_turns_at_once(server, sessions[:3], token, "hold the line")
        deadline = time.monotonic() + 20
        while stub.requests < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stub.requests == 3  # three turns wait on the provider: every place is taken

        # Refused, not queued: had it waited for a place it would get 201 once the turns end.
        refused = other.post(f"/api/v1/sessions/{sessions[3].pk}/turns", json={"message": "me?"})
        assert refused.status_code == 503
        assert refused.json()["detail"]["code"] == "over_capacity"
        assert refused.headers["retry-after"] == "2"
        assert not Turn.objects.filter(session=sessions[3]).exists()
        assert idle.get("/api/v1/health").status_code == 503

        for thread in threads:
            thread.join()
        assert sorted(answer.status_code for answer in answers) == [201] * 3
        assert stub.requests == 3
        assert idle.get("/api/v1/health").status_code == 200
        again = other.post(f"/api/v1/sessions/{sessions[3].pk}/turns", json={"message": "me?"})
        assert again.status_code == 201


def test_open_connections_never_refuse_a_request_the_worker_has_room_for(
    owner, make_agent, make_session, stub, token
):
    """A worker serving 3 requests at once, with 24 connections open (a balancer's keep-alive
    pool, or a burst of clients that connected together): every request it has room for is
    served, and the ones past the limit get the coded 503 with its Retry-After. Before, uvicorn's
    own cap counted open connections (19 here): from the 19th on, every request, a health check
    on an idle worker included, was answered a plain-text 503 without Retry-After."""
    point_at_stub(stub, "slow-2000", "deepseek")
    agent = make_agent(owner, "ada", model_alias="deepseek")
    sessions = [make_session(owner, agent=agent) for _ in range(6)]
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub"}
    with _serve(GUNICORN_WORKER_CONNECTIONS="3", **env) as server, ExitStack() as stack:
        clients = [
            stack.enter_context(httpx.Client(base_url=server.url, headers=token, timeout=60))
            for _ in range(24)
        ]
        for client in clients:  # each leaves its connection open, idle
            assert client.get("/api/v1/health").status_code == 200

        barrier = threading.Barrier(len(sessions))
        answers: list = []

        def post(client, session):
            barrier.wait()
            answers.append(
                client.post(f"/api/v1/sessions/{session.pk}/turns", json={"message": "now"})
            )

        pairs = zip(clients, sessions, strict=False)
        threads = [threading.Thread(target=post, args=pair) for pair in pairs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert clients[-1].get("/api/v1/health").status_code == 200

    assert sorted(answer.status_code for answer in answers) == [201] * 3 + [503] * 3
    for refused in (answer for answer in answers if answer.status_code == 503):
        assert refused.json()["detail"]["code"] == "over_capacity"
        assert refused.headers["retry-after"] == "2"
    assert Turn.objects.count() == stub.requests == 3


def test_a_follower_whose_poll_loses_its_connection_follows_on_to_the_turns_end(
    owner, make_agent, make_session, stub, token
):
    """PostgreSQL drops the connection of a replay's poll mid-query (a restart, a failover):
    that poll is tried again and the follower gets the rest of the turn. Before, its stream
    just stopped, an unfinished chunked body, while the turn went on."""
    point_at_stub(stub, "slow-6000", "deepseek")  # the provider thinks, then answers at once
    session = make_session(owner, agent=make_agent(owner, "ada", model_alias="deepseek"))
    followed: list = []
    following = threading.Event()
    outcome: dict = {}

    def follow(base: str, turn_id) -> None:
        try:
            with httpx.stream(
                "GET", f"{base}/api/v1/turns/{turn_id}/events", headers=token, timeout=60
            ) as response:
                for event in events(response):
                    followed.append(event)
                    following.set()
        except httpx.HTTPError as exc:
            outcome["follower"] = exc

    with _serve(PANTHEON_LLM_BACKEND="live", STUB_API_KEY="stub") as server:
        poster = threading.Thread(
            target=lambda: outcome.update(live=_stream(server.url, session, token, "hello"))
        )
        poster.start()
        wait_for(lambda: stub.requests == 1, "the provider call")
        follower = threading.Thread(target=follow, args=(server.url, Turn.objects.get().pk))
        follower.start()
        wait_for(following.is_set, "the follower's first event")
        # While the provider thinks, the turn writes nothing; only the follower's polls read.
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE sessions_app_turn IN ACCESS EXCLUSIVE MODE")
            wait_for(
                lambda: end_other_connections(waiting_on_a_lock=True), "a poll waiting on the lock"
            )
        poster.join(60)
        follower.join(60)

    assert "follower" not in outcome, outcome["follower"]
    assert outcome["live"][-1].name == "turn_completed"
    assert [e.name for e in followed][-2:] == ["step_completed", "turn_completed"]
    answer = Message.objects.get(role="assistant").content
    assert "".join(e.data["text"] for e in followed if e.name == "step_delta") == answer
