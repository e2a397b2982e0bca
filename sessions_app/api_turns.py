"""The turn endpoints, asynchronous: a turn waits on its providers for seconds, so its request
holds a coroutine, not a thread or a database connection.

- `POST sessions/{id}/turns` runs a turn: JSON (201 with the whole turn), or with
  `Accept: text/event-stream` its events as Server-Sent Events. Refusals, conflicts and
  idempotent replays are plain HTTP answers before any stream starts.
- `GET sessions/{id}/turns` lists the session's turns.
- `GET turns/{id}/events` replays a turn's events, finished or running, from any host
  (`Last-Event-ID` resumes).
- `POST turns/{id}/cancel` ends a running turn at its user's word.

A turn runs detached from its request: a client that disconnects (or a proxy that cuts a
stream) never stops it; its messages and ledger rows are stored all the same. Its user's
cancel does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from inspect import iscoroutinefunction
from types import MappingProxyType
from typing import Any
from uuid import UUID

from adrf.generics import GenericAPIView as AsyncGenericAPIView
from adrf.views import APIView as AsyncAPIView
from django.conf import settings
from django.db import DatabaseError, transaction
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.exceptions import NotAcceptable
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pantheon import draining, logging_context
from pantheon.authentication import still_signed_in
from pantheon.db import (
    OUTAGE_RETRY_SECONDS,
    carry_back,
    connection_lost,
    database,
    outage_pause,
    release_connection,
)
from pantheon.exceptions import REFUSALS, TurnInterrupted, TurnNotRunning
from pantheon.locations import location
from pantheon.middleware import PRIVATE
from pantheon.negotiation import answer_in_json
from pantheon.schema import (
    TurnConflictSerializer,
    TurnNotRunningSerializer,
    TurnRefusalSerializer,
    bad_request,
    refusals,
)
from pantheon.threads import own_thread, rendered_here
from pantheon.throttling import ApiRateThrottle, TurnRateThrottle
from sessions_app import events, following, idempotency, selectors, services
from sessions_app.event_schema import TURN_EVENT_STREAM
from sessions_app.models import IdempotencyKey, Turn, TurnFailure, TurnStatus
from sessions_app.selectors import TurnState
from sessions_app.serializers import (
    TurnCreateSerializer,
    TurnSerializer,
    turn_body,
)
from sessions_app.turns import (
    TurnListener,
    TurnOutcome,
    TurnRunner,
    turn_prepare,
)

logger = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
EVENTS_ONLY = "A turn's events are answered as text/event-stream only."
# What a retry gets after a request that started and then broke (a bug; a lost database
# connection frees the key instead).
SERVER_ERROR_BODY = {
    "detail": {"code": "server_error", "message": "The turn failed on the server."}
}
# A stream's Cache-Control is the API's (private, no-store: `ApiGuardMiddleware`), and says
# `no-transform`: a compressing proxy (a Node front end's `compression()`, a CDN) gzips
# text/event-stream as any text and holds the deltas in its compressor until the turn ends,
# unless told not to transform it. `X-Accel-Buffering` is nginx's own switch for its buffer.
SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": f"{PRIVATE}, no-transform"}


class EventStreamRenderer(BaseRenderer):
    """Lets `Accept: text/event-stream` through content negotiation. The stream itself is a
    StreamingHttpResponse; anything else (an error before the stream) is answered as JSON."""

    media_type = EVENT_STREAM
    format = "sse"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data, renderer_context=renderer_context)


def _detached(
    work: Coroutine[Any, Any, Any], *, answered: Callable[[], bool] | None = None
) -> asyncio.Task:
    """Run `work` to its end whatever happens to the request that started it (a stopping
    worker waits for it, then cancels it: `pantheon.draining`). `answered`: whether the
    request is still there to answer with the work's failure, which it logs with its 5xx."""
    task = draining.detach(_on_its_own_thread(work))
    task.add_done_callback(functools.partial(_finished, answered=answered))
    return task


async def _on_its_own_thread(work: Coroutine[Any, Any, Any]) -> Any:
    """The turn's database sections run on a thread of the turn's own, not the request's:
    a client that hangs up ends its request (and frees that thread) while the turn goes on."""
    async with own_thread():
        return await work


def _finished(task: asyncio.Task, *, answered: Callable[[], bool] | None = None) -> None:
    if answered is not None and answered():
        return
    if not task.cancelled() and isinstance(task.exception(), Exception):
        # Its request is gone, or answered already (a stream): say what became of the turn.
        # Refusals (a session not found included) are ordinary: they are logged with the
        # request, as its 4xx.
        error = task.exception()
        if not isinstance(error, REFUSALS):
            logger.error("a detached turn failed", exc_info=error)


