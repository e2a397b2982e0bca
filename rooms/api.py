from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from rooms import selectors, services
from rooms.models import Agent, Room
from rooms.serializers import (
    AgentSerializer,
    RoomAgentsSerializer,
    RoomModeSerializer,
    RoomSerializer,
)


class AgentViewSet(viewsets.ModelViewSet):
    serializer_class = AgentSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Agent]:
        return selectors.agents_for_user(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = services.agent_create(
            owner=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.agent_update(
            agent=serializer.instance, **serializer.validated_data
        )


@extend_schema_view(update=extend_schema(exclude=True))
class RoomViewSet(viewsets.ModelViewSet):
    serializer_class = RoomSerializer
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Room]:
        return selectors.rooms_for_user(user=self.request.user)

    def update(self, request, *args, **kwargs):
        if not kwargs.get("partial"):
            return self.http_method_not_allowed(request, *args, **kwargs)
        return super().update(request, *args, **kwargs)

    def perform_create(self, serializer):
        room = services.room_create(owner=self.request.user, **serializer.validated_data)
        serializer.instance = self.get_queryset().get(pk=room.pk)

    def perform_destroy(self, instance: Room):
        services.room_delete(room=instance)

    def _room_body(self, room: Room) -> Response:
        fresh = self.get_queryset().get(pk=room.pk)
        return Response(self.get_serializer(fresh).data)

    @extend_schema(request=RoomModeSerializer, responses=RoomSerializer)
    @action(detail=True, methods=["put"])
    def mode(self, request: Request, pk=None) -> Response:
        room = self.get_object()
        body = RoomModeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._room_body(services.room_set_mode(room=room, mode=body.validated_data["mode"]))

    @extend_schema(request=RoomAgentsSerializer, responses=RoomSerializer)
    @action(detail=True, methods=["put"])
    def agents(self, request: Request, pk=None) -> Response:
        room = self.get_object()
        body = RoomAgentsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        room = services.room_set_agents(room=room, agent_ids=body.validated_data["agent_ids"])
        return self._room_body(room)
