"""Every request has an id, echoed in `X-Request-ID` and carried by every log line it writes,
with the user (and session and turn, once bound); CORS answers only configured origins."""

import asyncio
import io
import json
import logging
import logging.config
import re
import time
import warnings
from decimal import Decimal

import pytest
from django.http import StreamingHttpResponse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon import logging_context
from pantheon.middleware import RequestIdMiddleware
from pantheon.testing.admin import client_for
from rooms.models import RoomMode
from sessions_app.models import IdempotencyKey, Turn
from usage.models import BillingProfile

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def token_client(owner) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    return client


def access_line(caplog, path: str) -> logging.LogRecord:
    return next(
        r for r in caplog.records if r.name == "pantheon.request" and getattr(r, "path", "") == path
    )


# --- request ids ------------------------------------------------------------------------------


def test_every_response_carries_a_fresh_request_id(anon_client):
    first = anon_client.get(f"{API}/health")["X-Request-ID"]
    second = anon_client.get(f"{API}/nope")["X-Request-ID"]

    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second


@pytest.mark.parametrize(
    "offered", ["7f1c2a9e-51b4-4c7e-9a51-2b8f0c1d9e33", "lb-01:123456", "Root=1-5759e988-bd86"]
)
def test_a_sane_id_from_the_proxy_is_kept(anon_client, offered):
    response = anon_client.get(f"{API}/health", HTTP_X_REQUEST_ID=offered)

    assert response["X-Request-ID"] == offered


@pytest.mark.parametrize(
    "offered", ["", "has spaces", "x" * 129, "-leading-dash", 'quote"s', "line\\nbreak", "é"]
)
def test_an_id_that_does_not_look_sane_is_replaced(anon_client, offered):
    response = anon_client.get(f"{API}/health", HTTP_X_REQUEST_ID=offered)

    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


