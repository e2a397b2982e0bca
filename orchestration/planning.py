"""Which agents a message tags in the manual mode (a roundtable answers in seat order).

A tag is `@` and an agent key, set apart from the words around it: the character before the `@`
and the one after the key may be a space, punctuation (`(@ada)`, `@ada's`, `@ada-bot`, `@ada,`)
or a character of a script written without spaces between words (Chinese, Japanese, Thai…:
`请@ada回答`), never a letter, digit or underscore of any other script. So `ana@ada.dev` and
`merci@ada` are addresses, as an email's local part is, `@ada_lovelace` and `@adaé` are other
names, and `@ada` after Chinese text is a tag, as is `＠ada` (the fullwidth at sign CJK input
methods type). A tag in code (a fenced block, or between
backticks) is code, not a tag, as in chat apps; so is a handle in a link
(`https://medium.com/@ada/…`, `www.youtube.com/@ada`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# `@`, or the fullwidth `＠` (U+FF20) that Chinese, Japanese and Korean input methods type.
_MENTION = re.compile(r"[@\uff20]([A-Za-z0-9_]{1,32})")
_WORD_CHARACTER = re.compile(r"\w")
# Scripts written without spaces between words, whose text may run straight into a tag: Thai,
# Lao, Tibetan, Myanmar, Khmer, Hangul, the CJK ideographs (and 々 〆 〇), kana, and their
# halfwidth forms.
_WITHOUT_SPACES = re.compile(
    "[\u0e00-\u0fff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u2e80-\u2fdf"
    "\u3005-\u3007\u303b\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff66-\uffdc\U00020000-\U0003ffff]"
)
# A fence of three or more backticks or tildes opens a code block to the same fence, or longer,
# on a line of its own (or to the end of the text); a run of backticks opens inline code to the
# next run of as many.
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
# A link, to the next space: a profile's or a post's (`https://medium.com/@ada/…`) holds a
# handle, no tag, as an address does. In any case: a phone capitalizes a message's first word
# (`Www.youtube.com/@ada`).
_LINK = re.compile(r"(?<![\w.+-])(?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)\S+", re.IGNORECASE)


def parse_tags(text: str, valid_keys: Iterable[str]) -> list[str]:
    """The roster keys @-mentioned in `text`, in first-mention order, each once."""
    return _mentioned(_without_links(_without_code(text)), valid_keys)


def tagged_in_code_only(text: str, valid_keys: Iterable[str]) -> bool:
    """Whether `text`, which tags none of `valid_keys`, would tag one if its code were prose:
    what a refusal says (a backtick typed for an apostrophe opens inline code)."""
    return bool(_mentioned(_without_links(text), valid_keys))


def _without_links(text: str) -> str:
    """`text` with its links blanked out (a space for each)."""
    return _LINK.sub(" ", text)


def _mentioned(prose: str, valid_keys: Iterable[str]) -> list[str]:
    known = {key.lower() for key in valid_keys}
    tagged: list[str] = []
    for match in _MENTION.finditer(prose):
        if _joins(prose, match.start() - 1) or _joins(prose, match.end()):
            continue
        key = match.group(1).lower()
        if key in known and key not in tagged:
            tagged.append(key)
    return tagged


def _joins(text: str, index: int) -> bool:
    """Whether the character at `index` would make a mention beside it part of a word: a
    combining mark too ("@ada" and U+0301 reads "@adá", as "@adaé" does)."""
    if not 0 <= index < len(text):
        return False
    character = text[index]
    if _WITHOUT_SPACES.match(character):  # its vowel signs too (Thai's are combining marks)
        return False
    return unicodedata.category(character).startswith("M") or bool(_WORD_CHARACTER.match(character))


def _without_code(text: str) -> str:
    """`text` with its code blocks and inline code blanked out (a space for each)."""
    lines = text.split("\n")
    kept: list[str] = []
    fence: str | None = None
    for line in lines:
        opening = _FENCE.match(line)
        if fence is None and opening is not None:
            fence = opening.group(1)
            kept.append(" ")
        elif fence is not None:
            closing = _FENCE.match(line)
            if closing is not None and _closes(closing.group(1), fence, line):
                fence = None
            kept.append(" ")
        else:
            kept.append(line)
    return _INLINE_CODE.sub(" ", "\n".join(kept))


def _closes(candidate: str, fence: str, line: str) -> bool:
    """Whether a fence `candidate` on `line` closes a block opened by `fence`: the same
    character, at least as long, and nothing after it on the line."""
    return (
        candidate[0] == fence[0]
        and len(candidate) >= len(fence)
        and not line.strip()[len(candidate) :].strip()
    )
