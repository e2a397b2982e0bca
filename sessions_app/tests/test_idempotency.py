"""`Idempotency-Key` on `POST sessions/{id}/turns`: replay, reuse, in flight, scoping, pruning."""

import json
import threading
import uuid
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import AsyncClient
from django.utils import timezone
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from sessions_app.idempotency import (
    idempotency_begin,
    idempotency_finish,
    idempotency_release,
    idempotency_settle_interrupted,
    request_fingerprint,
)
from sessions_app.models import IdempotencyKey, Turn, TurnFailure
from usage.models import LlmCallEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(owner, make_agent, make_session):
    return make_session(owner, agent=make_agent(owner, "ada"))


def post(client, session, message="hello", key="key-1", **extra):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(
        f"/api/v1/sessions/{session.id}/turns",
        {"message": message, **extra},
        format="json",
        **headers,
    )


def test_the_same_key_and_body_replay_the_first_answer_without_a_new_call(
    owner_client, session, fake_gateway
):
    first = post(owner_client, session)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers

    for _ in range(5):
        again = post(owner_client, session)
        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"

    assert len(fake_gateway.calls) == 1
    assert Turn.objects.count() == 1
    assert LlmCallEvent.objects.count() == 1
    record = IdempotencyKey.objects.get()
    assert (record.state, record.response_status, str(record.turn_id)) == (
        "done",
        201,
        first.json()["id"],
    )


def test_the_same_key_with_another_body_is_refused(owner_client, session, fake_gateway):
    assert post(owner_client, session, "hello").status_code == 201

    response = post(owner_client, session, "something else")

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "idempotency_key_reused"
    assert len(fake_gateway.calls) == 1
    assert Turn.objects.count() == 1


@pytest.mark.parametrize(
    "first, retry",
    [
        ({}, {"model_alias_override": ""}),
        ({"model_alias_override": ""}, {}),
        ({}, {"model_alias_override": None}),
        ({"model_alias_override": None}, {"model_alias_override": ""}),
        ({}, {"message": "  hello\u200b\n"}),  # trimmed as the turn stores it
        ({"model_alias_override": "qwen"}, {"model_alias_override": " qwen "}),
        ({"model_alias_override": "qwen"}, {"model_alias_override": "QWEN"}),
        ({}, {"unknown_field": 1}),  # ignored by the turn, so no other request
    ],
)
def test_a_retry_whose_body_means_the_same_turn_replays_it(
    owner_client, session, fake_gateway, first, retry
):
    """A client that sends `"model_alias_override": ""` on its retry where its first request
    left the field out (another serializer, a form) asks for the same turn: it got 422
    `idempotency_key_reused`, with the turn it had run unknown to it."""
    answered = post(owner_client, session, **first)
    assert answered.status_code == 201

    again = post(owner_client, session, **retry)

    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == answered.json()
    assert len(fake_gateway.calls) == 1
    assert Turn.objects.count() == 1


@pytest.mark.parametrize(
    "first, retry",
    [
        ({}, {"model_alias_override": "qwen"}),
        ({"model_alias_override": "qwen"}, {"model_alias_override": ""}),
        ({"model_alias_override": "qwen"}, {"model_alias_override": "deepseek"}),
        ({}, {"message": "@ada hello"}),  # another agent tagged
    ],
)
def test_a_retry_whose_body_means_another_turn_is_still_refused(
    owner_client, session, fake_gateway, first, retry
):
    assert post(owner_client, session, **first).status_code == 201

    response = post(owner_client, session, **retry)

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "idempotency_key_reused"
    assert len(fake_gateway.calls) == 1


def test_a_key_stored_by_the_body_it_was_sent_with_still_replays_that_body(
    owner, owner_client, session, fake_gateway
):
    """Keys stored before fingerprints were of a turn's meaning (a deploy while a client
    retries) were fingerprinted by the body as sent: a retry of that body still matches."""
    sent = {"message": "hello", "model_alias_override": ""}
    IdempotencyKey.objects.create(
        user=owner,
        key="key-1",
        fingerprint=request_fingerprint(
            method="POST", path=f"/api/v1/sessions/{session.id}/turns", body=sent
        ),
        state=IdempotencyKey.State.DONE,
        response_status=201,
        response_body={"id": "the first answer"},
    )

    response = post(owner_client, session, **sent)

    assert response.status_code == 201
    assert response.json() == {"id": "the first answer"}
    assert response.headers["Idempotent-Replayed"] == "true"
    assert fake_gateway.calls == []


