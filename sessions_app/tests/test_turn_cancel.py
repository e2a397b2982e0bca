"""`POST turns/{id}/cancel`: a user's "Stop". The turn ends at once (`interrupted`, ended by
`turn_cancelled`), its finished steps kept, its call in flight lost as a recovery leaves it,
its session free for the next turn and its Idempotency-Key for a retry; the worker running it
stops at once in this process, at its next write elsewhere.

Before, there was no way to stop a turn: a client's hang-up does not stop it (it is billed in
full), `DELETE turns/{id}` was a 405, and the session answered 409 to every new message for as
long as the abandoned answer ran."""

import asyncio
import json
import re
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from conftest import FakeGateway
from orchestration.budget import estimate_tokens
from orchestration.types import LlmResult
from pantheon import draining
from rooms.models import RoomMode
from sessions_app import events, services
from sessions_app.models import Turn, TurnFailure, TurnStatus
from sessions_app.tests.conftest import direct_turn_in_flight
from usage.models import LlmCallEvent, MonthlyUsage
from usage.reconcile import reconcile

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(owner, ada, make_session):
    return make_session(owner, agent=ada)


def _cancel(client, turn_id):
    return client.post(f"/api/v1/turns/{turn_id}/cancel")


def _running_turn() -> Turn:
    return Turn.objects.get(status=TurnStatus.RUNNING)


def _replay(turn_id) -> list[tuple[str, dict]]:
    """The turn's events as `GET turns/{id}/events` replays them: (name, data)."""
    replayed = events.turn_replay(Turn.objects.get(pk=turn_id)).events
    return [(event.name, event.data) for event in replayed]


def _sse(chunks: list[bytes]) -> list[tuple[str, dict]]:
    """(event, data) of each Server-Sent Event in a streamed body."""
    parsed = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            parsed.append((fields["event"], json.loads(fields["data"])))
    return parsed


def test_a_cancel_ends_the_running_turn_at_once_and_its_session_takes_the_next_turn(
    owner_client, session, fake_gateway, post_turn
):
    """The poster's request, still there, answers 409 `turn_cancelled`; the provider call is
    abandoned (the fake's answer never arrives), its row lost with the input estimate."""
    seen: dict = {}

    def cancel_mid_call(call):
        fake_gateway.during_call = None
        turn = _running_turn()
        seen["cancel"] = _cancel(owner_client, turn.pk)
        seen["next"] = post_turn(owner_client, session, "and now?")

    fake_gateway.during_call = cancel_mid_call
    first = post_turn(owner_client, session, "a long question")

    cancel = seen["cancel"]
    assert cancel.status_code == 200, cancel.content
    body = cancel.json()
    assert (body["turn_index"], body["status"]) == (1, "interrupted")
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["completed_at"] is not None
    assert body == owner_client.get(f"/api/v1/turns/{body['id']}").json()
    # The session took the next turn right after the cancel.
    assert seen["next"].status_code == 201, seen["next"].content
    assert seen["next"].json()["turn_index"] == 2
    # The request that ran the cancelled turn says so.
    assert first.status_code == 409, first.content
    assert first.json() == {
        "detail": {
            "code": "turn_cancelled",
            "message": "The turn was cancelled while it ran: by its user (POST "
            "turns/{id}/cancel), by a delete of its session or room, or as its account was "
            "closed. It ended interrupted, with its finished answers kept.",
            "turn_id": body["id"],
        }
    }
    cancelled = Turn.objects.get(turn_index=1)
    assert (cancelled.status, cancelled.failure_code) == ("interrupted", TurnFailure.CANCELLED)
    lost = LlmCallEvent.objects.get(turn=cancelled)
    # Lost as a recovery leaves a call in flight: the input estimate, one attempt, no credit.
    assert (lost.status, lost.output_tokens, lost.attempts, lost.credits) == ("lost", 0, 1, 0)
    assert lost.input_tokens_fresh > 0 and lost.provider == ""
    assert cancelled.llm_calls == 1 and cancelled.credits == 0
    replayed = _replay(cancelled.pk)
    assert [name for name, _ in replayed] == ["turn_started", "turn_failed"]
    assert replayed[-1][1]["code"] == "turn_cancelled"
    assert replayed[-1][1]["turn"]["status"] == "interrupted"
    report = reconcile()
    assert report.clean, [c for c in report.checks if not c.clean]


