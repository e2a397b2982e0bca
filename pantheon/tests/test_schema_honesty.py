"""The OpenAPI schema says what the API does: every operation's error answers, nullable fields,
bodies that offer only what is accepted, and OPTIONS agreeing with it all."""

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from asgiref.sync import async_to_sync
from jsonschema import Draft202012Validator
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.fields import invisible
from rooms.models import RoomMode
from sessions_app import events as turn_events
from usage.models import ModelAlias

pytestmark = pytest.mark.django_db

WRITING = {"post", "put", "patch"}


@pytest.fixture
def schema() -> dict:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if path.startswith("/api/v1/"):
                yield path, method, operation


def component(schema: dict, ref_or_schema: dict) -> dict:
    ref = ref_or_schema.get("$ref", "")
    return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else ref_or_schema


def request_body(schema: dict, operation: dict) -> dict:
    return component(schema, operation["requestBody"]["content"]["application/json"]["schema"])


def test_every_operation_documents_its_error_answers(schema):
    for path, method, operation in operations(schema):
        statuses = set(operation["responses"])
        label = f"{method.upper()} {path}"
        assert {"400", "406"} <= statuses, label
        # Signing out (`DELETE auth/token`) takes the token it ends.
        public = label in ("GET /api/v1/health", "POST /api/v1/auth/token")
        assert ("401" in statuses) is not public, label
        assert ("404" in statuses) is ("{" in path or "page" in str(operation.get("parameters"))), (
            label
        )
        assert ("413" in statuses) is (method in WRITING), label
        assert ("415" in statuses) is ("requestBody" in operation), label
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response["headers"], f"{label} {status}"
            if status >= "400":
                assert response["content"]["application/json"]["schema"], f"{label} {status}"


def test_an_accept_the_api_cannot_answer_is_a_documented_406(schema, client):
    """Before, no operation listed 406, which any of them answers to `Accept: text/html`."""
    health = client.get("/api/v1/health", HTTP_ACCEPT="text/html")

    assert health.status_code == 406
    assert "406" in schema["paths"]["/api/v1/health"]["get"]["responses"]
    events = schema["paths"]["/api/v1/turns/{id}/events"]["get"]
    assert "prefers JSON" in events["responses"]["406"]["description"]
    # JSON renders the events endpoint's errors, it is no format of its answer.
    formats = [p for p in events["parameters"] if p["name"] == "format"]
    assert formats[0]["schema"]["enum"] == ["sse"]


def test_throttled_operations_document_429_with_retry_after(schema):
    throttled = {
        f"{method.upper()} {path}"
        for path, method, operation in operations(schema)
        if "429" in operation["responses"]
    }

    # Every operation: logins and turns have their rates, every other request of a user the
    # API rate (and the follow streams their per-user bound); but the health check's.
    everything = {f"{method.upper()} {path}" for path, method, _ in operations(schema)}
    assert throttled == everything - {"GET /api/v1/health"}
    turn = schema["paths"]["/api/v1/sessions/{session_id}/turns"]["post"]["responses"]["429"]
    assert turn["headers"]["Retry-After"]["required"] is True
    follow = schema["paths"]["/api/v1/turns/{id}/events"]["get"]["responses"]["429"]
    assert follow["headers"]["Retry-After"]["required"] is True
    assert "too_many_follows" in follow["description"]


def test_the_turn_documents_its_domain_refusals(schema):
    responses = schema["paths"]["/api/v1/sessions/{session_id}/turns"]["post"]["responses"]

    assert {"201", "400", "401", "402", "403", "404", "409", "413", "415", "422", "429"} <= set(
        responses
    )
    coded = "#/components/schemas/CodedError"
    assert responses["402"]["content"]["application/json"]["schema"]["$ref"] == coded
    refusal = responses["422"]["content"]["application/json"]["schema"]["$ref"]
    assert refusal == "#/components/schemas/TurnRefusal"
    coded = schema["components"]["schemas"]["TurnRefusalDetail"]["allOf"][0]
    assert component(schema, coded)["required"] == ["code", "message"]
    assert "credit_cap_exceeded" in responses["402"]["description"]
    assert "no_valid_tagged_agents" in responses["422"]["description"]


def test_the_summary_documents_its_coded_404(schema):
    """Schemathesis found the coded `no_summary_yet` against a 404 documented as a string."""
    responses = schema["paths"]["/api/v1/sessions/{session_id}/summary"]["get"]["responses"]

    assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert "no_summary_yet" in responses["404"]["description"]


def test_error_bodies_are_described(schema):
    schemas = schema["components"]["schemas"]

    assert schemas["ErrorMessage"]["required"] == ["code", "detail"]
    assert schemas["CodedError"]["properties"]["detail"]["$ref"].endswith("/CodedErrorDetail")
    assert schemas["CodedErrorDetail"]["required"] == ["code", "message"]
    detail = schemas["Error"]["properties"]["detail"]
    assert detail["anyOf"][0] == {"type": "string"}


def test_field_errors_are_one_component(schema, owner_client):
    """The 400's field errors were written inline in every operation: a generated client made
    two models of them per operation (`V1<op>Response400Type1` and its
    `...AdditionalPropertyType1`, 58 in all). Every error body is named components only."""
    field_errors = schema["components"]["schemas"]["FieldErrors"]
    assert field_errors["type"] == "object"
    for path, method, operation in operations(schema):
        for status, response in operation["responses"].items():
            if status < "400":
                continue
            body = response["content"]["application/json"]["schema"]
            label = f"{method.upper()} {path} {status}"
            assert not re.search(r'"(properties|additionalProperties|items)"', json.dumps(body)), (
                label
            )
        bad = operation["responses"]["400"]["content"]["application/json"]["schema"]
        # A wrong login's own body first (`InvalidCredentials`), then every operation's two.
        login = (method, path) == ("post", "/api/v1/auth/token")
        own = [{"$ref": "#/components/schemas/InvalidCredentials"}] * login
        assert bad == {
            "anyOf": [
                *own,
                {"$ref": "#/components/schemas/Error"},
                {"$ref": "#/components/schemas/FieldErrors"},
            ]
        }, f"{method.upper()} {path}"

    refused = owner_client.post("/api/v1/agents", {"agent_key": "Not A Key"}, format="json")
    assert refused.status_code == 400
    validator = Draft202012Validator(json_schema(schema, field_errors))
    assert validator.is_valid(refused.json())
    assert not validator.is_valid({"name": "not a list"})