def test_the_same_key_while_the_first_request_runs_is_a_409(owner_client, session, fake_gateway):
    during = {}

    def retry_meanwhile(call):
        fake_gateway.during_call = None
        during["response"] = post(owner_client, session)

    fake_gateway.during_call = retry_meanwhile
    first = post(owner_client, session)

    assert first.status_code == 201
    assert during["response"].status_code == 409
    # With the turn the first request claimed: a client that lost the first answer before
    # learning its turn follows it (GET turns/{id}/events) rather than wait and retry.
    assert during["response"].json()["detail"] == {
        "code": "idempotency_key_in_use",
        "message": "A request with this Idempotency-Key is still running; retry when it has "
        "finished.",
        "turn_id": first.json()["id"],
    }
    # Once finished, the retry gets the answer.
    assert post(owner_client, session).json() == first.json()
    assert len(fake_gateway.calls) == 1


def test_keys_belong_to_their_user(
    owner_client, outsider, outsider_client, session, make_agent, make_session, fake_gateway
):
    first = post(owner_client, session, key="shared")
    assert first.status_code == 201
    # The outsider's own session and the same key: its own turn, not the owner's answer.
    theirs = make_session(outsider, agent=make_agent(outsider, "bob"))
    response = post(outsider_client, theirs, key="shared")
    assert response.status_code == 201
    assert response.json()["id"] != first.json()["id"]
    assert "Idempotent-Replayed" not in response.headers
    # The owner's session stays the owner's, key or not.
    assert post(outsider_client, session, key="shared").status_code == 404
    assert IdempotencyKey.objects.filter(key="shared").count() == 2


def test_a_refused_request_stores_nothing_so_a_retry_runs(
    owner, owner_client, make_agent, make_room, make_session, fake_gateway
):
    room = make_room(owner, [make_agent(owner, "ada")])
    session = make_session(owner, room=room)

    refused = post(owner_client, session, "no tag here")
    assert refused.status_code == 422
    invalid = post(owner_client, session, "")
    assert invalid.status_code == 400
    assert not IdempotencyKey.objects.exists()

    retried = post(owner_client, session, "@ada now tagged")
    assert retried.status_code == 201


def test_an_unusable_key_is_a_400(owner_client, session, fake_gateway):
    for key in ["x" * 256, "has space", "tab\tkey"]:
        response = post(owner_client, session, key=key)
        assert response.status_code == 400
        assert response.json()["detail"]["code"] == "invalid_idempotency_key"
    assert fake_gateway.calls == []


def test_a_request_that_broke_replays_its_500(owner_client, session, fake_gateway):
    def crash(call):
        raise RuntimeError("a bug")

    fake_gateway.during_call = crash
    owner_client.raise_request_exception = False

    assert post(owner_client, session).status_code == 500
    fake_gateway.during_call = None
    again = post(owner_client, session)

    assert again.status_code == 500
    assert again.json()["detail"]["code"] == "server_error"
    assert len(fake_gateway.calls) == 1


def test_a_refusal_raised_mid_turn_frees_the_key_like_any_refusal(
    owner_client, session, fake_gateway
):
    """Whatever the API answers as a 4xx is a refusal, wherever it is raised: the client gets
    the 400, and the key is not left to replay a 500 it never saw."""

    def refuse(call):
        raise DjangoValidationError("refused mid-turn")

    fake_gateway.during_call = refuse
    refused = post(owner_client, session)
    assert refused.status_code == 400
    assert not IdempotencyKey.objects.exists()

    fake_gateway.during_call = None
    retried = post(owner_client, session)
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers


def test_an_abandoned_key_is_taken_over_after_the_stale_limit(
    owner, owner_client, session, fake_gateway, settings
):
    body = {"message": "hello"}
    IdempotencyKey.objects.create(
        user=owner,
        key="key-1",
        fingerprint=request_fingerprint(
            method="POST", path=f"/api/v1/sessions/{session.id}/turns", body=body
        ),
        updated_at=timezone.now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 5),
    )

    response = post(owner_client, session)

    assert response.status_code == 201
    assert IdempotencyKey.objects.get().state == "done"


