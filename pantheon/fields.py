"""Serializer fields that accept exactly what the schema says they accept.

DRF's CharField turns `0` or `true` into `"0"`/`"True"`; the schema says `type: string`, so a
client (or schemathesis) sending a number would see the server accept what the schema calls
invalid; and it checks `max_length` after trimming whitespace, where the schema's `maxLength` is
the length sent. `ModelSerializer` here maps model text columns to `StrictCharField`.

A trimmed text with nothing to see is blank: a name of zero-width spaces, a BOM, tag characters
or the braille blank is refused as `"   "` is, not stored as a name no list can show. Nor may
a name (`is_name`: a room's, an agent's, a session's title) open with a bidi override,
embedding or isolate, which would make what follows read in another order (in the console
too); a message, a goal or a role prompt may, as a right-to-left writer's text may need to.
A name is one line, and holds no control character (C0, DEL, C1: `control_character`), which
would ring, move or recolour a terminal that shows it; white space at its ends is trimmed as
ever ("Ada\n" is "Ada"). A multi-line text keeps its tabs and line breaks. A name is kept in
Unicode's composed form (NFC): "Cafe\u0301", as some keyboards and pastes send it, is stored
"Caf\u00e9", which is what an operator types into the console's search to find it.
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
# free variation selectors and the variation selectors; and the braille pattern blank, a glyph
# of no dots that fonts draw as a space.
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
        0x2800,
    ]
)

# Beyond the BMP: the tag characters (U+E0001, U+E0020-U+E007F; they end emoji tag sequences
# such as the flag of England, U+1F3F4 U+E0067 ... U+E007F, which its first character shows)
# and the supplementary variation selectors. All are in plane 14 under one high surrogate
# (U+DB40), which is what lets the schema's pattern name them (`_pattern_class`).
_IGNORABLE_SUPPLEMENTARY = frozenset(
    chr(code) for code in [0xE0001, *range(0xE0020, 0xE0080), *range(0xE0100, 0xE01F0)]
)

# The bidi controls that make the text after them read in another order: the embeddings and
# overrides (LRE, RLE, PDF, LRO, RLO) and the isolates (LRI, RLI, FSI, PDI). A name may hold
# them, not open with them. The marks (LRM, RLM, ALM) reorder nothing, and right-to-left
# scripts need none of these.
_BIDI_CONTROLS = frozenset(chr(code) for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])

# Format characters that are drawn: the prepended concatenation marks (the Arabic number sign,
# the end of ayah...), which carry the digits after them.
_VISIBLE_FORMAT = frozenset(
    chr(code) for code in [*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2]
)

# The control characters: C0 (U+0000-U+001F: tab, line feed, carriage return, escape...), DEL
# and C1 (U+0080-U+009F: next line, the control sequence introducer...).
_CONTROLS = frozenset(chr(code) for code in [*range(0x20), *range(0x7F, 0xA0)])

CONTROL_CHARACTER_MESSAGE = (
    "May not hold a control character (U+0000 to U+001F, U+007F to U+009F: a tab, a line "
    "break, an escape...): this holds {code_point}."
)


def control_character(text: str) -> str | None:
    """The first control character in a text (`_CONTROLS`) as `U+001B`, or None."""
    for character in text:
        if character in _CONTROLS:
            return f"U+{ord(character):04X}"
    return None


# What trimming takes off a text's ends: whitespace (str.strip()'s), and the zero-width
# characters that join or break nothing there. Not the other format characters: a bidi mark may
# end a right-to-left name on purpose, and tag characters end some flags (U+1F3F4 ... U+E007F).
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_EDGES = _WHITESPACE + "\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff"


def invisible(character: str) -> bool:
    """Whether a character shows nothing: whitespace of any kind, a format character (zero-width
    space and joiners, word joiner, BOM, soft hyphen, bidi controls...), another
    default-ignorable one or the braille blank; beyond the BMP, a tag character or a
    supplementary variation selector (the other format characters there, musical or
    hieroglyph controls, count as visible)."""
    if ord(character) >= 0x10000:
        return character in _IGNORABLE_SUPPLEMENTARY
    return (
        character.isspace()
        or (unicodedata.category(character) == "Cf" and character not in _VISIBLE_FORMAT)
        or character in _IGNORABLE_NOT_FORMAT
    )


def blank(text: str) -> bool:
    """Whether a text has nothing to see: empty, or invisible characters only."""
    return all(map(invisible, text))


def trimmed(text: str) -> str:
    """A text as a trimmed field reads it: white space and zero-width characters off both ends,
    "" when nothing is left to see."""
    return "" if blank(text) else text.strip(_EDGES)


def opens_with_bidi_control(text: str) -> bool:
    """Whether a bidi override, embedding or isolate comes before the text's first visible
    character (it would reorder what follows)."""
    for character in text:
        if character in _BIDI_CONTROLS:
            return True
        if not invisible(character):
            return False
    return False


class StrictCharField(serializers.CharField):
    """A string, as the schema says. Trimmed (unless `trim_whitespace=False`), a text with nothing
    to see is blank: "\\u200b" or "\\u3000\\ufeff" is refused where "   " is (400 "This field may
    not be blank."), or is "" where blank is allowed; trimming takes zero-width characters off
    the ends as it does whitespace. A name (`is_name`) opening with a bidi override, embedding
    or isolate (U+202E "\\u202egnp.exe" reads "exe.png") is refused, code `bidi_control`, and
    so is one holding a control character once trimmed, code `control_character`."""

    default_error_messages = {
        "invalid": "Must be a string.",
        "bidi_control": (
            "May not begin with a bidi override, embedding or isolate (U+202A-U+202E, "
            "U+2066-U+2069): it would change the order in which the rest reads."
        ),
        "control_character": CONTROL_CHARACTER_MESSAGE,
    }

    def __init__(self, *, is_name: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.is_name = is_name

    def run_validation(self, data=serializers.empty):
        if isinstance(data, str):
            # The schema's maxLength is the length sent: checked before trimming, so a text
            # padded past it with whitespace is refused.
            if self.max_length is not None and len(data) > self.max_length:
                self.fail("max_length", max_length=self.max_length)
            if self.trim_whitespace:
                data = trimmed(data)
                if self.is_name and opens_with_bidi_control(data):
                    self.fail("bidi_control")
            if self.is_name and (code_point := control_character(data)) is not None:
                self.fail("control_character", code_point=code_point)
            if self.is_name:
                # Composed as typed elsewhere. Its length is checked again once composed
                # (DRF's validators run on the value): a few characters compose to two.
                data = unicodedata.normalize("NFC", data)
        return super().run_validation(data)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _pattern_class(characters: frozenset[str], *, negated: bool = False) -> str:
    """A regex class of `characters`, which means the same to Python's regex and to an
    ECMAScript one, with the `u` flag or without. BMP characters are spelt as escapes, in
    ranges (`\\s` is Python's whitespace here and ECMAScript's there). Those beyond it cannot
    be: Python has no escape ECMAScript reads, so they are written as themselves, one by one.
    Without the `u` flag ECMAScript reads each as two surrogates (a range of them would be
    a range from a low surrogate to a high one, an error); as all of them share one high
    surrogate, the class still holds a pair exactly when it holds the character, and any other
    character beyond the BMP has a high surrogate the class does not hold."""
    codes = sorted(map(ord, characters))
    assert len({(code - 0x10000) >> 10 for code in codes if code >= 0x10000}) <= 1
    ranges: list[list[int]] = []
    for code in (code for code in codes if code < 0x10000):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])

    def spelt(code: int) -> str:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    parts = [spelt(a) if a == b else f"{spelt(a)}-{spelt(b)}" for a, b in ranges]
    parts += [chr(code) for code in codes if code >= 0x10000]
    return f"[{'^' if negated else ''}{''.join(parts)}]"


@functools.cache
def _invisible_characters() -> frozenset[str]:
    return frozenset(c for c in map(chr, range(0x10000)) if invisible(c)) | (
        _IGNORABLE_SUPPLEMENTARY
    )


@functools.cache
def text_pattern(*, allow_blank: bool, is_name: bool) -> str:
    """A JSON Schema pattern for what a trimmed text must be, by the server's measure (`blank`,
    `opens_with_bidi_control`, `control_character`): a visible character, with no bidi override,
    embedding or isolate among the invisible ones before it if it is a name; or, where blank is
    allowed, at least one invisible character and nothing else. `\\S` called "\\u001e" (which
    str.strip() trims) and "\\u200b" valid. A name's pattern spans the whole text: no control
    character but in the white space that trimming takes off its ends."""
    hidden = _invisible_characters()
    if is_name:
        lead = _name_pattern(hidden)
    else:
        visible = _pattern_class(hidden, negated=True)
        # `(?:...+)?`, not `...*`: schemathesis folds a maxLength into a pattern shaped `^x*y`,
        # and writes the tag characters of the class it copies as `\\U000e0001`, Python's
        # escape, which its own ECMAScript check then refuses (no test case for the operation).
        lead = f"(?:{_pattern_class(hidden)}+)?{visible}"
    # Where blank is allowed, spectacular offers "" on its own (`oneOf` this or `maxLength: 0`):
    # the pattern must not match it too.
    return f"^(?:{_pattern_class(hidden)}+$|{lead})" if allow_blank else f"^{lead}"


def _name_pattern(hidden: frozenset[str]) -> str:
    """A name as sent: trimmed ends (white space, zero-width characters), then the name itself,
    which begins and ends with what trimming keeps, holds no control character, and has no bidi
    override, embedding or isolate among the invisible characters before its first visible one.
    Each `x*` written `(?:x+)?`, as in `text_pattern`."""
    edges = frozenset(_EDGES)
    before_visible = hidden - _BIDI_CONTROLS - _CONTROLS
    edge = _pattern_class(edges)
    first = _pattern_class(before_visible - edges)
    leading = _pattern_class(before_visible)
    visible = _pattern_class(hidden | _CONTROLS, negated=True)
    inner = _pattern_class(_CONTROLS, negated=True)
    last = _pattern_class(_CONTROLS | edges, negated=True)
    return f"(?:{edge}+)?(?:{first}(?:{leading}+)?)?{visible}(?:(?:{inner}+)?{last})?(?:{edge}+)?$"


class StrictCharFieldSchema(OpenApiSerializerFieldExtension):
    """A request's trimmed text must hold a visible character unless it may be blank: `"   "`
    or `"\\u200b"` meets `minLength: 1` and is refused (400 "may not be blank"); and no name may
    open with a bidi override. The schema says so with a `pattern` (`text_pattern`). A field
    with a RegexValidator keeps that pattern, which spectacular adds after this."""

    target_class = StrictCharField

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        schema = auto_schema._map_serializer_field(field, direction, bypass_extensions=True)
        if (
            direction == "request"
            and field.trim_whitespace
            and (field.is_name or not field.allow_blank)  # else any text will do
            and "pattern" not in schema
            and not any(isinstance(v, RegexValidator) for v in field.validators)
        ):
            schema["pattern"] = text_pattern(allow_blank=field.allow_blank, is_name=field.is_name)
        return schema


class NullIsLeftOut(serializers.Serializer):
    """A request body's optional field sent as null is the field left out: its default in a
    create, no change in a PATCH. Most generated clients write an unset optional field as
    null, which was a 400 "This field may not be null." (`"title": null` opening a session,
    `"goal": null` creating a room). A field that may be left out (not required, or any in a
    partial update) thus accepts null, and the schema says `nullable` (drf-spectacular reads
    `allow_null`, and marks a PATCH's serializer partial as DRF does); a required field's null
    stays a 400, as does null inside a list."""

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            if not field.read_only and not field.allow_null and self._may_leave_out(field):
                field.allow_null = True
                field.null_is_left_out = True  # type: ignore[attr-defined]
        return fields

    def _may_leave_out(self, field) -> bool:
        return not field.required or bool(getattr(self.root, "partial", False))

    def to_internal_value(self, data):
        if isinstance(data, dict):
            left_out = {
                name
                for name, field in self.fields.items()
                if data.get(name, "") is None and getattr(field, "null_is_left_out", False)
            }
            if left_out:
                data = {name: value for name, value in data.items() if name not in left_out}
        return super().to_internal_value(data)


class ModelSerializer(NullIsLeftOut, serializers.ModelSerializer):
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
