"""The OpenAPI schema says what can go wrong, for every operation, new ones included.

`AutoSchema` (DEFAULT_SCHEMA_CLASS) adds to each operation the error answers the project's
machinery gives whatever the view: 400 (bad fields, bad JSON, NUL or lone surrogates anywhere),
401 where a login is needed, 403 for cookie sessions without a CSRF token, 404 where the path
names an object or the list is paginated, 413 and 415 where a body is read, 429 where a throttle
applies. A view declares its own domain refusals with `refusals(...)` in `extend_schema`
(the turn: 402, 403, 409, 422), and a 400 of its own with `bad_request(...)`; a status it
declares wins over the generic one. Every response
documents `X-Request-ID`, a 429 and a 503 also `Retry-After`. Errors are documented in JSON
only, as they are answered; an answer's model fields are all required (it always sends them); a
cursor page (no `count`) is named apart from a numbered one.

Nullable fields accept null as strict OpenAPI 3.0 validators read them (`nullable_accepts_null`,
a postprocessing hook), and a field only answers carry names no request component
(`AutoSchema._map_serializer_field`).
"""

import copy
import re

from drf_spectacular import openapi
from drf_spectacular.authentication import SessionScheme, TokenScheme
from drf_spectacular.extensions import (
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny

from pantheon.middleware import REQUEST_ID_HEADER


class ErrorMessageSerializer(serializers.Serializer):
    """DRF's own errors: `{"detail": "Not found.", "code": "not_found"}`."""

    detail = serializers.CharField()
    code = serializers.CharField(
        help_text="DRF's code for the status: `permission_denied` (403), `not_found` (404), "
        "`method_not_allowed` (405), `not_acceptable` (406), `unsupported_media_type` (415)."
    )

    class Meta:
        ref_name = "ErrorMessage"


# A 401's codes: DRF's own (pantheon.exceptions.api_exception_handler).
AUTHENTICATION_ERROR_CODES = ["not_authenticated", "authentication_failed"]


class AuthenticationErrorSerializer(serializers.Serializer):
    """A 401: DRF's `{"detail": "…"}`, and its code beside it."""

    detail = serializers.CharField()
    code = serializers.ChoiceField(
        choices=AUTHENTICATION_ERROR_CODES,
        help_text="`not_authenticated`: no credentials; `authentication_failed`: a token "
        "unknown, revoked or replaced, or its user inactive.",
    )

    class Meta:
        ref_name = "AuthenticationError"


# A detail with more fields than `{code, message}` subclasses this: the schema says it is this
# component and those fields (CodedErrorDetailSchema).
class CodedErrorDetailSerializer(serializers.Serializer):
    """A refusal's `{code, message}` (a detail with more fields is this and those)."""

    code = serializers.CharField(
        help_text="Machine-readable (`throttled`, `credit_cap_exceeded`, ...): each operation's "
        "answers name theirs."
    )
    message = serializers.CharField()

    class Meta:
        ref_name = "CodedErrorDetail"


class CodedErrorDetailSchema(OpenApiSerializerExtension):
    """`CodedErrorDetail` once, referenced by every detail that has its shape: written out
    again in each, `{code, message}` was four classes in a generated client."""

    target_class = CodedErrorDetailSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        own = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if type(self.target) is CodedErrorDetailSerializer:
            return own
        base = CodedErrorDetailSerializer()
        more = {
            "type": "object",
            "properties": {
                name: described
                for name, described in own["properties"].items()
                if name not in base.fields
            },
        }
        required = [name for name in own.get("required", []) if name not in base.fields]
        if required:
            more["required"] = required
        coded = auto_schema.resolve_serializer(CodedErrorDetailSerializer, direction)
        schema = {"allOf": [coded.ref, more]}
        if "description" in own:
            schema["description"] = own["description"]
        return schema


class CodedErrorSerializer(serializers.Serializer):
    """A refusal with a code: `{"detail": {"code": ..., "message": ...}}`."""

    detail = CodedErrorDetailSerializer()

    class Meta:
        ref_name = "CodedError"


class TurnRefusalDetailSerializer(CodedErrorDetailSerializer):
    """A turn's refusal: `{code, message}`, and the keys that would work after
    `no_valid_tagged_agents`."""

    valid_agent_keys = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="With `no_valid_tagged_agents` only: the keys a tag may name (the room's "
        "agents, in seat order).",
    )

    class Meta:
        ref_name = "TurnRefusalDetail"