def _aged_key(owner, session, settings, body=None) -> IdempotencyKey:
    """A key whose request began past the stale limit ago and has not finished."""
    return IdempotencyKey.objects.create(
        user=owner,
        key="key-1",
        fingerprint=request_fingerprint(
            method="POST",
            path=f"/api/v1/sessions/{session.id}/turns",
            body=body or {"message": "hello"},
        ),
        updated_at=timezone.now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 5),
    )


def test_an_old_key_whose_turn_is_still_making_progress_is_in_use_not_taken_over(
    owner, owner_client, session, fake_gateway, settings
):
    """A roundtable that keeps committing steps outlasts the stale limit: its key is old, its
    turn is not. Taking the key over ran into the turn's 409, which then freed the key; the
    first answer was never stored, and the next retry ran the turn again."""
    record = _aged_key(owner, session, settings)
    Turn.objects.create(
        session=session, turn_index=1, mode="direct", user_input="hello", progress_at=timezone.now()
    )

    response = post(owner_client, session)

    assert response.status_code == 409
    assert response.json()["detail"]["code"] == "idempotency_key_in_use"
    assert IdempotencyKey.objects.get().updated_at == record.updated_at  # still the first's
    assert fake_gateway.calls == []


def test_a_request_whose_key_was_taken_over_can_neither_free_it_nor_answer_for_it(
    owner, session, settings
):
    first = _aged_key(owner, session, settings)
    taken = idempotency_begin(
        user=owner, key="key-1", fingerprint=first.fingerprint, now=timezone.now()
    )
    assert isinstance(taken, IdempotencyKey) and taken.updated_at > first.updated_at

    idempotency_release(record=first)  # the first request, still alive, refused at last
    idempotency_finish(record=first, status=201, body={"from": "first"})

    kept = IdempotencyKey.objects.get()
    assert (kept.state, kept.response_body) == ("running", None)
    idempotency_finish(record=taken, status=201, body={"from": "retry"})
    assert IdempotencyKey.objects.get().response_body == {"from": "retry"}


def test_the_key_names_its_turn_from_the_claim_on(owner_client, session, fake_gateway):
    seen = []
    fake_gateway.during_call = lambda call: seen.append(IdempotencyKey.objects.get().turn_id)

    response = post(owner_client, session)

    assert seen == [uuid.UUID(response.json()["id"])]  # named while the turn ran


@pytest.mark.parametrize("status", ["completed", "partial", "failed"])
def test_an_old_running_key_whose_turn_ended_replays_that_turn_not_a_new_one(
    owner, owner_client, session, fake_gateway, settings, status
):
    """The turn ended and its request died (or has yet to store the answer): a retry that
    took the key over ran the turn a second time."""
    record = _aged_key(owner, session, settings)
    turn = Turn.objects.create(
        session=session, turn_index=1, mode="direct", user_input="hello", status=status
    )
    IdempotencyKey.objects.filter(pk=record.pk).update(turn=turn)

    response = post(owner_client, session)

    assert response.status_code == 201
    assert response.headers["Idempotent-Replayed"] == "true"
    assert (response.json()["id"], response.json()["status"]) == (str(turn.id), status)
    assert fake_gateway.calls == [] and Turn.objects.count() == 1
    assert IdempotencyKey.objects.get().state == "done"


def test_an_old_running_key_whose_turn_was_interrupted_runs_it_again(
    owner, owner_client, session, fake_gateway, settings
):
    record = _aged_key(owner, session, settings)
    turn = Turn.objects.create(
        session=session, turn_index=1, mode="direct", user_input="hello", status="interrupted"
    )
    IdempotencyKey.objects.filter(pk=record.pk).update(turn=turn)

    response = post(owner_client, session)

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert response.json()["turn_index"] == 2
    assert len(fake_gateway.calls) == 1


def _young_key(owner, session, status: str) -> IdempotencyKey:
    """A key whose request began just now, its turn (the session's only one) in `status`."""
    record = IdempotencyKey.objects.create(
        user=owner,
        key="key-1",
        fingerprint=request_fingerprint(
            method="POST", path=f"/api/v1/sessions/{session.id}/turns", body={"message": "hello"}
        ),
    )
    turn = Turn.objects.create(
        session=session, turn_index=1, mode="direct", user_input="hello", status=status
    )
    IdempotencyKey.objects.filter(pk=record.pk).update(turn=turn)
    return record


