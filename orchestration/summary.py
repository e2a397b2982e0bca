"""The summary extraction contract.

The summarizer must answer `{"summary", "key_facts", "decisions", "open_questions",
"action_items"}`. Invalid JSON keeps the answer's text as the summary with empty lists;
missing keys default to empty; both with a warning, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestration.json_contract import first_json_object
from orchestration.types import ChatMessage, HistoryMessage, Role

logger = logging.getLogger(__name__)

SUMMARY_PROMPT_HEAD = "You maintain the running summary of a Pantheon conversation."
TRANSCRIPT_HEADING = "Transcript (oldest first):"
PREVIOUS_SUMMARY_HEADING = "Previous summary:"
LIST_FIELDS = ("key_facts", "decisions", "open_questions", "action_items")

_MAX_FALLBACK_CHARS = 4000


@dataclass(frozen=True)
class SummaryExtraction:
    summary: str
    key_facts: tuple[str, ...]
    decisions: tuple[str, ...]
    open_questions: tuple[str, ...]
    action_items: tuple[str, ...]
    valid_json: bool


def build_summary_messages(
    *, previous_summary: str | None, transcript: Sequence[HistoryMessage]
) -> tuple[ChatMessage, ...]:
    system = "\n".join(
        [
            SUMMARY_PROMPT_HEAD,
            "Answer with strict JSON only (no prose, no code fences), exactly this shape:",
            '{"summary": "...", "key_facts": ["..."], "decisions": ["..."], '
            '"open_questions": ["..."], "action_items": ["..."]}',
            "summary: a concise paragraph covering the whole conversation so far, folding in "
            "the previous summary. key_facts: facts worth remembering. decisions: what was "
            "decided or agreed. open_questions: questions still unanswered. action_items: "
            "things someone still has to do. Every list holds short strings; use [] when "
            "there is nothing to report.",
        ]
    )
    lines = [PREVIOUS_SUMMARY_HEADING, (previous_summary or "").strip() or "(none)", ""]
    lines.append(TRANSCRIPT_HEADING)
    lines.extend(
        f"[{message.speaker or message.role}]: {message.content}" for message in transcript
    )
    return (
        ChatMessage(role=Role.SYSTEM, content=system),
        ChatMessage(role=Role.USER, content="\n".join(lines)),
    )


def parse_summary(raw: str) -> SummaryExtraction:
    answer = first_json_object(raw)
    if answer is None:
        logger.warning(
            "Summary answer is not a JSON object; keeping its text with empty lists. "
            "Raw answer (first 200 chars): %s",
            raw[:200],
        )
        return SummaryExtraction(
            summary=raw.strip()[:_MAX_FALLBACK_CHARS],
            key_facts=(),
            decisions=(),
            open_questions=(),
            action_items=(),
            valid_json=False,
        )

    missing = [key for key in ("summary", *LIST_FIELDS) if key not in answer]
    if missing:
        logger.warning("Summary answer is missing %s; defaulting them to empty.", missing)

    summary = answer.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        if "summary" not in missing:
            logger.warning("Summary answer has no usable summary text: %r", summary)
        summary = ""

    lists: dict[str, tuple[str, ...]] = {}
    for key in LIST_FIELDS:
        lists[key] = _string_items(key, answer.get(key))
    return SummaryExtraction(summary=summary.strip(), valid_json=True, **lists)


def _string_items(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        # A lone string where a list was asked for is still one item, not a list of chars.
        return (value.strip(),) if value.strip() else ()
    if not isinstance(value, list):
        logger.warning(
            "Summary field %s is not a list (%s); ignoring it.", key, type(value).__name__
        )
        return ()
    items: list[str] = []
    dropped = 0
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            dropped += 1
            continue
        text = str(item).strip()
        if text:
            items.append(text)
    if dropped:
        logger.warning("Summary field %s: dropped %d non-text items.", key, dropped)
    return tuple(items)
