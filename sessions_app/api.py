from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response

from pantheon.pagination import TimelinePagination
from rooms.selectors import agents_for_user, rooms_for_user
from sessions_app import selectors, services
from sessions_app.serializers import MessageSerializer, SessionCreateSerializer, SessionSerializer


class RoomSessionsView(generics.ListCreateAPIView):
    """`GET, POST rooms/{room_id}/sessions`"""

    serializer_class = SessionSerializer

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

    serializer_class = SessionSerializer

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
