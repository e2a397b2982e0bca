from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from pantheon.pagination import TimelinePagination
from pantheon.schema import refusals
from pantheon.throttling import TurnRateThrottle
from rooms.selectors import agents_for_user, rooms_for_user
from sessions_app import selectors, services
from sessions_app.serializers import (
    MessageSerializer,
    SessionCreateSerializer,
    SessionSerializer,
    SummarySerializer,
    TurnCreateSerializer,
    TurnSerializer,
)
from sessions_app.turns import turn_run


class RoomSessionsView(generics.ListCreateAPIView):
    """`GET, POST rooms/{room_id}/sessions`"""

    serializer_class = SessionSerializer

    def get_serializer_class(self):
        return SessionCreateSerializer if self.request.method == "POST" else SessionSerializer

    def get_room(self):
        return get_object_or_404(rooms_for_user(user=self.request.user), pk=self.kwargs["room_id"])

    def get_queryset(self):
        return selectors.sessions_for_user(user=self.request.user).filter(room=self.get_room())

    @extend_schema(request=SessionCreateSerializer, responses={201: SessionSerializer})
    def post(self, request: Request, room_id) -> Response:
        room = self.get_room()
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        session = services.session_create_in_room(
            room=room, user=request.user, **body.validated_data
        )
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class DirectSessionsView(generics.GenericAPIView):
    """`POST agents/{agent_id}/sessions`: a direct chat with one agent."""

    serializer_class = SessionCreateSerializer

    @extend_schema(request=SessionCreateSerializer, responses={201: SessionSerializer})
    def post(self, request: Request, agent_id) -> Response:
        agent = get_object_or_404(agents_for_user(user=request.user), pk=agent_id)
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        session = services.session_create_direct(
            agent=agent, user=request.user, **body.validated_data
        )
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(generics.RetrieveDestroyAPIView):
    """`GET, DELETE sessions/{id}` (DELETE is a soft delete)."""

    serializer_class = SessionSerializer

    def get_queryset(self):
        return selectors.sessions_for_user(user=self.request.user)

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


class SessionTurnsView(generics.ListAPIView):
    """`GET sessions/{id}/turns` lists turns; `POST` runs one (throttled per user)."""

    serializer_class = TurnSerializer
    throttle_classes = [TurnRateThrottle]

    def get_serializer_class(self):
        return TurnCreateSerializer if self.request.method == "POST" else TurnSerializer

    def get_session(self):
        return get_object_or_404(
            selectors.sessions_for_user(user=self.request.user), pk=self.kwargs["session_id"]
        )

    def get_queryset(self):
        return selectors.turns_for_user(user=self.request.user).filter(session=self.get_session())

    @extend_schema(
        request=TurnCreateSerializer,
        responses={
            201: TurnSerializer,
            **refusals(
                {
                    402: "`credit_cap_exceeded`: the monthly credit cap is used up.",
                    403: "`account_suspended`, or a cookie session without a CSRF token.",
                    409: "Another turn of this session is running: "
                    '`{"detail": "Turn creation conflicted with concurrent writes. '
                    'Please retry."}`.',
                    422: "`no_valid_tagged_agents`, `no_room_agents`, "
                    "`context_budget_exceeded`, `model_alias_disabled`, `unknown_model_alias` "
                    "or `agent_unavailable`.",
                }
            ),
        },
    )
    def post(self, request: Request, session_id) -> Response:
        session = selectors.session_for_turn(user=request.user, session_id=session_id)
        body = TurnCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        turn = turn_run(
            session=session,
            user=request.user,
            message=body.validated_data["message"],
            model_alias_override=body.validated_data["model_alias_override"],
        )
        return Response(TurnSerializer(turn).data, status=status.HTTP_201_CREATED)


class TurnDetailView(generics.RetrieveAPIView):
    """`GET turns/{id}`"""

    serializer_class = TurnSerializer

    def get_queryset(self):
        return selectors.turns_for_user(user=self.request.user)


class SessionSummaryView(generics.GenericAPIView):
    """`GET sessions/{id}/summary`: the latest structured summary, 404 when there is none."""

    serializer_class = SummarySerializer

    def get(self, request: Request, session_id) -> Response:
        session = get_object_or_404(selectors.sessions_for_user(user=request.user), pk=session_id)
        summary = selectors.session_summary_latest(session=session)
        if summary is None:
            raise NotFound("This session has no summary yet.")
        return Response(SummarySerializer(summary).data)
