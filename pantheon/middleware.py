"""Request middleware: an id and a log line for every request, and the API's front door.

`RequestIdMiddleware` comes first: every response, errors from later middleware included, carries
`X-Request-ID`, and every log line written while the request runs carries the id (see
`pantheon.logging_context`). `ApiGuardMiddleware` refuses, for `/api/` paths, what DRF never
gets to see: a body over the size limit (413), query parameters holding a NUL or a lone
surrogate, or given twice (400), all as JSON; and marks the API's answers as no cache's to keep
(`Cache-Control: private, no-store`) unless their view said otherwise.
"""

import asyncio
import logging
import re
import time
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from rest_framework.exceptions import APIException, NotFound
from rest_framework.throttling import BaseThrottle

from pantheon import logging_context
from pantheon.capacity import PROCESS
from pantheon.exceptions import (
    InvalidCharacters,
    OverCapacity,
    PantheonError,
    RepeatedParameter,
    RequestTooLarge,
    SuspiciousRequest,
    error_message,
    query_has_unrenderable,
)
from pantheon.threads import BODY_TOO_LARGE

logger = logging.getLogger("pantheon.request")
# A request line keeps this much of a user agent (some run to kilobytes).
_USER_AGENT_CHARS = 200

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy's request id looks like (a UUID, a hex or base64 token, `host:counter`...).
# Anything else is replaced, so a client cannot inject text into log lines or headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")


def is_api_path(path: str) -> bool:
    return path.startswith("/api/")


# The API proper: its answers hold users' data (the schema and its docs, under /api/ too, are
# the same for everyone).
API_V1_PREFIX = "/api/v1/"
# No cache keeps them, a browser's or a proxy's: the answers hold agents, transcripts, usage.
PRIVATE = "private, no-store"


def request_id_of(request) -> str | None:
    return getattr(request, "request_id", None)


def error_response(error: PantheonError) -> JsonResponse:
    response = JsonResponse(error.as_body(), status=error.status_code)
    if error.retry_after_seconds is not None:
        response["Retry-After"] = str(error.retry_after_seconds)
    return response


def drf_error_response(error: type[APIException]) -> JsonResponse:
    """What DRF's handler (`api_exception_handler`) answers for `error`, given where no DRF
    view runs: the URL resolver's 404, Django's 403."""
    return JsonResponse(
        error_message(str(error.default_detail), error.default_code), status=error.status_code
    )


def server_error_response(request) -> JsonResponse:
    """500 `server_error`, naming the request id: its traceback is in the log under that id."""
    return JsonResponse(
        {
            "detail": {
                "code": "server_error",
                "message": "Something went wrong on our side. Quote the request id if you "
                "report it.",
                "request_id": request_id_of(request),
            }
        },
        status=500,
    )