def test_errors_from_the_front_door_carry_the_id_too(anon_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10

    response = anon_client.post(
        f"{API}/auth/token",
        '{"username": "a long one"}',
        content_type="application/json",
        HTTP_X_REQUEST_ID="front-door",
    )

    assert response.status_code == 413
    assert response["X-Request-ID"] == "front-door"


# --- log lines ----------------------------------------------------------------------------------


def test_the_requests_log_lines_carry_its_id_and_user(token_client, owner, caplog):
    with caplog.at_level(logging.INFO):
        response = token_client.get(
            f"{API}/agents", HTTP_X_REQUEST_ID="req-agents", HTTP_USER_AGENT="app/2.1 " + "x" * 500
        )

    line = access_line(caplog, f"{API}/agents")
    assert response.status_code == 200
    assert line.request_id == "req-agents"
    # Who sent it (an SRE's first question of a line; it said nothing of the client).
    assert line.client == "127.0.0.1"
    assert line.user_agent == ("app/2.1 " + "x" * 500)[:200]
    assert line.user_id == str(owner.pk)
    assert line.status_code == 200
    assert line.method == "GET"
    assert line.duration_ms >= 0
    # The text format (`make run`) prints only the message: it says how long the request took.
    assert line.getMessage() == f"GET {API}/agents 200 {line.duration_ms:.1f} ms"


def test_a_console_requests_log_line_names_the_operator(staff, caplog):
    """Every /admin/ line had "user_id": null, the 500s included."""
    with caplog.at_level(logging.INFO):
        response = client_for(staff).get("/admin/rooms/room/")

    assert response.status_code == 200
    assert access_line(caplog, "/admin/rooms/room/").user_id == str(staff.pk)


def test_a_turns_log_lines_carry_its_user_session_and_turn(
    token_client, owner, make_agent, make_room, make_session, fake_gateway, caplog
):
    """The ids are bound inside the turn's first database section (the user at
    authentication, the session and turn at the claim) and label what the turn logs after
    them, and its access line."""
    room = make_room(owner, [make_agent(owner, "ada")], mode=RoomMode.ORCHESTRATOR)
    session = make_session(owner, room=room)
    fake_gateway.routing_reply = "no JSON here"
    path = f"{API}/sessions/{session.pk}/turns"

    with caplog.at_level(logging.INFO):
        response = token_client.post(path, {"message": "who answers?"}, format="json")

    assert response.status_code == 201
    fallback = next(r for r in caplog.records if r.getMessage().startswith("Routing answer"))
    assert (fallback.user_id, fallback.session_id, fallback.turn_id) == (
        str(owner.pk),
        str(session.pk),
        response.json()["id"],
    )
    access = access_line(caplog, path)
    assert (access.user_id, access.session_id, access.turn_id) == (
        str(owner.pk),
        str(session.pk),
        response.json()["id"],
    )


def test_a_refused_turns_access_line_carries_its_user(
    token_client, owner, make_agent, make_room, make_session, caplog
):
    """A turn refused in its first section (no valid @tag: 422) is logged with who asked."""
    room = make_room(owner, [make_agent(owner, "ada")], mode=RoomMode.MANUAL)
    path = f"{API}/sessions/{make_session(owner, room=room).pk}/turns"

    with caplog.at_level(logging.INFO):
        response = token_client.post(path, {"message": "@nobody hello"}, format="json")

    assert response.status_code == 422
    access = access_line(caplog, path)
    assert (access.user_id, access.turn_id) == (str(owner.pk), None)


@pytest.mark.parametrize(
    ("refusal", "message", "status"),
    [
        ("no valid tag", "@nobody hello", 422),
        ("blank message", " ", 400),
        ("credit cap", "@ada hello", 402),
        ("turn running", "@ada hello", 409),
        ("key reused", "@ada hello", 422),
    ],
)
def test_a_refused_turns_access_line_names_its_session(
    token_client,
    owner,
    make_agent,
    make_room,
    make_session,
    fake_gateway,
    caplog,
    refusal,
    message,
    status,
):
    """Refused once the caller's session was read: the line names it, as README promises
    (`session_id` once known). Before, these lines had `session_id` null."""
    room = make_room(owner, [make_agent(owner, "ada")], mode=RoomMode.MANUAL)
    session = make_session(owner, room=room)
    path = f"{API}/sessions/{session.pk}/turns"
    headers = {}
    if refusal == "credit cap":
        BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("0"))
    elif refusal == "turn running":
        Turn.objects.create(session=session, turn_index=1, mode="manual", user_input="first")
    elif refusal == "key reused":
        IdempotencyKey.objects.create(user=owner, key="k-1", fingerprint="another body")
        headers = {"HTTP_IDEMPOTENCY_KEY": "k-1"}

    with caplog.at_level(logging.INFO):
        response = token_client.post(path, {"message": message}, format="json", **headers)

    assert response.status_code == status, response.content
    access = access_line(caplog, path)
    assert (access.user_id, access.session_id, access.turn_id) == (
        str(owner.pk),
        str(session.pk),
        None,
    )
    # What was refused, and for a 409 the turn holding the session, as the body says them
    # (a field error has no code).
    codes = {
        "no valid tag": "no_valid_tagged_agents",
        "credit cap": "credit_cap_exceeded",
        "turn running": "turn_in_progress",
        "key reused": "idempotency_key_reused",
    }
    assert getattr(access, "code", None) == codes.get(refusal)
    running = Turn.objects.filter(session=session).values_list("pk", flat=True).first()
    expected = str(running) if status == 409 else None
    assert getattr(access, "running_turn_id", None) == expected


def test_a_turn_refused_for_another_users_session_names_no_session(
    token_client, owner, outsider, make_agent, make_session, fake_gateway, caplog
):
    """Never the id of what the caller may not see: a 404 names the caller only."""
    theirs = make_session(outsider, agent=make_agent(outsider, "ada"))
    path = f"{API}/sessions/{theirs.pk}/turns"

    with caplog.at_level(logging.INFO):
        response = token_client.post(path, {"message": "hello"}, format="json")

    assert response.status_code == 404
    access = access_line(caplog, path)
    assert (access.user_id, access.session_id, access.turn_id) == (str(owner.pk), None, None)


def test_a_session_turn_lists_access_line_names_the_session(
    token_client, owner, outsider, make_agent, make_session, caplog
):
    mine = make_session(owner, agent=make_agent(owner, "ada"))
    theirs = make_session(outsider, agent=make_agent(outsider, "ada"))
    named = {}
    for session in (mine, theirs):
        path = f"{API}/sessions/{session.pk}/turns"
        with caplog.at_level(logging.INFO):
            response = token_client.get(path)
        named[response.status_code] = access_line(caplog, path).session_id

    assert named == {200: str(mine.pk), 404: None}