def test_a_turn_running_elsewhere_stops_at_its_next_write_and_its_late_answer_is_billed_once(
    owner_client, session, fake_gateway, post_turn, monkeypatch
):
    """Another worker's turn (this process does not run it: `draining.stop` cannot reach it)
    finds it cancelled at its next write: its call runs to its end, then its step writes
    nothing; the lost row takes the usage the provider reported, once, at no credit, and the
    request that ran it answers 409 `turn_cancelled`."""
    monkeypatch.setattr(draining, "stop", lambda key: False)
    # A turn before: a month whose only ledger rows are lost calls (0 credits) has no counter
    # row, which reconcile_usage takes for drift (`recover_turns` alike; not this change's).
    assert post_turn(owner_client, session, "warm up").status_code == 201
    seen: dict = {}

    def cancel_mid_call(call):
        fake_gateway.during_call = None
        seen["cancel"] = _cancel(owner_client, _running_turn().pk)
        seen["lost"] = LlmCallEvent.objects.get(turn__turn_index=2)

    fake_gateway.during_call = cancel_mid_call
    first = post_turn(owner_client, session, "a long question")

    assert seen["cancel"].status_code == 200
    estimate = seen["lost"]
    assert (estimate.status, estimate.output_tokens, estimate.provider) == ("lost", 0, "")
    assert first.status_code == 409
    assert first.json()["detail"]["code"] == "turn_cancelled"
    turn = Turn.objects.get(turn_index=2)
    assert (turn.status, turn.failure_code) == ("interrupted", "turn_cancelled")
    assert list(turn.messages.values_list("role", flat=True)) == ["user"]
    row = LlmCallEvent.objects.get(turn=turn)
    usage = (row.input_tokens_fresh, row.input_tokens_cached, row.output_tokens)
    assert (row.status, usage, row.provider, row.credits) == ("lost", (100, 20, 10), "fake", 0)
    assert (turn.input_tokens, turn.output_tokens, turn.credits) == (120, 10, 0)
    # Its replay (any follower's stream) ends as the request that ran it was told.
    replayed = _replay(turn.pk)
    assert [name for name, _ in replayed] == ["turn_started", "turn_failed"]
    assert (replayed[-1][1]["code"], replayed[-1][1]["turn"]["status"]) == (
        "turn_cancelled",
        "interrupted",
    )
    report = reconcile()
    assert report.clean, [c for c in report.checks if not c.clean]
    # Idempotent: the lost row is filled once.
    assert not services.turn_record_late_answer(heard=row)


def test_a_roundtable_cancelled_keeps_the_answers_it_had_finished(
    owner, owner_client, ada, make_agent, make_room, make_session, fake_gateway, post_turn
):
    grace = make_agent(owner, "grace")
    session = make_session(owner, room=make_room(owner, [ada, grace], mode=RoomMode.ROUNDTABLE))
    seen: dict = {}

    def cancel_graces_call(call):
        if call.agent_key == "grace":
            fake_gateway.during_call = None
            seen["cancel"] = _cancel(owner_client, _running_turn().pk)

    fake_gateway.during_call = cancel_graces_call
    assert post_turn(owner_client, session, "both of you").status_code == 409

    body = seen["cancel"].json()
    assert [(m["role"], m["agent_key"]) for m in body["messages"]] == [
        ("user", ""),
        ("assistant", "ada"),
    ]
    rows = dict(LlmCallEvent.objects.values_list("agent_key", "status"))
    assert rows == {"ada": "success", "grace": "lost"}
    assert fake_gateway.calls[-1].agent_key == "grace"
    report = reconcile()
    assert report.clean, [c for c in report.checks if not c.clean]


