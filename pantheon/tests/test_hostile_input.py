"""Hostile input: every case is a clear JSON 4xx, and nothing is written.

The cases are those a hostile client tried (issue 10): deep JSON, out-of-range dates and
offsets, lone surrogates and NULs in fields, query parameters and cursors, oversized bodies,
wrong content types, and fields past their bounds.
"""

import asyncio
import base64
import io
import json
from urllib.parse import urlencode

import pytest
from django.apps import apps
from django.conf import settings
from rest_framework.test import APIClient

from pantheon.exceptions import RequestTooLarge, api_exception_handler
from pantheon.parsers import JSONParser
from pantheon.threads import PantheonASGIHandler
from rooms.models import RoomMode

pytestmark = pytest.mark.django_db

API = "/api/v1"


def row_counts() -> dict[str, int]:
    """Rows of every model the API can write (chat, ledger, tokens, users)."""
    labels = ("rooms", "sessions_app", "usage", "authtoken", "auth")
    return {
        model._meta.label: model.objects.count()
        for model in apps.get_models()
        if model._meta.app_label in labels
    }


@pytest.fixture
def world(owner, make_agent, make_room, make_session):
    """An agent seated in a roundtable room with a session: every kind of object a hostile
    request could aim at."""
    agent = make_agent(owner, "ada")
    room = make_room(owner, [agent], mode=RoomMode.ROUNDTABLE, goal="Plan the launch.")
    session = make_session(owner, room=room)
    return {"agent": agent, "room": room, "session": session}


@pytest.fixture
def api(owner) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(owner)
    return client


def nested(depth: int) -> str:
    return '{"name": ' + "[" * depth + "]" * depth + "}"


def assert_coded(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]["code"] == code


# (method, path template, raw JSON body, expected status, expected code or field)
BODY_CASES = [
    ("post", "/agents", nested(1000), 400, "json_too_deep"),
    ("post", "/agents", nested(40), 400, "json_too_deep"),
    (
        "post",
        "/rooms",
        '{"name": "R", "agent_ids": ' + "[" * 5000 + "]" * 5000 + "}",
        400,
        "json_too_deep",
    ),
    (
        "post",
        "/agents",
        '{"agent_key": "bob", "name": "B\\ud800", "model_alias": "deepseek"}',
        400,
        "invalid_characters",
    ),
    (
        "post",
        "/agents",
        '{"agent_key": "bob", "name": "B", "model_alias": "deepseek", "role_prompt": "x\\u0000y"}',
        400,
        "invalid_characters",
    ),
    (
        "post",
        "/agents",
        '{"agent_key": "bob", "name": "B", "model_alias": "deepseek", '
        '"tool_permissions": ["\\udfff"]}',
        400,
        "invalid_characters",
    ),
    (
        "post",
        "/agents",
        '{"agent_key": "bob", "name": "B", "model_alias": "deepseek", "\\u0000": 1}',
        400,
        "invalid_characters",
    ),
    ("put", "/rooms/{room}/mode", '{"mode": "\\ud800"}', 400, "invalid_characters"),
    ("put", "/rooms/{room}/mode", '{"mode": "x\\u0000"}', 400, "invalid_characters"),
    ("put", "/rooms/{room}/agents", '{"agent_ids": ["\\ud83d"]}', 400, "invalid_characters"),
    ("patch", "/rooms/{room}", '{"goal": "new \\u0000 goal"}', 400, "invalid_characters"),
    ("patch", "/agents/{agent}", '{"role_prompt": "\\udc00"}', 400, "invalid_characters"),
    ("post", "/rooms/{room}/sessions", '{"title": "\\u0000"}', 400, "invalid_characters"),
    ("post", "/sessions/{session}/turns", '{"message": "hi \\ud800"}', 400, "invalid_characters"),
    (
        "post",
        "/sessions/{session}/turns",
        '{"message": "hi", "model_alias_override": "\\u0000"}',
        400,
        "invalid_characters",
    ),
    ("post", "/sessions/{session}/turns", nested(2000), 400, "json_too_deep"),
    (
        "post",
        "/auth/token",
        '{"username": "owner\\u0000", "password": "x"}',
        400,
        "invalid_characters",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BODY_CASES)
def test_hostile_bodies_are_refused_with_a_code_and_write_nothing(
    api, world, fake_gateway, method, path, body, status, code
):
    url = API + path.format(**{name: obj.id for name, obj in world.items()})
    room_before = world["room"].__class__.objects.values().get(pk=world["room"].pk)
    before = row_counts()

    response = getattr(api, method)(url, body, content_type="application/json")

    assert_coded(response, status, code)
    assert "\\ud" not in response.content.decode() and "\\u0000" not in response.content.decode()
    assert row_counts() == before
    assert world["room"].__class__.objects.values().get(pk=world["room"].pk) == room_before
    assert fake_gateway.calls == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "\xed\xa0\x80"}',  # a surrogate in raw UTF-8: not UTF-8 at all
        b'{"name": "\xff"}',
        b'{"name": ',
        b'{"name": NaN}',
        b'{"name": "Bo", "ignored": 1e999999}',  # infinity, as Python reads it
        b'{"name": "Bo", "ignored": [-1.5e400]}',
        b"[1, 2",
    ],
)
def test_malformed_json_is_a_400_and_writes_nothing(api, world, body):
    before = row_counts()

    response = api.post(f"{API}/agents", body, content_type="application/json")

    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert row_counts() == before


