from rest_framework import serializers

from sessions_app.models import Message, Session


class SessionSerializer(serializers.ModelSerializer):
    room_id = serializers.UUIDField(read_only=True)
    agent_id = serializers.UUIDField(read_only=True)
    kind = serializers.SerializerMethodField()

    class Meta:
        model = Session
        fields = ["id", "kind", "room_id", "agent_id", "title", "created_at"]
        read_only_fields = ["id", "created_at"]

    def get_kind(self, session: Session) -> str:
        return "direct" if session.is_direct else "room"


class SessionCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class MessageSerializer(serializers.ModelSerializer):
    turn_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "turn_id",
            "sequence",
            "role",
            "agent_key",
            "agent_name",
            "model_alias",
            "content",
            "status",
            "error_code",
            "created_at",
        ]
        read_only_fields = fields