class TurnRefusalSerializer(CodedErrorSerializer):
    """A turn's 422: `{"detail": {"code", "message", "valid_agent_keys"?}}`."""

    detail = TurnRefusalDetailSerializer()

    class Meta:
        ref_name = "TurnRefusal"


class KeyInUseDetailSerializer(CodedErrorDetailSerializer):
    """`idempotency_key_in_use`: `{code, message}`, and the turn the first request claimed; or
    `turn_cancelled`: the turn this request ran was cancelled, and its id."""

    turn_id = serializers.UUIDField(
        required=False,
        help_text="`idempotency_key_in_use`: the turn the first request with this "
        "Idempotency-Key claimed, once it has (follow it with `GET turns/{id}/events`). "
        "`turn_cancelled`: the turn this request ran, which its user cancelled.",
    )

    class Meta:
        ref_name = "KeyInUseDetail"


class TurnNotRunningDetailSerializer(CodedErrorDetailSerializer):
    """`turn_not_running`: `{code, message}`, the turn and how it ended."""

    turn_id = serializers.UUIDField(help_text="The turn named in the path.")
    status = serializers.ChoiceField(
        choices=["completed", "partial", "failed", "interrupted"],
        help_text="How the turn ended (`interrupted` for one cancelled before, too).",
    )

    class Meta:
        ref_name = "TurnNotRunningDetail"


class TurnNotRunningSerializer(CodedErrorSerializer):
    """A cancel's 409: `{"detail": {"code": "turn_not_running", "message", "turn_id",
    "status"}}`."""

    detail = TurnNotRunningDetailSerializer()

    class Meta:
        ref_name = "TurnNotRunning"


class OwnedLimitDetailSerializer(CodedErrorDetailSerializer):
    """`agent_limit_reached`, `room_limit_reached` or `session_limit_reached`: `{code,
    message}` and the bound."""

    limit = serializers.IntegerField(help_text="How many one account may own.")

    class Meta:
        ref_name = "OwnedLimitDetail"


class OwnedLimitSerializer(CodedErrorSerializer):
    """A create's 409: `{"detail": {"code": "..._limit_reached", "message", "limit"}}`."""

    detail = OwnedLimitDetailSerializer()

    class Meta:
        ref_name = "OwnedLimit"


def owned_limit(kind: str, frees: str) -> OpenApiResponse:
    """The 409 of a create of one `kind` past the account's bound (`pantheon.quotas`), for
    `extend_schema`; `frees`: what makes room."""
    return OpenApiResponse(
        OwnedLimitSerializer,
        description=f"`{kind}_limit_reached`: you already own as many {kind}s as one account "
        f"may (`limit`, the operator's `PANTHEON_MAX_{kind.upper()}S_PER_USER`); {frees} makes "
        "room. Nothing was created.",
    )


class MessageOrDetailField(serializers.JSONField):
    """A `detail` that is a message string or a coded refusal (`coded`, a serializer)."""

    coded: type[serializers.Serializer] = CodedErrorDetailSerializer


class MessageOrDetailSchema(OpenApiSerializerFieldExtension):
    target_class = MessageOrDetailField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        coded = auto_schema.resolve_serializer(self.target.coded, direction)
        return {"anyOf": [{"type": "string"}, coded.ref]}


class ErrorSerializer(serializers.Serializer):
    """Either form of `detail`: DRF's message, with its code beside it, or a coded refusal."""

    detail = MessageOrDetailField()
    # Always there beside a message (pantheon.exceptions.api_exception_handler), never beside
    # a coded refusal, whose code is in its `detail`: not required.
    code = serializers.CharField(
        required=False,
        help_text="Beside a message `detail`, DRF's code for it (`parse_error`, "
        "`not_acceptable`, `not_found`, `permission_denied`, ...); a coded `detail` holds its "
        "own.",
    )

    class Meta:
        ref_name = "Error"