class _SyncAndAsync:
    """A middleware that runs natively in both stacks: under ASGI a sync-only middleware would
    make Django run everything after it, the turn views included, in a thread held for the
    request's whole life."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)


class RequestIdMiddleware(_SyncAndAsync):
    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        request_id = self._request_id(request)
        started = time.monotonic()
        with logging_context.request_scope(request_id=request_id):
            response = self.get_response(request)
            return self._finish(request, response, request_id, started)

    async def __acall__(self, request):
        request_id = self._request_id(request)
        started = time.monotonic()
        with logging_context.request_scope(request_id=request_id):
            try:
                response = await self.get_response(request)
            except asyncio.CancelledError:
                # Its client hung up before an answer (a turn it started runs on, detached):
                # the request's line all the same, with nginx's status for it.
                self._log(request, _ClientGone(), started, _client_of(request))
                raise
            return self._finish(request, response, request_id, started)

    def _request_id(self, request) -> str:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        request.request_id = offered if _SANE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        return request.request_id

    def _finish(self, request, response, request_id: str, started: float):
        response[REQUEST_ID_HEADER] = request_id
        ids = dict(logging_context.current())
        client = _client_of(request)
        scope = getattr(request, "scope", None)  # ASGI's (not the WSGI test client's)
        if isinstance(scope, dict):
            scope[logging_context.SCOPE_KEY] = {"ids": ids, "client": client}
        # This line replaces Django's own "Not Found: ..." line, which it writes after the
        # middleware has returned and so without the request's ids.
        response._has_been_logged = True
        if not response.streaming:
            self._log(request, response, started, client)
            return response
        # A streamed body runs after this scope ends; give its log lines the same ids. Its
        # request line waits for the stream's end, so its duration is the whole stream's (a
        # streamed turn's, not its headers'): written when the body ends, fails or is closed
        # (its client gone), or else when the response is closed (a body never started).
        line = _Once(lambda: self._log(request, response, started, client), ids)
        wrap = _in_scope_async if response.is_async else _in_scope
        response.streaming_content = wrap(response.streaming_content, ids, line)
        response._resource_closers.append(line)
        return response

    def _log(self, request, response, started: float, client: str | None) -> None:
        status = response.status_code
        level = logging.INFO
        if status >= 400:
            level = logging.ERROR if status >= 500 else logging.WARNING
        level = getattr(response, "log_level", level)
        # Until the response is ready to send; for a stream, until it ends.
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        logger.log(
            level,
            "%s %s %s %.1f ms",  # the duration in the message too, for the text format
            request.method,
            request.path,
            status,
            duration_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "status_code": status,
                "duration_ms": duration_ms,
                # Who sent it: the address the API's limits count (REMOTE_ADDR, or the proxy's
                # X-Forwarded-For entry under PANTHEON_NUM_PROXIES), and its user agent, cut.
                "client": client,
                "user_agent": request.META.get("HTTP_USER_AGENT", "")[:_USER_AGENT_CHARS],
                **_refusal_of(response),
            },
        )


def _refusal_of(response) -> dict:
    """A refusal's machine-readable `code`, as its body says it (`{"code"}` beside DRF's
    `detail`, or `{"detail": {"code"}}`), and the running turn a 409 `turn_in_progress` names
    (`running_turn_id`): the line an operator greps for a client's 409s named neither."""
    body = getattr(response, "data", None)
    if response.status_code < 400 or not isinstance(body, dict):
        return {}
    detail = body.get("detail")
    named = detail if isinstance(detail, dict) else body
    code = named.get("code")
    if not isinstance(code, str):
        return {}
    fields = {"code": code}
    if named.get("turn_id") is not None:
        fields["running_turn_id"] = str(named["turn_id"])
    return fields


def _client_of(request) -> str | None:
    """Who sent it: the address the API's limits count (REMOTE_ADDR, or the proxy's
    X-Forwarded-For entry under PANTHEON_NUM_PROXIES)."""
    return BaseThrottle().get_ident(request)


class _ClientGone:
    """What a request's line says of a request whose client left before its answer: 499, the
    status nginx logs for a client that closed its connection (no response was sent)."""

    status_code = 499
    log_level = logging.INFO


class _Once:
    """Calls `write` the first time it is called, within the request's log ids."""

    # A log line, written on the event loop as the other request lines are: a response it
    # closes needs no trip to its request's thread for it (`pantheon.threads`).
    closes_on_the_loop = True

    def __init__(self, write, ids: dict) -> None:
        self.write, self.ids, self.done = write, ids, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            with logging_context.request_scope(**self.ids):
                self.write()


def _in_scope(chunks, ids: dict, end):
    with logging_context.request_scope(**ids):
        try:
            yield from chunks
        finally:
            end()


async def _in_scope_async(chunks, ids: dict, end):
    with logging_context.request_scope(**ids):
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            end()


