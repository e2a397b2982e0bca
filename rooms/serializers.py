from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from pantheon.fields import ModelSerializer, StrictCharField, UUIDSetField
from rooms.models import MODE_ALIASES, Agent, Room, RoomMode
from usage.selectors import model_alias_enabled
from usage.serializers import ModelAliasField

MODE_INPUT_CHOICES = [*RoomMode.values, *MODE_ALIASES]


def each_once(tools: list[str]) -> None:
    """Each tool once (as trimmed): a list that named one twice was stored as sent."""
    seen: set[str] = set()
    for tool in tools:
        if tool in seen:
            raise serializers.ValidationError(f"{tool!r} is listed twice.", code="duplicate")
        seen.add(tool)


class ToolNamesField(serializers.ListField):
    """Tool names, each once (`each_once`), as a request's schema says (ToolNamesFieldSchema)."""

    def __init__(self, **kwargs):
        super().__init__(validators=[each_once], **kwargs)


class ToolNamesFieldSchema(OpenApiSerializerFieldExtension):
    """In a request body: `uniqueItems` (a name counts as trimmed, so "web" and " web " are
    the same tool too). Not in an answer: an agent saved before the rule may list one twice."""

    target_class = "rooms.serializers.ToolNamesField"

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["uniqueItems"] = True
        return schema


class AgentSerializer(ModelSerializer):
    model_alias = ModelAliasField()
    tool_permissions = ToolNamesField(
        child=StrictCharField(max_length=64, is_name=True),  # a name: one line
        required=False,
        max_length=50,
        # DRF's own names the type it got, which in the console is its form's "JSONString".
        error_messages={"not_a_list": 'Expected a list of tool names, such as ["web_search"].'},
    )

    class Meta:
        model = Agent
        fields = [
            "id",
            "agent_key",
            "name",
            "model_alias",
            "role_prompt",
            "tool_permissions",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # The role prompt goes to the provider with every call: bounded (names are bounded by
        # their columns).
        extra_kwargs = {
            "name": {"is_name": True},
            "role_prompt": {"max_length": settings.PANTHEON_MAX_ROLE_PROMPT_CHARS},
        }
        # Uniqueness per owner is checked by the service, which knows the owner.
        validators = []

    def validate_model_alias(self, value: str) -> str:
        # An agent whose alias was disabled since keeps it when its other fields change (a
        # client sends back the agent it read): only choosing such an alias is refused.
        if self.instance is not None and value == self.instance.model_alias:
            return value
        if not model_alias_enabled(value):
            raise serializers.ValidationError(f"Unknown or disabled model alias: {value}")
        return value


class SeatSerializer(serializers.Serializer):
    id = serializers.UUIDField(
        source="agent.id",
        help_text="The seated agent's id (a seat has none of its own): what `agent_ids` of "
        "`PUT rooms/{id}/agents` and `POST rooms` take.",
    )
    agent_key = serializers.CharField(source="agent.agent_key")
    name = serializers.CharField(source="agent.name")
    model_alias = serializers.CharField(source="agent.model_alias")
    position = serializers.IntegerField()


ROOM_FIELDS = ["id", "name", "goal", "current_mode", "pending_mode", "agents"]


class RoomSerializer(ModelSerializer):
    """A room; `POST rooms` also takes its first `mode` and its roster (`agent_ids`)."""

    mode = serializers.ChoiceField(choices=MODE_INPUT_CHOICES, write_only=True, required=False)
    agent_ids = UUIDSetField(write_only=True, required=False)
    agents = SeatSerializer(source="seats", many=True, read_only=True)

    class Meta:
        model = Room
        fields = [*ROOM_FIELDS, "mode", "agent_ids", "created_at", "updated_at"]
        read_only_fields = ["id", "current_mode", "pending_mode", "created_at", "updated_at"]
        # The goal goes to the provider with every call of the room's agents: bounded.
        extra_kwargs = {
            "name": {"is_name": True},
            "goal": {"max_length": settings.PANTHEON_MAX_ROOM_GOAL_CHARS},
        }

    def validate(self, attrs):
        # The answer names the mode `current_mode`: a client that sent it (or a body copied
        # from another room) got a manual room without a word. Sent as the new room will have
        # it, it is no change; otherwise it is refused, naming the field that sets it.
        initial = self.initial_data if isinstance(self.initial_data, dict) else {}
        mode = attrs.get("mode", RoomMode.MANUAL)
        mode = MODE_ALIASES.get(mode, mode)
        errors = {}
        if initial.get("current_mode") not in (None, mode):  # null: left out (NullIsLeftOut)
            errors["current_mode"] = ["Set a new room's mode with `mode`."]
        if initial.get("pending_mode") is not None:
            errors["pending_mode"] = ["A new room has no pending mode: set its mode with `mode`."]
        # So are its seats (`agents`): a copy of another room's body made a room with none.
        seats = initial.get("agents")
        if seats and _seat_ids(seats) != [str(id).lower() for id in attrs.get("agent_ids", [])]:
            errors["agents"] = ["Seat a new room's agents with `agent_ids`."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


def _seat_ids(seats) -> list[str] | None:
    """The agents' ids of seats as a room's body lists them, in order; None if they are not."""
    if not isinstance(seats, list) or not all(isinstance(seat, dict) for seat in seats):
        return None
    return [str(seat.get("id")).lower() for seat in seats]


class RoomUpdateSerializer(ModelSerializer):
    """`PATCH rooms/{id}`: name and goal. The mode and the roster have their own operations,
    `PUT rooms/{id}/mode` and `PUT rooms/{id}/agents`: `mode` and `agent_ids`, and a
    `current_mode` or `pending_mode` other than the room's, are refused (400, naming the
    operation); the room's other fields, sent back as read, are ignored."""

    agents = SeatSerializer(source="seats", many=True, read_only=True)

    class Meta:
        model = Room
        fields = [*ROOM_FIELDS, "created_at", "updated_at"]
        read_only_fields = RoomSerializer.Meta.read_only_fields
        extra_kwargs = RoomSerializer.Meta.extra_kwargs

    def validate(self, attrs):
        # Not in this body's schema, but clients used to send them here: say where they go
        # instead of ignoring them silently.
        moved = {"mode": "PUT rooms/{id}/mode", "agent_ids": "PUT rooms/{id}/agents"}
        initial = self.initial_data if isinstance(self.initial_data, dict) else {}
        # A null is the field left out, as for the fields this body takes (NullIsLeftOut).
        errors = {
            field: [f"Change this with {endpoint}."]
            for field, endpoint in moved.items()
            if initial.get(field) is not None
        }
        # The room's modes are in its body, so a client may send them back as it read them;
        # one that tries to change them learns where that is done.
        for field in ("current_mode", "pending_mode"):
            if initial.get(field) not in (None, getattr(self.instance, field, None)):
                errors[field] = ["Change this with PUT rooms/{id}/mode."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class RoomModeSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=MODE_INPUT_CHOICES)


class RoomAgentsSerializer(serializers.Serializer):
    agent_ids = UUIDSetField(allow_empty=True)