class TurnConflictDetailField(MessageOrDetailField):
    """The design's plain message, or the coded refusal of a key in use (or of a cancel)."""

    coded = KeyInUseDetailSerializer


class TurnConflictSerializer(serializers.Serializer):
    """A turn's 409: `{"detail": "Turn creation conflicted …", "code", "turn_id"?}` when
    another turn of the session runs (the design's `detail`, with a code and the running
    turn beside it), or `{"detail": {"code": "idempotency_key_in_use" | "turn_cancelled",
    "message", "turn_id"?}}`."""

    detail = TurnConflictDetailField()
    code = serializers.CharField(
        required=False,
        help_text="Beside the plain `detail` (always there with it): `turn_in_progress`, "
        "another turn of the session runs (`turn_id`): follow it (`GET turns/{id}/events`) or "
        "cancel it (`POST turns/{id}/cancel`), then post again; or `turn_conflict`, a race with "
        "a claim that no longer runs (post again), or, to the request that ran a turn, its "
        "turn, stalled, was taken over by a later one.",
    )
    turn_id = serializers.UUIDField(
        required=False, help_text="With `turn_in_progress`: the session's running turn."
    )

    class Meta:
        ref_name = "TurnConflict"


class FieldErrorsSerializer(serializers.Serializer):
    """Field errors: `{"field": ["message", ...]}`, a list field's items as `{"0": [...]}`.
    One component (`FieldErrors`, FieldErrorsSchema): written inline, it was two models per
    operation in a generated client."""

    class Meta:
        ref_name = "FieldErrors"


class FieldErrorsSchema(OpenApiSerializerExtension):
    target_class = FieldErrorsSerializer

    def map_serializer(self, auto_schema, direction):
        return {
            "type": "object",
            "description": 'Field errors: `{"field": ["message", ...]}`; a list field\'s '
            'items by place: `{"field": {"0": ["message", ...]}}`.',
            "additionalProperties": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object"}]
            },
        }


class ComponentsSchema:
    """An answer's schema that names components, for `extend_schema`'s responses (inside an
    `OpenApiResponse`): built, and its components registered, with the operation's."""

    def schema(self, auto_schema) -> dict:
        raise NotImplementedError


class InvalidCredentialsSerializer(CodedErrorSerializer):
    """A wrong login's 400: DRF's `{"non_field_errors": ["Unable to log in with provided
    credentials."]}`, and the coded refusal beside it, `{"detail": {"code":
    "invalid_credentials", "message"}}`."""

    non_field_errors = serializers.ListField(child=serializers.CharField())

    class Meta:
        ref_name = "InvalidCredentials"


class BadRequestBody(ComponentsSchema):
    """A 400: DRF's message or a coded refusal (`Error`), or field errors (`FieldErrors`); an
    operation's own bodies (`own`, serializers) first."""

    def __init__(self, *own: type[serializers.Serializer]) -> None:
        self.own = own

    def schema(self, auto_schema) -> dict:
        return {
            "anyOf": [
                *(auto_schema.resolve_serializer(body, "response").ref for body in self.own),
                auto_schema.resolve_serializer(ErrorSerializer, "response").ref,
                auto_schema.resolve_serializer(FieldErrorsSerializer, "response").ref,
            ]
        }


BAD_REQUEST = BadRequestBody()


class EventStream(ComponentsSchema):
    """A `text/event-stream` answer, for `extend_schema`.

    Its body is text, which a client reads as a stream: a generated client that took the body
    for one JSON object (the schema said `type: object`) parsed the whole stream as one, and
    failed. OpenAPI 3.0 has no place for what each event of a stream holds (3.2 adds
    `itemSchema`); tools that read the schema of an event stream as one event's (schemathesis)
    find that in a second alternative, `event` (a serializer: the fields of one event as sent,
    each a text), and the events with their `data` parsed (`parsed`, a serializer) are the
    component the `x-sse-event` extension names."""

    EXTENSION = "x-sse-event"

    def __init__(self, *, event, parsed, description: str) -> None:
        self.event = event
        self.parsed = parsed
        self.description = description

    def schema(self, auto_schema) -> dict:
        return {
            "description": self.description,
            "anyOf": [
                {"type": "string", "description": "The stream, as text."},
                auto_schema.resolve_serializer(self.event, "response").ref,
            ],
            self.EXTENSION: auto_schema.resolve_serializer(self.parsed, "response").ref,
        }