@pytest.mark.parametrize("deleted", ["session", "room"])
def test_deleting_its_session_or_room_ends_a_turn_running_elsewhere_as_a_cancel(
    owner,
    owner_client,
    ada,
    make_agent,
    make_room,
    make_session,
    fake_gateway,
    post_turn,
    monkeypatch,
    deleted,
):
    """A chat's "Delete" while its roundtable answers, the turn run by another worker (which
    `draining.stop` cannot reach): the DELETE ends it as a cancel does, and the worker finds it
    ended at its next write: the answer it was making is not stored, and no further agent is
    called. Before, the turn ran to its end, every call billed, and its request answered 201
    for a turn that was a 404."""
    monkeypatch.setattr(draining, "stop", lambda key: False)
    grace, linus = make_agent(owner, "grace"), make_agent(owner, "linus")
    room = make_room(owner, [ada, grace, linus], mode=RoomMode.ROUNDTABLE)
    session = make_session(owner, room=room)
    seen: dict = {}

    def delete_during_graces_call(call):
        if call.agent_key == "grace":
            fake_gateway.during_call = None
            target = f"sessions/{session.pk}" if deleted == "session" else f"rooms/{room.pk}"
            seen["delete"] = owner_client.delete(f"/api/v1/{target}")

    fake_gateway.during_call = delete_during_graces_call
    first = post_turn(owner_client, session, "all three of you")

    assert (seen["delete"].status_code, seen["delete"].content) == (204, b"")
    assert first.status_code == 409, first.content
    assert first.json()["detail"]["code"] == "turn_cancelled"
    assert [call.agent_key for call in fake_gateway.calls] == ["ada", "grace"]
    turn = Turn.objects.get()
    assert (turn.status, turn.failure_code) == ("interrupted", TurnFailure.CANCELLED)
    assert list(turn.messages.values_list("agent_key", flat=True)) == ["", "ada"]
    rows = dict(LlmCallEvent.objects.values_list("agent_key", "status"))
    assert rows == {"ada": "success", "grace": "lost"}
    assert _replay(turn.pk)[-1][1]["code"] == "turn_cancelled"
    report = reconcile()
    assert report.clean, [c for c in report.checks if not c.clean]


def test_a_streamed_turn_cancelled_ends_with_turn_failed_of_that_code(
    owner, owner_client, session, fake_gateway
):
    """The poster's stream, and the turn's replay, end with `turn_failed` `turn_cancelled`."""
    seen: dict = {}

    def cancel_mid_call(call):
        fake_gateway.during_call = None
        seen["cancel"] = _cancel(owner_client, _running_turn().pk)

    fake_gateway.during_call = cancel_mid_call
    token = Token.objects.create(user=owner).key

    async def stream():
        response = await AsyncClient().post(
            f"/api/v1/sessions/{session.pk}/turns",
            {"message": "stream it"},
            content_type="application/json",
            headers={"Authorization": f"Token {token}", "Accept": "text/event-stream"},
        )
        assert response.status_code == 201
        return _sse([chunk async for chunk in response.streaming_content])

    heard = async_to_sync(stream)()

    assert seen["cancel"].status_code == 200
    assert [name for name, _ in heard] == ["turn_started", "step_started", "turn_failed"]
    ending = heard[-1][1]
    assert (ending["code"], ending["turn"]["status"]) == ("turn_cancelled", "interrupted")
    assert ending["message"].startswith("The turn was cancelled while it ran")
    assert _replay(ending["turn"]["id"])[-1] == heard[-1]
    assert not Turn.objects.filter(status=TurnStatus.RUNNING).exists()
    # Cancelled before its first word: lost as a recovery leaves it, at no credit.
    row = LlmCallEvent.objects.get(turn_id=ending["turn"]["id"])
    assert (row.status, row.output_tokens, row.credits, row.provider) == ("lost", 0, 0, "")
    assert not MonthlyUsage.objects.filter(user=owner).exists()


class SpeaksThenWaits(FakeGateway):
    """A provider that streams 40 words: all but the last (`spoken` of them), then runs
    `after_words` (the test's cancel), then the rest, and its last chunk, each after a pause (a
    cancel in this process abandons the call meanwhile; a save of the text finds a cancel from
    elsewhere). `finished`: it got to its end (its stream was not closed)."""

    WORDS = 40

    def __init__(self, spoken: int = WORDS - 1) -> None:
        super().__init__()
        self.spoken = spoken
        self.after_words = None
        self.pause = 30.0  # before each word after `after_words`
        self.tail = 30.0  # before its last chunk (the usage)
        self.finished = False

    def reply_for(self, call):
        return " ".join(f"word{index}" for index in range(1, self.WORDS + 1))

    async def stream(self, call, on_delta, on_reasoning=None):
        with self._lock:
            self.calls.append(call)
        pieces = re.findall(r"\s*\S+", self.reply_for(call))
        for piece in pieces[: self.spoken]:
            on_delta(piece)
        if self.after_words is not None:
            await sync_to_async(self.after_words)(call)
        for piece in pieces[self.spoken :]:
            await asyncio.sleep(self.pause)
            on_delta(piece)
        await asyncio.sleep(self.tail)
        self.finished = True
        fresh, cached, output = self.usage
        return LlmResult(
            status="success",
            text="".join(pieces),
            input_tokens_fresh=fresh,
            input_tokens_cached=cached,
            output_tokens=output,
            latency_ms=5,
            attempts=1,
            provider="fake",
            provider_model=call.alias.litellm_model,
        )


