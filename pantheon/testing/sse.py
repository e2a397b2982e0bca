"""A minimal Server-Sent Events reader for tests and benchmarks (httpx streaming responses)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    id: int
    name: str
    data: Any
    received_at: float = field(default_factory=time.monotonic)


def events(response) -> Iterator[Event]:
    """The events of an `httpx` streaming response, as they arrive (comments skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                yield Event(
                    id=int(fields.get("id", "0")),
                    name=fields.get("event", "message"),
                    data=json.loads(fields["data"]),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value
