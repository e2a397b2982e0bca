"""A turn's body is read as `TurnCreateSerializer` reads it, whether `turn_body` checks it
itself (a plain message, no override) or hands it to the serializer: the same message, override
and 400s."""

import pytest
from django.conf import settings
from rest_framework.exceptions import ValidationError

from pantheon.fields import StrictCharField
from sessions_app import serializers
from sessions_app.serializers import TurnCreateSerializer, turn_body

pytestmark = pytest.mark.django_db

LONGEST = settings.PANTHEON_MAX_MESSAGE_CHARS

BODIES = [
    {"message": "hello"},
    {"message": "  hello  "},
    {"message": "\u200bhello\ufeff"},
    {"message": "\u3000"},
    {"message": "   "},
    {"message": ""},
    {"message": "hi\x00there"},
    {"message": "hi \ud800"},
    {"message": "\udc00\ud83d"},
    {"message": "héllo — 你好 😀"},
    {"message": "x" * LONGEST},
    {"message": "x" * (LONGEST + 1)},
    {"message": " " + "x" * LONGEST},
    {"message": "x" * (LONGEST - 1) + " "},
    {"message": 12},
    {"message": 1.5},
    {"message": True},
    {"message": None},
    {"message": ["hello"]},
    {},
    {"text": "hello"},
    {"message": "hello", "model_alias_override": None},
    {"message": "hello", "model_alias_override": ""},
    {"message": "hello", "model_alias_override": "   "},
    {"message": "hello", "model_alias_override": "DeepSeek"},
    {"message": "hello", "model_alias_override": "no-such-alias"},
    {"message": "hello", "model_alias_override": 0},
    {"message": "hello", "model_alias_override": False},
    {"message": "hello", "model_alias_override": []},
    {"message": "hello", "extra": 1},
    {"message": None, "model_alias_override": None},
    ["hello"],
    "hello",
    None,
]


def _serializers_reading(data):
    body = TurnCreateSerializer(data=data)
    if body.is_valid():
        return "valid", dict(body.validated_data)
    return "invalid", body.errors


def _turn_body_reading(data):
    try:
        return "valid", dict(turn_body(data))
    except ValidationError as exc:
        return "invalid", exc.detail


@pytest.mark.parametrize("data", BODIES, ids=range(len(BODIES)))
def test_turn_body_reads_every_body_as_the_serializer_does(data):
    assert _turn_body_reading(data) == _serializers_reading(data)


@pytest.mark.parametrize(
    "data",
    [{"message": " hello "}, {"message": "hello", "model_alias_override": None}],
    ids=["trimmed", "null-override"],
)
def test_a_plain_body_is_read_without_the_serializer(data, monkeypatch):
    """The plain check answers itself (no serializer made), with what the serializer answers."""
    expected = _serializers_reading(data)

    def refused(*args, **kwargs):
        raise AssertionError("the serializer was made for a plain body")

    monkeypatch.setattr(serializers, "TurnCreateSerializer", refused)
    assert ("valid", turn_body(data)) == expected


def _refusing_secret(value):
    if "secret" in value:
        raise ValidationError("No secrets.")


def _add_a_field_validator(monkeypatch):
    """`validators=[...]` written in the message's declaration."""
    field = StrictCharField(max_length=LONGEST, trim_whitespace=True, validators=[_refusing_secret])
    monkeypatch.setitem(TurnCreateSerializer._declared_fields, "message", field)


def _add_a_required_field(monkeypatch):
    monkeypatch.setitem(TurnCreateSerializer._declared_fields, "secret", StrictCharField())


def _add_a_validate_message(monkeypatch):
    def validate_message(self, value):
        _refusing_secret(value)
        return value

    monkeypatch.setattr(TurnCreateSerializer, "validate_message", validate_message, raising=False)


def _add_a_validate(monkeypatch):
    def validate(self, attrs):
        _refusing_secret(attrs["message"])
        return attrs

    monkeypatch.setattr(TurnCreateSerializer, "validate", validate)


@pytest.mark.parametrize(
    "add_rule",
    [_add_a_field_validator, _add_a_required_field, _add_a_validate_message, _add_a_validate],
    ids=["field-validator", "required-field", "validate_message", "validate"],
)
def test_a_rule_the_serializer_gains_holds_for_a_plain_body_too(add_rule, monkeypatch):
    """The plain check mirrors the serializer's rules as they are written today: a rule the
    serializer gains later (a validator of its message, a `validate_message`, a `validate`)
    or another field is not skipped for the plain body, which goes through the serializer until
    the plain check is taught it."""
    add_rule(monkeypatch)
    data = {"message": "my secret"}
    assert _serializers_reading(data)[0] == "invalid"
    assert _turn_body_reading(data) == _serializers_reading(data)
    assert _turn_body_reading({"message": "hello"}) == _serializers_reading({"message": "hello"})
