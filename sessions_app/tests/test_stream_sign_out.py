"""A stream ends once its credentials are revoked: a client signed out (`DELETE auth/token`),
its token rotated, or its console session logged out, had its open streams run on to their
turns' ends, a stolen token's follow reading the conversation for as long as it stayed open.
The credentials are read again every heartbeat interval (`PANTHEON_SSE_HEARTBEAT_SECONDS`); a
turn the revoked request runs runs on, as for a client that hung up."""

import contextlib
import time

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from pantheon.authentication import still_signed_in
from pantheon.testing.servers import AppServer, postgres_url
from sessions_app.models import Turn, TurnStatus
from sessions_app.tests.conftest import point_at_stub, wait_for
from sessions_app.tests.test_follow_limit import Follows, running_turn
from sessions_app.tests.test_turn_delete_live import Stream

HEARTBEAT = 0.5


@pytest.fixture
def server():
    with AppServer(
        database_url=postgres_url(connection.settings_dict),
        env={
            "PANTHEON_LLM_BACKEND": "live",
            "STUB_API_KEY": "stub-key",
            "PANTHEON_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT),
        },
    ) as server:
        yield server


def _token(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def _until_the_end(lines, *, deadline: float) -> list[str]:
    """A stream's lines (blank ones left out) until its end, or until `deadline` (its
    heartbeats keep coming meanwhile)."""
    read = []
    for line in lines:
        if line:
            read.append(line)
        if time.monotonic() > deadline:
            break
    return read


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_signing_out_ends_the_users_follow_streams_and_no_one_elses(
    server, owner, outsider, make_agent, make_session
):
    mine = running_turn(owner, make_agent, make_session, "ada")
    theirs = running_turn(outsider, make_agent, make_session, "grace")
    follows = Follows(server)
    with contextlib.ExitStack() as streams:
        _, my_lines = follows.open(mine, owner, streams)
        _, their_lines = follows.open(theirs, outsider, streams)
        signed_out = httpx.delete(
            f"{server.url}/api/v1/auth/token",
            headers={"Authorization": f"Token {_token(owner)}"},
        )
        assert signed_out.status_code == 204
        started = time.monotonic()

        rest = _until_the_end(my_lines, deadline=started + 4 * HEARTBEAT + 2)

        assert rest[-1] == ": signed out", "the stream went on after its sign-out"
        # The other user's stream goes on: its heartbeats still come.
        assert [next(their_lines) for _ in range(4)].count(": heartbeat") >= 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("no_throttle_history")
def test_a_rotated_token_ends_the_turn_stream_and_the_turn_runs_to_its_end(
    server, owner, make_agent, make_session, stub
):
    agent = make_agent(owner, "ada", model_alias="llama")
    point_at_stub(stub, "stream-100-words-40", "llama")  # four seconds of words
    session = make_session(owner, agent=agent)
    auth = {"Authorization": f"Token {_token(owner)}"}
    poster = Stream(
        "POST", f"{server.url}/api/v1/sessions/{session.pk}/turns", auth, {"message": "Hi"}
    )
    wait_for(lambda: poster.names().count("step_delta") >= 2, "the answer's first words")

    rotated = httpx.post(f"{server.url}/api/v1/auth/token/rotate", headers=auth)
    assert rotated.status_code == 200
    poster.join()

    assert "step_delta" in poster.names() and "turn_completed" not in poster.names()
    turn = Turn.objects.get(session=session)
    assert turn.status == TurnStatus.RUNNING  # the stream ended before the turn
    wait_for(lambda: Turn.objects.get(pk=turn.pk).status == TurnStatus.COMPLETED, "the turn's end")
    answer = turn.messages.get(role="assistant")
    assert len(answer.content.split()) >= 40


@pytest.mark.django_db
def test_a_console_session_holds_until_logged_out_or_its_password_changes(rf, owner):
    def request_of(session_key: str) -> Request:
        request = Request(rf.get("/"))
        request._request.session = SessionStore(session_key)
        request.auth, request.user = None, owner
        return request

    browser, other = Client(), Client()
    browser.force_login(owner)
    other.force_login(owner)
    kept, logged_out = browser.session.session_key, other.session.session_key
    assert still_signed_in(request_of(kept)) and still_signed_in(request_of(logged_out))

    other.logout()
    assert not still_signed_in(request_of(logged_out))
    assert still_signed_in(request_of(kept))

    changed = get_user_model().objects.get(pk=owner.pk)
    changed.set_password("a-new-secret-77")
    changed.save()
    assert not still_signed_in(request_of(kept))
