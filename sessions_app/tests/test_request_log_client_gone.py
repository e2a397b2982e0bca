"""The request log has one line per request, a turn's whose client hung up before its answer
included: it had none (the request was cancelled past the middleware that writes it), so an
operator saw the turn's own lines and no request for them. Against a live server and a stub
provider on PostgreSQL."""

import json

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from sessions_app.models import Turn
from sessions_app.tests.conftest import point_at_stub, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]


def test_a_plain_turn_whose_client_hangs_up_has_its_request_line(
    owner, make_agent, make_session, stub, tmp_path
):
    point_at_stub(stub, "slow-2000", "llama")
    session = make_session(owner, agent=make_agent(owner, "quick", model_alias="llama"))
    headers = {
        "Authorization": f"Token {Token.objects.create(user=owner).key}",
        "X-Request-ID": "hung-up-request-1",
    }
    log = tmp_path / "server.log"
    path = f"/api/v1/sessions/{session.pk}/turns"
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key", "LOG_LEVEL": "INFO"}
    with AppServer(
        database_url=postgres_url(connection.settings_dict), env=env, log_path=log
    ) as server:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(server.url + path, json={"message": "go"}, headers=headers, timeout=1)
        wait_for(lambda: Turn.objects.filter(session=session, status="completed").exists())
        wait_for(lambda: f'"path": "{path}"' in log.read_text(), "the request's line")

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    (line,) = [entry for entry in lines if entry.get("path") == path]
    assert (line["method"], line["status_code"], line["level"]) == ("POST", 499, "INFO")
    assert line["request_id"] == "hung-up-request-1"
    assert line["duration_ms"] >= 900
    # Joined with the ledger by these, as an answered request's line is.
    turn = Turn.objects.get(session=session)
    assert (line["user_id"], line["session_id"], line["turn_id"]) == (
        str(owner.pk),
        str(session.pk),
        str(turn.pk),
    )


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
def test_a_turn_whose_client_hangs_up_as_soon_as_it_is_sent_runs(
    owner, make_agent, make_session, stub, tmp_path, accept
):
    """The whole request sent, then the connection closed at once (a client that gave up while
    its request waited in the backlog, after a worker restart): the turn never ran, and the
    log said ERROR "a detached turn failed" (`ValueError: I/O operation on closed file`: the
    body was read after the server had closed it)."""
    import socket

    point_at_stub(stub, "ok", "llama")
    agent = make_agent(owner, "quick", model_alias="llama")
    sessions = [make_session(owner, agent=agent) for _ in range(5)]
    token = Token.objects.create(user=owner).key
    body = json.dumps({"message": "go"}).encode()
    log = tmp_path / "server.log"
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key", "LOG_LEVEL": "INFO"}
    with AppServer(
        database_url=postgres_url(connection.settings_dict), env=env, log_path=log
    ) as server:
        host, port = server.url.removeprefix("http://").split(":")
        for session in sessions:  # it failed 10 times in 11
            request = (
                f"POST /api/v1/sessions/{session.pk}/turns HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Token {token}\r\nContent-Type: application/json\r\n"
                f"Accept: {accept}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(request)
        wait_for(
            lambda: Turn.objects.filter(status="completed").count() == 5,
            "the five turns to complete",
        )
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [line["message"] for line in lines if line["level"] == "ERROR"] == []
