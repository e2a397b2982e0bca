"""The summary extraction contract.

The summarizer must answer `{"summary", "key_facts", "decisions", "open_questions",
"action_items"}`. Invalid JSON keeps the answer's text as the summary with empty lists;
missing keys default to empty; both with a warning, never an exception.

The summarizer is given the previous summary, its text and its lists (`previous_for_summarizer`),
and asked to carry the lists forward, updated by the transcript: a summary replaces the one
before it, so what its lists leave out is gone.

Its prompt is kept to the summarizer's budget (`fit_summary_messages`): it folds in the oldest
whole exchanges since the previous summary that fit (a user's message and the answers after
it), and those that do not stay in the raw history for the next summary to fold in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestration.budget import estimate_tokens
from orchestration.context import cut_to_fit
from orchestration.json_contract import first_json_object
from orchestration.types import (
    SUMMARY_LISTS,
    ChatMessage,
    ConversationSummary,
    HistoryMessage,
    Role,
)

logger = logging.getLogger(__name__)

SUMMARY_PROMPT_HEAD = "You maintain the running summary of a Pantheon conversation."
TRANSCRIPT_HEADING = "Transcript (oldest first):"
PREVIOUS_SUMMARY_HEADING = "Previous summary:"
LIST_FIELDS = tuple(field for field, _ in SUMMARY_LISTS)
# How an item of the previous summary's lists starts its line, under its list's label and colon.
LIST_ITEM_MARK = "- "

_MAX_FALLBACK_CHARS = 4000
# Fewer tokens than this left for the transcript beside the instructions: no summary is made.
_MIN_TRANSCRIPT_TOKENS = 64


@dataclass(frozen=True)
class SummaryExtraction:
    summary: str
    key_facts: tuple[str, ...]
    decisions: tuple[str, ...]
    open_questions: tuple[str, ...]
    action_items: tuple[str, ...]
    valid_json: bool
    # The lists the answer gave (an empty one included); those it left out, or all of them for
    # an answer in prose, say nothing of the previous summary's (the engine keeps them).
    lists_given: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SummaryPrompt:
    messages: tuple[ChatMessage, ...]
    # How many messages of the transcript it folds in, from the oldest.
    transcript_used: int
    estimated_tokens: int


def build_summary_messages(
    *, previous_summary: ConversationSummary | None, transcript: Sequence[HistoryMessage]
) -> tuple[ChatMessage, ...]:
    return _summary_messages(
        previous_for_summarizer(previous_summary) or None,
        [_transcript_line(m) for m in transcript],
    )


def previous_for_summarizer(summary: ConversationSummary | None) -> str:
    """The previous summary as the summarizer is given it: its text, then each list that holds
    anything under its label, an item a line ("Decisions:" then "- Use Postgres"). Empty for
    none."""
    if summary is None:
        return ""
    lines = [summary.text.strip()] if summary.text.strip() else []
    for label, items in summary.lists():
        lines.append(f"{label}:")
        lines += [LIST_ITEM_MARK + item for item in items]
    return "\n".join(lines)


def fit_summary_messages(
    *,
    previous_summary: ConversationSummary | None,
    transcript: Sequence[HistoryMessage],
    limit: int,
    model: str | None = None,
    next_role: str | None = None,
) -> SummaryPrompt | None:
    """The summary prompt within `limit` tokens: the oldest exchanges of `transcript` that fit
    whole (`_whole_exchanges`), else the oldest messages that fit, or the first cut short when
    it alone does not. The previous summary (with its lists, `previous_for_summarizer`) is cut
    short from its end too when it would leave that first message less than half the room the
    instructions leave. None when there is nothing to fold in, or the instructions leave no
    room for it. `next_role`: the role of the message after `transcript` when its read stopped
    short of the history (None: the transcript is all)."""
    if not transcript:
        return None
    room = limit - _tokens(_summary_messages(None, []), model)
    if room < _MIN_TRANSCRIPT_TOKENS:
        return None
    lines = [_transcript_line(message) for message in transcript]
    # Each line's estimate with its line break: their sum bounds the estimate of the whole.
    line_tokens = [estimate_tokens("\n" + line, model) for line in lines]

    previous = previous_for_summarizer(previous_summary) or None
    if previous is not None:
        first_share = min(line_tokens[0], room // 2)
        previous = cut_to_fit(
            previous,
            lambda candidate: (
                _tokens(_summary_messages(candidate, []), model) <= limit - first_share
            ),
        )

    used = _tokens(_summary_messages(previous, []), model)
    count = 0
    for tokens in line_tokens:
        if used + tokens > limit:
            break
        used += tokens
        count += 1
    count = _whole_exchanges(transcript, count, next_role)
    messages = _summary_messages(previous, lines[:count])
    total = _tokens(messages, model)
    # A model's own tokenizer may count the whole above its parts.
    while count > 1 and total > limit:
        count = _whole_exchanges(transcript, count - 1, next_role)
        messages = _summary_messages(previous, lines[:count])
        total = _tokens(messages, model)
    if count == 0 or total > limit:
        first = cut_to_fit(
            lines[0],
            lambda candidate: _tokens(_summary_messages(previous, [candidate]), model) <= limit,
        )
        if first is None:
            return None
        count, messages = 1, _summary_messages(previous, [first])
        total = _tokens(messages, model)
    return SummaryPrompt(messages=messages, transcript_used=count, estimated_tokens=total)


def _whole_exchanges(
    transcript: Sequence[HistoryMessage], count: int, next_role: str | None = None
) -> int:
    """How many of the first `count` messages of `transcript` to fold in so that the summary
    ends with a whole exchange (a user's message and the answers after it): one folding in a
    question without its answers would leave them first in the raw history, where a prompt
    cannot show them (`orchestration.context`). `count` itself when not even the first exchange
    is whole within it: the answers left out then wait for the next summary. The transcript's
    end ends an exchange when the turn's own message comes next, or a question (`next_role`,
    when the read of the transcript stopped short)."""
    for end in range(count, 0, -1):
        following = transcript[end].role if end < len(transcript) else next_role
        if following is None or following == Role.USER:
            return end
    return count


def _transcript_line(message: HistoryMessage) -> str:
    return f"[{message.speaker or message.role}]: {message.content}"


def _tokens(messages: Sequence[ChatMessage], model: str | None) -> int:
    return sum(estimate_tokens(message.content, model) for message in messages)


def _summary_messages(
    previous_summary: str | None, lines: Sequence[str]
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
            "The previous summary's lists, if any, follow its text: carry them forward into "
            "yours, updated by the transcript. Keep what still holds, change what the "
            "transcript changed, drop questions since answered and items since done, and add "
            "what is new: your summary replaces the previous one.",
        ]
    )
    request = [PREVIOUS_SUMMARY_HEADING, (previous_summary or "").strip() or "(none)", ""]
    request.append(TRANSCRIPT_HEADING)
    request.extend(lines)
    return (
        ChatMessage(role=Role.SYSTEM, content=system),
        ChatMessage(role=Role.USER, content="\n".join(request)),
    )


def parse_summary(raw: str) -> SummaryExtraction:
    answer = first_json_object(raw)
    if answer is None:
        # The answer sums up the user's conversation: its text is logged only at DEBUG (off in
        # production, LOG_LEVEL=INFO), the warning saying its length alone.
        logger.warning(
            "Summary answer is not a JSON object (an answer of %d characters); keeping its "
            "text, the previous summary's lists kept.",
            len(raw),
        )
        logger.debug("Summary answer (first 200 chars): %s", raw[:200])
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
        logger.warning(
            "Summary answer is missing %s; the previous summary's lists stand for them.", missing
        )

    summary = answer.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        if "summary" not in missing:
            logger.warning(
                "Summary answer has no usable summary text (%s)",
                "blank" if isinstance(summary, str) else type(summary).__name__,
            )
        summary = ""

    lists: dict[str, tuple[str, ...]] = {}
    for key in LIST_FIELDS:
        lists[key] = _string_items(key, answer.get(key))
    return SummaryExtraction(
        summary=summary.strip(),
        valid_json=True,
        lists_given=frozenset(key for key in LIST_FIELDS if key in answer),
        **lists,
    )


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
