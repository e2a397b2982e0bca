from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from pantheon.converters import ID
from pantheon.exceptions import NoSummaryYet
from pantheon.locations import location
from pantheon.pagination import ActivityPagination, TimelinePagination
from pantheon.schema import owned_limit, refusals
from pantheon.throttling import CREATING_THROTTLES, GivesBackRefusedCreates
from rooms.selectors import agent_for_user, room_for_user
from sessions_app import selectors, services
from sessions_app.serializers import (
    MessageSerializer,
    SessionActivitySerializer,
    SessionCreateSerializer,
    SessionFilterSerializer,
    SessionUpdateSerializer,
    SummarySerializer,
    TurnSerializer,
)

# A session opened (in a room, or direct with an agent), or refused at the user's bound.
_SESSION_CREATED = {
    201: SessionActivitySerializer,
    409: owned_limit("session", "deleting one of them (or a room, with the sessions in it)"),
}


def _session_created(session) -> Response:
    """The new session as `GET sessions/{id}` will show it: no turns yet, used when made."""
    session.last_activity_at = session.created_at  # its turn_count: 0, as the database has it
    return Response(
        SessionActivitySerializer(session).data,
        status=status.HTTP_201_CREATED,
        headers=location("session-detail", session.pk),
    )


@extend_schema_view(
    get=extend_schema(
        description="The room's sessions, oldest first (numbered pages), each saying where it "
        "happens and how alive it is (`turn_count`, `last_activity_at`: its latest turn's "
        "`created_at`, else its own)."
    ),
    post=extend_schema(
        description="Open a session in the room, with an optional `title`. The 201 is the "
        "session as `GET sessions/{id}` shows it (no turns yet); post turns to it with `POST "
        "sessions/{id}/turns`. Creates are throttled per user beside the API rate "
        "(`PANTHEON_CREATE_RATE`), and an account has at most `PANTHEON_MAX_SESSIONS_PER_USER` "
        "sessions not deleted, in rooms and direct together (409)."
    ),
)
class RoomSessionsView(GivesBackRefusedCreates, generics.ListCreateAPIView):
    """`GET, POST rooms/{room_id}/sessions`: the room's sessions, oldest first; open one."""

    serializer_class = SessionActivitySerializer
    throttle_classes = CREATING_THROTTLES

    def get_serializer_class(self):
        if self.request.method == "POST":
            return SessionCreateSerializer
        return SessionActivitySerializer

    def get_room(self):
        return room_for_user(user=self.request.user, room_id=self.kwargs["room_id"])

    def get_queryset(self):
        return selectors.sessions_with_activity(
            user=self.request.user, room_id=self.get_room().pk
        ).order_by("created_at", "id")

    @extend_schema(request=SessionCreateSerializer, responses=_SESSION_CREATED)
    def post(self, request: Request, room_id) -> Response:
        room = self.get_room()
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _session_created(
            services.session_create_in_room(room=room, user=request.user, **body.validated_data)
        )


@extend_schema_view(
    get=extend_schema(
        description="Your direct sessions with this agent, newest activity first "
        "(cursor pages: follow `next`)."
    ),
    post=extend_schema(
        description="Open a direct session with this agent (one to one, no room), with an "
        "optional `title`. The 201 is the session as `GET sessions/{id}` shows it (no turns "
        "yet). Creates are throttled per user beside the API rate (`PANTHEON_CREATE_RATE`), "
        "and an account has at most `PANTHEON_MAX_SESSIONS_PER_USER` sessions not deleted, in "
        "rooms and direct together (409)."
    ),
)
class AgentSessionsView(GivesBackRefusedCreates, generics.ListCreateAPIView):
    """`GET, POST agents/{agent_id}/sessions`: the direct sessions with one agent, newest
    activity first; open one."""

    serializer_class = SessionActivitySerializer
    pagination_class = ActivityPagination
    throttle_classes = CREATING_THROTTLES

    def get_serializer_class(self):
        return (
            SessionCreateSerializer if self.request.method == "POST" else SessionActivitySerializer
        )

    def get_agent(self):
        return agent_for_user(user=self.request.user, agent_id=self.kwargs["agent_id"])

    def get_queryset(self):
        return selectors.sessions_with_activity(
            user=self.request.user, agent_id=self.get_agent().pk
        )

    @extend_schema(request=SessionCreateSerializer, responses=_SESSION_CREATED)
    def post(self, request: Request, agent_id) -> Response:
        agent = self.get_agent()
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _session_created(
            services.session_create_direct(agent=agent, user=request.user, **body.validated_data)
        )