class _AsyncTurnView:
    """DRF's checks (authentication, permissions, throttles) run inside each handler's first
    database section, with the handler's own reads: one thread hop instead of two. Every
    section hands its connection back when it ends (`database`)."""

    async def async_dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)  # type: ignore[attr-defined]
        self.request = request
        self.headers = self.default_response_headers  # type: ignore[attr-defined]
        try:
            method = request.method.lower()
            handler = None
            if method in self.http_method_names:  # type: ignore[attr-defined]
                handler = getattr(self, method, None)
            if handler is None:
                handler = self.http_method_not_allowed  # type: ignore[attr-defined]
            if iscoroutinefunction(handler):
                response = await handler(request, *args, **kwargs)
            else:  # OPTIONS, a 405: DRF's own, in one section with the checks
                response = await database(self._sync_handler)(handler, request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)  # type: ignore[attr-defined]
        self.response = self.finalize_response(request, response, *args, **kwargs)  # type: ignore[attr-defined]
        if request.method == "POST":  # a turn's answer, or a cancel's: a small body
            return rendered_here(request, self.response)
        return self.response

    def check_throttles(self, request):
        """DRF's check when every throttle is synchronous (ours are). adrf's own hops to the
        event loop and back for its asynchronous throttles even when there are none: the
        section's thread, holding its place at the gate, would wait for a busy loop."""
        throttles = self.get_throttles()  # type: ignore[attr-defined]
        if any(_asynchronous(type(throttle)) for throttle in throttles):
            return super().check_throttles(request)  # type: ignore[misc]
        return APIView.check_throttles(self, request)  # type: ignore[arg-type]

    def _sync_handler(self, handler, request, *args, **kwargs):
        self.initial(request, *args, **kwargs)  # type: ignore[attr-defined]
        return handler(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        # A refusal of a streamed request is a plain JSON answer, not an event stream; so is
        # the 406 of a request that accepts neither (DRF would label it with the first renderer).
        negotiated = getattr(request, "accepted_renderer", None)
        if isinstance(response, Response) and (
            negotiated is None or isinstance(negotiated, EventStreamRenderer)
        ):
            answer_in_json(request)
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


@functools.cache
def _asynchronous(throttle: type) -> bool:
    """Whether a throttle class's check is a coroutine (adrf's kind): asked once a class."""
    return iscoroutinefunction(throttle.allow_request)


class TurnOrReplayRateThrottle(TurnRateThrottle):
    """The turn rate, which a retry whose Idempotency-Key holds the first request's answer
    never exceeds: it replays that answer and calls no provider, and a client whose network
    dropped the answer retries with its key as README tells it to (it got 429 for the answer
    it was owed). Asked only of a request the rate refuses: no read for the others."""

    def allow_request(self, request, view) -> bool:
        if super().allow_request(request, view):
            return True
        return idempotency.idempotency_answer_stored(
            user=request.user, key=idempotency.idempotency_key_of(request)
        )


class SessionTurnsView(_AsyncTurnView, mixins.ListModelMixin, AsyncGenericAPIView):
    """`GET sessions/{id}/turns` lists turns; `POST` runs one (throttled per user): each
    method's schema says what it does."""

    serializer_class = TurnSerializer
    renderer_classes = [JSONRenderer, EventStreamRenderer]
    throttle_classes = [TurnOrReplayRateThrottle]
    log_ids: Mapping[str, str] = MappingProxyType({})  # what `_start` bound for the logs
    # What a claim that broke may have claimed, when the database was away to end it.
    broken_claim: tuple[TurnRunner | None, IdempotencyKey | None] | None = None

    def get_serializer_class(self):
        return TurnCreateSerializer if self.request.method == "POST" else TurnSerializer

    def get_throttles(self):
        # Running a turn spends on providers: the turn rate, and no other (no second
        # statement on a turn's path). Listing turns is any other request.
        if self.request is not None and self.request.method == "POST":
            return super().get_throttles()
        return [ApiRateThrottle()]

    def get_renderers(self):
        # Only running a turn streams; the list is JSON.
        if self.request is not None and self.request.method == "POST":
            return super().get_renderers()
        return [JSONRenderer()]

    def get_queryset(self):
        session = get_object_or_404(
            selectors.sessions_for_user(user=self.request.user), pk=self.kwargs["session_id"]
        )
        logging_context.bind(session_id=session.pk)  # the caller's (a 404 otherwise)
        return selectors.turns_for_user(user=self.request.user).filter(session=session)

    @extend_schema(
        description="The session's turns, oldest first (numbered pages), each with its "
        "messages, `routing`, `usage` and `status`; `balance` is null (it is in the answer "
        "that ran the turn only)."
    )
    async def get(self, request: Request, session_id) -> Response:
        return await database(self._list)(request)

    def _list(self, request: Request) -> Response:
        self.initial(request)
        return self.list(request)

    @extend_schema(
        description="Run a turn: `message`, and `model_alias_override` (an enabled alias, in any "
        'case, for every answer of this turn; left out, "" or null: each agent\'s own). Who '
        "answers is the room's mode (a `pending_mode` takes effect with this turn): `manual`, "
        "the agents the message tags with `@agent_key`, in tag order; `roundtable`, every "
        "seated agent in seat order; `orchestrator`, those a manager model chooses (the turn's "
        "`routing`); a direct session, its agent. Refusals (402, 403, 422) come before any "
        "write or LLM call, a conflict (409) before any LLM call. "
        "The 201 is the whole turn with `balance` (the month's credits after it, the cap, "
        "`low_balance`), so a client can warn before the 402; with `Accept: text/event-stream` "
        "(or `format=sse`) it is the turn's events as they happen. An `Idempotency-Key` makes "
        "retries safe. Throttled per user.",
        request=TurnCreateSerializer,
        responses={
            (201, "application/json"): OpenApiResponse(TurnSerializer, description="The turn."),
            (201, EVENT_STREAM): OpenApiResponse(
                TURN_EVENT_STREAM,
                description="With `Accept: text/event-stream` (or `format=sse`): the turn's "
                "events as Server-Sent Events. A client generated from this schema may read "
                "every 201 as the JSON turn (one content type per status): it reads the stream "
                "with its HTTP client.",
            ),
            400: bad_request(
                "Or `invalid_idempotency_key`: the Idempotency-Key header is not 1 to 255 "
                "printable ASCII characters, or is given more than once."
            ),
            **refusals(
                {
                    402: "`credit_cap_exceeded`: the monthly credit cap is used up (turns in "
                    "progress count with their worst case).",
                    403: "`account_suspended`, or a cookie session without a CSRF token.",
                    406: "`Accept` takes neither application/json nor text/event-stream "
                    "(q-values count) and no `format` says which: no turn is run.",
                    503: "`over_capacity`: the server is serving as many requests as it can; "
                    "retry after `Retry-After` seconds. Or `turn_interrupted`: the server "
                    "restarted while the turn ran (a deploy), or an operator's `recover_turns` "
                    "ended it while it waited on its provider, and the turn ended `interrupted` "
                    "with its finished steps kept: post it again (its Idempotency-Key runs it "
                    "afresh). Or `database_unavailable`, with `Retry-After`: the request lost "
                    "its database connection (a restart, a failover); a turn it had claimed "
                    "ended `interrupted` the same way, and its Idempotency-Key runs it afresh "
                    "(or answers with it, had it finished just then).",
                }
            ),
            409: OpenApiResponse(
                TurnConflictSerializer,
                description="Another turn of this session is running: "
                '`{"detail": "Turn creation conflicted with concurrent writes. '
                'Please retry.", "code": "turn_in_progress", "turn_id": …}` (the design\'s '
                "`detail`, with the running turn beside it: follow it with `GET "
                "turns/{id}/events`, or cancel it with `POST turns/{id}/cancel`; no "
                '`Retry-After`, as how long it runs is not known), or `"code": '
                '"turn_conflict"` (a race with a claim that no longer runs: post again; or, '
                "to the request that ran a turn, its stalled turn was taken over by a later "
                "one); or `idempotency_key_in_use`: the first request with "
                "this Idempotency-Key is still running, with `turn_id` once it has claimed "
                "its turn (follow it with `GET turns/{id}/events`); or `turn_cancelled`, with "
                "`turn_id`: its user cancelled the turn this request ran, which ended "
                "`interrupted` (its stream, if streamed, ends with `turn_failed` of that code).",
            ),
            422: OpenApiResponse(
                TurnRefusalSerializer,
                description="`no_valid_tagged_agents` (with `valid_agent_keys`), "
                "`no_room_agents`, `context_budget_exceeded`, `model_alias_disabled`, "
                "`unknown_model_alias`, `agent_unavailable`, or `idempotency_key_reused`: the "
                "key was used with another request (another message or override; "
                '`"model_alias_override": ""` or `null` is the field left out, and an alias in '
                "another case is the alias).",
            ),
        },
        parameters=[
            OpenApiParameter(
                "format",
                str,
                OpenApiParameter.QUERY,
                enum=["json", "sse"],
                description="The answer's form, in place of `Accept` (whatever it says): `sse` "
                "streams the turn's events, `json` answers the turn.",
            ),
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "pattern": "^[!-~]{1,255}$", "maxLength": 255},
                OpenApiParameter.HEADER,
                description="Retries with the same key and body replay the first answer "
                "(kept 24 hours at least). Any other key, or the header given more than once "
                "(the server would read its values joined by a comma, as one key), is 400 "
                "`invalid_idempotency_key`.",
            ),
            OpenApiParameter(
                "Idempotent-Replayed",
                {"type": "string", "enum": ["true"]},
                OpenApiParameter.HEADER,
                response=[201],
                description="`true` on a retry's answer: the first request's turn, replayed "
                "(no new turn, no LLM call). Absent on the answer that ran the turn.",
            ),
        ],
    )
    async def post(self, request: Request, session_id):
        # Everything from DRF's checks on runs detached: once claimed, the turn runs to its end
        # whatever becomes of this request. A streamed request answers once the turn is
        # claimed (`stream`); anything else answers when the turn ends.
        stream: asyncio.Future[StreamingHttpResponse] = asyncio.get_running_loop().create_future()
        # The body, read now: the turn runs detached, and a client that hangs up at once has
        # its request's body closed by Django's handler before the turn's first section reads
        # it (the turn never ran: "I/O operation on closed file"). It is in memory already.
        request.body  # noqa: B018
        waiting = True
        left_to_us = False  # the turn's callback left its failure to this request

        def answered() -> bool:
            nonlocal left_to_us
            left_to_us = waiting and not stream.done()
            return left_to_us

        turn = _detached(self._post(request, session_id, stream), answered=answered)
        try:
            await asyncio.wait({stream, turn}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The request is gone (its client hung up, say): the turn's failure is its own to
            # log, here if its callback has already left it to this request.
            waiting = False
            if left_to_us:
                _finished(turn)
            # The request's line (499) names the user, the session and the turn as an
            # answered request's does.
            logging_context.bind(**self.log_ids)
            raise
        # What the turn's first section bound (the user, the session and turn once claimed)
        # labels this request's own log lines too.
        logging_context.bind(**self.log_ids)
        if stream.done():
            return stream.result()
        if turn.cancelled():  # the worker is stopping: the turn ended `interrupted`
            raise TurnInterrupted()
        return turn.result()

    def _streamed(self, request: Request) -> bool:
        return isinstance(request.accepted_renderer, EventStreamRenderer)

    async def _post(self, request: Request, session_id, stream: asyncio.Future) -> Any:
        # Its own task, in a context carried back here as a plain await would have it (the
        # log context's ids the section binds).
        context = contextvars.copy_context()
        starting = asyncio.get_running_loop().create_task(
            database(self._start)(request, session_id), context=context
        )
        try:
            start = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # The worker is stopping while the first section runs: the section goes on in its
            # thread (a thread cannot be stopped midway), and a turn it claims has no one to
            # run it; it would block its session until the stale limit. It is ended at once,
            # as a turn interrupted by the stop is, and its key freed.
            await _interrupt_what_it_claims(starting)
            raise
        except Exception:
            if self.broken_claim is not None:  # the database was away to end it: once back
                _end_once_the_database_is_back(*self.broken_claim)
            raise
        finally:
            if starting.done():
                carry_back(context)
            self.log_ids = logging_context.current()
        if isinstance(start, idempotency.Replay):
            return await self._replayed(request, start, streamed=self._streamed(request))
        runner, record = start
        if not self._streamed(request):
            return await self._turn(runner, record)
        live = _LiveEvents()
        stream.set_result(_event_stream(live.stream(), request, created=runner.turn.pk))
        if record is None:
            return await self._turn(runner, record, TurnListener(send=live.send))
        # The turn's last event waits until its key is settled: a client that retries as soon
        # as its stream ends (after `turn_failed` `database_unavailable`, say) finds the key
        # freed or answering, not still running (409 `idempotency_key_in_use`). Unless the
        # database is still away then: the key is settled in the background once it is back,
        # and a retry in those seconds may meet the 409.
        last: list[events.TurnEvent] = []

        def send(event: events.TurnEvent) -> None:
            if event.id == events.TURN_ENDED_ID:
                last.append(event)
            else:
                live.send(event)

        try:
            return await self._turn(runner, record, TurnListener(send=send))
        finally:
            for event in last:
                live.send(event)

    def _start(self, request: Request, session_id) -> tuple | idempotency.Replay:
        """One section before the turn's provider calls: DRF's checks, the session, the body,
        the Idempotency-Key, the turn's plan (its refusals) and its claim (a 409 when another
        turn of the session runs). A refused or conflicting turn frees the key, and so does a
        claim that broke."""
        self.initial(request)
        session = selectors.session_for_turn(user=request.user, session_id=session_id)
        # The caller's session (a 404 otherwise): its refusals' lines name it too.
        logging_context.bind(session_id=session.pk)
        body = turn_body(request.data)
        record: IdempotencyKey | None = None
        runner: TurnRunner | None = None
        key = idempotency.idempotency_key_of(request)
        if key is not None:
            # The session's own path: an id spelt in capitals is the same request.
            path = reverse("session-turns", kwargs={"session_id": session.pk})
            state = TurnState.of(session)
            begun = idempotency.idempotency_begin(
                user=request.user,
                key=key,
                # What the body means, not its bytes: `"model_alias_override": ""` or null is the
                # field left out, "QWEN" is qwen (as the serializer reads them). A key stored by
                # the body sent (before) still matches it.
                fingerprint=idempotency.request_fingerprint(
                    method=request.method,
                    path=path,
                    body=idempotency.turn_meaning(body),
                ),
                alike=[
                    idempotency.request_fingerprint(
                        method=request.method, path=path, body=request.data
                    )
                ],
                now=state.now(),
                turn_in_progress=state.turn_in_progress(),
            )
            if isinstance(begun, idempotency.Replay):
                # Its access line names the turn it answers with too.
                logging_context.bind(turn_id=begun.turn_id)
                return begun
            record = begun
        try:
            runner = TurnRunner(
                turn_prepare(
                    session=session,
                    user=request.user,
                    user_input=body["message"],
                    model_alias_override=body["model_alias_override"],
                )
            )
            runner.claim(
                also=None
                if record is None
                else functools.partial(idempotency.idempotency_link, record=record)
            )
        except REFUSALS:
            if record is not None:
                idempotency.idempotency_release(record=record)
            raise
        except Exception:
            # The claim broke (its database connection dropped, say). Its transaction went
            # with it, or its COMMIT went through as the connection dropped: the request cannot
            # tell. Whatever it claimed is ended and the key freed, as for a refusal, or the
            # session would refuse new turns (409) and the key answer `idempotency_key_in_use`
            # until the stale limit, with no one running the turn.
            if not _end_and_settle_now(runner, record):
                self.broken_claim = (runner, record)
            raise
        return runner, record

    async def _turn(
        self,
        runner: TurnRunner,
        record: IdempotencyKey | None,
        listener: TurnListener | None = None,
    ) -> Response:
        """The claimed turn, and what retries with its Idempotency-Key will get: its answer
        (a 500 included), or nothing if it ended in a conflict (taken over as stale) or was
        interrupted: by its worker stopping, or by `recover_turns` while its call ran."""
        try:
            outcome: TurnOutcome = await runner.run(listener)
        except REFUSALS:
            if record is not None:
                await database(idempotency.idempotency_release)(record=record)
            raise
        except asyncio.CancelledError:
            # The worker is stopping: a retry with the key runs the interrupted turn afresh,
            # as after a crash, or gets its answer if it ended on its own just then.
            if record is not None:
                await database(idempotency.idempotency_settle_interrupted)(
                    record=record, turn_id=_turn_id(runner)
                )
            raise
        except Exception as exc:
            if connection_lost(exc):
                # A transient outage, answered 503 (`pantheon.exceptions`): the retry runs the
                # interrupted turn afresh, or gets it if it had finished after all. A turn left
                # running (the database is still away) settles its key with its ending, in the
                # background: a try here would keep the client waiting one more pool timeout.
                settled = not runner.left_running and (
                    record is None or await database(_end_and_settle_now)(runner, record)
                )
                if not settled:
                    _end_once_the_database_is_back(runner, record)
            elif record is not None:
                await database(idempotency.idempotency_finish)(
                    record=record, status=500, body=SERVER_ERROR_BODY
                )
            raise
        body = outcome.body
        if record is not None:
            try:
                await database(idempotency.idempotency_finish)(
                    record=record, status=201, body=body, turn_id=outcome.turn.pk
                )
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                # The turn is done and its answer in hand: the client gets it, and the key
                # keeps it for retries once the database answers again.
                logger.warning("turn %s: could not store its answer for its key", runner.turn.pk)
                _store_answer_once_the_database_is_back(record, outcome)
        return Response(
            body, status=status.HTTP_201_CREATED, headers=location("turn-detail", outcome.turn.pk)
        )

    async def _replayed(self, request: Request, replay: idempotency.Replay, *, streamed: bool):
        if streamed and replay.status == status.HTTP_201_CREATED:
            # Its events read before the stream begins (a database lost meanwhile is a 503).
            turn, replayed = await database(_turn_and_its_events)(replay.turn_id)
            # Its last event carries the stored answer, as the JSON replay does (its balance).
            answered = following.turn_events(
                turn, last_event_id=0, answer=replay.body, replay=replayed
            )
            response = _event_stream(answered, request, created=turn.pk)
        elif replay.status == status.HTTP_201_CREATED and replay.turn_id is not None:
            # (A key stored before keys named their turn has nowhere to point.)
            response = Response(
                replay.body, status=replay.status, headers=location("turn-detail", replay.turn_id)
            )
        else:
            response = Response(replay.body, status=replay.status)
        response["Idempotent-Replayed"] = "true"
        return response


def _turn_and_its_events(turn_id: UUID) -> tuple[Turn, events.Replay | None]:
    """A turn and, once it has ended, its events (`following.turn_events`'s `replay`)."""
    turn = Turn.objects.get(pk=turn_id)
    return turn, _events_if_ended(turn)


def _events_if_ended(turn: Turn) -> events.Replay | None:
    """The events of `turn` if it has ended, read before its stream begins (a database lost
    on the way is then the 503 `database_unavailable` every request answers, not a stream
    broken off after its headers); None for a running one, whose stream watches it."""
    return None if turn.status == TurnStatus.RUNNING else events.turn_replay(turn)


def _end_and_settle_now(runner: TurnRunner | None, record: IdempotencyKey | None) -> bool:
    """`_end_and_settle` after a lost connection (a broken claim's, a turn's), on a connection
    of its own. Whether it could be done: if the database is still away, the request reports
    its own error and the worker does this once the database is back."""
    if runner is None and record is None:
        return True
    release_connection()
    try:
        _end_and_settle(runner, record)
    except DatabaseError:
        logger.warning("turn %s: could not write its end yet", _turn_id(runner), exc_info=True)
        return False
    return True


async def _interrupt_what_it_claims(starting: asyncio.Future) -> None:
    """After the request's cancellation: the turn the first section claims (if any) ended
    `interrupted`, its Idempotency-Key freed."""
    try:
        start = await starting
    except Exception:
        return  # refused, or broken: nothing was claimed
    if isinstance(start, idempotency.Replay):
        return
    runner, record = start
    if record is None:
        await database(runner.fail)(status=TurnStatus.INTERRUPTED, failure=TurnFailure.INTERRUPTED)
    else:  # ends the turn too (it is still running), then frees the key
        await database(idempotency.idempotency_settle_interrupted)(
            record=record, turn_id=_turn_id(runner)
        )


# How long a turn whose ending could not be written waits between tries to write it.
ENDING_RETRY_SECONDS = OUTAGE_RETRY_SECONDS


def _end_once_the_database_is_back(
    runner: TurnRunner | None, record: IdempotencyKey | None
) -> None:
    """A turn that lost its database and could not write its ending either (the database was
    still away) stays `running`: its session refuses new turns (409) and its Idempotency-Key
    answers `idempotency_key_in_use` until the stale limit. Its worker writes the ending in the
    background instead, as soon as the database answers again: the turn `interrupted` with
    `database_unavailable`, its calls in flight lost, its key freed. It tries for as long as
    the turn would take to go stale (then the next claim or `recover_turns` ends it); a
    stopping worker waits for it as for a turn (`pantheon.draining`)."""
    ending = functools.partial(_end_and_settle, runner, record)
    _detached(_once_the_database_is_back(ending, turn_id=_turn_id(runner), doing="write its end"))


def _store_answer_once_the_database_is_back(record: IdempotencyKey, outcome: TurnOutcome) -> None:
    """A turn that finished and whose answer could not be stored for its key: the answer its
    client got (its balance included) is stored in the background once the database answers,
    so that a retry gets it. Until then a retry meets the key in use (409)."""
    answer = functools.partial(
        idempotency.idempotency_finish,
        record=record,
        status=201,
        body=outcome.body,
        turn_id=outcome.turn.pk,
    )
    _detached(
        _once_the_database_is_back(answer, turn_id=outcome.turn.pk, doing="store its key's answer")
    )


def _turn_id(runner: TurnRunner | None):
    return runner.turn.pk if runner is not None and runner.turn is not None else None


def _end_and_settle(runner: TurnRunner | None, record: IdempotencyKey | None) -> None:
    """The turn of a request that lost its database ended `interrupted` (its stream's rows
    too), if it was claimed and still runs, and its key settled, in one transaction: a retry
    never finds the one without the other. The key is freed, or keeps the answer of a turn that
    had finished after all."""
    with transaction.atomic():
        if runner is not None and runner.turn is not None:
            runner.end(TurnStatus.INTERRUPTED, TurnFailure.DATABASE_UNAVAILABLE)
        if record is not None:
            idempotency.idempotency_settle_interrupted(
                record=record, turn_id=_turn_id(runner), failure=TurnFailure.DATABASE_UNAVAILABLE
            )


async def _once_the_database_is_back(section: Callable[[], Any], *, turn_id, doing: str) -> None:
    """`section` (the turn's ending, its key's answer) tried until the database takes it, for
    as long as the turn would take to go stale. Tries queue at the sections' gate as new work
    (`queue_as_new`): with the request's own arrival time they would go before every request
    that came after it, and each may wait out the pool's timeout. A stopping worker makes no
    more tries (it would wait for them): the stale limit then ends the turn, as before."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + settings.PANTHEON_TURN_STALE_SECONDS
    for attempt in itertools.count():
        pause = outage_pause(attempt, ENDING_RETRY_SECONDS)
        if not await draining.pause(pause):
            logger.warning("turn %s: its worker stops before it could %s", turn_id, doing)
            return
        try:
            await database(section, queue_as_new=True)()
        except Exception as exc:
            if connection_lost(exc) and loop.time() < give_up:
                continue
            logger.warning("turn %s: could not %s", turn_id, doing, exc_info=True)
            return
        logger.info("turn %s: did %s once the database was back", turn_id, doing)
        return


class TurnEventsView(_AsyncTurnView, AsyncAPIView):
    """`GET turns/{id}/events`: the turn's events as Server-Sent Events, replayed from the
    database (any host), followed live while it runs; `Last-Event-ID` resumes after it."""

    renderer_classes = [EventStreamRenderer, JSONRenderer]
    # No HEAD: Django answers it with `get`, a stream no one reads that held a follow place
    # and the worker's until the turn ended (the second reviewer's catch).
    http_method_names = ["get", "options"]

    @extend_schema(
        responses={
            (200, EVENT_STREAM): OpenApiResponse(
                TURN_EVENT_STREAM,
                description="The turn's events, those of a finished turn at once, then those "
                "of a running one as they come; the stream ends after `turn_completed` or "
                "`turn_failed`, or with no end event when the turn's session is deleted (a "
                "reconnect is a 404) or the server stops (resume with `Last-Event-ID`).",
            ),
            204: OpenApiResponse(
                description="`Last-Event-ID` is the turn's last event: nothing follows (an "
                "EventSource stops reconnecting)."
            ),
            **refusals(
                {
                    406: "`Accept` prefers JSON to text/event-stream, or refuses the stream "
                    "(q=0), and no `format=sse` says otherwise; or `format=json`: the events "
                    "are a stream only. Checked before the credentials.",
                    429: "`too_many_follows`: the caller already holds "
                    "`PANTHEON_MAX_FOLLOWS_PER_USER` streams of turns' events open on this "
                    "server (20 by default), none of this turn's (a follow of a turn followed "
                    "already takes the place of the caller's oldest stream of it, which "
                    "ends); close one, then retry.",
                }
            ),
        },
        # Last-Event-ID is a plain string: any value is taken (one that is not an id replays
        # from the start), so no value of it is invalid input a fuzzer would expect refused.
        description="The turn's events as Server-Sent Events, replayed from the database on "
        "any host and followed live while the turn runs. Send `Last-Event-ID: <id>` to resume "
        "after an event (a delta seen in part resumes with the rest of its text).",
        # JSON is among the renderers for errors only: `?format=json` is a 406, not a format.
        parameters=[
            OpenApiParameter(
                "format",
                str,
                OpenApiParameter.QUERY,
                enum=["sse"],
                description="`sse`, in place of `Accept: text/event-stream` (whatever `Accept` "
                "says; the only form).",
            ),
            OpenApiParameter(
                "Last-Event-ID",
                {"type": "string"},
                OpenApiParameter.HEADER,
                description="The id of the last event seen: the stream resumes after it. The "
                "turn's last event's id, 9007199254740991, or more (any number of digits) "
                "answers 204: nothing follows. A value that is not a whole number (digits only) "
                "replays from the start.",
            ),
            OpenApiParameter(
                "lastEventId",
                {"type": "string"},
                OpenApiParameter.QUERY,
                description="`Last-Event-ID` for a client that cannot send the header (an "
                "EventSource polyfill puts it here on a reconnect); read only when the header "
                "is not sent.",
            ),
        ],
    )
    async def get(self, request: Request, pk):
        last_event_id = _last_event_id(request)
        turn, replay = await database(self._turn)(
            request, pk, replay=last_event_id < events.TURN_ENDED_ID
        )
        if last_event_id >= events.TURN_ENDED_ID:
            # The client has seen the turn end. A stream that closed with nothing in it would
            # have a browser's EventSource reconnect every few seconds; 204 stops it.
            return Response(status=status.HTTP_204_NO_CONTENT)
        place = following.follow_place(request.user.pk, turn.pk)
        return _event_stream(
            following.turn_events(turn, last_event_id=last_event_id, place=place, replay=replay),
            request,
        )

    def perform_content_negotiation(self, request, force=False):
        renderer, media_type = super().perform_content_negotiation(request, force)
        if not force and request.method == "GET" and not isinstance(renderer, EventStreamRenderer):
            # JSON is offered for errors only: a client that prefers it to the stream (or
            # refuses the stream, q=0) has asked for something this endpoint does not answer.
            # Refused here, with the other 406s, before the credentials are checked.
            raise NotAcceptable(EVENTS_ONLY)
        return renderer, media_type

    def _turn(self, request: Request, pk, *, replay: bool) -> tuple[Turn, events.Replay | None]:
        """The caller's turn and, if it has ended (and `replay`), its events: read before the
        stream begins, so that a database lost on the way answers the 503
        `database_unavailable` every request answers, not a 200 broken off after its headers."""
        self.initial(request)
        turn = get_object_or_404(selectors.turns_for_user(user=request.user), pk=pk)
        # The caller's turn (a 404 otherwise): the request's lines join the turn's.
        logging_context.bind(session_id=turn.session_id, turn_id=turn.pk)
        return turn, _events_if_ended(turn) if replay else None


class TurnCancelView(_AsyncTurnView, AsyncAPIView):
    """`POST turns/{id}/cancel`: the caller's running turn ended at once (`turn_cancel`), and
    stopped where it runs: at once in this process (`pantheon.draining.stop`), at its next
    write elsewhere."""

    renderer_classes = [JSONRenderer]
    http_method_names = ["post", "options"]

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(
                TurnSerializer,
                description="The turn, as `GET turns/{id}` shows it: `interrupted`, with the "
                "answers it had finished.",
            ),
            409: OpenApiResponse(
                TurnNotRunningSerializer,
                description="`turn_not_running`: the turn had ended already (it finished, "
                "failed, or was ended otherwise, a cancel before included), with its `status`; "
                "nothing was changed.",
            ),
        },
        description="Cancel a running turn (the caller's: a 404 otherwise): it ends at once, "
        "`interrupted`, with the answers it had finished kept; the answer being written is "
        "dropped and its provider call abandoned (its ledger row `lost`, as a recovered "
        "turn's, unless words of a streamed answer had gone out: those are billed, "
        "as a stream that failed after its first words is). Its session takes a new turn at "
        "once, and an Idempotency-Key it was posted with runs afresh. The request that ran "
        "it, if still there, answers 409 `turn_cancelled`, or its stream ends with "
        "`turn_failed` of that code, as every follower's and every replay's. No body.",
    )
    async def post(self, request: Request, pk):
        turn_id, body = await database(self._cancel)(request, pk)
        # Its worker stops now if it is this process; elsewhere, at its next write.
        draining.stop(turn_id)
        return Response(body)

    def _cancel(self, request: Request, pk) -> tuple[Any, dict]:
        self.initial(request)
        # The caller's turn, in a session of theirs that is not deleted (a 404 otherwise).
        owned = Turn.objects.filter(
            pk=pk, session__in=selectors.sessions_for_user(user=request.user)
        )
        ended = services.turn_cancel(turns=owned)
        turn = get_object_or_404(selectors.turns_for_user(user=request.user), pk=pk)
        # The caller's turn (a 404 otherwise): the request's lines join the turn's.
        logging_context.bind(session_id=turn.session_id, turn_id=turn.pk)
        if not ended.turn_ids:
            raise TurnNotRunning(turn_id=turn.pk, turn_status=turn.status)
        logger.info("turn %s: cancelled by its user", turn.pk)
        return turn.pk, TurnSerializer(turn).data


def _last_event_id(request: Request) -> int:
    """The id a reconnecting client saw last: 0 (from the start) when there is none or it is
    not an id, and no more than the id every turn's last event has. Without the header it is
    read from the query's `lastEventId`, where EventSource polyfills that cannot set headers on
    a reconnect (event-source-polyfill) put it."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.query_params.get("lastEventId", "")
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()):  # `isdigit` alone takes "²", which int refuses
        return 0
    raw = raw.lstrip("0") or "0"
    if len(raw) > len(str(events.TURN_ENDED_ID)):
        return events.TURN_ENDED_ID
    return min(int(raw), events.TURN_ENDED_ID)


def _event_stream(
    content: AsyncIterator[str], request: Request, *, created: UUID | None = None
) -> StreamingHttpResponse:
    """A turn's events; `created`: the id of the turn this request created (a 201 that says
    where the turn is), else a follow's 200."""
    headers = dict(SSE_HEADERS)
    if created is not None:
        headers.update(location("turn-detail", created))
    return StreamingHttpResponse(
        _while_signed_in(content, request),
        status=status.HTTP_200_OK if created is None else status.HTTP_201_CREATED,
        content_type=EVENT_STREAM,
        headers=headers,
    )


async def _while_signed_in(content: AsyncIterator[str], request: Request) -> AsyncIterator[str]:
    """`content`, for as long as the credentials of `request` hold: read again every heartbeat
    interval (`still_signed_in`, one query), the stream ends once its token is signed out or
    rotated, its user deactivated, or its console session logged out. It ran on to the turn's
    end. A turn the request runs runs on, as for a client that hung up. A check the database
    could not answer ends nothing: the next interval reads them again."""
    every = settings.PANTHEON_SSE_HEARTBEAT_SECONDS
    loop = asyncio.get_running_loop()
    check_at = loop.time() + every
    async with contextlib.aclosing(content):
        async for text in content:
            yield text
            if loop.time() < check_at:
                continue
            check_at = loop.time() + every
            try:
                signed_in = await database(still_signed_in, queue_as_new=True)(request)
            except DatabaseError as exc:
                # A blip says nothing of the credentials: read them again at the next
                # interval, as a follower's poll does (`following.TurnWatch`).
                logger.warning("stream's credentials not read (%s); reading them again", exc)
                continue
            if not signed_in:
                logger.info("stream ended: its credentials were revoked")
                yield ": signed out\n\n"
                return