def test_a_young_key_whose_turn_was_interrupted_by_a_recovery_runs_it_again_at_once(
    owner, owner_client, session, fake_gateway
):
    """Its worker was killed (kill -9) and `recover_turns` ended the turn: a retry with the
    key met 409 "still running" until the key was past the stale limit (10 minutes), while
    a retry without it ran at once."""
    _young_key(owner, session, "interrupted")

    response = post(owner_client, session)

    assert response.status_code == 201, response.json()
    assert "Idempotent-Replayed" not in response.headers
    assert response.json()["turn_index"] == 2 and len(fake_gateway.calls) == 1
    assert IdempotencyKey.objects.get().state == "done"


@pytest.mark.parametrize("status", ["running", "completed"])
def test_a_young_key_whose_turn_runs_or_just_finished_is_still_in_use(
    owner, owner_client, session, fake_gateway, status
):
    """A completed turn's request may be storing its answer (its balance in it) right now."""
    record = _young_key(owner, session, status)

    response = post(owner_client, session)

    assert response.status_code == 409
    assert response.json()["detail"]["code"] == "idempotency_key_in_use"
    assert response.json()["detail"]["turn_id"] == str(IdempotencyKey.objects.get().turn_id)
    assert IdempotencyKey.objects.get().pk == record.pk
    assert fake_gateway.calls == []


def test_a_key_in_use_before_its_request_claimed_a_turn_names_none(
    owner, owner_client, session, fake_gateway
):
    IdempotencyKey.objects.create(
        user=owner,
        key="key-1",
        fingerprint=request_fingerprint(
            method="POST", path=f"/api/v1/sessions/{session.id}/turns", body={"message": "hello"}
        ),
    )

    response = post(owner_client, session)

    assert response.status_code == 409
    assert set(response.json()["detail"]) == {"code", "message"}


@pytest.mark.parametrize(
    ("status", "answers"), [("completed", True), ("interrupted", False), ("running", False)]
)
def test_a_key_whose_request_stopped_with_its_worker_answers_or_frees_by_its_turn(
    owner, owner_client, session, fake_gateway, status, answers
):
    """A stopping worker cancels a turn's request (`pantheon.draining`), or the request lost
    its database connection. If the turn ended on its own at that moment (its last commit won
    the race), a retry gets its answer, not a second run and a second bill; if it ended
    interrupted, a retry runs it afresh. One still running (its failure could not be written,
    the database being away, which is back now) is ended interrupted first: the freed key's
    retry met it as a turn in progress (409) until the stale limit."""
    record = _young_key(owner, session, status)  # its turn linked by the claim
    turn = Turn.objects.get()

    settled = idempotency_settle_interrupted(
        record=record, turn_id=turn.pk, failure=TurnFailure.DATABASE_UNAVAILABLE
    )

    assert settled is answers
    turn.refresh_from_db()
    if status == "running":
        assert (turn.status, turn.failure_code) == ("interrupted", "database_unavailable")

    retry = post(owner_client, session)
    assert retry.status_code == 201
    if answers:
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json()["id"] == str(turn.pk) and fake_gateway.calls == []
    else:
        assert "Idempotent-Replayed" not in retry.headers
        assert retry.json()["turn_index"] == 2 and len(fake_gateway.calls) == 1