@extend_schema_view(
    list=extend_schema(
        parameters=[SessionFilterSerializer],
        description="Your sessions, in rooms and direct, newest activity first (cursor pages: "
        "follow `next`); `room` (a room's id) and `agent` (an agent's id: the direct sessions "
        "with it) filter. A session that gets a turn while you walk the pages moves to the "
        "front, ahead of your cursor: a client that keeps a copy in step walks again from the "
        "first page until it meets sessions it has with the same `last_activity_at`.",
    ),
    retrieve=extend_schema(
        description="One of your sessions: where it happens (`kind`, `room`, `agent`; an agent "
        "deleted since is null), its `turn_count` and `last_activity_at`."
    ),
    partial_update=extend_schema(
        request=SessionUpdateSerializer,
        responses={200: SessionActivitySerializer},
        description="Rename one of your sessions: `title` as a session is opened with it "
        '(`""` for none; left out or null: unchanged). The session as `GET sessions/{id}` '
        "shows it.",
    ),
    destroy=extend_schema(
        description="Delete a session (soft: it, its messages and its turns are 404 from then "
        "on). A turn still running ends at once, as `POST turns/{id}/cancel` ends it: "
        "`interrupted`, ended by `turn_cancelled`, its provider call abandoned (its ledger row "
        "`lost`, or, once words of a streamed answer had gone out, billed for them) "
        "and no further call made; the request that posted it answers 409 "
        "`turn_cancelled` (a stream: `turn_failed` of that code), as does every stream "
        "following it. No body."
    ),
)
class SessionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """`GET sessions` (the caller's sessions, newest activity first, `?room=` and `?agent=`
    filters), `GET, PATCH, DELETE sessions/{id}` (PATCH renames it; DELETE is a soft delete).
    A chat app's "Rename" had no call: only the console could retitle a session."""

    serializer_class = SessionActivitySerializer
    pagination_class = ActivityPagination
    lookup_value_converter = ID  # a malformed id is the URL resolver's 404, as on every path

    def get_queryset(self):
        filters = {}
        if self.action == "list":
            # An empty `?room=` is not an id (the schema says uuid): a 400, like any other.
            query = SessionFilterSerializer(data=self.request.query_params.dict())
            query.is_valid(raise_exception=True)
            filters = query.validated_data
        return selectors.sessions_with_activity(user=self.request.user, **filters)

    def partial_update(self, request: Request, pk=None) -> Response:
        session = self.get_object()
        body = SessionUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if "title" in body.validated_data:
            services.session_rename(session=session, title=body.validated_data["title"])
            session = self.get_object()
        return Response(SessionActivitySerializer(session).data)

    def perform_destroy(self, instance):
        services.session_delete(session=instance)


class SessionMessagesView(generics.ListAPIView):
    """`GET sessions/{id}/messages`: the timeline, oldest first, cursor-paginated."""

    serializer_class = MessageSerializer
    pagination_class = TimelinePagination

    def get_queryset(self):
        session = get_object_or_404(
            selectors.sessions_for_user(user=self.request.user), pk=self.kwargs["session_id"]
        )
        return selectors.session_timeline(session=session)


@extend_schema(
    description="One of your turns, finished or running: its messages, `routing` (orchestrator "
    "rooms), `usage` and `status`; `balance` is null (it is in the answer that ran the turn "
    "only). Its events: `GET turns/{id}/events`."
)
class TurnDetailView(generics.RetrieveAPIView):
    """`GET turns/{id}`: one of the caller's turns."""

    serializer_class = TurnSerializer

    def get_queryset(self):
        return selectors.turns_for_user(user=self.request.user)


@extend_schema(
    responses={
        200: SummarySerializer,
        **refusals(
            {404: "Not found, or not yours; or `no_summary_yet`: the session has no summary yet."}
        ),
    }
)
class SessionSummaryView(generics.RetrieveAPIView):
    """`GET sessions/{id}/summary`: the latest structured summary, 404 when there is none."""

    serializer_class = SummarySerializer

    def get_object(self):
        session = get_object_or_404(
            selectors.sessions_for_user(user=self.request.user), pk=self.kwargs["session_id"]
        )
        summary = selectors.session_summary_latest(session=session)
        if summary is None:
            raise NoSummaryYet()
        return summary
