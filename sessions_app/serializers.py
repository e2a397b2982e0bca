from typing import Any

from django.conf import settings
from django.core.validators import MaxLengthValidator, ProhibitNullCharactersValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from orchestration.routing import FALLBACK_REASONS
from orchestration.types import ErrorKind
from pantheon.fields import NullIsLeftOut, StrictCharField, trimmed
from rooms.models import Agent, Room
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

    @extend_schema_field(serializers.ChoiceField(choices=["room", "direct"]))
    def get_kind(self, session: Session) -> str:
        return "direct" if session.is_direct else "room"


class SessionRoomSerializer(serializers.ModelSerializer):
    class Meta:
        model = Room
        fields = ["id", "name"]
        read_only_fields = fields


class SessionAgentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Agent
        fields = ["id", "agent_key", "name"]
        read_only_fields = fields


class SessionActivitySerializer(SessionSerializer):
    """A session as a user finds it again (lists and `GET sessions/{id}`): where it happens
    (its room, or the agent of a direct session: null once that agent is deleted), how many
    turns it has and when it was last used (`last_activity_at`: its latest turn's
    `created_at`, else its own)."""

    room = SessionRoomSerializer(read_only=True, allow_null=True)
    agent = SessionAgentSerializer(read_only=True, allow_null=True)
    turn_count = serializers.IntegerField(read_only=True)
    last_activity_at = serializers.DateTimeField(read_only=True)

    class Meta(SessionSerializer.Meta):
        fields = [*SessionSerializer.Meta.fields, "room", "agent", "turn_count", "last_activity_at"]


class SessionFilterSerializer(serializers.Serializer):
    """The query parameters of `GET sessions`."""

    room = serializers.UUIDField(required=False, source="room_id", help_text="A room's id.")
    agent = serializers.UUIDField(
        required=False,
        source="agent_id",
        help_text="An agent's id: its direct sessions.",
    )


class SessionCreateSerializer(NullIsLeftOut):
    title = StrictCharField(
        max_length=200, required=False, allow_blank=True, default="", is_name=True
    )


class SessionUpdateSerializer(NullIsLeftOut):
    """`PATCH sessions/{id}`: its title, as a create takes it ("" for none; left out or null:
    unchanged)."""

    title = StrictCharField(max_length=200, required=False, allow_blank=True, is_name=True)


# What a message says inside its turn's body; the timeline adds which turn and when.
TURN_MESSAGE_FIELDS = [
    "id",
    "role",
    "agent_key",
    "agent_name",
    "agent_id",
    "model_alias",
    "content",
    "status",
    "error_code",
    "sequence",
]


@extend_schema_field(
    {
        "type": "string",
        "enum": ["", *ErrorKind],
        "description": "Empty when the answer worked; else what went wrong with its call.",
    }
)
class ErrorCodeField(serializers.CharField):
    """A message's `error_code`: "" or one of the gateway's error kinds."""


def _agent_id_field() -> serializers.UUIDField:
    """A message's `agent_id`: who answered, for a client to tell agents apart by."""
    return serializers.UUIDField(
        read_only=True,
        allow_null=True,
        help_text="The id of the agent that gave the answer, which its `agent_key` and "
        "`agent_name` (as they were then) may no longer tell: a key can change, or go to another "
        "agent once its agent is deleted. Null for the user's messages (and answers stored "
        "before ids were kept).",
    )


class MessageSerializer(serializers.ModelSerializer):
    turn_id = serializers.UUIDField(read_only=True, allow_null=True)  # the column may be null
    error_code = ErrorCodeField(read_only=True)
    agent_id = _agent_id_field()

    class Meta:
        model = Message
        fields = [*TURN_MESSAGE_FIELDS, "turn_id", "created_at"]
        read_only_fields = fields


class TurnCreateSerializer(NullIsLeftOut):
    message = StrictCharField(max_length=settings.PANTHEON_MAX_MESSAGE_CHARS, trim_whitespace=True)
    # `null` is the field left out (NullIsLeftOut), as `""` is: each agent's own alias.
    model_alias_override = ModelAliasField(required=False, allow_blank=True, default="")


