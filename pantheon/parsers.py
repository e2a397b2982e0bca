"""The API's one request parser: JSON, bounded, and free of what no field may hold.

DRF's JSONParser hands a 1,000-deep array to Python's recursive decoder (a RecursionError, so a
500), reads a body of any size, and lets `"\\ud800"` or `"\\u0000"` through to serializers,
renderers and PostgreSQL (which refuse them with a 500). This parser refuses all of these
up front with a 4xx, before a view sees the data, so nothing is half-written.
"""

import json
import math

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from pantheon.exceptions import InvalidCharacters, JsonTooDeep, RequestTooLarge, has_unrenderable


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON.")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused past a float's range: Python reads
    1e999999 as infinity, the value NaN and Infinity are refused for being."""
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number is out of range (larger than about 1.8e308).")
    return value


def check_json_value(value, *, max_depth: int) -> None:
    """Refuse nesting deeper than `max_depth` and strings (keys included) with a NUL or a lone
    surrogate. Iterative, so it cannot itself run out of stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if has_unrenderable(item):
                raise InvalidCharacters()
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise JsonTooDeep(f"The JSON body is nested deeper than {max_depth} levels.")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        # The middleware refuses a declared Content-Length over the limit; this catches a
        # chunked body that declares none.
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestTooLarge()
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)
        except (LookupError, UnicodeDecodeError) as exc:
            raise ParseError(f"The body is not valid {encoding} text.") from exc
        try:
            value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        except RecursionError as exc:
            raise JsonTooDeep() from exc
        except ValueError as exc:
            # json's messages name a position, never the input itself.
            raise ParseError(f"JSON parse error - {exc}") from exc
        check_json_value(value, max_depth=settings.PANTHEON_MAX_JSON_DEPTH)
        return value