_BODY_METHODS = {"POST", "PUT", "PATCH"}
_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

DESCRIPTIONS = {
    400: "Invalid input: field errors (`{field: [messages]}`); `parse_error`, malformed JSON "
    '(DRF\'s `{"detail": "JSON parse error - …", "code": "parse_error"}`); or a coded refusal: '
    "`json_too_deep`, JSON nested too deeply; `invalid_characters`, a NUL character or lone "
    "surrogate in the body or the query string; `repeated_parameter`, a query parameter given "
    "twice; `bad_request`, a `Host` this server does not answer (or another request Django "
    "refuses as suspicious).",
    401: "`not_authenticated`: no credentials; `authentication_failed`: a token unknown, "
    "signed out, rotated or revoked by a password change, or its user inactive.",
    403: "Forbidden (a cookie session without a valid CSRF token).",
    404: "Not found, or not yours (never 403, so ids leak nothing); also an unknown page or "
    "cursor of a list.",
    406: "`Accept` takes none of the types this operation answers in (q-values count); it is "
    "checked before the credentials.",
    413: "`request_too_large`: the body is over the server's size limit.",
    415: "Unsupported media type: send `application/json`.",
    429: "`throttled`: too many requests (the per-user API rate; creates and turns have "
    "rates of their own); or `too_many_invalid_tokens`: the client's address sent too many "
    "invalid API tokens lately, and every token from it waits. Retry after `Retry-After` "
    "seconds.",
    503: "`over_capacity`: the server is serving as many requests as it can; or "
    "`database_unavailable`: the request lost its database connection (a restart, a "
    "failover). Retry after `Retry-After` seconds.",
}


# Statuses whose body is always a coded refusal; the others may also be DRF's plain message.
CODED_STATUSES = {402, 413, 422, 429}


def refusals(refusals_by_status: dict[int, str]) -> dict[int, OpenApiResponse]:
    """Responses for a view's own refusals, `{status: description}`, for `extend_schema`."""
    return {
        status: OpenApiResponse(
            response=CodedErrorSerializer if status in CODED_STATUSES else ErrorSerializer,
            description=description,
        )
        for status, description in refusals_by_status.items()
    }


def bad_request(own: str, body: BadRequestBody = BAD_REQUEST) -> OpenApiResponse:
    """A view's 400 for `extend_schema`, with refusals of its own (`own`, naming their codes;
    `body`, when they have bodies of their own) besides the machinery's (DESCRIPTIONS[400], the
    same body: a message, a coded refusal or field errors)."""
    return OpenApiResponse(body, description=f"{DESCRIPTIONS[400]} {own}")