def turn_body(data: Any) -> dict[str, Any]:
    """A turn's body as `TurnCreateSerializer` validates it: its `validated_data`, or its
    ValidationError (a 400) for a body it refuses. The body nearly every turn sends, a message
    and no override, is checked as the serializer checks it (`_plain_turn_body`) without making
    the serializer: making it (a deep copy of its fields) and running its fields cost over a
    tenth of a millisecond a turn. Any other body goes through the serializer."""
    plain = _plain_turn_body(data) if _plain_check_mirrors_the_serializer() else None
    if plain is not None:
        return plain
    body = TurnCreateSerializer(data=data)
    body.is_valid(raise_exception=True)
    return body.validated_data


_TURN_CREATE_SERIALIZER = TurnCreateSerializer
_MESSAGE_FIELD = TurnCreateSerializer._declared_fields["message"]
assert isinstance(_MESSAGE_FIELD, StrictCharField) and _MESSAGE_FIELD.trim_whitespace
assert _MESSAGE_FIELD.max_length is not None
_MESSAGE_MAX_LENGTH: int = _MESSAGE_FIELD.max_length


# The rules `_plain_turn_body` mirrors: the serializer's two fields, the message's validators
# (DRF's of every CharField with a max_length), and no serializer-level hook.
_MIRRORED_FIELDS = {"message", "model_alias_override"}
_MIRRORED_VALIDATORS = (
    MaxLengthValidator,
    ProhibitNullCharactersValidator,
    ProhibitSurrogateCharactersValidator,
)


def _plain_check_mirrors_the_serializer() -> bool:
    """Whether the serializer's rules are still those the plain check mirrors: another field,
    a validator added to its message, a `validate_message` or a `validate` of its own (a rule
    written after the plain check was) sends every body through the serializer, rather than
    being skipped for the plain ones. Read at each call (a few attribute looks)."""
    serializer = _TURN_CREATE_SERIALIZER
    fields = serializer._declared_fields
    return (
        fields.keys() == _MIRRORED_FIELDS
        and fields["message"] is _MESSAGE_FIELD
        and tuple(map(type, _MESSAGE_FIELD.validators)) == _MIRRORED_VALIDATORS
        and not hasattr(serializer, "validate_message")
        and serializer.validate is serializers.Serializer.validate
    )


def _plain_turn_body(data: Any) -> dict[str, Any] | None:
    """What the serializer makes of a JSON object whose `message` is a text it takes and whose
    `model_alias_override` is left out, null or "" (no override: ""); None for any other body.
    The message as its field makes it: no longer than its maximum as sent, trimmed
    (`pantheon.fields.trimmed`, then DRF's strip), not blank, and with no NUL nor surrogate
    (DRF's validators of every CharField)."""
    if type(data) is not dict or data.get("model_alias_override") not in (None, ""):
        return None
    message = data.get("message")
    if type(message) is not str or len(message) > _MESSAGE_MAX_LENGTH:
        return None
    value = trimmed(message).strip()
    if not value or "\x00" in value:
        return None
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a surrogate: the serializer's refusal says so
            return None
    return {"message": value, "model_alias_override": ""}


class TurnMessageSerializer(serializers.ModelSerializer):
    error_code = ErrorCodeField(read_only=True)
    agent_id = _agent_id_field()

    class Meta:
        model = Message
        fields = TURN_MESSAGE_FIELDS
        read_only_fields = fields


class BalanceSerializer(serializers.Serializer):
    """Where the user stands after the turn, so a chat client can warn before the 402."""

    month_credits_used = serializers.DecimalField(max_digits=24, decimal_places=10)
    credit_cap = serializers.DecimalField(max_digits=24, decimal_places=10, allow_null=True)
    low_balance = serializers.BooleanField()


class RoutingSerializer(serializers.Serializer):
    """An orchestrator turn's routing: the manager's alias, whom it chose, and whether its
    answer was unusable (the first agent answered instead), why, and the keys it named that no
    agent who could answer has."""

    manager_model_alias = serializers.CharField()
    selected_agent_keys = serializers.ListField(child=serializers.CharField())
    fallback_used = serializers.BooleanField()
    fallback_reason = serializers.SerializerMethodField(
        help_text="Why the routing fell back to the first agent; null when it did not."
    )
    ignored_agent_keys = serializers.SerializerMethodField(
        help_text="Keys the manager named that no agent who could answer has: left out."
    )

    # Turns routed before these were recorded read null and [].
    @extend_schema_field(
        serializers.ChoiceField(
            choices=list(FALLBACK_REASONS.items()),
            allow_null=True,
        )
    )
    def get_fallback_reason(self, routing: dict) -> str | None:
        return routing.get("fallback_reason")

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_ignored_agent_keys(self, routing: dict) -> list[str]:
        return list(routing.get("ignored_agent_keys") or [])