def test_a_turns_events_access_lines_name_its_session_and_turn(
    token_client, owner, outsider, make_agent, make_session, fake_gateway, caplog
):
    """`GET turns/{id}/events`, replayed whole (200) or after its last event (204), joins the
    turn's lines; another user's turn (404) is named by no line. Before, all had `session_id`
    and `turn_id` null."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    turn = token_client.post(
        f"{API}/sessions/{session.pk}/turns", {"message": "hello"}, format="json"
    ).json()["id"]
    path = f"{API}/turns/{turn}/events"
    outsider_client = APIClient()
    outsider_client.credentials(
        HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=outsider).key}"
    )
    answers, lines = [], []
    for client, last in (
        (token_client, None),
        (token_client, "9007199254740991"),
        (outsider_client, None),
    ):
        caplog.clear()
        extra = {} if last is None else {"HTTP_LAST_EVENT_ID": last}
        with caplog.at_level(logging.INFO):
            response = client.get(path, HTTP_ACCEPT="text/event-stream", **extra)
            if response.streaming:
                with warnings.catch_warnings():  # the test client reads the stream synchronously
                    warnings.simplefilter("ignore")
                    b"".join(response)
        answers.append(response.status_code)
        access = access_line(caplog, path)
        lines.append((access.user_id, access.session_id, access.turn_id))

    assert answers == [200, 204, 404]
    mine = (str(owner.pk), str(session.pk), turn)
    assert lines == [mine, mine, (str(outsider.pk), None, None)]


def test_an_idempotent_replays_access_line_names_the_turn_it_answers_with(
    token_client, owner, make_agent, make_room, make_session, fake_gateway, caplog
):
    """A retry with the same Idempotency-Key runs no turn, yet its line is found by the
    turn's id like the first request's."""
    room = make_room(owner, [make_agent(owner, "ada")], mode=RoomMode.ROUNDTABLE)
    session = make_session(owner, room=room)
    path = f"{API}/sessions/{session.pk}/turns"
    first = token_client.post(path, {"message": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    caplog.clear()

    with caplog.at_level(logging.INFO):
        retry = token_client.post(
            path, {"message": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
        )

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry["Idempotent-Replayed"] == "true"
    access = access_line(caplog, path)
    assert (access.user_id, access.session_id, access.turn_id) == (
        str(owner.pk),
        str(session.pk),
        first.json()["id"],
    )


def test_a_4xx_is_logged_once_as_a_warning_with_the_id(anon_client, caplog):
    with caplog.at_level(logging.INFO):
        response = anon_client.get(f"{API}/agents", HTTP_X_REQUEST_ID="req-401")

    assert response.status_code == 401
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.request_id) for r in lines] == [("pantheon.request", "req-401")]
    assert lines[0].user_id is None


def test_a_host_not_allowed_is_logged_as_a_warning_without_a_traceback(
    anon_client, settings, monkeypatch
):
    """Any client can send one: a 400, and no ERROR line (ERROR lines are for operators)."""
    settings.ALLOWED_HOSTS = ["testserver"]
    console = next(
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, logging_context.SuspiciousRequestFilter) for f in handler.filters)
    )
    written = io.StringIO()
    # Not setStream, which flushes the stream it replaces: pytest may have closed it by now.
    monkeypatch.setattr(console, "stream", written)
    response = anon_client.get(f"{API}/health", HTTP_HOST="evil.example")

    assert response.status_code == 400
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("django.security.DisallowedHost", "WARNING"),
        ("pantheon.request", "WARNING"),
    ]
    assert "exc_info" not in lines[0]
    assert "evil.example" in lines[0]["message"]


def test_log_lines_outside_a_request_carry_no_stale_ids(token_client, caplog):
    token_client.get(f"{API}/agents", HTTP_X_REQUEST_ID="req-earlier")

    with caplog.at_level(logging.INFO):
        logging.getLogger("pantheon.test").info("after the request")

    record = caplog.records[-1]
    assert (record.request_id, record.user_id, record.session_id, record.turn_id) == (
        None,
        None,
        None,
        None,
    )


def test_bind_adds_session_and_turn_ids_for_the_rest_of_the_request_only(caplog):
    logger = logging.getLogger("pantheon.test")
    with caplog.at_level(logging.INFO):
        with logging_context.request_scope(request_id="r1"):
            logger.info("before")
            logging_context.bind(session_id="s1", turn_id="t1")
            logger.info("during")
            logging_context.bind(turn_id=None)
            logger.info("turn unbound")
        logger.info("after")

    ids = [(r.request_id, r.session_id, r.turn_id) for r in caplog.records[-4:]]
    assert ids == [("r1", None, None), ("r1", "s1", "t1"), ("r1", "s1", None), (None, None, None)]


def test_a_streamed_body_logs_with_its_requests_ids(rf, caplog):
    def chunks():
        logging.getLogger("pantheon.test").info("streaming")
        yield b"data: 1\n\n"

    middleware = RequestIdMiddleware(lambda request: StreamingHttpResponse(chunks()))
    response = middleware(rf.get("/api/v1/turns/x/events", HTTP_X_REQUEST_ID="req-stream"))

    with caplog.at_level(logging.INFO):
        assert b"".join(response.streaming_content) == b"data: 1\n\n"

    streamed = next(r for r in caplog.records if r.getMessage() == "streaming")
    assert streamed.request_id == "req-stream"


def test_a_streamed_responses_line_is_written_at_its_end_with_its_whole_duration(rf, caplog):
    """It was written with the headers: a 1.5 s streamed turn logged "201 15.7 ms"."""

    def chunks():
        time.sleep(0.2)
        yield b"data: 1\n\n"

    middleware = RequestIdMiddleware(lambda request: StreamingHttpResponse(chunks()))
    with caplog.at_level(logging.INFO):
        response = middleware(rf.get("/api/v1/turns/x/events", HTTP_X_REQUEST_ID="req-long"))
        assert not [r for r in caplog.records if r.name == "pantheon.request"]
        b"".join(response.streaming_content)
        response.close()  # as the server does once the body is sent, or the client gone

    (line,) = [r for r in caplog.records if r.name == "pantheon.request"]
    assert line.request_id == "req-long" and line.duration_ms >= 200


def test_a_stream_that_fails_still_writes_its_request_line(rf, caplog):
    """Django's ASGI handler does not close a response whose body raised."""

    async def chunks():
        yield b"data: 1\n\n"
        raise RuntimeError("the stream broke")

    async def view(request):
        return StreamingHttpResponse(chunks())

    async def consume():
        middleware = RequestIdMiddleware(view)
        response = await middleware(rf.get("/api/v1/turns/x/events", HTTP_X_REQUEST_ID="req-bad"))
        with pytest.raises(RuntimeError):
            async for _ in response:
                pass

    with caplog.at_level(logging.INFO):
        asyncio.run(consume())

    (line,) = [r for r in caplog.records if r.name == "pantheon.request"]
    assert line.request_id == "req-bad"