@pytest.fixture
def speaker(monkeypatch) -> SpeaksThenWaits:
    gateway = SpeaksThenWaits()
    monkeypatch.setattr("sessions_app.turns.get_gateway", lambda: gateway)
    return gateway


def _streamed_turn(owner, session, message: str = "stream it") -> list[tuple[str, dict]]:
    token = Token.objects.get_or_create(user=owner)[0].key

    async def stream():
        response = await AsyncClient().post(
            f"/api/v1/sessions/{session.pk}/turns",
            {"message": message},
            content_type="application/json",
            headers={"Authorization": f"Token {token}", "Accept": "text/event-stream"},
        )
        assert response.status_code == 201
        return _sse([chunk async for chunk in response.streaming_content])

    return async_to_sync(stream)()


def _month_credits(user) -> Decimal:
    return sum(MonthlyUsage.objects.filter(user=user).values_list("credits", flat=True), Decimal(0))


def _assert_billed_for_what_it_streamed(owner, heard, credits_before) -> LlmCallEvent:
    """The cancelled call's row: billed as a stream that failed after its first words is, for
    the words its user got; the month's counter moved by its credits; the ledger reconciles."""
    assert heard[-1][0] == "turn_failed" and heard[-1][1]["code"] == "turn_cancelled"
    turn = Turn.objects.get(pk=heard[-1][1]["turn"]["id"])
    assert (turn.status, turn.failure_code) == ("interrupted", TurnFailure.CANCELLED)
    assert list(turn.messages.values_list("role", flat=True)) == ["user"]
    row = LlmCallEvent.objects.get(turn=turn)
    assert (row.status, row.error_type, row.provider, row.attempts) == (
        "error",
        "cancelled",
        "fake",
        1,
    )
    assert row.output_tokens > 0 and row.credits > 0
    assert _month_credits(owner) - credits_before == row.credits
    assert (turn.output_tokens, turn.credits) == (row.output_tokens, row.credits)
    report = reconcile()
    assert report.clean, [c for c in report.checks if not c.clean]
    return row


def test_a_streamed_answer_cancelled_mid_answer_is_billed_for_the_words_its_user_got(
    owner, owner_client, session, speaker
):
    """The auditor's leak: a user who cancels a streamed answer just before its end got 39 of
    its 40 words, and its row was lost, at no credit (every answer free that way). Now the row
    is billed as a stream that failed after its first words is: the input estimate and an
    estimate of the words streamed, with its credits on the month's counter."""
    before = _month_credits(owner)
    seen: dict = {}

    def cancel(call):
        seen["cancel"] = _cancel(owner_client, _running_turn().pk)

    speaker.after_words = cancel
    heard = _streamed_turn(owner, session)

    assert seen["cancel"].status_code == 200
    got = "".join(data["text"] for name, data in heard if name == "step_delta")
    assert len(got.split()) == SpeaksThenWaits.WORDS - 1
    assert not speaker.finished
    row = _assert_billed_for_what_it_streamed(owner, heard, before)
    model = speaker.calls[-1].alias.litellm_model
    prompt = sum(estimate_tokens(m.content, model) for m in speaker.calls[-1].messages)
    assert (row.input_tokens_fresh, row.output_tokens) == (prompt, estimate_tokens(got, model))
    # Billed once: the provider's late usage (none comes, its stream closed) would not refill it.
    assert not services.turn_record_late_answer(heard=row)
    assert not services.turn_record_cancelled_answer(spoken=row)