@pytest.mark.parametrize(
    ("path", "field", "setting"),
    [
        ("/agents", "role_prompt", "PANTHEON_MAX_ROLE_PROMPT_CHARS"),
        ("/rooms", "goal", "PANTHEON_MAX_ROOM_GOAL_CHARS"),
        ("/agents/{agent}", "role_prompt", "PANTHEON_MAX_ROLE_PROMPT_CHARS"),
        ("/rooms/{room}", "goal", "PANTHEON_MAX_ROOM_GOAL_CHARS"),
        ("/sessions/{session}/turns", "message", "PANTHEON_MAX_MESSAGE_CHARS"),
    ],
)
def test_text_that_reaches_a_prompt_is_bounded_by_its_setting(
    api, world, fake_gateway, path, field, setting
):
    limit = getattr(settings, setting)
    url = API + path.format(**{name: obj.id for name, obj in world.items()})
    body = {"agent_key": "bob", "name": "Bob", "model_alias": "deepseek", field: "x" * (limit + 1)}
    method = api.patch if "{" in path and "turns" not in path else api.post
    if "turns" in path:
        body = {field: "@ada " + "x" * limit}
    before = row_counts()

    response = method(url, body, format="json")

    assert response.status_code == 400, response.content
    assert f"no more than {limit} characters" in response.json()[field][0]
    assert row_counts() == before
    assert fake_gateway.calls == []


def test_whitespace_does_not_carry_a_message_past_its_bound(api, world, fake_gateway):
    """The schema's maxLength is the length sent; DRF alone would trim first, then count."""
    limit = settings.PANTHEON_MAX_MESSAGE_CHARS
    url = f"{API}/sessions/{world['session'].id}/turns"
    before = row_counts()

    response = api.post(url, {"message": "\x1d  @ada " + "x" * (limit - 5)}, format="json")

    assert response.status_code == 400, response.content
    assert f"no more than {limit} characters" in response.json()["message"][0]
    assert row_counts() == before
    assert fake_gateway.calls == []


def test_a_role_prompt_at_its_bound_is_accepted(api, settings):
    limit = settings.PANTHEON_MAX_ROLE_PROMPT_CHARS
    body = {
        "agent_key": "bob",
        "name": "Bob",
        "model_alias": "deepseek",
        "role_prompt": "x" * limit,
    }

    response = api.post(f"{API}/agents", body, format="json")

    assert response.status_code == 201
    assert len(response.json()["role_prompt"]) == limit