def test_production_logs_are_one_json_object_a_line(settings):
    formatter = logging.config.DictConfigurator(settings.LOGGING).configure_custom(
        dict(settings.LOGGING["formatters"]["json"])
    )
    with logging_context.request_scope(request_id="r9", user_id=7):
        logging_context.bind(session_id="s9", turn_id="t9")
        record = logging.getLogger("pantheon.test").makeRecord(
            "pantheon.test",
            logging.WARNING,
            __file__,
            1,
            "turn %s done",
            ("t9",),
            None,
            extra={"status_code": 201},
        )

    line = formatter.format(record)

    assert "\n" not in line
    assert json.loads(line) | {"time": None} == {
        "time": None,
        "level": "WARNING",
        "logger": "pantheon.test",
        "message": "turn t9 done",
        "request_id": "r9",
        "user_id": "7",
        "session_id": "s9",
        "turn_id": "t9",
        "status_code": 201,
    }


def test_logs_are_json_unless_debug(settings):
    assert settings.LOG_FORMAT == "json"
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "json"


# --- CORS --------------------------------------------------------------------------------------


def preflight(client: APIClient, origin: str):
    return client.options(
        f"{API}/agents",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key",
    )


def test_no_origin_is_allowed_by_default(anon_client, settings):
    assert settings.CORS_ALLOWED_ORIGINS == []

    response = preflight(anon_client, "https://app.example.com")

    assert "Access-Control-Allow-Origin" not in response


def test_a_configured_origin_is_allowed_and_sees_the_request_id(anon_client, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]

    allowed = preflight(anon_client, "https://app.example.com")
    other = preflight(anon_client, "https://evil.example.net")
    simple = anon_client.get(f"{API}/health", HTTP_ORIGIN="https://app.example.com")

    assert allowed.status_code == 200
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "idempotency-key" in allowed["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in other
    assert simple["Access-Control-Allow-Origin"] == "https://app.example.com"
    exposed = simple["Access-Control-Expose-Headers"]
    # What the README tells clients to read: a browser hides any header not listed here.
    assert {"X-Request-ID", "Retry-After", "Idempotent-Replayed"} <= set(exposed.split(", "))


def test_cors_covers_only_the_api(anon_client, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]

    response = anon_client.get("/admin/login/", HTTP_ORIGIN="https://app.example.com")

    assert "Access-Control-Allow-Origin" not in response