_LAST_EVENTS = frozenset({"turn_completed", "turn_failed"})


class _LiveEvents:
    """The events of a turn this process runs, for the request that streams them as they
    happen. Once that stream has ended (its client hung up, or was cut off for reading nothing:
    `pantheon.protocol`), the turn's later events are dropped, not queued for no one until the
    turn ends."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[events.TurnEvent] = asyncio.Queue()
        self._open = True

    def send(self, event: events.TurnEvent) -> None:
        if self._open:
            self._queue.put_nowait(event)

    async def stream(self) -> AsyncIterator[str]:
        """The events as Server-Sent Events; a comment line keeps idle proxies from cutting
        the stream while a provider thinks. The events queued by the time the stream is read
        go out together, in one write (a fast provider's words come faster than the stream
        is read): each write is a trip through the response's layers and the server's send."""
        try:
            while True:
                try:
                    async with asyncio.timeout(settings.PANTHEON_SSE_HEARTBEAT_SECONDS):
                        event = await self._queue.get()
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                texts = [event.sse()]
                ended = event.name in _LAST_EVENTS
                while not ended and not self._queue.empty():
                    event = self._queue.get_nowait()
                    texts.append(event.sse())
                    ended = event.name in _LAST_EVENTS
                yield "".join(texts)
                if ended:
                    return
        finally:
            self._open = False
            while not self._queue.empty():
                self._queue.get_nowait()