@pytest.mark.parametrize(
    ("path", "field", "length"),
    [("/agents", "name", 101), ("/rooms", "name", 201), ("/rooms/{room}/sessions", "title", 201)],
)
def test_names_are_bounded_by_their_columns(api, world, path, field, length):
    url = API + path.format(**{name: obj.id for name, obj in world.items()})
    body = {"agent_key": "bob", "model_alias": "deepseek", "name": "Bob", field: "x" * length}
    before = row_counts()

    response = api.post(url, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert row_counts() == before


def test_an_oversized_body_is_413_with_a_code_and_writes_nothing(api, world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps(
        {"agent_key": "bob", "name": "Bob", "model_alias": "deepseek", "role_prompt": "x" * 20_000}
    )
    before = row_counts()

    response = api.post(f"{API}/agents", body, content_type="application/json")

    assert_coded(response, 413, "request_too_large")
    assert row_counts() == before


def test_an_oversized_body_at_the_default_limit_is_413(api, world):
    body = "[" + ", ".join(["1"] * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 3 + 1)) + "]"

    response = api.post(
        f"{API}/sessions/{world['session'].id}/turns", body, content_type="application/json"
    )

    assert_coded(response, 413, "request_too_large")


def _asgi_post(
    path: str, receive, *, headers: list[tuple[bytes, bytes]], on_send=None
) -> tuple[int, dict]:
    """POST through the production ASGI handler with `receive` as the client; (status, body)."""
    sent: list[dict] = []

    async def send(message):
        if on_send is not None:
            on_send(message)
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(asyncio.wait_for(PantheonASGIHandler()(scope, receive, send), timeout=10))
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_a_body_declared_too_large_is_refused_before_it_is_read():
    """Under ASGI the refusal does not wait for the body: the client has sent one chunk of its
    20 MB and nothing more, and the 413 comes anyway (Django's handler alone would wait for the
    whole body, then spool it to disk)."""
    chunks = [{"type": "http.request", "body": b"x" * 65536, "more_body": True}]

    async def receive():
        if chunks:
            return chunks.pop()
        await asyncio.Event().wait()  # the rest of the body never comes

    status, body = _asgi_post(f"{API}/rooms", receive, headers=[(b"content-length", b"20000000")])

    assert status == 413
    assert body["detail"]["code"] == "request_too_large"


@pytest.mark.parametrize("path", [f"{API}/rooms", "/admin/login/"])
def test_a_chunked_body_past_the_limit_is_refused_without_reading_the_rest(path):
    """No Content-Length (a chunked upload) and no end: the handler stops reading just past
    the limit and answers 413, on the API and off it (no view gets a cut-off body)."""
    chunk = 65536
    read = 0
    read_when_answered: list[int] = []

    async def endless():
        nonlocal read
        read += 1
        await asyncio.sleep(0)
        return {"type": "http.request", "body": b"x" * chunk, "more_body": True}

    def on_send(message):
        if message["type"] == "http.response.start":
            read_when_answered.append(read)

    status, body = _asgi_post(
        path, endless, headers=[(b"transfer-encoding", b"chunked")], on_send=on_send
    )

    assert status == 413
    assert body["detail"]["code"] == "request_too_large"
    # Answered soon after the limit (Django's handler alone reads an endless body forever, and
    # the test then times out); it keeps reading while it answers, to drop what comes.
    assert read_when_answered[0] < 2 * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE // chunk)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_chunked_body_within_the_limit_reaches_the_view_whole(django_user_model):
    django_user_model.objects.create_user("chunky", password="chunky-pass-123")
    payload = json.dumps({"username": "chunky", "password": "chunky-pass-123"}).encode()
    pieces = [payload[:10], payload[10:20], payload[20:]]

    async def receive():
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        await asyncio.Event().wait()  # then only a disconnect, never

    status, body = _asgi_post(
        f"{API}/auth/token", receive, headers=[(b"transfer-encoding", b"chunked")]
    )

    assert status == 200, body
    assert len(body["token"]) == 40


def test_the_parser_stops_reading_at_the_limit_whoever_calls_it(settings):
    """Belt and braces behind the middleware's Content-Length check."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    with pytest.raises(RequestTooLarge):
        JSONParser().parse(io.BytesIO(b"[" + b"1," * 100 + b"1]"), "application/json", {})


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "agent_key=bob&name=Bob&model_alias=deepseek"),
        ("multipart/form-data; boundary=xyz", "--xyz--"),
        ("text/plain", '{"agent_key": "bob"}'),
        ("application/xml", "<agent/>"),
    ],
)
def test_a_body_that_is_not_json_is_415_and_writes_nothing(api, world, content_type, body):
    before = row_counts()

    response = api.post(f"{API}/agents", body, content_type=content_type)

    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]
    assert row_counts() == before


def test_auth_token_reads_json_only(owner):
    response = APIClient().post(
        f"{API}/auth/token",
        "username=owner&password=owner-pass-123",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 415


# --- ids in paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/agents/{agent}",
        "/agents/{agent}/sessions",
        "/rooms/{room}",
        "/rooms/{room}/sessions",
        "/sessions/{session}",
        "/sessions/{session}/messages",
        "/sessions/{session}/turns",
    ],
)
def test_an_id_in_upper_case_is_the_same_id(api, world, path):
    """UUIDs are read in either case (RFC 9562); Django's converter took lower case only, so
    these were 404 while `?room=<upper case>` was fine."""
    ids = {name: str(obj.id).upper() for name, obj in world.items()}

    response = api.get(API + path.format(**ids))

    assert response.status_code == 200, response.content
    assert api.get(f"{API}/agents/{ids['agent'][:-1]}g").status_code == 404  # not hex


@pytest.mark.parametrize("spelling", ["{hex}", "{{{id}}}", "urn:uuid:{id}"])
@pytest.mark.parametrize(
    "path", ["/sessions/{session}", "/sessions/{session}/turns", "/agents/{agent}"]
)
def test_an_id_in_another_spelling_is_a_404_on_every_path(api, world, path, spelling):
    """Python's UUID reads braces, a URN and hex without hyphens; the API's paths take the
    hyphenated form only. `sessions/{id}` took them all while its sub-paths were 404."""
    ids = {name: spelling.format(id=obj.id, hex=obj.id.hex) for name, obj in world.items()}

    assert api.get(API + path.format(**ids)).status_code == 404


# --- query parameters and cursors ------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "from=%00",
        "to=2026-01-01%00",
        "%00=1",
        "from=2026-01-01&to=%00",
    ],
)
def test_a_nul_in_a_query_parameter_is_400(api, world, query):
    response = api.get(f"{API}/usage?{query}")

    assert_coded(response, 400, "invalid_characters")


@pytest.mark.parametrize(
    "query", ["page=1&page=2", "page=false&page=true", "from=2026-01-01&from=2026-02-01"]
)
def test_a_query_parameter_given_twice_is_400(api, world, query):
    path = "/usage" if "from" in query else "/agents"

    response = api.get(f"{API}{path}?{query}")

    assert_coded(response, 400, "repeated_parameter")


HUGE = "1" * 4301  # past the 4,300 digits Python reads as a number: int() raised, a 500


@pytest.mark.parametrize(
    "query",
    # Those after x reached int(), which took them for page 1 (or raised, a 500).
    [
        "page=",
        "page=last",
        "page=0",
        "page=x",
        "page=%2B1",
        "page=%D9%A1",
        "page=%201",
        f"page={HUGE}",
    ],
)
def test_a_page_that_is_not_a_page_number_is_404(api, world, query):
    response = api.get(f"{API}/agents?{query}")

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid page.", "code": "not_found"}


@pytest.mark.parametrize(
    "query", ["page_size=", "page_size=0", "page_size=000", "page_size=-1", "page_size=x"]
)
def test_a_page_size_that_is_not_a_positive_number_is_400(api, world, query):
    response = api.get(f"{API}/agents?{query}")

    assert response.status_code == 400
    assert response.json() == {"page_size": ["Use a whole number from 1."]}


@pytest.mark.parametrize("path", ["/agents", "/rooms", "/sessions", "/sessions/{session}/turns"])
def test_a_page_size_of_any_length_is_cut_to_the_maximum(api, world, path):
    """Sizes over the maximum are cut to it, however many digits they have (4,301 was a 500)."""
    url = API + path.format(session=world["session"].id)

    response = api.get(url, {"page_size": HUGE})
    padded = api.get(url, {"page_size": "0" * 5000 + "2"})

    assert response.status_code == 200
    assert padded.status_code == 200


def test_a_nul_in_a_cursor_is_400(api, world):
    response = api.get(f"{API}/sessions/{world['session'].id}/messages?cursor=%00")

    assert_coded(response, 400, "invalid_characters")


@pytest.mark.parametrize(
    "raw_cursor",
    [
        b"p=\x00&r=0",
        b"p=1\x00",
        b"p=abc",
        b"p=-1",
        b"p=99999999999999999999",
        b"o=x",
        f"p={HUGE}".encode(),  # was a 500
    ],
)
def test_a_forged_cursor_is_404_invalid_cursor(api, world, raw_cursor):
    cursor = base64.b64encode(raw_cursor).decode()

    response = api.get(f"{API}/sessions/{world['session'].id}/messages", {"cursor": cursor})

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor", "code": "not_found"}


CURSOR_LISTS = ["/sessions/{session}/messages", "/sessions", "/agents/{agent}/sessions"]


@pytest.mark.parametrize("path", CURSOR_LISTS)
@pytest.mark.parametrize(
    "made_up",
    [
        "bm9wZQ==",  # "nope": no position, no offset, read as the start of the list
        base64.b64encode(b"o=0").decode(),  # the start is written "" (below)
        base64.b64encode(b"r=1&o=0").decode(),
        base64.b64encode(b"x=1&o=2").decode(),  # a key the paginator never writes
        base64.b64encode(b"o=2&o=3").decode(),
        base64.b64encode(b"o=02").decode(),
        base64.b64encode(b"r=0&o=2").decode(),
        base64.b64encode(b"o=2&r=1&p=").decode(),
        base64.b64encode(b"r=1&o=2").decode(),  # the paginator's order is o, r, p
        base64.b64encode(b"o=2").decode() + "\n",
        base64.b64encode(b"o=+2").decode(),
        base64.b64encode(b"o=2_0").decode(),
        base64.b64encode(b"o=" + b"9" * 19).decode(),  # more than any offset a database holds
        base64.b64encode(f"o={HUGE}".encode()).decode(),
    ],
)
def test_a_made_up_cursor_is_404(api, world, path, made_up):
    """A cursor with no position and no offset ("nope", base64) answered the first page: DRF
    reads it as the start. README and the schema promise 404 for an unknown cursor; a cursor
    is taken only as the paginator writes one."""
    url = API + path.format(session=world["session"].id, agent=world["agent"].id)

    response = api.get(url, {"cursor": made_up})

    assert response.status_code == 404, response.content
    assert response.json() == {"detail": "Invalid cursor", "code": "not_found"}


@pytest.mark.parametrize("path", CURSOR_LISTS)
def test_the_cursors_written_with_no_position_are_taken(api, world, path):
    """The paginator writes these itself: the start of the list (the next link of an empty
    page read backwards is `cursor=`), the end of it read backwards (the previous link of an
    empty page past the end, `r=1`) and an offset of any size (sessions of one activity)."""
    url = API + path.format(session=world["session"].id, agent=world["agent"].id)
    everything = api.get(url).json()["results"]

    start = api.get(url, {"cursor": ""})
    end = api.get(url, {"cursor": base64.b64encode(b"r=1").decode()})
    far = api.get(url, {"cursor": base64.b64encode(b"o=1").decode()})

    assert (start.status_code, end.status_code, far.status_code) == (200, 200, 200)
    assert start.json()["results"] == everything
    assert end.json()["results"] == everything
    assert far.json()["results"] == everything[1:]


@pytest.mark.parametrize("path", ["/sessions", "/agents/{agent}/sessions"])
def test_the_largest_offset_of_a_session_list_is_an_empty_page(api, world, path):
    """Sessions are paged by offset past DRF's cap (`ActivityPagination`): the largest offset
    a cursor may hold is an empty page, one digit more a 404, neither a database error."""
    url = API + path.format(agent=world["agent"].id)

    largest = api.get(url, {"cursor": base64.b64encode(b"o=" + b"9" * 18).decode()})

    assert largest.status_code == 200, largest.content
    assert largest.json()["results"] == []


@pytest.mark.parametrize(
    ("path", "position"),
    [
        ("/sessions/{session}/messages", "007"),
        ("/sessions/{session}/messages", "+7"),
        ("/sessions", "2026-12-01T08:15:02Z"),
        ("/sessions", "2026-12-01 08:15:02.104233+01:00"),
        ("/sessions", "2026-12-01 08:15:02.000000+00:00"),
    ],
)
def test_a_position_the_paginator_never_writes_is_404(api, world, path, position):
    """A position is taken as the paginator writes it: a sequence number's digits, a moment as
    `str()` writes one in UTC."""
    url = API + path.format(session=world["session"].id)
    written = "2026-12-01 08:15:02.104233+00:00" if path == "/sessions" else "7"
    cursor = base64.b64encode(urlencode({"p": position}).encode()).decode()
    taken = base64.b64encode(urlencode({"p": written}).encode()).decode()

    assert api.get(url, {"cursor": taken}).status_code == 200
    response = api.get(url, {"cursor": cursor})
    assert response.status_code == 404, response.content


def test_a_garbage_cursor_is_404(api, world):
    response = api.get(f"{API}/sessions/{world['session'].id}/messages?cursor=%ED%A0%80")

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("to=9999-12-31", "to"),
        ("from=9999-12-31", "from"),
        ("from=9999-12-31T23:59:59Z", "from"),
        ("to=9998-12-31T23:59:59-23:59", "to"),
        ("from=0001-01-01", "from"),
        ("from=0001-01-01T00:00%2B01:00", "from"),
        ("from=1969-12-31T23:59:59Z", "from"),
        ("from=%ED%A0%80", "from"),  # a surrogate's UTF-8 bytes: decoded as U+FFFD
    ],
)
def test_out_of_range_dates_are_400(api, world, query, field):
    response = api.get(f"{API}/usage?{query}")

    assert response.status_code == 400, response.content
    assert field in response.json()


def test_an_offset_postgresql_cannot_store_is_read_in_utc(api, world):
    """Python allows offsets up to ±23:59, PostgreSQL ±15:59: the range is converted first."""
    response = api.get(f"{API}/usage?from=2026-01-01T00:00-23:59&to=2026-01-03")

    assert response.status_code == 200
    assert response.json()["from"] == "2026-01-01T23:59:00Z"
    assert response.json()["to"] == "2026-01-04T00:00:00Z"


def test_a_defaulted_from_never_reaches_before_1970(api, world):
    """`from` defaults to the start of `to`'s month; it answered "from": "1969-12-01"."""
    nothing_before = api.get(f"{API}/usage?to=1970-01-01T00:00:00Z")
    first_days = api.get(f"{API}/usage?to=1970-01-05")

    assert nothing_before.status_code == 400
    # The client sent no `from`: the message names the bound, not a parameter it never sent.
    assert nothing_before.json() == {
        "to": ["Must be after 1970-01-01T00:00:00Z, where usage starts."]
    }
    assert first_days.status_code == 200
    assert first_days.json()["from"] == "1970-01-01T00:00:00Z"


def test_the_widest_accepted_range_answers(api, world):
    response = api.get(f"{API}/usage?from=1970-01-01&to=9998-12-31")

    assert response.status_code == 200
    assert response.json()["to"] == "9999-01-01T00:00:00Z"


# --- error bodies never echo what cannot be rendered -----------------------------------------


def test_the_handler_replaces_unrenderable_characters_in_any_error():
    from rest_framework.exceptions import ValidationError

    response = api_exception_handler(
        ValidationError({"mode": ['"\ud800\x00" is not a valid choice.'], "\udfff": ["x"]}),
        {},
    )

    assert response.status_code == 400
    rendered = json.dumps(response.data, ensure_ascii=False).encode("utf-8")
    assert json.loads(rendered) == {
        "mode": ['"\ufffd\ufffd" is not a valid choice.'],
        "\ufffd": ["x"],
    }
