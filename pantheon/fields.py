"""Serializer fields that accept exactly what the schema says they accept.

DRF's CharField turns `0` or `true` into `"0"`/`"True"`; the schema says `type: string`, so a
client (or schemathesis) sending a number would see the server accept what the schema calls
invalid; and it checks `max_length` after trimming whitespace, where the schema's `maxLength` is
the length sent. `ModelSerializer` here maps model text columns to `StrictCharField`.

A trimmed text with nothing to see is blank: a name of zero-width spaces or a BOM is refused as
`"   "` is, not stored as a name no list can show.
"""

import functools
import unicodedata

from django.core.validators import RegexValidator
from django.db import models
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# Code points Unicode calls default-ignorable (they show nothing) that are not format characters
# (Cf): the combining grapheme joiner, the Hangul fillers, Khmer's inherent vowels, Mongolian's
# free variation selectors and the variation selectors.
_IGNORABLE_NOT_FORMAT = frozenset(
    chr(code)
    for code in [
        0x034F,
        0x115F,
        0x1160,
        0x17B4,
        0x17B5,
        *range(0x180B, 0x180E),
        0x180F,
        0x3164,
        *range(0xFE00, 0xFE10),
        0xFFA0,
    ]
)

# Format characters that are drawn: the prepended concatenation marks (the Arabic number sign,
# the end of ayah...), which carry the digits after them.
_VISIBLE_FORMAT = frozenset(
    chr(code) for code in [*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2]
)

# What trimming takes off a text's ends: whitespace (str.strip()'s), and the zero-width
# characters that join or break nothing there. Not the other format characters: a bidi mark may
# end a right-to-left name on purpose, and tag characters end some flags (U+1F3F4 ... U+E007F).
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_EDGES = _WHITESPACE + "\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff"


def invisible(character: str) -> bool:
    """Whether a character shows nothing: whitespace of any kind, a format character (zero-width
    space and joiners, word joiner, BOM, soft hyphen, bidi controls...), or another
    default-ignorable one. In the BMP only, where the schema's pattern can name them
    (`not_blank_pattern`): beyond it, the tag characters and the supplementary variation
    selectors would be invisible too, but a class holding them is read differently by an
    ECMAScript regex without the `u` flag (as two surrogates), and schemathesis gives up on it."""
    return ord(character) < 0x10000 and (
        character.isspace()
        or (unicodedata.category(character) == "Cf" and character not in _VISIBLE_FORMAT)
        or character in _IGNORABLE_NOT_FORMAT
    )


def blank(text: str) -> bool:
    """Whether a text has nothing to see: empty, or invisible characters only."""
    return all(map(invisible, text))


class StrictCharField(serializers.CharField):
    """A string, as the schema says. Trimmed (unless `trim_whitespace=False`), a text with nothing
    to see is blank: "\\u200b" or "\\u3000\\ufeff" is refused where "   " is (400 "This field may
    not be blank."), or is "" where blank is allowed; trimming takes zero-width characters off
    the ends as it does whitespace."""

    default_error_messages = {"invalid": "Must be a string."}

    def run_validation(self, data=serializers.empty):
        if isinstance(data, str):
            # The schema's maxLength is the length sent: checked before trimming, so a text
            # padded past it with whitespace is refused.
            if self.max_length is not None and len(data) > self.max_length:
                self.fail("max_length", max_length=self.max_length)
            if self.trim_whitespace:
                data = "" if blank(data) else data.strip(_EDGES)
        return super().run_validation(data)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@functools.cache
def not_blank_pattern() -> str:
    """A JSON Schema pattern for "at least one visible character" (patterns match anywhere), by
    the server's measure (`blank`): a class of every BMP character that is not `invisible`,
    spelt out in code points so that it means the same to an ECMAScript regex (with the `u` flag
    or without) as to Python's. `\\S` called "\\u001e" (which str.strip() trims) and "\\u200b"
    valid."""
    ranges: list[list[int]] = []
    for code in range(0x10000):
        if not invisible(chr(code)):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])

    def spelt(code: int) -> str:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    parts = [spelt(a) if a == b else f"{spelt(a)}-{spelt(b)}" for a, b in ranges]
    return f"[^{''.join(parts)}]"


class StrictCharFieldSchema(OpenApiSerializerFieldExtension):
    """A request's text that is trimmed and may not be blank must hold a visible character:
    `"   "` or `"\\u200b"` meets `minLength: 1` and is refused (400 "may not be blank"), so the
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
            schema["pattern"] = not_blank_pattern()
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