def _inline_coded_details(node, where=""):
    """Where an object with a `code` property is written out instead of referenced."""
    if isinstance(node, dict):
        if "code" in node.get("properties", {}):
            yield where
        for key, value in node.items():
            yield from _inline_coded_details(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _inline_coded_details(value, f"{where}/{index}")


def test_a_coded_refusal_is_one_component(schema):
    """`{code, message}` was four client classes: `CodedErrorDetail`, and `Error.detail`,
    `TurnConflict.detail` and `TurnRefusalDetail` each writing it out again. The one component
    is referenced; a detail with more (`turn_id`, `valid_agent_keys`) is it and those."""
    schemas = schema["components"]["schemas"]
    coded = {"$ref": "#/components/schemas/CodedErrorDetail"}

    # A failed turn's last event has a `code` too, of its own: no refusal. So have a turn's 409,
    # a 401 and DRF's other errors (404, 405..., and as `Error` a 400's or a 406's message),
    # beside the design's plain `detail` (no `message`: that `detail` is its message).
    assert list(_inline_coded_details(schemas)) == [
        "/AuthenticationError",
        "/CodedErrorDetail",
        "/Error",
        "/ErrorMessage",
        "/TurnConflict",
        "/TurnFailedData",
    ]
    assert list(_inline_coded_details(schema["paths"])) == []
    assert schemas["Error"]["properties"]["detail"]["anyOf"] == [{"type": "string"}, coded]
    conflict = schemas["TurnConflict"]["properties"]["detail"]["anyOf"]
    assert conflict == [{"type": "string"}, {"$ref": "#/components/schemas/KeyInUseDetail"}]
    for name, extra in [("KeyInUseDetail", "turn_id"), ("TurnRefusalDetail", "valid_agent_keys")]:
        base, more = schemas[name]["allOf"]
        assert base == coded, name
        assert set(more["properties"]) == {extra}, name
        assert "required" not in more, name  # sent only sometimes


def test_no_component_is_named_twice_a_request(schema):
    """The login's body was `AuthTokenRequestRequest` (an inline serializer named `...Request`,
    to which spectacular adds `Request` again), a class by that name in a generated client."""
    names = schema["components"]["schemas"]

    assert [name for name in names if name.endswith("RequestRequest")] == []
    body = schema["paths"]["/api/v1/auth/token"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/CredentialsRequest"}


def test_a_sessions_room_and_agent_are_nullable(schema):
    properties = schema["components"]["schemas"]["SessionActivity"]["properties"]

    assert properties["room_id"]["nullable"] is True
    assert properties["agent_id"]["nullable"] is True
    assert {"room", "agent", "turn_count", "last_activity_at"} <= set(properties)


def test_patch_rooms_offers_only_name_and_goal(schema):
    operation = schema["paths"]["/api/v1/rooms/{id}"]["patch"]

    assert set(request_body(schema, operation)["properties"]) == {"name", "goal"}
    assert "put" not in schema["paths"]["/api/v1/rooms/{id}"]


def test_patch_rooms_says_what_it_refuses(schema, owner_client, live_paths):
    """`PATCH rooms/{id}` `{"mode": ...}` is a 400 naming `PUT rooms/{id}/mode` (so are
    `agent_ids`, and a `current_mode` or `pending_mode` other than the room's), and neither the
    operation nor its body said so: a client reading the schema sent them."""
    operation = schema["paths"]["/api/v1/rooms/{id}"]["patch"]
    texts = {
        "operation": operation["description"],
        "body": request_body(schema, operation)["description"],
        "400": operation["responses"]["400"]["description"],
    }
    for where, text in texts.items():
        for field in ("mode", "agent_ids", "current_mode", "pending_mode"):
            assert f"`{field}`" in text, (where, field)
        assert "PUT rooms/{id}/mode" in text and "PUT rooms/{id}/agents" in text, where

    answer = owner_client.patch(
        concrete("/api/v1/rooms/{id}", live_paths), {"mode": "roundtable"}, format="json"
    )
    assert answer.status_code == 400
    assert json.dumps(answer.json()["mode"][0])[1:-1] in texts["400"]


def test_request_bodies_name_the_enabled_model_aliases(schema):
    enabled = sorted(ModelAlias.objects.filter(enabled=True).values_list("alias", flat=True))
    schemas = schema["components"]["schemas"]
    agent = schemas["AgentRequest"]["properties"]["model_alias"]
    override = schemas["TurnCreateRequest"]["properties"]["model_alias_override"]
    answer = schemas["Agent"]["properties"]["model_alias"]

    assert component(schema, agent["allOf"][0])["enum"] == enabled
    # "" and null are the field left out.
    assert [component(schema, choice)["enum"] for choice in override["oneOf"]] == [
        enabled,
        [""],
        [None],
    ]
    assert override["nullable"] is True
    assert answer == {"type": "string", "maxLength": 64}  # an alias may be disabled later


def test_text_bounds_are_published(schema, settings):
    schemas = schema["components"]["schemas"]

    assert (
        schemas["AgentRequest"]["properties"]["role_prompt"]["maxLength"]
        == settings.PANTHEON_MAX_ROLE_PROMPT_CHARS
    )
    assert (
        schemas["RoomRequest"]["properties"]["goal"]["maxLength"]
        == settings.PANTHEON_MAX_ROOM_GOAL_CHARS
    )
    # A title, a name that may be blank, is its pattern's text or "" (spectacular's `oneOf`),
    # or null, the title left out (pantheon.fields.NullIsLeftOut).
    _, empty, null = schemas["SessionCreateRequest"]["properties"]["title"]["oneOf"]
    assert empty == {"type": "string", "maxLength": 0}
    assert null == {"$ref": "#/components/schemas/NullEnum"}
    assert (
        schemas["TurnCreateRequest"]["properties"]["message"]["maxLength"]
        == settings.PANTHEON_MAX_MESSAGE_CHARS
    )
    assert schemas["RoomRequest"]["properties"]["agent_ids"]["uniqueItems"] is True


@pytest.mark.parametrize("body", ["AgentRequest", "PatchedAgentRequest"])
def test_a_tool_listed_twice_is_refused_as_the_schema_says(schema, owner_client, body):
    """The API refuses a tool listed twice (400, code `duplicate`): the request's schema says
    each once. Not the answer's: an agent saved before that rule may list one twice."""
    tools = schema["components"]["schemas"][body]["properties"]["tool_permissions"]
    answered = schema["components"]["schemas"]["Agent"]["properties"]["tool_permissions"]

    assert tools["uniqueItems"] is True
    assert "uniqueItems" not in answered
    assert not Draft202012Validator(tools).is_valid(["web_search", "web_search"])
    agent = {"agent_key": "ada", "name": "Ada", "model_alias": "deepseek"}
    sent = {**agent, "tool_permissions": ["web_search", "web_search"]}
    response = owner_client.post("/api/v1/agents", sent, format="json")
    assert response.status_code == 400
    assert response.json() == {"tool_permissions": ["'web_search' is listed twice."]}


@pytest.mark.parametrize(
    "body, field, path",
    [
        ("TurnCreateRequest", "message", "/api/v1/sessions/{session}/turns"),
        ("AgentRequest", "name", "/api/v1/agents"),
        ("RoomRequest", "name", "/api/v1/rooms"),
    ],
)
def test_texts_that_may_not_be_blank_say_so(schema, owner_client, live_paths, body, field, path):
    """`minLength: 1` alone lets "   " through, and the API refuses it: the pattern says a
    character must be visible, by the server's measure (str.strip()'s whitespace, and format
    characters such as U+200B or U+FEFF, which the server counts as blank too). `\\S` called
    "\\u001e" valid, which the server trims away (schemathesis at 200 examples). A field with a
    pattern of its own keeps it."""
    described = schema["components"]["schemas"][body]["properties"][field]
    # Spelt out in code points, the pattern means the same to a client's ECMAScript regex as
    # to Python's: `\s` is Python's whitespace here and ECMAScript's there.
    assert not re.search(r"\\[sS]", described["pattern"])
    kept = [chr(c) for c in range(0x10000) if re.search(described["pattern"], chr(c))]
    assert [c for c in kept if c.isspace()] == []
    assert [c for c in "\u00ad\u200b\u200c\u200d\u2060\u2062\u3164\ufeff" if c in kept] == []
    # A name holds no control character (C0, DEL, C1), which the server refuses.
    controls = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}
    assert len(kept) == sum(
        not invisible(chr(c)) and (field == "message" or chr(c) not in controls)
        for c in range(0x10000)
    )
    assert bool(re.search(described["pattern"], "a\u0001b\u001b[31m")) == (field == "message")
    assert bool(re.search(described["pattern"], "Ad\na")) == (field == "message")
    assert re.search(described["pattern"], "\tAda\r\n")  # trimmed ends
    # Beyond the BMP: tag characters alone are blank, the flag of England they end is not.
    england = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
    assert not re.search(described["pattern"], "\U000e0067\U000e0062\U000e007f\u2800")
    assert re.search(described["pattern"], england)
    assert re.search(described["pattern"], "\U00020000")
    # A bidi override before a name's first visible character is refused, one after it is
    # not; a message may open with one.
    assert bool(re.search(described["pattern"], "\u200b\u202egnp.exe")) == (field == "message")
    assert re.search(described["pattern"], "a\u202egnp.exe")
    # Escapes only in the BMP; only the characters beyond it are written as themselves.
    assert all(ord(c) < 0x80 or ord(c) >= 0x10000 for c in described["pattern"])
    assert schema["components"]["schemas"]["AgentRequest"]["properties"]["agent_key"][
        "pattern"
    ] == ("^[a-z0-9_]{1,32}$")

    answer = owner_client.post(
        path.format(session=live_paths["sessions"]),
        {field: " \t\u001e\u3000\u200b\ufeff", "agent_key": "bo", "model_alias": "deepseek"},
        format="json",
    )
    assert answer.status_code == 400
    assert field in answer.json()


@pytest.mark.parametrize(
    "body, field",
    [("SessionCreateRequest", "title"), ("RoomRequest", "goal"), ("AgentRequest", "role_prompt")],
)
def test_texts_that_may_be_blank_say_what_they_refuse(schema, body, field):
    """A title, a goal or a role prompt may be blank (stored ""); a title, a name, may not
    open with a bidi override, and a goal or a role prompt may. spectacular offers "" on its
    own beside a pattern (`oneOf`): exactly one of them takes each text."""
    described = schema["components"]["schemas"][body]["properties"][field]
    # With the components its null's `$ref` names (a title's: NullIsLeftOut).
    validator = Draft202012Validator({**described, "components": schema["components"]})
    england = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"

    for text in ["", " \u200b", "\U000e0067\U000e007f", "\u2800", "Kickoff", england, "\u05e9"]:
        assert validator.is_valid(text), repr(text)
    for text in ["\u202eKickoff", " \u2067\u05e9\u2069"]:
        assert validator.is_valid(text) == (field != "title"), repr(text)
    for text in ["Kick\u001boff", "Kick\noff", "Kick\u0085off", "\u0007"]:
        assert validator.is_valid(text) == (field != "title"), repr(text)


# --- OPTIONS agrees with the schema ------------------------------------------------------------


@pytest.fixture
def live_paths(owner, make_agent, make_room, make_session):
    """Every path of the schema with real ids of the caller's objects."""
    agent = make_agent(owner, "ada")
    room = make_room(owner, [agent], mode=RoomMode.ROUNDTABLE)
    session = make_session(owner, room=room)
    from sessions_app.models import Turn

    turn = Turn.objects.create(session=session, turn_index=1, mode="roundtable", user_input="x")
    return {"agents": agent.id, "rooms": room.id, "sessions": session.id, "turns": turn.id}


def concrete(path: str, ids: dict) -> str:
    """`/api/v1/rooms/{room_id}/sessions` → `/api/v1/rooms/<the room's id>/sessions`."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part.startswith("{"):
            parts[index] = str(ids[parts[index - 1]])
    return "/".join(parts)


def test_options_agrees_with_the_schema(schema, owner_client, live_paths):
    for path, methods in schema["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        url = concrete(path, live_paths)
        response = owner_client.options(url)
        assert response.status_code == 200, url

        documented = {method.upper() for method in methods}
        allowed = {m.strip() for m in response["Allow"].split(",")} - {"HEAD", "OPTIONS"}
        assert allowed == documented, path

        actions = response.json().get("actions", {})
        for method in documented & {"POST", "PUT", "PATCH"}:
            if "requestBody" not in methods[method.lower()]:  # reads no body (a turn's cancel)
                assert method not in actions, f"{method} {path}"
                continue
            body = request_body(schema, methods[method.lower()])
            writable = {name for name, info in actions[method].items() if not info["read_only"]}
            assert writable == set(body["properties"]), f"{method} {path}"
            # A PATCH requires nothing (`{"goal": "…"}` alone changes a room's goal): OPTIONS
            # said `name` was required there, as in the POST, against the schema's Patched body.
            required = {name for name, info in actions[method].items() if info["required"]}
            assert required == set(body.get("required", [])), f"{method} {path}"


def test_the_answers_no_operation_can_list_are_described_once(schema, owner_client, live_paths):
    """A 405 is the answer to a method a path has no operation for, so no operation can list it
    (a generator reads each operation's responses as what that call may answer, and a
    documented call never gets one). The schema said nothing of it, nor of the protocol's own
    400 and 408; its description now does, and every path answers the 405 as described."""
    described = schema["info"]["description"]
    for named in ("`method_not_allowed`", "`Allow`", "`malformed_request`", "`request_timeout`"):
        assert named in described
    for path, methods in schema["paths"].items():
        documented = {method.upper() for method in methods}
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - documented:
            refused = owner_client.generic(method, concrete(path, live_paths))
            assert refused.status_code == 405, f"{method} {path}"
            assert refused.json()["code"] == "method_not_allowed"
            allowed = {name.strip() for name in refused["Allow"].split(",")}
            assert "OPTIONS" in allowed, f"{method} {path}"
            assert allowed - {"HEAD", "OPTIONS"} == documented, f"{method} {path}"
            assert "405" not in methods.get(method.lower(), {}).get("responses", {})


@pytest.mark.parametrize(
    ("method", "path", "documented"),
    [
        ("delete", "/api/v1/auth/token", False),
        ("post", "/api/v1/auth/token/rotate", False),
        ("post", "/api/v1/auth/password", False),
        ("post", "/api/v1/agents", True),
    ],
)
def test_a_csrf_403_is_documented_where_a_cookie_session_is_taken(
    schema, owner, method, path, documented
):
    """A write with a console cookie and no CSRF token is a 403, documented on every write;
    but signing out, rotating and changing the password take the token alone, so the cookie is
    no credential there (401): they listed a 403 they never answer."""
    cookie = APIClient(enforce_csrf_checks=True)
    cookie.force_login(owner)

    answer = getattr(cookie, method)(path, {}, format="json")

    assert answer.status_code == (403 if documented else 401)
    listed = schema["paths"][path][method]
    assert ("403" in listed["responses"]) is documented
    assert ({"cookieAuth": []} in listed["security"]) is documented
    assert mismatches(schema, method, path, answer) == []


@pytest.mark.parametrize("path", ["/api/v1/turns/{id}/cancel", "/api/v1/auth/token/rotate"])
def test_an_operation_that_reads_no_body_lists_no_415(schema, owner, direct_turns, path):
    """A turn's cancel and a token's rotation read no body: whatever is sent, of any type, is
    ignored, and they never answer 415. Their schema listed one, as every write's does."""
    token_client = APIClient()  # rotating takes a real token
    token_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    turn = token_client.post(direct_turns, {"message": "hi"}, format="json").json()["id"]

    answer = token_client.post(path.replace("{id}", turn), "plain text", content_type="text/plain")

    assert answer.status_code in (200, 409), answer.content  # a cancel of an ended turn: 409
    operation = schema["paths"][path]["post"]
    assert "requestBody" not in operation
    assert "415" not in operation["responses"]
    assert mismatches(schema, "post", path, answer) == []


def test_every_400_names_the_codes_of_its_refusals(schema):
    """Each 400 said "too deeply nested JSON, a NUL character…" in words, and a client that
    branches on `code` found `json_too_deep`, `invalid_characters`, `repeated_parameter` and
    `bad_request` nowhere in the schema."""
    for path, method, operation in operations(schema):
        described = operation["responses"]["400"]["description"]
        for code in (
            "parse_error",
            "json_too_deep",
            "invalid_characters",
            "repeated_parameter",
            "bad_request",
        ):
            assert f"`{code}`" in described, f"{method.upper()} {path} {code}"
        assert "field errors" in described


# --- answers as the schema describes them --------------------------------------------------------

_FORMATS = {
    "uuid": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "date-time": r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$",
}
_OPENAPI_ONLY = {"nullable", "readOnly", "writeOnly", "example", "format", "discriminator"}


def json_schema(schema: dict, described):
    """An OpenAPI 3.0 schema as JSON Schema, as strictly as a generated client reads it: `$ref`s
    inlined, `nullable` as null where a `type` is beside it (OpenAPI 3.0.3: it takes effect only
    there, and strict validators ignore it elsewhere), uuid and date-time formats checked, and no
    property the schema does not name (a client generated from it would drop it)."""
    if isinstance(described, list):
        return [json_schema(schema, item) for item in described]
    if not isinstance(described, dict):
        return described
    if "$ref" in described:
        return json_schema(schema, component(schema, described))
    parts = [component(schema, part) for part in described.get("allOf", [])]
    if parts and all("properties" in part for part in parts):
        # A component and more fields (a coded refusal's detail): one object, as a generated
        # client reads it, no property the parts do not name.
        described = {key: value for key, value in described.items() if key != "allOf"}
        described["type"] = "object"
        described["properties"] = {k: v for part in parts for k, v in part["properties"].items()}
        described["required"] = [name for part in parts for name in part.get("required", [])]
    converted = {}
    for key, value in described.items():
        if key == "properties":
            converted[key] = {name: json_schema(schema, prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties", "allOf", "anyOf", "oneOf"):
            converted[key] = json_schema(schema, value)
        elif key not in _OPENAPI_ONLY:
            converted[key] = value
    if described.get("format") in _FORMATS:
        converted["pattern"] = _FORMATS[described["format"]]
    if "properties" in converted:
        converted.setdefault("additionalProperties", False)
    if described.get("nullable") and "type" in described:
        converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def mismatches(schema: dict, method: str, path: str, response) -> list[str]:
    """What in `response` (an answer to `method path`) the schema does not say."""
    responses = schema["paths"][path][method.lower()]["responses"]
    status = str(response.status_code)
    if status not in responses:
        return [f"{status} is not documented ({sorted(responses)})"]
    content = responses[status].get("content", {})
    media_type = response["Content-Type"].split(";")[0]
    if media_type not in content:
        return [f"{status} is not documented as {media_type} ({sorted(content)})"]
    validator = Draft202012Validator(json_schema(schema, content[media_type]["schema"]))
    return [
        f"{status} at {list(error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(response.json())
    ]


LISTS = [
    "/api/v1/agents",
    "/api/v1/rooms",
    "/api/v1/rooms/{room_id}/sessions",
    "/api/v1/agents/{agent_id}/sessions",
    "/api/v1/sessions",
    "/api/v1/sessions/{session_id}/messages",
    "/api/v1/sessions/{session_id}/turns",
]


@pytest.fixture
def listed(owner, live_paths, make_session):
    """`live_paths`, with something in every list: a direct session, a message."""
    from rooms.models import Agent
    from sessions_app.models import Message, Turn

    make_session(owner, agent=Agent.objects.get(pk=live_paths["agents"]))
    turn = Turn.objects.get(pk=live_paths["turns"])
    Message.objects.create(session=turn.session, turn=turn, sequence=1, role="user", content="x")
    return live_paths


@pytest.mark.parametrize("path", LISTS)
def test_every_list_answers_the_page_its_schema_describes(schema, owner_client, listed, path):
    """A room's sessions come in numbered pages with a `count`; the cursor-paginated lists of
    sessions had taken the name `PaginatedSessionActivityList` first, and their page (no
    `count`) was the one the schema gave the room's sessions too."""
    response = owner_client.get(concrete(path, listed))

    assert response.status_code == 200
    assert response.json()["results"], path
    assert mismatches(schema, "get", path, response) == []
    page = component(
        schema,
        schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"],
    )
    numbered = any(p["name"] == "page" for p in schema["paths"][path]["get"]["parameters"])
    assert ("count" in page["properties"]) is numbered, path


@pytest.mark.parametrize("path", LISTS)
def test_a_pages_examples_are_links_of_its_own_list(schema, owner_client, listed, path):
    """Every page's examples were DRF's placeholders (`http://api.example.org/accounts/`,
    `count: 123`), and the cursor pages' `next` ended in a stray `"`, which its own `uri`
    format refuses. They are links of the list itself, as the server writes them; a cursor
    one the list takes."""

    def page_of(listed_at: str) -> dict:
        answer = schema["paths"][listed_at]["get"]["responses"]["200"]
        return answer["content"]["application/json"]["schema"]

    page = component(schema, page_of(path))
    # A page shared by two lists (the sessions by activity) has the links of one of them.
    sharing = [other for other in LISTS if page_of(other) == page_of(path)]
    pattern = "|".join(re.sub(r"\\{[^}]+\\}", "[0-9a-f-]{36}", re.escape(p)) for p in sharing)
    for link in ("next", "previous"):
        example = page["properties"][link]["example"]
        parts = urlsplit(example)
        assert parts.scheme == "https" and parts.netloc, example
        assert re.fullmatch(r"[!#-~]+", example), example  # no quote, no space: a URI
        assert re.fullmatch(pattern, parts.path), example
        query = parse_qs(parts.query)
        if "count" in page["properties"]:
            assert page["properties"]["count"]["example"] != 123
            assert set(query) <= {"page"}, example
        else:
            assert set(query) == {"cursor"}, example
            # The list takes its example's cursor (on a list of the caller's own).
            taken = owner_client.get(concrete(path, listed) + "?" + parts.query)
            assert taken.status_code == 200, example


def test_null_answers_agree_with_the_schema_as_strict_openapi_validators_read_it(
    schema, owner_client, listed, make_session, owner
):
    """A turn's `routing` (a roundtable's) and `balance` (a turn read later), a session's
    `room` (a direct one's) and `agent` (a room's) are null in answers; the schema said
    `allOf: [{$ref}]` with `nullable: true` beside it and no `type`, which strict OpenAPI 3.0
    validators ignore: they refused every such null."""
    turns = owner_client.get(concrete("/api/v1/sessions/{session_id}/turns", listed))
    sessions = owner_client.get("/api/v1/sessions")

    assert {(turn["routing"], turn["balance"]) for turn in turns.json()["results"]} == {
        (None, None)
    }
    assert {(s["room"] is None, s["agent"] is None) for s in sessions.json()["results"]} == {
        (True, False),
        (False, True),
    }
    assert mismatches(schema, "get", "/api/v1/sessions/{session_id}/turns", turns) == []
    assert mismatches(schema, "get", "/api/v1/sessions", sessions) == []
    nullable = []
    for where in ("Turn", "SessionActivity"):
        for name, described in schema["components"]["schemas"][where]["properties"].items():
            if described.get("nullable"):
                nullable.append(f"{where}.{name}")
                accepts_null = "type" in described or any(
                    component(schema, alternative).get("enum") == [None]
                    for alternative in described.get("oneOf", [])
                )
                assert accepts_null, f"{where}.{name}"
    assert {
        "Turn.routing",
        "Turn.balance",
        "SessionActivity.room",
        "SessionActivity.agent",
    } <= set(nullable)


def test_every_component_of_the_schema_is_used(schema):
    """`SeatRequest` was one referenced by nothing: a request form of the seats a room's answer
    lists (read-only: a roster is set by `agent_ids`), which a generated client turned into a
    model no request takes."""
    text = json.dumps({key: value for key, value in schema.items() if key != "components"})
    components = schema["components"]["schemas"]
    used, reached = set(), set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    while reached - used:
        used |= reached
        inside = json.dumps([components[name] for name in used])
        reached |= set(re.findall(r'"#/components/schemas/([^"]+)"', inside))

    assert set(components) - used == set()
    assert "SeatRequest" not in components and "Seat" in components


def test_every_default_is_a_value_its_own_schema_takes(schema):
    """openapi-spec-validator refused the whole schema: a new session's `title` defaults to ""
    inside the `oneOf` alternative whose pattern refuses blank text (drf-spectacular splits a
    text that may be blank into a pattern and a `maxLength: 0` alternative, leaving the
    default in the first); OpenAPI 3.0 wants a default to fit the schema object it is in."""

    def defaults(node, where=""):
        if isinstance(node, dict):
            if "default" in node:
                yield where, node
            for key, value in node.items():
                yield from defaults(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from defaults(value, f"{where}/{index}")

    found = list(defaults(schema["components"]))
    assert found
    for where, described in found:
        takes = Draft202012Validator(json_schema(schema, described))
        assert takes.is_valid(described["default"]), where
    opening = schema["paths"]["/api/v1/rooms/{room_id}/sessions"]["post"]
    assert request_body(schema, opening)["properties"]["title"]["default"] == ""


def test_the_health_checks_503s_are_both_described(schema, anon_client, staff, monkeypatch):
    """The health check answers 503 two ways: its own body when the database is down, and the
    coded `over_capacity` of a full worker, which the schema had not said (only the former)."""
    from django.db import DatabaseError

    from pantheon import capacity, health

    class Unreachable:
        vendor = "postgresql"

        def cursor(self):
            raise DatabaseError("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(health, "connection", Unreachable())
        down = anon_client.get("/api/v1/health")
    with monkeypatch.context() as patched:
        patched.setattr(capacity.PROCESS, "limit", 3)
        patched.setattr(capacity.PROCESS, "in_flight", 4)
        full = anon_client.get("/api/v1/health")
    # The worker's figures are staff's (an operator's token).
    up = APIClient(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}").get(
        "/api/v1/health"
    )

    assert down.json()["status"] == "unavailable"
    assert full.json()["detail"]["code"] == "over_capacity"
    for answer in (down, full, up):
        assert mismatches(schema, "get", "/api/v1/health", answer) == []
    # Both say when to look again, and the schema says they do.
    assert (down["Retry-After"], full["Retry-After"]) == ("2", "2")
    unavailable = schema["paths"]["/api/v1/health"]["get"]["responses"]["503"]
    assert unavailable["headers"]["Retry-After"]["required"] is True
    assert "no Retry-After" not in unavailable["description"]
    health_body = dict(schema["components"]["schemas"]["Health"]["properties"])
    worker = component(schema, health_body.pop("worker")["oneOf"][0])  # or null
    assert {name: component(schema, prop)["enum"] for name, prop in health_body.items()} == {
        "status": ["ok", "unavailable"],
        "database": ["postgresql", "sqlite"],
        "llm_backend": ["demo", "live"],
    }
    assert set(worker["properties"]) == set(up.json()["worker"])


def test_a_lost_database_connection_is_a_documented_503(schema, owner_client, monkeypatch):
    """Any operation whose request loses its database connection answers 503
    `database_unavailable` with a Retry-After (the health check reports the database itself)."""
    import psycopg
    from django.db import OperationalError

    for path, method, operation in operations(schema):
        if path == "/api/v1/health":
            continue
        unavailable = operation["responses"]["503"]
        label = f"{method.upper()} {path}"
        assert "database_unavailable" in unavailable["description"], label
        # Required on every one, a turn's POST (whose `turn_interrupted` says it too) included.
        assert unavailable["headers"]["Retry-After"]["required"] is True, label
    # A streamed turn says it in its last event.
    failed = schema["components"]["schemas"]["TurnFailedData"]["properties"]["code"]
    assert "`database_unavailable`" in failed["description"]

    lost = OperationalError("terminating connection due to administrator command")
    lost.__cause__ = psycopg.errors.AdminShutdown(lost.args[0])

    def list_agents(**kwargs):
        raise lost

    monkeypatch.setattr("rooms.selectors.agents_for_user", list_agents)
    answer = owner_client.get("/api/v1/agents")

    assert answer.status_code == 503
    assert answer.json()["detail"]["code"] == "database_unavailable"
    assert mismatches(schema, "get", "/api/v1/agents", answer) == []


# --- the turn ----------------------------------------------------------------------------------

TURNS = "/api/v1/sessions/{session_id}/turns"


@pytest.fixture
def direct_turns(owner, make_agent, make_session) -> str:
    """The turns path of a direct session (the demo backend answers)."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    return f"/api/v1/sessions/{session.id}/turns"


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs", "status"),
    [
        # Malformed JSON: the machinery's 400, on any operation that reads a body.
        ("post", "/api/v1/agents", {"data": "{x", "content_type": "application/json"}, 400),
        ("post", TURNS, {"data": "{x", "content_type": "application/json"}, 400),
        # The turn's and the events' own 406s.
        (
            "post",
            TURNS,
            {"data": {"message": "hi"}, "format": "json", "HTTP_ACCEPT": "text/html"},
            406,
        ),
        ("get", "/api/v1/turns/{id}/events", {"data": {"format": "json"}}, 406),
    ],
)
def test_drfs_messages_answer_the_code_their_schema_names(
    schema, owner_client, direct_turns, method, path, request_kwargs, status
):
    """DRF's message errors answer `{"detail": "…", "code": "…"}`; where an operation documents
    them as `Error` (every 400, the turn's and the events' 406), that component had no `code`,
    so a generated client dropped the one field a program reads (a strict one refused the
    body)."""
    turn = owner_client.post(direct_turns, {"message": "hi"}, format="json").json()["id"]
    url = path.replace("{session_id}", direct_turns.split("/")[4]).replace("{id}", turn)

    answer = getattr(owner_client, method)(url, **request_kwargs)

    assert answer.status_code == status
    assert isinstance(answer.json()["code"], str)
    assert mismatches(schema, method, path, answer) == []


def test_a_replayed_turn_says_so_in_a_documented_header(schema, owner_client, direct_turns):
    """`Idempotent-Replayed: true` marks a retry's answer (README, CORS exposes it), and the
    schema named no such header: a generated client had no way to read it."""
    first = owner_client.post(
        direct_turns, {"message": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    again = owner_client.post(
        direct_turns, {"message": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert (first.status_code, again.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    for answer in (first, again):
        assert mismatches(schema, "post", TURNS, answer) == []
    created = schema["paths"][TURNS]["post"]["responses"]["201"]["headers"]
    assert created["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}
    assert created["Idempotent-Replayed"].get("required", False) is False


@pytest.mark.parametrize("key", ["two words", "x" * 256, "caf\u00e9"])
def test_a_turns_refused_idempotency_key_is_named_under_its_400(
    schema, owner_client, direct_turns, key
):
    """Every other code of the turn was named under its status; `invalid_idempotency_key` only
    in the header's own text, and the 400 said field errors, JSON and NULs. The client tester's
    catch."""
    answer = owner_client.post(
        direct_turns, {"message": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )

    assert answer.status_code == 400
    assert mismatches(schema, "post", TURNS, answer) == []
    documented = schema["paths"][TURNS]["post"]["responses"]["400"]["description"]
    assert f"`{answer.json()['detail']['code']}`" in documented
    assert "field errors" in documented  # the machinery's 400s too


def test_a_wrong_login_answers_its_code_as_documented(schema, owner, anon_client):
    """A wrong username or password was the one refusal without a machine-readable code
    (`{"non_field_errors": [...]}` alone); it keeps that key, the code beside it is in the
    schema, and the answer is what a generated client reads from it."""
    refused = anon_client.post(
        "/api/v1/auth/token", {"username": "owner", "password": "wrong"}, format="json"
    )

    assert refused.status_code == 400
    assert refused.json()["detail"]["code"] == "invalid_credentials"
    assert mismatches(schema, "post", "/api/v1/auth/token", refused) == []
    documented = schema["paths"]["/api/v1/auth/token"]["post"]["responses"]["400"]
    assert "`invalid_credentials`" in documented["description"]
    assert {"$ref": "#/components/schemas/InvalidCredentials"} in (
        documented["content"]["application/json"]["schema"]["anyOf"]
    )


def test_error_answers_are_documented_as_the_json_they_are(schema):
    """Every error, a streamed request's included, is answered in JSON; the schema listed the
    errors of the turn and of its events under text/event-stream too."""
    for path, method, operation in operations(schema):
        for status, response in operation["responses"].items():
            if status >= "400":
                assert set(response["content"]) == {"application/json"}, (
                    f"{method.upper()} {path} {status}"
                )


def test_a_refused_turn_answers_the_documented_refusal(
    schema, owner, owner_client, make_agent, make_room, make_session
):
    """`no_valid_tagged_agents` lists the keys that would work (`valid_agent_keys`, README),
    a field the documented refusal did not have: a generated client dropped it."""
    agents = [make_agent(owner, "ada"), make_agent(owner, "grace")]
    session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.MANUAL))

    refused = owner_client.post(
        f"/api/v1/sessions/{session.id}/turns",
        {"message": "no tag"},
        format="json",
        HTTP_ACCEPT="text/event-stream",
    )

    assert refused.status_code == 422
    assert refused["Content-Type"] == "application/json"
    assert refused.json()["detail"]["valid_agent_keys"] == ["ada", "grace"]
    assert mismatches(schema, "post", TURNS, refused) == []


# Fields an answer sends only sometimes: the one property a response body may lack.
SOMETIMES_SENT = {
    "TurnRefusalDetail": {"valid_agent_keys"},
    # Beside the plain `detail` only (`turn_id` with `turn_in_progress`), not the coded one.
    "TurnConflict": {"code", "turn_id"},
    # To staff alone (their token or console session): a balancer's probe gets the verdict.
    "Health": {"worker"},
    # Beside DRF's message only, not a coded refusal's `detail`.
    "Error": {"code"},
}


def test_answers_require_every_field_they_always_send(schema, owner_client, listed):
    """A field every answer carries is `required`: `role_prompt`, `tool_permissions`, a room's
    `goal`, a session's `title` and a page's `next`/`previous` were optional in the schema
    (they may be left out of a request), so generated clients typed them as maybe-missing."""
    for name, body in schema["components"]["schemas"].items():
        if name.endswith("Request") or "properties" not in body:
            continue
        readable = {
            field for field, prop in body["properties"].items() if not prop.get("writeOnly")
        }
        assert readable - set(body.get("required", ())) == SOMETIMES_SENT.get(name, set()), name

    agent = owner_client.post(
        "/api/v1/agents",
        {"agent_key": "bo", "name": "Bo", "model_alias": "deepseek"},
        format="json",
    )
    room = owner_client.post("/api/v1/rooms", {"name": "Bare"}, format="json")
    session = owner_client.post(f"/api/v1/rooms/{room.json()['id']}/sessions", {}, format="json")
    assert mismatches(schema, "post", "/api/v1/agents", agent) == []
    assert mismatches(schema, "post", "/api/v1/rooms", room) == []
    assert mismatches(schema, "post", "/api/v1/rooms/{room_id}/sessions", session) == []


def test_the_shapes_of_routing_summaries_and_kinds_are_published(
    schema, owner, owner_client, make_agent, make_room, make_session
):
    """A turn's `routing`, a summary's lists and a session's `kind` were any JSON value or any
    string in the schema; they have one shape each (DESIGN.md 5, the summary contract)."""
    schemas = schema["components"]["schemas"]
    routing = schemas["Turn"]["properties"]["routing"]
    routing_body = component(schema, routing["oneOf"][0])  # or null
    assert routing["nullable"] is True
    assert routing_body["required"] == [
        "fallback_reason",
        "fallback_used",
        "ignored_agent_keys",
        "manager_model_alias",
        "selected_agent_keys",
    ]
    assert routing_body["properties"]["selected_agent_keys"]["items"] == {"type": "string"}
    for field in ("key_facts", "decisions", "open_questions", "action_items"):
        assert schemas["Summary"]["properties"][field]["items"] == {"type": "string"}, field
    kind = schemas["SessionActivity"]["properties"]["kind"]
    assert component(schema, kind.get("allOf", [kind])[0])["enum"] == ["room", "direct"]

    agents = [make_agent(owner, "ada"), make_agent(owner, "grace")]
    session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ORCHESTRATOR))
    turn = owner_client.post(
        f"/api/v1/sessions/{session.id}/turns", {"message": "go"}, format="json"
    )
    assert turn.status_code == 201
    assert turn.json()["routing"]["selected_agent_keys"]
    read = owner_client.get(f"/api/v1/turns/{turn.json()['id']}")
    from sessions_app.models import SessionSummary

    SessionSummary.objects.create(
        session=session,
        turn_id=turn.json()["id"],
        from_sequence=1,
        to_sequence=2,
        summary_text="s",
        key_facts=["a fact"],
    )
    summary = owner_client.get(f"/api/v1/sessions/{session.id}/summary")
    assert mismatches(schema, "post", TURNS, turn) == []
    assert mismatches(schema, "get", "/api/v1/turns/{id}", read) == []
    assert mismatches(schema, "get", "/api/v1/sessions/{session_id}/summary", summary) == []


def test_a_summary_whose_turn_is_gone_answers_as_its_schema_says(
    schema, owner, owner_client, make_session
):
    """A summary's turn is set null when the turn goes (and a message's turn column may be
    null): the schema required a uuid there."""
    from sessions_app.models import SessionSummary

    session = make_session(owner)
    SessionSummary.objects.create(
        session=session, turn=None, from_sequence=1, to_sequence=2, summary_text="s"
    )
    summary = owner_client.get(f"/api/v1/sessions/{session.id}/summary")

    assert summary.status_code == 200 and summary.json()["turn_id"] is None
    assert mismatches(schema, "get", "/api/v1/sessions/{session_id}/summary", summary) == []
    message = schema["components"]["schemas"]["Message"]["properties"]["turn_id"]
    assert message.get("nullable") is True


def test_the_events_document_the_last_event_id_they_resume_after(
    schema, owner_client, direct_turns
):
    """`Last-Event-ID` was in the operation's prose only, so a generated client had no way
    to send it (a browser's EventSource sends it by itself)."""
    events = schema["paths"]["/api/v1/turns/{id}/events"]["get"]
    headers = {p["name"]: p for p in events["parameters"] if p["in"] == "header"}
    assert headers["Last-Event-ID"]["schema"] == {"type": "string"}
    assert headers["Last-Event-ID"].get("required", False) is False

    turn = owner_client.post(direct_turns, {"message": "hi"}, format="json").json()
    path = f"/api/v1/turns/{turn['id']}/events"
    ended = owner_client.get(
        path, HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="9007199254740991"
    )
    anything = owner_client.get(path, HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="x")
    assert ended.status_code == 204
    assert anything.status_code == 200
    assert anything["Content-Type"] == "text/event-stream"


def test_a_messages_error_code_names_its_values(schema):
    """`error_code` is empty on an answer that worked, else one of the gateway's error kinds
    (README: timeout, rate_limited, provider_error, bad_request, context_window_exceeded);
    the schema said any string."""
    from orchestration.types import ErrorKind

    for body in ("Message", "TurnMessage"):
        error_code = schema["components"]["schemas"][body]["properties"]["error_code"]
        choices = [component(schema, choice)["enum"] for choice in error_code["oneOf"]]
        assert choices == [list(ErrorKind), [""]], body


async def _read(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


def _events_of(stream: str, *, parsed: bool = True) -> list[dict]:
    """A Server-Sent Events body as its events, `{id, event, data}`: as sent (texts), or as a
    client parses them (`parsed`)."""
    found = []
    for block in stream.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" not in fields:
            continue
        if parsed:
            fields = {**fields, "id": int(fields["id"]), "data": json.loads(fields["data"])}
        found.append(fields)
    return found


STREAMS = [
    ("post", "/api/v1/sessions/{session_id}/turns", "201"),
    ("get", "/api/v1/turns/{id}/events", "200"),
]


def test_a_stream_is_described_as_the_text_it_is(schema, owner_client, direct_turns):
    """Both streams were one JSON object to the schema (`{id, event, data}`), `text/event-stream`
    the events' only content type: a generated client (openapi-python-client) ran
    `from_dict(response.text)` on the whole stream and failed. The body is text; one event as
    sent is the second alternative (schemathesis reads an event stream's schema as one
    event's); the events, their data parsed, are the `TurnEvent` its `x-sse-event` names."""
    for path, method, operation in operations(schema):
        for status, response in operation["responses"].items():
            for media_type, content in response.get("content", {}).items():
                if media_type != "application/json":
                    label = f"{method} {path} {status}"
                    assert content["schema"].get("type") != "object", label
                    assert "properties" not in content["schema"], label
                    assert {"type": "string"} in [
                        {"type": alternative.get("type")}
                        for alternative in content["schema"].get("anyOf", [content["schema"]])
                    ], label

    turn = owner_client.post(direct_turns, {"message": "hi"}, format="json").json()
    replay = owner_client.get(f"/api/v1/turns/{turn['id']}/events", HTTP_ACCEPT="text/event-stream")
    body = async_to_sync(_read)(replay).decode()
    for method, path, status in STREAMS:
        stream = schema["paths"][path][method]["responses"][status]["content"]["text/event-stream"]
        assert stream["schema"]["x-sse-event"] == {"$ref": "#/components/schemas/TurnEvent"}
        validator = Draft202012Validator(json_schema(schema, stream["schema"]))
        assert validator.is_valid(body)
        sent = _events_of(body, parsed=False)
        assert len(sent) > 3
        for event in sent:
            assert validator.is_valid(event), event


def _event_components(schema: dict) -> dict[str, dict]:
    """`{event name: its component}`, as the `TurnEvent` discriminator maps them."""
    turn_event = schema["components"]["schemas"]["TurnEvent"]
    assert turn_event["discriminator"]["propertyName"] == "event"
    assert sorted(ref["$ref"] for ref in turn_event["oneOf"]) == sorted(
        turn_event["discriminator"]["mapping"].values()
    )
    return {
        name: component(schema, {"$ref": ref})
        for name, ref in turn_event["discriminator"]["mapping"].items()
    }


def test_each_events_data_is_a_component_that_says_what_is_sent(
    schema, owner_client, owner, make_agent, make_room, make_session
):
    """`turn_started`, `step_started`, `step_delta` and `turn_failed` had no component, only a
    markdown list in the stream's description; `turn_completed`, `step_completed` and `routing`
    were not linked to `Turn`, `TurnMessage` and `Routing`. Every event has its component
    now, and a stream's events are what they say (no key left out, none added)."""
    events = _event_components(schema)
    assert set(events) == {
        "turn_started",
        "routing",
        "step_started",
        "step_delta",
        "step_completed",
        "turn_completed",
        "turn_failed",
    }
    data = {name: body["properties"]["data"]["allOf"][0]["$ref"] for name, body in events.items()}
    assert data == {
        name: f"#/components/schemas/{body}"
        for name, body in [
            ("turn_started", "TurnStartedData"),
            ("routing", "Routing"),
            ("step_started", "StepStartedData"),
            ("step_delta", "StepDeltaData"),
            ("step_completed", "TurnMessage"),
            ("turn_completed", "Turn"),
            ("turn_failed", "TurnFailedData"),
        ]
    }

    agents = [make_agent(owner, "ada"), make_agent(owner, "grace", model_alias="qwen")]
    session = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ORCHESTRATOR))
    turn = owner_client.post(
        f"/api/v1/sessions/{session.id}/turns", {"message": "plan it"}, format="json"
    ).json()
    replay = owner_client.get(f"/api/v1/turns/{turn['id']}/events", HTTP_ACCEPT="text/event-stream")
    sent = _events_of(async_to_sync(_read)(replay).decode())
    # How a turn that did not complete ends, with and without its turn.
    sent += [
        {"id": event.id, "event": event.name, "data": event.data}
        for event in (
            turn_events.turn_failed(code="turn_interrupted", body=turn),
            turn_events.turn_failed(code="database_unavailable", body=None),
        )
    ]
    assert {"turn_started", "routing", "step_started", "step_delta", "step_completed"} <= {
        event["event"] for event in sent
    }
    for event in sent:
        validator = Draft202012Validator(json_schema(schema, events[event["event"]]))
        assert [error.message for error in validator.iter_errors(event)] == [], event["event"]


def test_every_operation_tells_a_client_what_it_does(schema):
    """Swagger UI showed the agents' operations with no text at all, every room operation with
    the same note about the `Allow` header, components naming internal selectors, and the
    `format` parameters bare: a front-end developer reads these and nothing else."""
    internal = ("selectors.", "(UsageTotals)", "OPTIONS and the schema", "dict of ledger sums")
    for path, method, operation in operations(schema):
        label = f"{method.upper()} {path}"
        assert operation.get("description"), label
        assert not any(word in operation["description"] for word in internal), label
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "path":  # ids: the path says whose
                assert parameter.get("description"), f"{label} {parameter['name']}"
    for name, body in schema["components"]["schemas"].items():
        assert not any(word in body.get("description", "") for word in internal), name

    mode = schema["paths"]["/api/v1/rooms/{id}/mode"]["put"]["description"]
    assert "pending_mode" in mode and "next turn" in mode
    refusal = schema["components"]["schemas"]["TurnRefusalDetail"]
    assert "credit_cap_exceeded" not in json.dumps(refusal)  # a 402, not a 422
    login = schema["paths"]["/api/v1/auth/token"]["post"]["responses"]["400"]["description"]
    assert "non_field_errors" in login


def test_each_operation_has_its_own_description(schema):
    """drf-spectacular gave each operation its view's docstring: `GET sessions`, `GET sessions/
    {id}` and `DELETE sessions/{id}` all read "`GET sessions` (...), `GET, DELETE
    sessions/{id}`...", a list and its create shared one text, running a turn said only that
    `POST` runs one, and `GET turns/{id}` was its path."""
    described: dict[str, list[str]] = {}
    for path, method, operation in operations(schema):
        described.setdefault(operation["description"], []).append(f"{method.upper()} {path}")
    assert [labels for labels in described.values() if len(labels) > 1] == []
    for text, (label,) in described.items():
        assert not re.search(r"`(GET|POST|PUT|PATCH|DELETE), ", text), label  # another's too
        assert not re.fullmatch(r"`[A-Z]+ [^`]+`\.?", text.strip()), label  # only its path

    turn = schema["paths"]["/api/v1/sessions/{session_id}/turns"]["post"]["description"]
    for what in (
        "`message`",
        "`model_alias_override`",
        "`roundtable`",
        "`orchestrator`",
        "`manual`",
        "`@agent_key`",
        "text/event-stream",
        "`balance`",
        "Idempotency-Key",
        "`pending_mode`",
    ):
        assert what in turn, what


def test_fields_say_what_their_values_mean(schema, owner_client, live_paths):
    """A seat's `id` is its agent's (what `PUT rooms/{id}/agents` takes), a turn's `balance`
    is null but in the answer that ran it, usage's `to` is exclusive (`to=2026-12-31` comes
    back `2027-01-01T00:00:00Z`), and every `Last-Event-ID` from the last event's id up
    answers 204: none of it was said, or said truly."""
    schemas = schema["components"]["schemas"]
    seat = schemas["Seat"]["properties"]["id"]["description"]
    assert "agent's id" in seat and "PUT rooms/{id}/agents" in seat
    balance = schemas["Turn"]["properties"]["balance"]["description"]
    assert "null" in balance and "ran the turn" in balance
    assert "excluded" in schemas["Usage"]["properties"]["to"]["description"]
    assert "included" in schemas["Usage"]["properties"]["from"]["description"]
    events = schema["paths"]["/api/v1/turns/{id}/events"]["get"]
    (last_event_id,) = [p for p in events["parameters"] if p["name"] == "Last-Event-ID"]
    assert "or more" in last_event_id["description"]

    room = owner_client.get(concrete("/api/v1/rooms/{id}", live_paths)).json()
    seated = [agent["id"] for agent in room["agents"]]
    roster = owner_client.put(
        concrete("/api/v1/rooms/{id}/agents", live_paths), {"agent_ids": seated}, format="json"
    )
    assert roster.status_code == 200
    usage = owner_client.get("/api/v1/usage", {"from": "2026-12-01", "to": "2026-12-31"})
    assert (usage.json()["from"], usage.json()["to"]) == (
        "2026-12-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
    )
    rooms_sessions = concrete("/api/v1/rooms/{room_id}/sessions", live_paths)
    session = owner_client.post(rooms_sessions, {}, format="json").json()
    turn = owner_client.post(
        f"/api/v1/sessions/{session['id']}/turns", {"message": "hi"}, format="json"
    ).json()
    assert turn["balance"] is not None
    assert owner_client.get(f"/api/v1/turns/{turn['id']}").json()["balance"] is None
    for last in ("9007199254740991", "9007199254740992", "99999999999999999999999"):
        ended = owner_client.get(
            f"/api/v1/turns/{turn['id']}/events",
            HTTP_ACCEPT="text/event-stream",
            HTTP_LAST_EVENT_ID=last,
        )
        assert ended.status_code == 204, last


def test_a_key_in_use_documents_the_turn_it_names(schema):
    """The 409 named `turn_id` in its prose only: a client generated from the schema dropped
    it (the reviewer's catch)."""
    responses = schema["paths"]["/api/v1/sessions/{session_id}/turns"]["post"]["responses"]
    conflict = responses["409"]["content"]["application/json"]["schema"]["$ref"]
    assert conflict == "#/components/schemas/TurnConflict"
    detail = schema["components"]["schemas"]["TurnConflict"]["properties"]["detail"]["anyOf"]
    assert detail[0] == {"type": "string"}  # the design's plain message
    coded, more = component(schema, detail[1])["allOf"]
    assert more["properties"]["turn_id"]["format"] == "uuid"
    assert component(schema, coded)["required"] == ["code", "message"]


def test_a_turns_cancel_answers_as_its_schema_says(
    schema, owner_client, outsider_client, live_paths
):
    """`POST turns/{id}/cancel`: the turn (200), then `turn_not_running` with the turn's id and
    status (409); someone else's turn is a 404."""
    operation = schema["paths"]["/api/v1/turns/{id}/cancel"]["post"]
    assert "requestBody" not in operation
    refused = operation["responses"]["409"]
    assert refused["content"]["application/json"]["schema"]["$ref"].endswith("/TurnNotRunning")
    assert "turn_not_running" in refused["description"]
    url = concrete("/api/v1/turns/{id}/cancel", live_paths)
    for client, status in ((outsider_client, 404), (owner_client, 200), (owner_client, 409)):
        answer = client.post(url)
        assert answer.status_code == status, answer.content
        assert mismatches(schema, "post", "/api/v1/turns/{id}/cancel", answer) == []
    assert answer.json()["detail"]["status"] == "interrupted"


def test_a_sessions_running_turn_is_named_in_its_409_as_the_schema_says(
    schema, owner_client, live_paths, fake_gateway
):
    """The design's `detail`, and beside it `code` and the running turn's `turn_id`, each a
    property of the documented body (a client generated from it keeps them)."""
    path = "/api/v1/sessions/{session_id}/turns"
    conflict = schema["components"]["schemas"]["TurnConflict"]["properties"]
    assert conflict["turn_id"]["format"] == "uuid"
    assert "turn_in_progress" in conflict["code"]["description"]
    answer = owner_client.post(concrete(path, live_paths), {"message": "anyone?"}, format="json")

    assert answer.status_code == 409, answer.content
    assert (answer.json()["code"], answer.json()["turn_id"]) == (
        "turn_in_progress",
        str(live_paths["turns"]),
    )
    assert mismatches(schema, "post", path, answer) == []


def test_operations_are_grouped_by_the_resource_their_path_names(schema):
    # Not all under one `v1` tag: a generated client's classes and the docs page's sections
    # follow the resources, and every group an operation names is described.
    tags = {path: operation["tags"] for path, method, operation in operations(schema)}
    assert tags["/api/v1/sessions/{session_id}/turns"] == ["sessions"]
    assert tags["/api/v1/turns/{id}/events"] == ["turns"]
    assert tags["/api/v1/auth/token/rotate"] == ["auth"]
    described = {tag["name"] for tag in schema["tags"]}
    assert {tag for names in tags.values() for tag in names} == described
    assert all(tag["description"] for tag in schema["tags"])
    # The operation ids keep the version, as generated clients name their methods by them.
    ids = [operation["operationId"] for _path, _method, operation in operations(schema)]
    assert "v1_sessions_turns_create" in ids
