from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, mixins, status, viewsets
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from pantheon.exceptions import PantheonError
from pantheon.pagination import ActivityPagination, TimelinePagination
from rooms.selectors import agent_for_user, room_for_user
from sessions_app import idempotency, selectors, services
from sessions_app.serializers import (
    MessageSerializer,
    SessionActivitySerializer,
    SessionCreateSerializer,
    SessionFilterSerializer,
    SessionSerializer,
    SummarySerializer,
    TurnCreateSerializer,
    TurnSerializer,
)
from sessions_app.turns import turn_run

# What a retry gets after a request that started and then broke (a bug, the database).
SERVER_ERROR_BODY = {
    "detail": {"code": "server_error", "message": "The turn failed on the server."}
}


def _session_created(session) -> Response:
    return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class RoomSessionsView(generics.ListCreateAPIView):
    """`GET, POST rooms/{room_id}/sessions`: the room's sessions, oldest first; open one."""

    serializer_class = SessionActivitySerializer

    def get_room(self):
        return room_for_user(user=self.request.user, room_id=self.kwargs["room_id"])

    def get_queryset(self):
        return selectors.sessions_with_activity(
            user=self.request.user, room_id=self.get_room().pk
        ).order_by("created_at", "id")

    @extend_schema(request=SessionCreateSerializer, responses={201: SessionSerializer})
    def post(self, request: Request, room_id) -> Response:
        room = self.get_room()
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _session_created(
            services.session_create_in_room(room=room, user=request.user, **body.validated_data)
        )


class AgentSessionsView(generics.ListCreateAPIView):
    """`GET, POST agents/{agent_id}/sessions`: the direct sessions with one agent, newest
    activity first; open one."""

    serializer_class = SessionActivitySerializer
    pagination_class = ActivityPagination

    def get_agent(self):
        return agent_for_user(user=self.request.user, agent_id=self.kwargs["agent_id"])

    def get_queryset(self):
        return selectors.sessions_with_activity(
            user=self.request.user, agent_id=self.get_agent().pk
        )

    @extend_schema(request=SessionCreateSerializer, responses={201: SessionSerializer})
    def post(self, request: Request, agent_id) -> Response:
        agent = self.get_agent()
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _session_created(
            services.session_create_direct(agent=agent, user=request.user, **body.validated_data)
        )


@extend_schema_view(list=extend_schema(parameters=[SessionFilterSerializer]))
class SessionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """`GET sessions` (the caller's sessions, newest activity first, `?room=` and `?agent=`
    filters), `GET, DELETE sessions/{id}` (DELETE is a soft delete)."""

    serializer_class = SessionActivitySerializer
    pagination_class = ActivityPagination

    def get_queryset(self):
        filters = {}
        if self.action == "list":
            # An empty parameter (`?room=`) means no filter, as forms send it.
            params = {key: value for key, value in self.request.query_params.items() if value}
            query = SessionFilterSerializer(data=params)
            query.is_valid(raise_exception=True)
            filters = query.validated_data
        return selectors.sessions_with_activity(user=self.request.user, **filters)

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
    """`GET sessions/{id}/turns` lists turns; `POST` runs one."""

    serializer_class = TurnSerializer

    def get_session(self):
        return get_object_or_404(
            selectors.sessions_for_user(user=self.request.user), pk=self.kwargs["session_id"]
        )

    def get_queryset(self):
        return selectors.turns_for_user(user=self.request.user).filter(session=self.get_session())

    @extend_schema(
        request=TurnCreateSerializer,
        responses={201: TurnSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Retries with the same key and body replay the first answer.",
            )
        ],
    )
    def post(self, request: Request, session_id) -> Response:
        session = selectors.session_for_turn(user=request.user, session_id=session_id)
        body = TurnCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return self._run_turn(request, session, body.validated_data)
        begun = idempotency.idempotency_begin(
            user=request.user,
            key=key,
            fingerprint=idempotency.request_fingerprint(
                method=request.method, path=request.path, body=request.data
            ),
        )
        if isinstance(begun, idempotency.Replay):
            return Response(
                begun.body, status=begun.status, headers={"Idempotent-Replayed": "true"}
            )
        try:
            response = self._run_turn(request, session, body.validated_data)
        except (PantheonError, APIException):
            idempotency.idempotency_release(record=begun)  # refused: nothing to replay
            raise
        except Exception:
            idempotency.idempotency_finish(record=begun, status=500, body=SERVER_ERROR_BODY)
            raise
        idempotency.idempotency_finish(
            record=begun,
            status=response.status_code,
            body=response.data,
            turn_id=response.data["id"],
        )
        return response

    def _run_turn(self, request: Request, session, data: dict) -> Response:
        outcome = turn_run(
            session=session,
            user=request.user,
            message=data["message"],
            model_alias_override=data["model_alias_override"],
        )
        body = TurnSerializer(outcome.turn, context={"messages": outcome.messages})
        return Response(body.data, status=status.HTTP_201_CREATED)


class TurnDetailView(generics.RetrieveAPIView):
    """`GET turns/{id}`"""

    serializer_class = TurnSerializer

    def get_queryset(self):
        return selectors.turns_for_user(user=self.request.user)


class SessionSummaryView(generics.RetrieveAPIView):
    """`GET sessions/{id}/summary`: the latest structured summary, 404 when there is none."""

    serializer_class = SummarySerializer

    def get_object(self):
        session = get_object_or_404(
            selectors.sessions_for_user(user=self.request.user), pk=self.kwargs["session_id"]
        )
        summary = selectors.session_summary_latest(session=session)
        if summary is None:
            raise NotFound("This session has no summary yet.")
        return summary
