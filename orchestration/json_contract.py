"""Reading the JSON object a model was asked for out of whatever it actually answered.

Models asked for "strict JSON" still wrap it in ```json fences or a sentence of prose; the
routing and summary contracts both accept the first JSON object found in the answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCED = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
# Bounds the scan of a long answer that is mostly braces and no JSON.
_MAX_OBJECT_STARTS = 64


def first_json_object(raw: str) -> dict[str, Any] | None:
    text = raw.strip()
    if not text:
        return None
    whole = _loads(text)
    if whole is not _NOT_JSON:
        return whole if isinstance(whole, dict) else None
    for block in _FENCED.findall(text):
        fenced = _loads(block.strip())
        if isinstance(fenced, dict):
            return fenced
    decoder = json.JSONDecoder()
    for attempt, start in enumerate(m.start() for m in re.finditer(r"\{", text)):
        if attempt >= _MAX_OBJECT_STARTS:
            break
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


_NOT_JSON = object()


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON
