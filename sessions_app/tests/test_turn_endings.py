"""How a turn that did not run to its end ends: the stream's last event names what ended it (the
server, a takeover, a recovery), and a replay of the turn, from any host and at any time later,
ends with the same event."""

import asyncio
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.management import call_command
from django.test import AsyncClient
from django.utils import timezone
from rest_framework.authtoken.models import Token

from conftest import FakeGateway
from pantheon import draining, exceptions
from rooms.models import RoomMode
from sessions_app import events
from sessions_app.api_turns import SessionTurnsView
from sessions_app.models import IdempotencyKey, Turn, TurnFailure, TurnStatus
from sessions_app.selectors import session_for_turn
from sessions_app.turns import TurnListener, turn_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_streamed(owner):
    """Run a turn as a streamed request does; returns the events its client heard."""

    def run(session, message: str, gateway: FakeGateway) -> list[events.TurnEvent]:
        heard: list[events.TurnEvent] = []
        fresh = session_for_turn(user=owner, session_id=session.pk)
        try:
            async_to_sync(turn_run)(
                session=fresh,
                user=owner,
                message=message,
                gateway=gateway,
                listener=TurnListener(send=heard.append),
            )
        except Exception as exc:
            heard.append(exc)  # type: ignore[arg-type]
        return heard

    return run


def replayed_ending(turn: Turn) -> events.TurnEvent:
    replay = events.turn_replay(turn)
    assert replay.finished
    return replay.events[-1]


def test_a_turn_the_server_failed_ends_with_server_error_live_and_in_its_replay(
    owner, make_agent, make_room, make_session, run_streamed, monkeypatch
):
    """A bug strikes after two of three agents answered. The client following it live was told
    `server_error` with no turn; a replay said "Every agent failed to answer." though two had."""
    agents = [make_agent(owner, key) for key in ("ada", "grace", "linus")]
    session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))

    def broken(runner):  # asked as linus's step commits (as in test_api_turns)
        raise RuntimeError("bug in the summary ladder")

    monkeypatch.setattr("sessions_app.turns.TurnRunner._summary_due", broken)

    heard = run_streamed(session, "go", FakeGateway())

    assert isinstance(heard.pop(), RuntimeError)
    live = heard[-1]
    assert (live.name, live.data["code"]) == ("turn_failed", "server_error")
    assert live.data["message"] == "The turn failed on the server."
    assert live.data["turn"]["status"] == "failed"
    answered = [m["agent_key"] for m in live.data["turn"]["messages"] if m["role"] == "assistant"]
    assert answered == ["ada", "grace"]
    turn = Turn.objects.get()
    assert (turn.status, turn.failure_code) == (TurnStatus.FAILED, TurnFailure.SERVER_ERROR)
    assert replayed_ending(turn) == live


def test_a_turn_whose_agents_all_failed_ends_as_before(
    owner, make_agent, make_session, run_streamed
):
    gateway = FakeGateway()
    gateway.fail["ada"] = "error"
    session = make_session(owner, agent=make_agent(owner, "ada"))

    heard = run_streamed(session, "hello", gateway)

    live = heard[-1]
    assert (live.name, live.data["code"]) == ("turn_failed", "turn_failed")
    assert live.data["message"] == "Every agent failed to answer."
    turn = Turn.objects.get()
    assert (turn.status, turn.failure_code) == (TurnStatus.FAILED, "")
    # The balance belongs to the answer that ran the turn; a replay, like a read, has none.
    assert live.data["turn"].pop("balance")["month_credits_used"] == "0.0000000000"
    assert replayed_ending(turn).data == {
        **live.data,
        "turn": {**live.data["turn"], "balance": None},
    }


