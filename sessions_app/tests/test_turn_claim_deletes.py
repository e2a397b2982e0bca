"""A chat deleted as its turn is claimed: `DELETE sessions/{id}`, `DELETE rooms/{id}` or
`forget_user` from another client while `POST sessions/{id}/turns` is between its read of the
session and the commit of its claim.

The delete ends the running turns it finds (as a cancel ends them), but a turn whose claim it
cannot see yet (read before the delete, committed after it) is not among them. That turn then
ran to its end in a chat that was a 404: every agent of the roundtable called and billed, its
answers stored in a deleted session, its request answered 201. Now the turn's first write after
the delete finds its chat gone and ends it as the delete would have (`interrupted`, ended by
`turn_cancelled`, its poster answered 409 of that code): the call in flight as the delete
committed is the only one made, its ledger row `lost` with its provider's usage, as a cancel
leaves it. The check is in the statement each step already runs (no query more per turn)."""

import pytest
from django.contrib.auth import get_user_model

from pantheon.testing.concurrency import finished, in_thread, someone_waits_on_a_lock
from rooms.models import Room, RoomMode
from rooms.services import room_delete
from sessions_app import api_turns
from sessions_app.models import Session, Turn, TurnFailure, TurnStatus
from sessions_app.services import session_delete, user_forget
from sessions_app.turns import TurnRunner
from usage.models import LlmCallEvent
from usage.reconcile import reconcile

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _delete(what: str, session: Session) -> None:
    """What another client does: its own connection, its own transaction."""
    if what == "session":
        session_delete(session=Session.objects.get(pk=session.pk))
    elif what == "room":
        room_delete(room=Room.objects.get(pk=session.room_id))
    else:
        user_forget(user=get_user_model().objects.get(pk=session.started_by_id))


@pytest.fixture
def roundtable_session(owner, make_agent, make_room, make_session):
    agents = [make_agent(owner, key) for key in ("ada", "grace", "linus")]
    return make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))


def _delete_before_the_claim(monkeypatch, what: str, session: Session) -> None:
    """The delete commits after the turn's request read the session and planned the turn,
    before its claim: it finds no running turn to end."""
    prepare = api_turns.turn_prepare

    def planned_then_deleted(**kwargs):
        plan = prepare(**kwargs)
        thread, outcome = in_thread(lambda: _delete(what, session))
        finished(thread)
        assert outcome == [None], outcome
        return plan

    monkeypatch.setattr(api_turns, "turn_prepare", planned_then_deleted)


def _delete_during_the_claim(monkeypatch, fake_gateway, what: str, session: Session) -> list:
    """The delete starts while the claim's transaction has inserted the turn (unseen by the
    delete's read of the running turns): a session's delete and an account's wait for the
    claim's lock on the session's row and commit while the first agent's call runs, a room's
    goes through before the claim commits."""
    promote = TurnRunner._promote_pending_mode
    started: list = []

    def claimed_then_deleted(runner, now):
        promote(runner, now)
        thread, outcome = in_thread(lambda: _delete(what, session))
        started.append((thread, outcome))
        if what in ("session", "account"):
            assert someone_waits_on_a_lock()
        else:
            finished(thread)  # committed before the claim

    def deleted_meanwhile(call):
        fake_gateway.during_call = None
        thread, outcome = started[0]
        finished(thread)
        assert outcome == [None], outcome

    monkeypatch.setattr(TurnRunner, "_promote_pending_mode", claimed_then_deleted)
    fake_gateway.during_call = deleted_meanwhile
    return started


def _assert_ended_as_deleted(response, fake_gateway) -> None:
    assert response.status_code == 409, response.content
    assert response.json()["detail"]["code"] == "turn_cancelled"
    # The call in flight as the delete committed, and no further agent.
    assert [call.agent_key for call in fake_gateway.calls] == ["ada"]
    turn = Turn.objects.get()
    assert (turn.status, turn.failure_code) == (TurnStatus.INTERRUPTED, TurnFailure.CANCELLED)
    assert list(turn.messages.values_list("role", flat=True)) == ["user"]
    row = LlmCallEvent.objects.get()
    assert (row.agent_key, row.status, row.credits) == ("ada", "lost", 0)
    assert row.output_tokens == fake_gateway.usage[2], "its provider's usage, as a cancel's"
    assert turn.llm_calls == 1
    report = reconcile()
    assert report.clean, [check for check in report.checks if not check.clean]


@pytest.mark.parametrize("what", ["session", "room", "account"])
def test_a_chat_deleted_between_the_turns_read_and_its_claim_gets_no_answer(
    owner, owner_client, roundtable_session, fake_gateway, post_turn, monkeypatch, what
):
    _delete_before_the_claim(monkeypatch, what, roundtable_session)

    response = post_turn(owner_client, roundtable_session, "each of you, please")

    _assert_ended_as_deleted(response, fake_gateway)


@pytest.mark.parametrize("what", ["session", "room", "account"])
def test_a_chat_deleted_as_its_turn_is_claimed_gets_no_further_answer(
    owner, owner_client, roundtable_session, fake_gateway, post_turn, monkeypatch, what
):
    started = _delete_during_the_claim(monkeypatch, fake_gateway, what, roundtable_session)

    response = post_turn(owner_client, roundtable_session, "each of you, please")

    assert len(started) == 1
    _assert_ended_as_deleted(response, fake_gateway)
