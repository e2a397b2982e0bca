"""Serializer fields that accept exactly what the schema says they accept.

DRF's CharField turns `0` or `true` into `"0"`/`"True"`; the schema says `type: string`, so a
client (or schemathesis) sending a number would see the server accept what the schema calls
invalid; and it checks `max_length` after trimming whitespace, where the schema's `maxLength` is
the length sent. `ModelSerializer` here maps model text columns to `StrictCharField`.
"""

from django.core.validators import RegexValidator
from django.db import models
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        # The schema's maxLength is the length sent: DRF checks it after trimming, so a text
        # padded past it with whitespace would be accepted.
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


# At least one character that is not whitespace (JSON Schema patterns match anywhere), by the
# server's measure: DRF trims with str.strip(), whose whitespace is not ECMAScript's `\s` (it
# also takes U+001C-U+001F and U+0085, and leaves U+FEFF), so `\S` called "\u001e" valid.
NOT_BLANK = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


class StrictCharFieldSchema(OpenApiSerializerFieldExtension):
    """A request's text that is trimmed and may not be blank must hold a character that is not
    whitespace: `"   "` meets `minLength: 1` and is refused (400 "may not be blank"), so the
    schema says so with a `pattern`. A field with a RegexValidator keeps that pattern, which
    spectacular adds after this."""

    target_class = StrictCharField

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        schema = auto_schema._map_serializer_field(field, direction, bypass_extensions=True)
        if (
            direction == "request"
            and field.trim_whitespace
            and not field.allow_blank
            and "pattern" not in schema
            and not any(isinstance(v, RegexValidator) for v in field.validators)
        ):
            schema["pattern"] = NOT_BLANK
        return schema


class ModelSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
    }


MAX_LIST_ITEMS = 50


class StrictUUIDField(serializers.UUIDField):
    """A UUID written as a string, as the schema says. DRF's field also takes a number (`1`
    became 00000000-0000-0000-0000-000000000001, which the refusal then named)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "format": "uuid"},
        "maxItems": MAX_LIST_ITEMS,
        "uniqueItems": True,
    }
)
class UUIDSetField(serializers.ListField):
    """Ids, each once (the service says which one repeats)."""

    def __init__(self, **kwargs):
        super().__init__(child=StrictUUIDField(), max_length=MAX_LIST_ITEMS, **kwargs)