def test_a_streamed_answer_cancelled_from_another_worker_is_billed_at_its_next_save(
    owner, owner_client, session, speaker, monkeypatch, settings
):
    """Another worker took the cancel (`draining.stop` cannot reach this one): the answer's next
    save of its text finds the turn cancelled, its provider's stream is closed, and the words
    its user got until then are billed."""
    monkeypatch.setattr(draining, "stop", lambda key: False)
    settings.PANTHEON_STREAM_SAVE_SECONDS = 0  # every word is saved
    # Its first words come at once as the step begins: they go straight through (no look at
    # the turn first, which a silence as long as the saves' pace would bring).
    monkeypatch.setattr("sessions_app.turns._StreamedStep._pace", staticmethod(lambda: 60.0))
    speaker.pause = 0.01
    before = _month_credits(owner)

    def cancel(call):
        assert _cancel(owner_client, _running_turn().pk).status_code == 200

    speaker.after_words = cancel
    heard = _streamed_turn(owner, session)

    got = "".join(data["text"] for name, data in heard if name == "step_delta")
    # The words up to the save that found the cancel (the last one, or none after it).
    assert len(got.split()) >= SpeaksThenWaits.WORDS - 1
    assert not speaker.finished  # its stream closed at the save that found the cancel
    row = _assert_billed_for_what_it_streamed(owner, heard, before)
    model = speaker.calls[-1].alias.litellm_model
    assert row.output_tokens == estimate_tokens(got, model)


def test_a_streamed_answer_cancelled_elsewhere_before_its_first_word_shows_and_bills_none(
    owner, owner_client, session, speaker, monkeypatch, settings
):
    """Another worker took the cancel while the provider was still silent: its first words, when
    they came, were sent to the client (the turn's next save found the cancel only after them)
    and billed, to a user who had pressed Stop before any text (the re-tester: about one cancel
    in two with two workers). The first word waits for one look at the turn."""
    monkeypatch.setattr(draining, "stop", lambda key: False)
    settings.PANTHEON_STREAM_SAVE_SECONDS = 0.05
    speaker.spoken = 0  # silent until the cancel, and a while after it
    speaker.pause = 0.1

    def cancel(call):
        assert _cancel(owner_client, _running_turn().pk).status_code == 200

    speaker.after_words = cancel
    heard = _streamed_turn(owner, session)

    assert [name for name, _ in heard] == ["turn_started", "step_started", "turn_failed"]
    assert heard[-1][1]["code"] == "turn_cancelled"
    row = LlmCallEvent.objects.get(turn_id=heard[-1][1]["turn"]["id"])
    assert (row.status, row.output_tokens, row.credits) == ("lost", 0, 0)
    assert not MonthlyUsage.objects.filter(user=owner).exists()


def test_a_streamed_answer_whole_but_cancelled_before_its_commit_is_billed_its_usage(
    owner, owner_client, session, speaker, monkeypatch
):
    """The provider answered whole, every word streamed to its user, and the cancel (from
    another worker) came before the step's commit: the step stores nothing, and the row is
    billed with the usage the provider reported (it was lost, at no credit)."""
    monkeypatch.setattr(draining, "stop", lambda key: False)
    speaker.spoken, speaker.tail = SpeaksThenWaits.WORDS, 0
    before = _month_credits(owner)

    def cancel(call):
        assert _cancel(owner_client, _running_turn().pk).status_code == 200

    speaker.after_words = cancel
    heard = _streamed_turn(owner, session)

    assert sum(name == "step_delta" for name, _ in heard) == SpeaksThenWaits.WORDS
    assert speaker.finished
    row = _assert_billed_for_what_it_streamed(owner, heard, before)
    usage = (row.input_tokens_fresh, row.input_tokens_cached, row.output_tokens)
    assert usage == (100, 20, 10)


def test_a_cancelled_turns_idempotency_key_runs_afresh(owner_client, session, fake_gateway):
    url = f"/api/v1/sessions/{session.pk}/turns"
    key = {"HTTP_IDEMPOTENCY_KEY": "stop-me"}

    def cancel_mid_call(call):
        fake_gateway.during_call = None
        assert _cancel(owner_client, _running_turn().pk).status_code == 200

    fake_gateway.during_call = cancel_mid_call
    first = owner_client.post(url, {"message": "go"}, format="json", **key)
    assert first.status_code == 409
    retry = owner_client.post(url, {"message": "go"}, format="json", **key)

    assert retry.status_code == 201, retry.content
    assert "Idempotent-Replayed" not in retry.headers
    assert (retry.json()["turn_index"], retry.json()["status"]) == (2, "completed")


