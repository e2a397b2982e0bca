"""Each turn ends with one log line saying how it ended, under the ids of the request that
started it: an operator asked "what became of turn X" had the request's line alone (201 for a
turn whose every agent failed, 499 for one whose client left, after which the turn ran on and
wrote nothing), and had to open the console to learn its status, calls and credits."""

import logging

import pytest
from asgiref.sync import async_to_sync

from conftest import FakeGateway
from pantheon import logging_context
from rooms.models import RoomMode
from sessions_app.models import Turn
from sessions_app.selectors import session_for_turn
from sessions_app.turns import turn_run

pytestmark = pytest.mark.django_db


def run_turn(owner, session, gateway, message="go"):
    fresh = session_for_turn(user=owner, session_id=session.pk)
    with logging_context.request_scope(request_id="req-from-the-client"):
        try:
            async_to_sync(turn_run)(session=fresh, user=owner, message=message, gateway=gateway)
        except Exception as exc:
            return exc
    return None


def end_lines(caplog):
    return [
        r
        for r in caplog.records
        if r.getMessage().startswith("turn ") and " ended " in r.getMessage()
    ]


def test_a_partial_turn_says_which_answers_failed_and_what_it_billed(
    owner, make_agent, make_room, make_session, caplog
):
    agents = [make_agent(owner, key) for key in ("ada", "grace", "linus")]
    session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))
    gateway = FakeGateway()
    gateway.fail = {"grace": "provider_error"}

    with caplog.at_level(logging.INFO, logger="sessions_app.turns"):
        assert run_turn(owner, session, gateway) is None

    turn = Turn.objects.get()
    [line] = end_lines(caplog)
    assert line.levelname == "WARNING"
    assert line.getMessage().startswith(f"turn {turn.pk} ended partial in ")
    assert line.getMessage().endswith(
        f"ms: 3 LLM call(s), {turn.credits.normalize():f} credits; failed answers: grace: "
        "provider_error"
    )
    # Joined to the request that started it, and to the ledger by the turn's id.
    assert (line.request_id, line.turn_id, line.session_id) == (
        "req-from-the-client",
        str(turn.pk),
        str(session.pk),
    )
    assert (line.turn_status, line.llm_calls, line.failed_answers) == ("partial", 3, 1)
    assert line.credits == f"{turn.credits.normalize():f}"
    assert line.duration_ms > 0


def test_a_completed_turn_is_an_info_line(owner, make_agent, make_room, make_session, caplog):
    session = make_session(owner, room=make_room(owner, [make_agent(owner, "ada")]))

    with caplog.at_level(logging.INFO, logger="sessions_app.turns"):
        assert run_turn(owner, session, FakeGateway(), "@ada hi") is None

    turn = Turn.objects.get()
    [line] = end_lines(caplog)
    assert line.levelname == "INFO"
    assert line.getMessage().startswith(f"turn {turn.pk} ended completed in ")
    assert (line.turn_status, line.failure_code, line.llm_calls) == ("completed", None, 1)


def test_a_turn_the_server_failed_says_so(
    owner, make_agent, make_room, make_session, caplog, monkeypatch
):
    agents = [make_agent(owner, key) for key in ("ada", "grace")]
    session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))

    def broken(runner):
        raise RuntimeError("bug")

    monkeypatch.setattr("sessions_app.turns.TurnRunner._summary_due", broken)

    with caplog.at_level(logging.INFO, logger="sessions_app.turns"):
        assert isinstance(run_turn(owner, session, FakeGateway()), RuntimeError)

    turn = Turn.objects.get()
    [line] = end_lines(caplog)
    assert line.levelname == "WARNING"
    assert line.getMessage().startswith(f"turn {turn.pk} ended failed (server_error) in ")
    assert (line.turn_status, line.failure_code) == ("failed", "server_error")
    assert line.request_id == "req-from-the-client"
