"""Reading the JSON object a model was asked for out of whatever it actually answered.

Models asked for "strict JSON" still wrap it in ```json fences or a sentence of prose; the
routing and summary contracts both accept the first JSON object found in the answer that holds
what they asked for (a model may write another object first: its thoughts, an example of the
format, the roster echoed back).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_FENCED = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
# Bounds the scan of a long answer that is mostly braces and no JSON.
_MAX_OBJECT_STARTS = 64


def first_json_object(
    raw: str, wanted: Callable[[dict[str, Any]], bool] | None = None
) -> dict[str, Any] | None:
    """The first JSON object of `raw` that is `wanted` (any, if None): the whole answer (or an
    object in it when it is an array), then each fenced block's, then each object the prose
    holds, in order."""
    text = raw.strip()
    if not text:
        return None

    def chosen(value: Any) -> dict[str, Any] | None:
        candidates = value if isinstance(value, list) else [value]
        for candidate in candidates:
            if isinstance(candidate, dict) and (wanted is None or wanted(candidate)):
                return candidate
        return None

    whole = _loads(text)
    if whole is not _NOT_JSON:
        return chosen(whole)
    for block in _FENCED.findall(text):
        if (fenced := chosen(_loads(block.strip()))) is not None:
            return fenced
    decoder = json.JSONDecoder()
    for attempt, start in enumerate(m.start() for m in re.finditer(r"\{", text)):
        if attempt >= _MAX_OBJECT_STARTS:
            break
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if (found := chosen(value)) is not None:
            return found
    return None


_NOT_JSON = object()


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON
