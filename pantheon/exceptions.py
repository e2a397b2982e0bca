"""One hierarchy for domain refusals, one handler that renders them.

Services raise these (or Django's ValidationError for a bad field), never DRF's exceptions. A
refusal answers `{"detail": {"code": ..., "message": ...}}` with its own HTTP status; a Django
ValidationError answers 400 with DRF's field-error body; anything DRF raises (validation,
authentication, 404) keeps DRF's usual body, except throttling, which gets a code
(`throttled`) next to its `Retry-After` header, and a 401, whose `detail` gets DRF's code beside
it (`not_authenticated`, `authentication_failed`). A lost database connection is no refusal but a
transient outage: 503 `database_unavailable` with a `Retry-After`, not a 500.

No error body ever echoes a character that cannot be rendered: lone surrogates (which UTF-8
cannot encode) and NULs in a detail are replaced before rendering.
"""

import logging
import math
import re
from collections.abc import Sequence

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import status
from rest_framework.exceptions import (
    APIException,
    NotFound,
    PermissionDenied,
    Throttled,
    ValidationError,
)
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error

from pantheon.capacity import RETRY_AFTER_SECONDS
from pantheon.db import connection_lost
from pantheon.figures import counted

logger = logging.getLogger(__name__)


class PantheonError(Exception):
    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "bad_request"
    default_message = "The request was refused."
    # Sent as `Retry-After` with the refusal (a transient one: a full worker, a lost database).
    retry_after_seconds: int | None = None

    def __init__(self, message: str | None = None, *, code: str | None = None):
        self.message = message or self.default_message
        if code:
            self.code = code
        super().__init__(self.message)

    def as_body(self) -> dict:
        return {"detail": {"code": self.code, "message": self.message}}


class AccountSuspended(PantheonError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "account_suspended"
    default_message = "This account is suspended."


class CreditCapExceeded(PantheonError):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    code = "credit_cap_exceeded"
    default_message = "The monthly credit cap is used up."


class UnprocessableRequest(PantheonError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY


class NoValidTaggedAgents(UnprocessableRequest):
    """Says which keys would have worked, in words and as a list a client can offer."""

    code = "no_valid_tagged_agents"
    default_message = "Manual mode needs at least one @agent_key of an agent seated in the room."

    def __init__(
        self,
        message: str | None = None,
        *,
        valid_agent_keys: Sequence[str] = (),
        tagged_in_code: bool = False,
    ):
        self.valid_agent_keys = list(valid_agent_keys)
        if message is None and self.valid_agent_keys:
            tags = ", ".join(f"@{key}" for key in self.valid_agent_keys)
            message = f"{self.default_message} Valid: {tags}."
        if message is None and tagged_in_code:
            message = self.default_message
        if tagged_in_code:
            message = f"{message} A tag in code (between backticks) does not count."
        super().__init__(message)

    def as_body(self) -> dict:
        body = super().as_body()
        body["detail"]["valid_agent_keys"] = self.valid_agent_keys
        return body


class NoRoomAgents(UnprocessableRequest):
    code = "no_room_agents"
    default_message = "The room has no agents."


class ContextBudgetExceeded(UnprocessableRequest):
    code = "context_budget_exceeded"
    default_message = "The message alone does not fit the context budget of the agents."


class ModelAliasUnavailable(UnprocessableRequest):
    code = "model_alias_disabled"
    default_message = "That model alias is disabled."


class UnknownModelAlias(UnprocessableRequest):
    code = "unknown_model_alias"
    default_message = "That model alias does not exist."


class AgentUnavailable(UnprocessableRequest):
    code = "agent_unavailable"
    default_message = "The agent of this direct session no longer exists."


class IdempotencyKeyReused(UnprocessableRequest):
    code = "idempotency_key_reused"
    default_message = (
        "This Idempotency-Key was used with a different request; use a new key for a new request."
    )


class NamesItsTurn(PantheonError):
    """A refusal about one turn, whose `detail` names it (`turn_id`) when it is known."""

    def __init__(self, message: str | None = None, *, turn_id=None):
        super().__init__(message)
        self.turn_id = turn_id

    def as_body(self) -> dict:
        body = super().as_body()
        if self.turn_id is not None:
            body["detail"]["turn_id"] = str(self.turn_id)
        return body


class IdempotencyKeyInUse(NamesItsTurn):
    """With the turn the first request claimed, once it has: a client whose connection dropped
    before the stream's `turn_started` follows it (`GET turns/{id}/events`) instead of waiting."""

    status_code = status.HTTP_409_CONFLICT
    code = "idempotency_key_in_use"
    default_message = (
        "A request with this Idempotency-Key is still running; retry when it has finished."
    )


class InvalidIdempotencyKey(PantheonError):
    code = "invalid_idempotency_key"
    default_message = "An Idempotency-Key is 1 to 255 printable ASCII characters."


class TurnConflict(PantheonError):
    """The one refusal whose `detail` is a plain string, the design's: clients match on it to
    retry. Beside it, a `code` a client can tell the cases by: `turn_in_progress` with the
    `turn_id` of the session's running turn, which blocked the claim (follow it with `GET
    turns/{id}/events`, or cancel it), or `turn_conflict`: a race with a claim that is no longer
    running, or, to the request that ran a turn, its stalled turn taken over by a later one."""

    status_code = status.HTTP_409_CONFLICT
    code = "turn_conflict"
    default_message = "Turn creation conflicted with concurrent writes. Please retry."

    def __init__(self, message: str | None = None, *, running_turn_id=None):
        super().__init__(message, code="turn_in_progress" if running_turn_id else None)
        self.running_turn_id = running_turn_id

    def as_body(self) -> dict:
        body = {"detail": self.message, "code": self.code}
        if self.running_turn_id is not None:
            body["turn_id"] = str(self.running_turn_id)
        return body


class TurnCancelled(NamesItsTurn):
    """The request that ran a turn, when another request cancelled it while it ran: its user's
    cancel (`POST turns/{id}/cancel`), a delete of its session or room, or the account's
    closing in the console. One message for all three: it said the session was free to a
    client whose session had just been deleted."""

    status_code = status.HTTP_409_CONFLICT
    code = "turn_cancelled"
    default_message = (
        "The turn was cancelled while it ran: by its user (POST turns/{id}/cancel), by a delete "
        "of its session or room, or as its account was closed. It ended interrupted, with its "
        "finished answers kept."
    )


class TurnNotRunning(NamesItsTurn):
    """A cancel of a turn that has ended already (it finished, failed, or was ended otherwise,
    a cancel before included): nothing was changed; `status` says how it ended."""

    status_code = status.HTTP_409_CONFLICT
    code = "turn_not_running"

    def __init__(self, *, turn_id, turn_status: str):
        super().__init__(
            f"The turn is not running (it is {turn_status}): nothing to cancel.", turn_id=turn_id
        )
        self.turn_status = turn_status

    def as_body(self) -> dict:
        body = super().as_body()
        body["detail"]["status"] = self.turn_status
        return body


class WrongCurrentPassword(PantheonError):
    """`POST auth/password` with a `current_password` that is not the account's: nothing was
    changed, and the try counts under the login limits as a failed login does."""

    code = "wrong_current_password"
    default_message = "The current password is wrong: the password was not changed."


class InvalidCredentials(PantheonError):
    """A login (`POST auth/token`) whose username and password name no active account. Its
    body keeps DRF's form, `{"non_field_errors": [...]}`, which clients have read since the
    first login, and has the coded refusal every other refusal has beside it."""

    code = "invalid_credentials"
    default_message = "Unable to log in with provided credentials."

    def as_body(self) -> dict:
        return {"non_field_errors": [self.message], **super().as_body()}


class Gone(PantheonError):
    """The object was deleted by another request while this one worked on it: the same 404
    (and body) as if it had been gone from the start."""

    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"
    default_message = "Not found."

    def as_body(self) -> dict:
        return error_message(self.message, self.code)


class NoSummaryYet(PantheonError):
    """A session of the caller's that has no summary yet: a 404 with a code, so a client tells
    it from an unknown session's ("Not found.") without reading the message."""

    status_code = status.HTTP_404_NOT_FOUND
    code = "no_summary_yet"
    default_message = "This session has no summary yet."


class TooManyFollows(PantheonError):
    """A user following as many turns' events on one worker as it lets one user follow
    (`PANTHEON_MAX_FOLLOWS_PER_USER`): followers are not throttled by rate, and each holds a
    place among the worker's requests for as long as its turn runs."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "too_many_follows"
    retry_after_seconds = 5

    def __init__(self, limit: int):
        super().__init__(
            f"You already hold {counted(limit, 'stream')} of turns' events open on this "
            "server, the most one user may: close a stream you no longer read, then retry."
        )


class OwnedLimitReached(PantheonError):
    """A create past what one account may own (`pantheon.quotas`): its code names what
    (`agent_limit_reached`, `room_limit_reached`, `session_limit_reached`), `limit` how many.
    A 409: it conflicts with what the account holds, and a delete makes room for it (no
    `Retry-After`: waiting frees nothing)."""

    status_code = status.HTTP_409_CONFLICT

    def __init__(self, *, kind: str, limit: int, free_one: str):
        super().__init__(
            f"You already have {counted(limit, kind)}, the most one account may: {free_one}, "
            "then retry.",
            code=f"{kind}_limit_reached",
        )
        self.limit = limit

    def as_body(self) -> dict:
        body = super().as_body()
        body["detail"]["limit"] = self.limit
        return body


class OverCapacity(PantheonError):
    """A worker already serving GUNICORN_WORKER_CONNECTIONS requests (`pantheon.capacity`)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "over_capacity"
    default_message = "This server is serving as many requests as it can. Try again in a moment."
    retry_after_seconds = RETRY_AFTER_SECONDS


class TurnInterrupted(PantheonError):
    """The worker stopped (a deploy, a restart) while the turn ran, after waiting for it as long
    as gunicorn's graceful_timeout allows (`pantheon.draining`)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "turn_interrupted"
    default_message = (
        "The server restarted while this turn ran: it ended interrupted, with its finished "
        "steps kept and the session free, unless it finished at that very moment. Post it "
        "again: with the same Idempotency-Key, a turn that finished answers instead."
    )
    # An operator's deploy, not a server fault: its request line is a warning.
    log_level = logging.WARNING
    # Another worker (or host) takes it as soon as this one has stopped taking requests.
    retry_after_seconds = RETRY_AFTER_SECONDS


class TurnRecovered(TurnInterrupted):
    """An operator's `recover_turns` ended the turn while its worker waited on a provider (an age
    shorter than a call can take interrupts live turns): to its client as to one whose server
    restarted, a 503 `turn_interrupted`."""

    default_message = (
        "The turn was ended while it waited on its provider (an operator took it for stalled): "
        "it ended interrupted, with its finished steps kept and the session free. Post it "
        "again: with the same Idempotency-Key it runs afresh."
    )


class DatabaseUnavailable(PantheonError):
    """The request lost its database connection, or got none (`pantheon.db.connection_lost`):
    PostgreSQL restarted, failed over or ended the connection. Only requests under way at that
    moment meet it: the pool checks each connection it hands out and replaces a dead one."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "database_unavailable"
    default_message = (
        "The database connection was lost while this request ran. Nothing it did was kept "
        "unless it finished; retry in a moment."
    )
    # A restart or a failover is seconds long; the pool reconnects as soon as it is over.
    retry_after_seconds = 2


class RequestTooLarge(PantheonError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "request_too_large"
    default_message = "The request body is larger than this server accepts."


class SuspiciousRequest(PantheonError):
    """What Django refuses as suspicious before any view (its 400): a Host header this server
    does not answer (ALLOWED_HOSTS), more form fields or files than it reads, and the like."""

    code = "bad_request"
    default_message = (
        "The request was refused: its Host is not one this server answers, or it is otherwise "
        "malformed in a way the server will not serve."
    )


class InvalidCharacters(PantheonError):
    code = "invalid_characters"
    default_message = (
        "The request holds a NUL character or a lone UTF-16 surrogate, which no field accepts."
    )


class RepeatedParameter(PantheonError):
    code = "repeated_parameter"
    default_message = "A query parameter is given more than once."


class JsonTooDeep(PantheonError):
    code = "json_too_deep"
    default_message = "The JSON body is nested too deeply."


# What UTF-8 cannot encode (lone surrogates) and what PostgreSQL cannot store in text (NUL).
UNRENDERABLE = re.compile("[\x00\ud800-\udfff]")


def has_unrenderable(text: str) -> bool:
    return UNRENDERABLE.search(text) is not None


def query_has_unrenderable(query) -> bool:
    """Whether a query string (a QueryDict) holds a NUL or a lone surrogate, in a name or a
    value: PostgreSQL refuses such a text, and no error body can echo it."""
    return any(
        has_unrenderable(key) or any(has_unrenderable(value) for value in values)
        for key, values in query.lists()
    )


def renderable(value):
    """`value` (an error detail: str, list, dict) with every unrenderable character replaced."""
    if isinstance(value, str):
        return UNRENDERABLE.sub("\ufffd", value) if has_unrenderable(value) else value
    if isinstance(value, dict):
        return {renderable(key): renderable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [renderable(item) for item in value]
    return value


def error_message(message: str, code: str) -> dict:
    """The body of an error DRF words as one sentence (`{"detail": "Not found."}`), with its
    machine-readable code beside it: the 404 of a deleted object the same as of an unknown one
    or an unknown path's."""
    return {"detail": renderable(message), "code": code}


def throttled_body(seconds: int, code: str = "throttled") -> dict:
    retry = f"Retry in {counted(seconds, 'second')}."
    message = {
        "throttled": f"Too many requests. {retry}",
        "too_many_invalid_tokens": "Too many requests with an invalid API token from your "
        f"address: every token from it is refused for now. {retry}",
    }[code]
    return {"detail": {"code": code, "message": message}}


class InvalidTokensThrottled(Throttled):
    """A request refused before its token was looked up: its address sent too many invalid
    tokens lately (`pantheon.throttling.InvalidTokenThrottle`)."""

    default_code = "too_many_invalid_tokens"


# What `api_exception_handler` answers as a client error: a refusal of the request, not a
# failure of the server.
REFUSALS = (
    PantheonError,
    APIException,
    DjangoValidationError,
    Http404,
    DjangoPermissionDenied,
)


def api_exception_handler(exc, context):
    # Imported here: rest_framework.views loads the API's parsers, which raise these errors.
    from rest_framework.views import exception_handler

    if connection_lost(exc):
        # Not a bug, but an outage an operator wants to see, with the query it cut short.
        logger.error("the database connection was lost: answered 503", exc_info=exc)
        exc = DatabaseUnavailable()
    if isinstance(exc, PantheonError):
        # A refusal's message may quote the request (an alias name, say).
        refusal = Response(renderable(exc.as_body()), status=exc.status_code)
        if hasattr(exc, "log_level"):
            # The request line's level (pantheon.middleware).
            refusal.log_level = exc.log_level  # type: ignore[attr-defined]
        if exc.retry_after_seconds is not None:
            refusal["Retry-After"] = str(exc.retry_after_seconds)
        return refusal
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(detail=as_serializer_error(exc))
    if isinstance(exc, Http404):
        # Django's get_object_or_404 names the model ("No Turn matches the given query."):
        # the one 404 of an object unknown, another user's or deleted meanwhile (`Gone`) is
        # DRF's "Not found.", as an unknown path's.
        exc = NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = PermissionDenied()  # as DRF's handler would, but here its detail is read below
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, Throttled):
        # DRF rounds the wait up to whole seconds; always say when to come back.
        seconds = max(1, math.ceil(getattr(exc, "wait", None) or 1))
        response["Retry-After"] = str(seconds)
        response.data = throttled_body(seconds, getattr(exc, "default_code", "throttled"))
    elif isinstance(getattr(exc, "detail", None), str):
        # DRF's `{"detail": "…"}` (DESIGN's), with DRF's own code beside it, as every other
        # refusal has one: `not_authenticated` (no credentials), `authentication_failed` (a
        # token unknown, revoked, replaced, or its user inactive), `permission_denied`,
        # `not_found`, `method_not_allowed`, `not_acceptable`, `unsupported_media_type`,
        # `parse_error`. A field error's body (a dict or list) is left as DRF gives it.
        response.data = error_message(str(exc.detail), exc.get_codes())
    else:
        response.data = renderable(response.data)
    return response