def test_a_session_id_spelt_in_capitals_replays_the_same_request(
    owner_client, session, fake_gateway
):
    first = post(owner_client, session)
    upper = owner_client.post(
        f"/api/v1/sessions/{str(session.id).upper()}/turns",
        {"message": "hello"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="key-1",
    )

    assert upper.status_code == 201
    assert upper.headers["Idempotent-Replayed"] == "true"
    assert upper.json() == first.json()
    assert len(fake_gateway.calls) == 1


def _sse(chunks: list[bytes]) -> list[tuple[str, dict]]:
    """(event, data) of each Server-Sent Event in a streamed body."""
    parsed = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            parsed.append((fields["event"], json.loads(fields["data"])))
    return parsed


def test_a_streamed_replay_ends_with_the_first_answer_balance_included(
    owner, session, fake_gateway
):
    """README: a retry with the same key and body gets the first answer again, and `balance`
    is in the answer that ran the turn. Before, a streamed retry's `turn_completed` was the
    turn as read later, `balance` null, while the JSON retry kept the stored balance; so was
    the streamed retry of a turn first run as JSON."""
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    url = f"/api/v1/sessions/{session.pk}/turns"

    async def turn(key: str, *, streamed: bool):
        accept = "text/event-stream" if streamed else "application/json"
        response = await AsyncClient().post(
            url,
            {"message": "y"},
            content_type="application/json",
            headers={**headers, "Idempotency-Key": key, "Accept": accept},
        )
        assert response.status_code == 201
        replayed = response.headers.get("Idempotent-Replayed")
        if not streamed:
            return replayed, response.json()
        chunks = [chunk async for chunk in response.streaming_content]
        return replayed, _sse(chunks)

    async def scenario():
        return [
            await turn("s-1", streamed=True),
            await turn("s-1", streamed=True),
            await turn("s-1", streamed=False),
            await turn("j-1", streamed=False),
            await turn("j-1", streamed=True),
        ]

    (_, ran), (again, replayed), (_, as_json), (_, json_first), (json_again, sse_replay) = (
        async_to_sync(scenario)()
    )

    answer = ran[-1]
    assert answer[0] == "turn_completed" and answer[1]["balance"] is not None
    assert answer[1]["balance"]["month_credits_used"] != "0E-10"
    assert again == "true"
    assert replayed[0] == ran[0]  # turn_started: the same turn, its deltas then as one
    assert replayed[-1] == answer
    assert as_json == answer[1]
    assert json_first["balance"] is not None
    assert json_again == "true"
    assert sse_replay[-1] == ("turn_completed", json_first)
    assert len(fake_gateway.calls) == 2


def test_prune_removes_only_keys_past_their_lifetime(owner, capsys):
    """A key is kept its whole promised lifetime (24 hours), to the minute: a retry a minute
    before it ends still replays its answer rather than running the turn again."""
    lifetime = timedelta(hours=24)
    old = IdempotencyKey.objects.create(
        user=owner,
        key="old",
        fingerprint="f",
        created_at=timezone.now() - lifetime - timedelta(minutes=1),
    )
    fresh = IdempotencyKey.objects.create(
        user=owner,
        key="fresh",
        fingerprint="f",
        created_at=timezone.now() - lifetime + timedelta(minutes=1),
    )

    call_command("prune_idempotency_keys", "--dry-run")
    assert "Would delete 1" in capsys.readouterr().out
    assert IdempotencyKey.objects.count() == 2

    call_command("prune_idempotency_keys")
    assert "Deleted 1" in capsys.readouterr().out
    assert list(IdempotencyKey.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert not IdempotencyKey.objects.filter(pk=old.pk).exists()
    with pytest.raises(CommandError, match="24 hours") as refused:
        call_command("prune_idempotency_keys", "--older-than", "1")
    assert refused.value.returncode == 2  # a usage error, as the README says of them all


@pytest.mark.parametrize(
    "command, value",
    [
        (command, value)
        for command in ("prune_idempotency_keys", "recover_turns")
        for value in ("1e400", "nan", "inf", "-1", "1e12", "soon")
    ],
)
def test_an_age_no_date_can_hold_is_a_one_line_error_not_a_traceback(command, value):
    """Python's float took these, and the commands then died in timedelta (OverflowError,
    ValueError) with a traceback; -1 was recover_turns' own check, and prune's said nothing."""
    with pytest.raises(CommandError, match="--older-than: expected a number of"):
        call_command(command, "--older-than", value)


def test_recover_turns_refuses_a_negative_age_given_as_a_keyword():
    """call_command(older_than=-1) skips the parser: it would take every running turn."""
    with pytest.raises(CommandError, match="cannot be negative"):
        call_command("recover_turns", older_than=-1)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_retries_with_one_key_run_one_turn(live_server, owner, session, fake_gateway):
    fake_gateway.delay = 0.5
    token = Token.objects.create(user=owner).key
    barrier = threading.Barrier(6)
    answers = []

    def client():
        barrier.wait()
        answers.append(
            httpx.post(
                f"{live_server.url}/api/v1/sessions/{session.id}/turns",
                json={"message": "hello"},
                headers={"Authorization": f"Token {token}", "Idempotency-Key": "same"},
                timeout=30,
            )
        )

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(response.status_code for response in answers)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    assert len(fake_gateway.calls) == 1
    assert Turn.objects.count() == 1
    created = {r.json()["id"] for r in answers if r.status_code == 201}
    assert len(created) == 1  # replays carry the same turn


# PostgreSQL drops the connection that inserts a turn (as a restart or a failover would, in the
# middle of the claim's transaction).
DROP_THE_CLAIMS_CONNECTION = """
CREATE FUNCTION test_drop_the_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$;
CREATE TRIGGER test_drop_the_claim BEFORE INSERT ON sessions_app_turn
FOR EACH ROW EXECUTE FUNCTION test_drop_the_claim();
"""
CLAIMS_WORK_AGAIN = """
DROP TRIGGER IF EXISTS test_drop_the_claim ON sessions_app_turn;
DROP FUNCTION IF EXISTS test_drop_the_claim();
"""


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_a_claim_the_database_broke_frees_the_key_so_a_retry_runs(owner, session):
    """The claim's transaction went with its connection: no turn, no call. The client's retry
    with the same key runs the turn; it was told for the stale limit (ten minutes) that the
    first request was still running."""
    headers = {
        "Authorization": f"Token {Token.objects.create(user=owner).key}",
        "Idempotency-Key": "key-1",
    }
    database = postgres_url(connection.settings_dict)
    try:
        with AppServer(database_url=database) as server:
            url = f"{server.url}/api/v1/sessions/{session.id}/turns"
            with connection.cursor() as cursor:
                cursor.execute(DROP_THE_CLAIMS_CONNECTION)
            broke = httpx.post(url, json={"message": "hello"}, headers=headers, timeout=30)
            assert not Turn.objects.exists()
            with connection.cursor() as cursor:
                cursor.execute(CLAIMS_WORK_AGAIN)
            retried = httpx.post(url, json={"message": "hello"}, headers=headers, timeout=30)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(CLAIMS_WORK_AGAIN)

    assert broke.status_code == 503
    assert broke.json()["detail"]["code"] == "database_unavailable"
    assert broke.headers["Retry-After"] == "2"
    assert retried.status_code == 201, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    assert Turn.objects.get().status == "completed"
    assert IdempotencyKey.objects.get().response_status == 201


TWO_KEYS_REFUSED = {
    "detail": {
        "code": "invalid_idempotency_key",
        "message": "Send one Idempotency-Key: this request carries 2.",
    }
}


def test_two_idempotency_keys_are_refused_before_anything_is_written(owner, session, fake_gateway):
    """Django joins repeated headers with a comma, and "key-1,key-2" is a valid key: the turn
    ran under a key the client never sent. The raw ASGI headers tell two keys from one."""
    token = Token.objects.create(user=owner).key

    async def post_twice():
        # Two spellings of one header name, as a dict cannot hold one name twice: the test
        # client lowercases both into two `idempotency-key` headers.
        return await AsyncClient().post(
            f"/api/v1/sessions/{session.id}/turns",
            {"message": "hello"},
            content_type="application/json",
            headers={"Authorization": f"Token {token}", "Idempotency-Key": "key-1"},
            **{"idempotency-key": "key-2"},
        )

    response = async_to_sync(post_twice)()

    assert response.status_code == 400
    assert response.json() == TWO_KEYS_REFUSED
    assert not IdempotencyKey.objects.exists()
    assert not Turn.objects.exists() and fake_gateway.calls == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_two_idempotency_keys_are_refused_by_the_server(owner, session):
    """Through gunicorn and uvicorn, with the header sent twice on the wire; one key holding a
    comma is a key like any other."""
    headers = [("Authorization", f"Token {Token.objects.create(user=owner).key}")]
    with AppServer(database_url=postgres_url(connection.settings_dict)) as server:
        url = f"{server.url}/api/v1/sessions/{session.id}/turns"
        twice = httpx.post(
            url,
            json={"message": "hello"},
            headers=[*headers, ("Idempotency-Key", "key-1"), ("Idempotency-Key", "key-2")],
            timeout=30,
        )
        nothing_written = not IdempotencyKey.objects.exists() and not Turn.objects.exists()
        joined = httpx.post(
            url,
            json={"message": "hello"},
            headers=[*headers, ("Idempotency-Key", "key-1,key-2")],
            timeout=30,
        )

    assert twice.status_code == 400
    assert twice.json() == TWO_KEYS_REFUSED
    assert nothing_written
    assert joined.status_code == 201, joined.text
    assert IdempotencyKey.objects.get().key == "key-1,key-2"
    assert Turn.objects.get().status == "completed"