class AutoSchema(openapi.AutoSchema):
    def get_tags(self) -> list[str]:
        # An operation is grouped by the resource its path names after the version (`sessions`,
        # `turns`, ...: SPECTACULAR_SETTINGS["TAGS"]); its id keeps the version
        # (`v1_sessions_list`), so a generated client's method names stay as they were.
        parts = self._tokenize_path()
        if parts and re.fullmatch(r"v\d+", parts[0]):
            parts = parts[1:]
        return parts[:1]

    def get_paginated_name(self, serializer_name: str) -> str:
        # One name per shape: a cursor page has no `count`, a numbered page has one. The same
        # serializer is listed both ways (a room's sessions by page, the sessions by activity
        # with a cursor), and drf-spectacular keeps the first page it registers under a name.
        if isinstance(self._get_paginator(), CursorPagination):
            return f"CursorPaginated{serializer_name}List"
        return super().get_paginated_name(serializer_name)

    def _get_paginator(self):
        paginator = super()._get_paginator()
        if paginator is not None:
            # Its page's examples are links of this list (pantheon.pagination).
            paginator.schema_path = self.path
        return paginator

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        # A read-only field has no place in a request component: drf-spectacular maps it all the
        # same, then drops it, and a serializer it names stayed registered as a component no
        # schema refers to (`SeatRequest`, of a room's read-only `agents`).
        split = spectacular_settings.COMPONENT_SPLIT_REQUEST
        if split and direction == "request" and field.read_only:
            return None
        if direction == "response" and getattr(field, "null_is_left_out", False):
            # A null it takes is the field left out (pantheon.fields.NullIsLeftOut): an answer
            # never holds one.
            field = copy.copy(field)
            field.allow_null = False
        return super()._map_serializer_field(field, direction, bypass_extensions)

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "response" and isinstance(serializer, serializers.ModelSerializer):
            # A model serializer sends every field it reads, those a request may leave out
            # included (an agent's role_prompt, a room's goal): required in an answer.
            schema["required"] = sorted(schema["properties"])
        return schema

    def _get_response_for_code(
        self, serializer, status_code, media_types=None, direction="response"
    ):
        if isinstance(serializer, OpenApiResponse) and isinstance(
            serializer.response, ComponentsSchema
        ):
            schema = serializer.response.schema(self)
            serializer = OpenApiResponse(schema, serializer.description, serializer.examples)
        return super()._get_response_for_code(serializer, status_code, media_types, direction)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status, serializer in self._error_serializers().items():
            code = str(status)
            if code not in responses:
                response = OpenApiResponse(response=serializer, description=DESCRIPTIONS[status])
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        for code, response in responses.items():
            # A bodiless answer (DELETE's 204) is not built by _get_response_for_code.
            response.setdefault("headers", self._get_response_headers_for_code(code, direction))
            if code >= "400" and "content" in response:
                # Errors are JSON whatever the request accepts (a streamed turn's refusal
                # included), not one body per renderer.
                response["content"] = {"application/json": response["content"]["application/json"]}
        return dict(sorted(responses.items()))

    def _error_serializers(self) -> dict:
        errors: dict = {400: BAD_REQUEST}
        # Any operation, to a client whose Accept takes none of its renderers' types.
        errors[406] = ErrorMessageSerializer
        needs_login = not all(isinstance(p, AllowAny) for p in self.view.get_permissions())
        if needs_login:
            errors[401] = AuthenticationErrorSerializer
            # CSRF is checked for a cookie session alone: an operation that takes the token
            # only (signing out, rotating, the password) never answers this 403.
            takes_cookies = any(
                isinstance(authenticator, SessionAuthentication)
                for authenticator in self.view.get_authenticators()
            )
            if self.method in _UNSAFE_METHODS and takes_cookies:
                errors[403] = ErrorMessageSerializer
        paginated = self.method == "GET" and self._get_paginator() is not None
        if "{" in self.path or (paginated and self._is_list_view()):
            errors[404] = ErrorMessageSerializer
        if self.method in _BODY_METHODS:
            # Any body over the limit, read or not (pantheon.middleware.ApiGuardMiddleware).
            errors[413] = CodedErrorSerializer
            # A body of another type, where one is read: an operation that reads none (a
            # turn's cancel, rotating the token) ignores whatever is sent.
            if self.get_request_serializer() is not None:
                errors[415] = ErrorMessageSerializer
        if self.view.get_throttles():
            errors[429] = CodedErrorSerializer
        # Any request, when its worker is full (pantheon.capacity) or its database connection
        # is lost (pantheon.db.connection_lost).
        errors[503] = CodedErrorSerializer
        return errors

    def _get_response_headers_for_code(self, status_code, direction="response"):
        headers = super()._get_response_headers_for_code(status_code, direction)
        headers[REQUEST_ID_HEADER] = {
            "schema": {"type": "string"},
            "description": "The request's id, in every log line of the request.",
            "required": True,
        }
        if str(status_code) == "201":
            headers["Location"] = {
                "schema": {"type": "string"},
                "description": "The new object's path (`GET` it there).",
                "required": True,
            }
        if str(status_code) in ("429", "503"):
            headers["Retry-After"] = {
                "schema": {"type": "integer", "minimum": 1},
                "description": "Seconds to wait before retrying.",
                # Every 429 and 503 says when to retry (the health check's own included).
                "required": True,
            }
        return headers


