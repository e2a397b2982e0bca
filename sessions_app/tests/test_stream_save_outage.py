"""A streamed answer's saves (its text every few hundred ms, and the look at the turn before
its first words) meeting a database connection that is gone (`pg_terminate_backend`, a
failover): the save is tried again by the next one, and the words go on reaching the client;
and the replay of a finished turn's events meeting one.

Before, the look's failure held back every word that followed (the client saw no delta, the
whole answer only in `turn_completed`), and a failed save's exception was left in its task:
an ERROR line "Task exception was never retrieved" with the traceback, for an outage the
turn rode through."""

import gc
import logging
import re
import warnings

import psycopg
import pytest
from django.db import OperationalError

from conftest import FakeGateway
from sessions_app import events
from sessions_app.models import Message, Turn, TurnStatus, TurnStreamChunk
from sessions_app.tests.conftest import direct_turn, streamed_text
from sessions_app.turns import _StreamedStep

pytestmark = pytest.mark.django_db


def _connection_terminated() -> OperationalError:
    """Django's error for a query whose connection PostgreSQL ended (`pg_terminate_backend`)."""
    error = OperationalError("terminating connection due to administrator command")
    error.__cause__ = psycopg.errors.AdminShutdown(
        "terminating connection due to administrator command"
    )
    return error


@pytest.fixture
def failing_saves(monkeypatch):
    """The saves numbered in the returned set (from 1) fail as a terminated connection does."""
    failing: set[int] = set()
    calls = {"n": 0}
    save = _StreamedStep.save

    def flaky(self, chunk):
        calls["n"] += 1
        if calls["n"] in failing:
            raise _connection_terminated()
        return save(self, chunk)

    monkeypatch.setattr(_StreamedStep, "save", flaky)
    return failing


@pytest.mark.parametrize("failed", [1, 2], ids=["the look before the first word", "a later save"])
def test_a_save_that_loses_its_connection_is_retried_and_every_word_reaches_the_client(
    owner, ada, make_session, settings, failing_saves, caplog, failed
):
    settings.PANTHEON_STREAM_SAVE_SECONDS = 0  # every piece is saved, the first looked at
    failing_saves.add(failed)
    gateway = FakeGateway()
    gateway.word_delay = 0.01

    with caplog.at_level(logging.WARNING):
        outcome, heard = direct_turn(owner, make_session(owner, agent=ada), gateway)
        gc.collect()  # a task whose exception nobody retrieved says so as it is collected

    turn = Turn.objects.get()
    answer = Message.objects.get(turn=turn, role="assistant")
    assert turn.status == TurnStatus.COMPLETED
    assert [event.name for event in heard][-1] == "turn_completed"
    assert streamed_text(heard) == answer.content  # every word was streamed, none held back
    assert not TurnStreamChunk.objects.exists()  # the step's commit cleared its saves
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [], [record.getMessage() for record in errors]
    [warning] = [r for r in caplog.records if "save" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "tried again" in warning.getMessage()


def test_a_finished_turns_replay_whose_connection_is_lost_answers_503_not_a_broken_stream(
    owner, ada, make_session, owner_client, monkeypatch
):
    """`GET turns/{id}/events` of a finished turn read its events once its 200 had begun: a
    connection lost then broke the stream off (the client: an incomplete chunked body; the
    log: uvicorn's "Exception in ASGI application", with no request id). Now they are read
    first, and the client gets the 503 `database_unavailable` any request gets, to retry."""
    session = make_session(owner, agent=ada)
    posted = owner_client.post(
        f"/api/v1/sessions/{session.pk}/turns", {"message": "hello"}, format="json"
    )
    assert posted.status_code == 201
    url = f"/api/v1/turns/{posted.json()['id']}/events"

    def lost(turn):
        raise _connection_terminated()

    monkeypatch.setattr(events, "turn_replay", lost)
    response = owner_client.get(url, HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "database_unavailable"
    assert response["Retry-After"] == "2"

    monkeypatch.undo()
    replayed = owner_client.get(url, HTTP_ACCEPT="text/event-stream")
    assert replayed.status_code == 200
    with warnings.catch_warnings():  # the test client reads the async stream synchronously
        warnings.simplefilter("ignore")
        text = b"".join(replayed).decode()
    assert re.findall(r"^event: (\w+)$", text, re.MULTILINE)[-1] == "turn_completed"


def test_a_streamed_retry_of_a_finished_turn_whose_connection_is_lost_answers_503(
    owner, ada, make_session, owner_client, monkeypatch
):
    """The same, for a streamed retry with the Idempotency-Key of a turn that has ended: its
    events were read once its 200 had begun."""
    session = make_session(owner, agent=ada)
    url = f"/api/v1/sessions/{session.pk}/turns"
    key = {"HTTP_IDEMPOTENCY_KEY": "lost-on-replay"}
    assert owner_client.post(url, {"message": "hi"}, format="json", **key).status_code == 201

    def lost(turn):
        raise _connection_terminated()

    monkeypatch.setattr(events, "turn_replay", lost)
    response = owner_client.post(
        url, {"message": "hi"}, format="json", HTTP_ACCEPT="text/event-stream", **key
    )

    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "database_unavailable"


@pytest.mark.parametrize("failed", [1, 2], ids=["the look before the first word", "a later save"])
def test_a_follower_elsewhere_reads_the_words_of_a_failed_save_once_the_next_one_stores_them(
    owner, ada, make_session, settings, monkeypatch, failed
):
    """A follower on another host (`GET turns/{id}/events` of the running turn) reads the
    streamed answer from its saves, up to the first gap between them. A failed save's words
    go into the next save, from where the last stored one ended: had the next started past
    them, the follower's text would stop at the gap for the rest of the answer."""
    settings.PANTHEON_STREAM_SAVE_SECONDS = 0  # every piece is saved
    calls = {"n": 0}
    followed: list[tuple[int, str]] = []  # (where the save's text ends, what a follower reads)
    save = _StreamedStep.save

    def flaky_then_followed(self, chunk):
        calls["n"] += 1
        if calls["n"] == failed:
            raise _connection_terminated()
        answered = save(self, chunk)
        replay = events.turn_replay(Turn.objects.get(pk=self.runner._turn.pk))
        text = "".join(e.data["text"] for e in replay.events if e.name == "step_delta")
        followed.append((chunk[0] + len(chunk[1]), text))
        return answered

    monkeypatch.setattr(_StreamedStep, "save", flaky_then_followed)
    gateway = FakeGateway()
    gateway.word_delay = 0.01

    _, heard = direct_turn(owner, make_session(owner, agent=ada), gateway)

    assert len(followed) >= 2, followed  # saves after the failed one
    spoken = streamed_text(heard)
    for end, text in followed:
        assert text == spoken[:end], (end, text)