def test_a_cancel_of_a_turn_whose_worker_is_gone_frees_its_key_and_session(
    owner, owner_client, ada, session, fake_gateway
):
    """No worker runs it (`direct_turn_in_flight`, its request's key still `running`): the
    cancel ends it, and a retry with its key runs at once rather than meeting the key in use
    (409) until the stale limit."""
    from sessions_app.idempotency import request_fingerprint
    from sessions_app.models import IdempotencyKey

    turn = direct_turn_in_flight(owner, ada, session)
    path = f"/api/v1/sessions/{session.pk}/turns"
    IdempotencyKey.objects.create(
        user=owner,
        key="orphan",
        fingerprint=request_fingerprint(method="POST", path=path, body={"message": "hello?"}),
        turn=turn,
    )
    in_use = owner_client.post(
        path, {"message": "hello?"}, format="json", HTTP_IDEMPOTENCY_KEY="orphan"
    )
    assert in_use.status_code == 409
    assert in_use.json()["detail"]["code"] == "idempotency_key_in_use"

    assert _cancel(owner_client, turn.pk).status_code == 200
    retry = owner_client.post(
        path, {"message": "hello?"}, format="json", HTTP_IDEMPOTENCY_KEY="orphan"
    )

    assert retry.status_code == 201, retry.content
    assert retry.json()["turn_index"] == 2


def test_a_cancel_twice_and_a_cancel_of_a_finished_turn_are_409_turn_not_running(
    owner_client, session, fake_gateway, post_turn
):
    finished = post_turn(owner_client, session, "quick one").json()
    refused = _cancel(owner_client, finished["id"])

    assert refused.status_code == 409
    assert refused.json() == {
        "detail": {
            "code": "turn_not_running",
            "message": "The turn is not running (it is completed): nothing to cancel.",
            "turn_id": finished["id"],
            "status": "completed",
        }
    }
    assert Turn.objects.get(pk=finished["id"]).failure_code == ""

    def cancel_twice(call):
        fake_gateway.during_call = None
        turn = _running_turn()
        assert _cancel(owner_client, turn.pk).status_code == 200
        again = _cancel(owner_client, turn.pk)
        assert again.status_code == 409
        assert again.json()["detail"]["status"] == "interrupted"

    fake_gateway.during_call = cancel_twice
    assert post_turn(owner_client, session, "slow one").status_code == 409
    assert fake_gateway.during_call is None


def test_another_users_turn_and_an_unknown_turn_are_404(
    owner, owner_client, outsider_client, ada, session
):
    turn = direct_turn_in_flight(owner, ada, session)

    assert _cancel(outsider_client, turn.pk).status_code == 404
    assert _cancel(owner_client, "6b1d3c52-2f67-4b4b-9a3e-000000000000").status_code == 404
    assert _running_turn() == turn
    # A turn of a deleted session is gone with it, as for every turn endpoint.
    owner_client.delete(f"/api/v1/sessions/{session.pk}")
    assert _cancel(owner_client, turn.pk).status_code == 404


def test_a_cancel_is_post_only_with_no_body(owner, owner_client, ada, session):
    turn = direct_turn_in_flight(owner, ada, session)

    assert owner_client.get(f"/api/v1/turns/{turn.pk}/cancel").status_code == 405
    assert owner_client.delete(f"/api/v1/turns/{turn.pk}/cancel").status_code == 405
    assert owner_client.delete(f"/api/v1/turns/{turn.pk}").status_code == 405
    assert _running_turn() == turn


def test_a_cancel_costs_a_few_statements(owner, owner_client, ada, session):
    turn = direct_turn_in_flight(owner, ada, session)
    with CaptureQueriesContext(connection) as queries:
        assert _cancel(owner_client, turn.pk).status_code == 200
    # The user's API rate; the turn locked, its calls marked lost, its row ended (its stream's
    # text stays until the worker has billed it); then the turn read with its messages
    # (savepoints aside).
    statements = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 6, "\n".join(statements)
    assert "pantheon_rate" in statements[0]
