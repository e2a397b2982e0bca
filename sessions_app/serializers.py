from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pantheon.fields import StrictCharField
from sessions_app.models import Message, Session, SessionSummary, Turn
from usage.serializers import ModelAliasField, UsageTotalsSerializer


class SessionSerializer(serializers.ModelSerializer):
    # A direct session has no room; a room session no agent (nor a direct one whose agent
    # was deleted).
    room_id = serializers.UUIDField(read_only=True, allow_null=True)
    agent_id = serializers.UUIDField(read_only=True, allow_null=True)
    kind = serializers.SerializerMethodField()

    class Meta:
        model = Session
        fields = ["id", "kind", "room_id", "agent_id", "title", "created_at"]
        read_only_fields = ["id", "created_at"]

    def get_kind(self, session: Session) -> str:
        return "direct" if session.is_direct else "room"


class SessionCreateSerializer(serializers.Serializer):
    title = StrictCharField(max_length=200, required=False, allow_blank=True, default="")


# What a message says inside its turn's body; the timeline adds which turn and when.
TURN_MESSAGE_FIELDS = [
    "id",
    "role",
    "agent_key",
    "agent_name",
    "model_alias",
    "content",
    "status",
    "error_code",
    "sequence",
]


class MessageSerializer(serializers.ModelSerializer):
    turn_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Message
        fields = [*TURN_MESSAGE_FIELDS, "turn_id", "created_at"]
        read_only_fields = fields


class TurnCreateSerializer(serializers.Serializer):
    message = StrictCharField(max_length=settings.PANTHEON_MAX_MESSAGE_CHARS, trim_whitespace=True)
    model_alias_override = ModelAliasField(required=False, allow_blank=True, default="")


class TurnMessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = TURN_MESSAGE_FIELDS
        read_only_fields = fields


class TurnSerializer(serializers.ModelSerializer):
    session_id = serializers.UUIDField(read_only=True)
    messages = serializers.SerializerMethodField()
    usage = UsageTotalsSerializer(source="*", read_only=True)

    class Meta:
        model = Turn
        fields = [
            "id",
            "session_id",
            "turn_index",
            "mode",
            "status",
            "user_input",
            "messages",
            "routing",
            "usage",
            "created_at",
            "completed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(TurnMessageSerializer(many=True))
    def get_messages(self, turn: Turn):
        messages = getattr(turn, "prefetched_messages", None)
        if messages is None:
            messages = turn.messages.order_by("sequence")
        return TurnMessageSerializer(messages, many=True).data


class SummarySerializer(serializers.ModelSerializer):
    session_id = serializers.UUIDField(read_only=True)
    turn_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = SessionSummary
        fields = [
            "id",
            "session_id",
            "turn_id",
            "from_sequence",
            "to_sequence",
            "summary_text",
            "key_facts",
            "decisions",
            "open_questions",
            "action_items",
            "created_at",
        ]
        read_only_fields = fields