def test_a_turn_taken_over_as_stale_ends_with_turn_conflict_live_and_in_its_replay(
    owner, owner_client, make_agent, make_session, run_streamed, fake_gateway, post_turn, settings
):
    """Turn 1's provider hangs past the stale limit and turn 2 takes the session over. Turn 1's
    live stream said `turn_conflict`; its replay said `turn_interrupted`."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    second = {}
    gateway = FakeGateway()

    def take_over(call):
        gateway.during_call = None
        long_ago = timezone.now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 1)
        Turn.objects.filter(turn_index=1).update(progress_at=long_ago)
        second["response"] = post_turn(owner_client, session, "are you there?")

    gateway.during_call = take_over

    heard = run_streamed(session, "a slow question", gateway)

    assert isinstance(heard.pop(), exceptions.TurnConflict)
    assert second["response"].status_code == 201
    live = heard[-1]
    assert (live.name, live.data["code"]) == ("turn_failed", "turn_conflict")
    assert live.data["message"] == "The turn was taken over by a later request after it stalled."
    assert live.data["turn"]["status"] == "interrupted"
    stale = Turn.objects.get(turn_index=1)
    assert (stale.status, stale.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.CONFLICT)
    assert replayed_ending(stale) == live


def test_a_turn_recovered_by_recover_turns_ends_interrupted(stale_turn):
    turn = stale_turn
    call_command("recover_turns", stdout=StringIO())

    turn.refresh_from_db()
    assert (turn.status, turn.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.INTERRUPTED)
    ending = replayed_ending(turn)
    assert (ending.name, ending.data["code"]) == ("turn_failed", "turn_interrupted")
    assert ending.data["turn"]["status"] == "interrupted"


def test_a_turn_ended_before_its_failure_was_kept_replays_by_its_status(
    owner, make_agent, make_session
):
    """Turns from before `failure_code` have none: their replays end as they always did."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    turn = Turn.objects.create(session=session, turn_index=1, mode="direct", user_input="hi")
    Turn.objects.filter(pk=turn.pk).update(status=TurnStatus.INTERRUPTED, failure_code="")

    ending = replayed_ending(turn)

    assert (ending.name, ending.data["code"]) == ("turn_failed", "turn_interrupted")


def test_a_turn_cancelled_again_while_it_ends_still_sends_its_last_event(
    owner, make_agent, make_session, monkeypatch
):
    """A stopping worker cancels a turn, and cancels it again while its failure is written (the
    worker's last moments): the stream got no last event, and its client waited on heartbeats
    until the connection went."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    heard: list[events.TurnEvent] = []

    async def cancelled_while_ending(runner, failure):
        raise asyncio.CancelledError

    monkeypatch.setattr("sessions_app.turns.TurnRunner._ending", cancelled_while_ending)
    gateway = FakeGateway()

    async def run_and_cancel():
        fresh = await sync_to_async(session_for_turn)(user=owner, session_id=session.pk)
        task = asyncio.ensure_future(
            turn_run(
                session=fresh,
                user=owner,
                message="hello",
                gateway=gateway,
                listener=TurnListener(send=heard.append),
            )
        )
        while not gateway.calls:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    gateway.delay = 5
    async_to_sync(run_and_cancel)()

    assert (heard[-1].name, heard[-1].data["code"]) == ("turn_failed", "turn_interrupted")
    turn = Turn.objects.get()
    assert (turn.status, turn.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.INTERRUPTED)


def test_a_turn_claimed_as_its_worker_stops_is_interrupted_not_left_running(
    owner, make_agent, make_session, fake_gateway, monkeypatch
):
    """A stopping worker cancels a request whose first section (DRF's checks, the claim) is
    still running in its thread: the section went on and claimed the turn, which nothing then
    ran. It stayed `running`, its session refusing turns (409) until the stale limit, and its
    Idempotency-Key answering 409 `idempotency_key_in_use` as long."""
    monkeypatch.setattr(draining, "_stopping", False)  # put back after the drain below
    session = make_session(owner, agent=make_agent(owner, "ada"))
    token = Token.objects.create(user=owner).key
    entered = threading.Event()
    first_section = SessionTurnsView._start

    def slow_first_section(view, request, session_id):
        entered.set()
        time.sleep(0.5)  # the drain cancels the request meanwhile
        return first_section(view, request, session_id)

    monkeypatch.setattr(SessionTurnsView, "_start", slow_first_section)

    async def post_and_stop():
        posted = asyncio.ensure_future(
            AsyncClient().post(
                f"/api/v1/sessions/{session.pk}/turns",
                {"message": "hello"},
                content_type="application/json",
                headers={"Authorization": f"Token {token}", "Idempotency-Key": "key-1"},
            )
        )
        while not entered.is_set():
            await asyncio.sleep(0.01)
        cancelled = await draining.drain(seconds=0, wind_down=10)
        return cancelled, await posted

    cancelled, response = async_to_sync(post_and_stop)()

    assert cancelled == 1
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "turn_interrupted"
    turn = Turn.objects.get()
    assert (turn.status, turn.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.INTERRUPTED)
    assert not IdempotencyKey.objects.exists()  # a retry runs it afresh
    assert fake_gateway.calls == []