class ApiGuardMiddleware(_SyncAndAsync):
    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        refusal = self._check(request)
        if refusal:
            return self._uncached(request, error_response(refusal))
        return self._uncached(request, self._json_on_the_api(request, self.get_response(request)))

    async def __acall__(self, request):
        refusal = self._check(request)
        if refusal:
            return self._uncached(request, error_response(refusal))
        response = self._json_on_the_api(request, await self.get_response(request))
        return self._uncached(request, response)

    def _uncached(self, request, response):
        """Every answer of the API proper (`/api/v1/`, the health check included: a cached one
        would hide an outage) says that no cache may keep it, unless its view said otherwise
        (`auth/token`'s `no-store`). Whoever asked: a header costs
        nothing, and telling an answer for a user from an anonymous one would read the user
        (the session's row, for the console's cookie)."""
        if request.path_info.startswith(API_V1_PREFIX) and "Cache-Control" not in response:
            response["Cache-Control"] = PRIVATE
        return response

    def _json_on_the_api(self, request, response):
        """What Django answers in HTML under /api/, in JSON: with DEBUG on (`make run`), an
        unknown path gets its HTML page of URL patterns instead of handler404, and an uncaught
        exception its traceback page (HTML, or plain text to a client that takes no HTML)
        instead of handler500 (JSON, as with DEBUG off: `pantheon.error_views`); a path
        missing its slash, an empty redirect."""
        if not is_api_path(request.path_info):
            return response
        content_type = response.get("Content-Type", "")
        debug_page = content_type.startswith(("text/html", "text/plain"))
        if settings.DEBUG and response.status_code == 500 and debug_page:
            return server_error_response(request)
        if settings.DEBUG and response.status_code == 400 and debug_page:
            return error_response(SuspiciousRequest())  # as handler400 answers it
        if not content_type.startswith("text/html"):
            return response
        if settings.DEBUG and response.status_code == 404:
            return drf_error_response(NotFound)
        if response.status_code in (301, 302, 307, 308) and "Location" in response:
            # APPEND_SLASH's redirect (`/api/schema` to `/api/schema/`): empty, labelled HTML.
            moved = JsonResponse(
                {"detail": f"Moved to {response['Location']}."}, status=response.status_code
            )
            moved["Location"] = response["Location"]
            return moved
        return response

    def _check(self, request) -> PantheonError | None:
        if getattr(request, "scope", {}).get(BODY_TOO_LARGE):
            # Cut off unread (`PantheonASGIHandler`): on any path, nothing may read what is left.
            return self._too_large()
        return self._refusal(request) if is_api_path(request.path_info) else None

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(
            "The request body is larger than this server accepts "
            f"({settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)."
        )

    def _refusal(self, request) -> PantheonError | None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads such a body as empty
        if limit is not None and length > limit:
            return self._too_large()
        if query_has_unrenderable(request.GET):
            return InvalidCharacters(
                "A query parameter holds a NUL character or a lone UTF-16 surrogate."
            )
        for key, values in request.GET.lists():
            if len(values) > 1:
                # Every parameter of this API takes one value; which of several would count
                # (Django reads the last) is not something a client should have to guess.
                return RepeatedParameter(f"The query parameter {key!r} is given more than once.")
        return None


class CapacityMiddleware(_SyncAndAsync):
    """503 `over_capacity` with a Retry-After for a request that finds its worker serving as
    many as it may (`pantheon.capacity`); after the request id and CORS, so the refusal carries
    both. Only the ASGI handler counts: elsewhere (the test client) nothing is ever refused."""

    def __init__(self, get_response, capacity=PROCESS):
        super().__init__(get_response)
        self.capacity = capacity

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        return self._refusal(request) if self.capacity.exceeded else self.get_response(request)

    async def __acall__(self, request):
        if self.capacity.exceeded:
            return self._refusal(request)
        return await self.get_response(request)

    def _refusal(self, request) -> HttpResponse:
        if is_api_path(request.path_info):
            response = error_response(OverCapacity())
        else:
            response = HttpResponse(
                "Service Unavailable", status=503, content_type="text/plain; charset=utf-8"
            )
            response["Retry-After"] = str(OverCapacity.retry_after_seconds)
        # A worker this busy sheds connections rather than keeping them alive.
        response["Connection"] = "close"
        # Shedding load is the limit doing its job, not a fault: a warning, not an error.
        response.log_level = logging.WARNING
        return response