class TurnSerializer(serializers.ModelSerializer):
    session_id = serializers.UUIDField(read_only=True)
    routing = RoutingSerializer(read_only=True, allow_null=True)
    messages = serializers.SerializerMethodField()
    usage = UsageTotalsSerializer(source="*", read_only=True)
    balance = serializers.SerializerMethodField(
        help_text="Where the user stands after the turn, in the answer that ran the turn only "
        "(its JSON, its stream's `turn_completed`, an Idempotency-Key retry's replay of them); "
        "null wherever the turn is read later (`GET turns/{id}`, the lists, `GET "
        "turns/{id}/events`)."
    )

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
            "balance",
            "created_at",
            "completed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(BalanceSerializer(allow_null=True))
    def get_balance(self, turn: Turn):
        """In the answer to the request that ran the turn: the month's credits after it, the
        cap and `low_balance`; null when the turn is read later."""
        balance = self.context.get("balance")
        return None if balance is None else BalanceSerializer(balance).data

    @extend_schema_field(TurnMessageSerializer(many=True))
    def get_messages(self, turn: Turn):
        """The turn's messages in order: given by the turn engine for the turn it just ran,
        else prefetched in order by `selectors.turns_for_user`."""
        messages = self.context.get("messages")
        if messages is None:
            messages = turn.messages.all()
        return TurnMessageSerializer(messages, many=True).data


class SummarySerializer(serializers.ModelSerializer):
    session_id = serializers.UUIDField(read_only=True)
    turn_id = serializers.UUIDField(read_only=True, allow_null=True)  # its turn may be gone
    # The summary contract's lists hold strings (orchestration.summary).
    key_facts = serializers.ListField(child=serializers.CharField(), read_only=True)
    decisions = serializers.ListField(child=serializers.CharField(), read_only=True)
    open_questions = serializers.ListField(child=serializers.CharField(), read_only=True)
    action_items = serializers.ListField(child=serializers.CharField(), read_only=True)

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


# --- the turn body on the hot path ------------------------------------------------------------
# Every turn answers with its whole body; building it through TurnSerializer (its fields made
# afresh per call) cost more CPU than the rest of the answer. These render exactly what
# TurnSerializer and TurnMessageSerializer do (a test holds them equal); the serializers stay
# for lists, details and the schema.


def _money(value) -> str:
    return f"{value:.10f}"


def _moment(value) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def render_message(message: Message) -> dict:
    return {
        "id": str(message.id),
        "role": message.role,
        "agent_key": message.agent_key,
        "agent_name": message.agent_name,
        "agent_id": str(message.agent_id) if message.agent_id else None,
        "model_alias": message.model_alias,
        "content": message.content,
        "status": message.status,
        "error_code": message.error_code,
        "sequence": message.sequence,
    }


def render_turn(turn: Turn, messages, balance=None) -> dict:
    return {
        "id": str(turn.id),
        "session_id": str(turn.session_id),
        "turn_index": turn.turn_index,
        "mode": turn.mode,
        "status": turn.status,
        "user_input": turn.user_input,
        "messages": [render_message(message) for message in messages],
        "routing": turn.routing,
        "usage": {
            "llm_calls": turn.llm_calls,
            "input_tokens": turn.input_tokens,
            "output_tokens": turn.output_tokens,
            "credits": _money(turn.credits),
            "provider_cost_usd": _money(turn.provider_cost_usd),
        },
        "balance": None
        if balance is None
        else {
            "month_credits_used": _money(balance.month_credits_used),
            "credit_cap": None if balance.credit_cap is None else _money(balance.credit_cap),
            "low_balance": balance.low_balance,
        },
        "created_at": _moment(turn.created_at),
        "completed_at": _moment(turn.completed_at),
    }