class PantheonTokenScheme(TokenScheme):
    """The API token (pantheon.authentication.TokenAuthentication): `Token <key>`, or the same
    key as `Bearer <key>`."""

    target_class = "pantheon.authentication.TokenAuthentication"
    priority = 0  # above drf-spectacular's own (-1), which matches every subclass of DRF's

    def get_security_definition(self, auto_schema):
        definition = super().get_security_definition(auto_schema)
        definition["description"] = (
            'The key `POST auth/token` gives, with the prefix "Token" (`Authorization: Token '
            '<key>`) or "Bearer" (`Authorization: Bearer <key>`).'
        )
        return definition


class PantheonSessionScheme(SessionScheme):
    """The admin's cookie session (pantheon.authentication.SessionAuthentication)."""

    target_class = "pantheon.authentication.SessionAuthentication"


# --- nullable, as OpenAPI 3.0 reads it ----------------------------------------------------------

# Of what drf-spectacular writes beside a nullable field's schema, what says nothing of its values.
_ANNOTATIONS = {"nullable", "readOnly", "writeOnly", "description", "title", "deprecated"}
NULL_COMPONENT = "NullEnum"  # drf-spectacular's own, {"enum": [null]}, for nullable choices
_NULL_REF = f"#/components/schemas/{NULL_COMPONENT}"


def nullable_accepts_null(result, generator, request, public):
    """A postprocessing hook (SPECTACULAR_SETTINGS): a field drf-spectacular writes as
    `allOf: [{$ref: ...}]` with `nullable: true` beside it (a turn's `routing` and `balance`, a
    session's `room` and `agent`) is `oneOf` that reference and `NullEnum`, as drf-spectacular
    writes a nullable choice. OpenAPI 3.0.3 gives `nullable` effect only beside a `type`:
    strict validators ignored it there and refused the null the API answers. `nullable` stays,
    for the generators that read it."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    if _rewrite_nullable(result):
        schemas.setdefault(NULL_COMPONENT, {"enum": [None]})
    return result


def _rewrite_nullable(node) -> bool:
    """Rewrite every nullable schema under `node` that accepts no null; whether any was."""
    rewritten = False
    if isinstance(node, list):
        for item in node:
            rewritten |= _rewrite_nullable(item)
        return rewritten
    if not isinstance(node, dict):
        return False
    for value in node.values():
        rewritten |= _rewrite_nullable(value)
    if node.get("nullable") is not True or "type" in node:
        return rewritten
    alternatives = node.get("oneOf", node.get("anyOf"))
    if alternatives is not None:
        if {"$ref": _NULL_REF} not in alternatives:  # drf-spectacular's choices have it
            alternatives.append({"$ref": _NULL_REF})
            rewritten = True
        return rewritten
    values = {key: node.pop(key) for key in list(node) if key not in _ANNOTATIONS}
    if not values:
        return rewritten  # any value, null included
    if list(values) == ["allOf"] and len(values["allOf"]) == 1:
        values = values["allOf"][0]
    node["oneOf"] = [values, {"$ref": _NULL_REF}]
    return True


def default_beside_alternatives(result, generator, request, public):
    """A postprocessing hook (SPECTACULAR_SETTINGS): a text that may be blank, and has a pattern
    or a minimum length, is `oneOf` that text and `maxLength: 0` (drf-spectacular), its default
    left in the first alternative: a new session's `title` defaulted to "" beside a pattern that
    refuses blank text, and openapi-spec-validator refused the whole schema (a default must fit
    the schema object it is in). The default moves beside the `oneOf`, which takes it."""
    _lift_defaults(result)
    return result


def _lift_defaults(node) -> None:
    if isinstance(node, list):
        for item in node:
            _lift_defaults(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _lift_defaults(value)
    holding = [part for part in node.get("oneOf", []) if "default" in part]
    if len(holding) == 1 and "default" not in node:
        node["default"] = holding[0].pop("default")
