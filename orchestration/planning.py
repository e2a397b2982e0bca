"""Which agents a message tags in the manual mode (a roundtable answers in seat order)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# The @ must not follow a word character (so "ana@ada.dev" is an email, not a tag) and the key
# must not run on into more key characters (so "@ada_lovelace" never tags "ada").
_TAG = re.compile(r"(?<!\w)@([A-Za-z0-9_]{1,32})(?![A-Za-z0-9_])")


def parse_tags(text: str, valid_keys: Iterable[str]) -> list[str]:
    """The roster keys @-mentioned in `text`, in first-mention order, each once."""
    known = {key.lower() for key in valid_keys}
    tagged: list[str] = []
    for match in _TAG.finditer(text):
        key = match.group(1).lower()
        if key in known and key not in tagged:
            tagged.append(key)
    return tagged
