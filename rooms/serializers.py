from rest_framework import serializers

from rooms.models import MODE_ALIASES, Agent, Room, RoomMode
from usage.selectors import model_alias_enabled

MODE_INPUT_CHOICES = [*RoomMode.values, *MODE_ALIASES]


class AgentSerializer(serializers.ModelSerializer):
    tool_permissions = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=50
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
        # Uniqueness per owner is checked by the service, which knows the owner.
        validators = []

    def validate_model_alias(self, value: str) -> str:
        if not model_alias_enabled(value):
            raise serializers.ValidationError(f"Unknown or disabled model alias: {value}")
        return value


class SeatSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="agent.id")
    agent_key = serializers.CharField(source="agent.agent_key")
    name = serializers.CharField(source="agent.name")
    model_alias = serializers.CharField(source="agent.model_alias")
    position = serializers.IntegerField()


class RoomSerializer(serializers.ModelSerializer):
    mode = serializers.ChoiceField(choices=MODE_INPUT_CHOICES, write_only=True, required=False)
    agent_ids = serializers.ListField(
        child=serializers.UUIDField(), write_only=True, required=False, max_length=50
    )
    agents = SeatSerializer(source="seats", many=True, read_only=True)

    class Meta:
        model = Room
        fields = [
            "id",
            "name",
            "goal",
            "mode",
            "current_mode",
            "pending_mode",
            "agent_ids",
            "agents",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "current_mode", "pending_mode", "created_at", "updated_at"]

    def validate(self, attrs):
        if self.instance is not None:
            moved = {"mode": "PUT rooms/{id}/mode", "agent_ids": "PUT rooms/{id}/agents"}
            errors = {
                field: [f"Change this with {endpoint}."]
                for field, endpoint in moved.items()
                if field in self.initial_data
            }
            if errors:
                raise serializers.ValidationError(errors)
        return attrs


class RoomModeSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=MODE_INPUT_CHOICES)


class RoomAgentsSerializer(serializers.Serializer):
    agent_ids = serializers.ListField(
        child=serializers.UUIDField(), allow_empty=True, max_length=50
    )
