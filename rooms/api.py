from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from pantheon.converters import ID
from pantheon.locations import LocatesCreated
from pantheon.schema import bad_request, owned_limit
from pantheon.throttling import CREATING_THROTTLES, GivesBackRefusedCreates
from rooms import selectors, services
from rooms.models import Agent, Room
from rooms.serializers import (
    AgentSerializer,
    RoomAgentsSerializer,
    RoomModeSerializer,
    RoomSerializer,
    RoomUpdateSerializer,
)


@extend_schema_view(
    list=extend_schema(description="Your agents, oldest first (page-number pagination)."),
    create=extend_schema(
        description="Create an agent: `agent_key` (unique among your agents; the `@tag` of "
        "manual mode), `name`, an enabled `model_alias` (`GET models`), `role_prompt`. "
        "Creates are throttled per user beside the API rate (`PANTHEON_CREATE_RATE`), and an "
        "account owns at most `PANTHEON_MAX_AGENTS_PER_USER` agents (409).",
        responses={201: AgentSerializer, 409: owned_limit("agent", "deleting one of them")},
    ),
    retrieve=extend_schema(description="One of your agents."),
    partial_update=extend_schema(description="Change an agent's fields."),
    destroy=extend_schema(
        description="Delete an agent: it leaves every room it is seated in (the others' seats "
        "are numbered 0, 1, 2... again), and its direct sessions stay (their `agent` becomes "
        "null, and those without a `title` take the agent's name as their title)."
    ),
)
class AgentViewSet(LocatesCreated, GivesBackRefusedCreates, viewsets.ModelViewSet):
    serializer_class = AgentSerializer
    throttle_classes = CREATING_THROTTLES
    lookup_value_converter = ID  # a malformed id is the URL resolver's 404
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

    def perform_destroy(self, instance: Agent):
        services.agent_delete(agent=instance)


@extend_schema_view(
    list=extend_schema(description="Your rooms, with their seated agents."),
    create=extend_schema(
        description="Create a room: `name`, `goal`, its first `mode` (`manual`, also "
        "accepted as `tag`; `roundtable`; `orchestrator`) and its roster, `agent_ids` in seat "
        "order. The answer names the mode `current_mode`: sent here, a `current_mode` other "
        "than the room's first mode, or any `pending_mode`, is a 400 under that field whose "
        "message points at `mode`; so are seats (`agents`) other than `agent_ids`, whose "
        "message points at `agent_ids`. Creates are throttled per user beside the API rate "
        "(`PANTHEON_CREATE_RATE`), and an account owns at most `PANTHEON_MAX_ROOMS_PER_USER` "
        "rooms not deleted (409).",
        responses={201: RoomSerializer, 409: owned_limit("room", "deleting one of them")},
    ),
    retrieve=extend_schema(description="One of your rooms, with its seated agents."),
    destroy=extend_schema(
        description="Delete a room (soft: its sessions and turns are kept, and are 404 from "
        "then on, with the room). A turn still running in one of its sessions ends at once, "
        "as `POST turns/{id}/cancel` ends it (`interrupted`, ended by `turn_cancelled`: its "
        "streams end with `turn_failed` of that code), and makes no further call. No body."
    ),
)
class RoomViewSet(
    LocatesCreated,
    GivesBackRefusedCreates,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    # `PATCH rooms/{id}` changes name and goal only; there is no `PUT rooms/{id}` (mode and
    # roster have their own `PUT` endpoints), so the `Allow` header, OPTIONS and the schema all
    # say the same.

    serializer_class = RoomSerializer
    lookup_value_converter = ID
    throttle_classes = CREATING_THROTTLES
    # What each action reads; OPTIONS (pantheon.metadata) describes the same bodies.
    input_serializers = {
        "partial_update": RoomUpdateSerializer,
        "mode": RoomModeSerializer,
        "agents": RoomAgentsSerializer,
    }

    def get_queryset(self) -> QuerySet[Room]:
        return selectors.rooms_for_user(user=self.request.user)

    def get_serializer_class(self):
        # By the request's method, not `self.action`: OPTIONS asks about each method in turn.
        action = self.action_map.get(self.request.method.lower()) if self.request else None
        return self.input_serializers.get(action, RoomSerializer)

    @extend_schema(
        request=RoomUpdateSerializer,
        responses={
            200: RoomSerializer,
            400: bad_request(
                "Or a field this operation does not change: `mode` and `agent_ids`, and "
                "`current_mode` or `pending_mode` other than the room's, each answered with "
                'the operation that changes it (`{"mode": ["Change this with PUT '
                'rooms/{id}/mode."]}`; the roster: `PUT rooms/{id}/agents`).'
            ),
        },
        description="Change a room's `name` and `goal`. Its mode and roster have their own "
        "operations, `PUT rooms/{id}/mode` and `PUT rooms/{id}/agents`: a body with `mode` or "
        "`agent_ids`, or with a `current_mode` or `pending_mode` other than the room's, is a "
        "400 that names the operation. The room's other fields, sent back as they were read, "
        "are ignored.",
    )
    def partial_update(self, request: Request, pk=None) -> Response:
        room = self.get_object()
        body = RoomUpdateSerializer(room, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        return self._room_body(services.room_update(room=room, **body.validated_data))

    def perform_create(self, serializer):
        room = services.room_create(owner=self.request.user, **serializer.validated_data)
        serializer.instance = self.get_queryset().get(pk=room.pk)

    def perform_destroy(self, instance: Room):
        services.room_delete(room=instance)

    def _room_body(self, room: Room) -> Response:
        # 404, not a 500, if a concurrent DELETE won the race after the change committed.
        fresh = get_object_or_404(self.get_queryset(), pk=room.pk)
        return Response(RoomSerializer(fresh, context=self.get_serializer_context()).data)

    @extend_schema(
        request=RoomModeSerializer,
        responses=RoomSerializer,
        description="Queue a mode change: the answer shows it as `pending_mode`, and the "
        "room's next turn runs in it (it becomes `current_mode` then).",
    )
    @action(detail=True, methods=["put"])
    def mode(self, request: Request, pk=None) -> Response:
        room = self.get_object()
        body = RoomModeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._room_body(services.room_set_mode(room=room, mode=body.validated_data["mode"]))

    @extend_schema(
        request=RoomAgentsSerializer,
        responses=RoomSerializer,
        description="Replace the room's roster: `agent_ids`, your agents, in seat order.",
    )
    @action(detail=True, methods=["put"])
    def agents(self, request: Request, pk=None) -> Response:
        room = self.get_object()
        body = RoomAgentsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        room = services.room_set_agents(room=room, agent_ids=body.validated_data["agent_ids"])
        return self._room_body(room)
