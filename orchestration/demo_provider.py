"""The offline demo LLM: deterministic answers through litellm, with no key and no network.

Registered with litellm as the `pantheon_demo` provider, it makes every mode work end to end
on a fresh machine. It reads which contract a call belongs to from the system prompt:

- a routing call (built by orchestration.routing) gets `{"selected_agent_keys": [...]}`:
  the roster agents whose key, name, or a role word of 4+ letters appears in the user's
  message, in seating order; when none does, those of them who answered the previous exchange
  (a follow-up), else the first agent;
- a summary call (built by orchestration.summary) gets the summary JSON contract, derived
  from the transcript's sentences (but those of its own agent answers, which say nothing), its
  lists carrying forward the previous summary's;
- any other call is an agent call: a reply signed "[Name @key]" that quotes the start of the
  latest user message.

Usage is the token estimate of the prompt and of the reply, so metering has numbers to meter.

Test hooks: when the latest user message contains one of these literals the call fails the
way a provider would, so the apps can exercise failure paths through the real gateway:
`[[demo:fail]]` raises InternalServerError (a 5xx: retried, then "provider_error"),
`[[demo:rate_limit]]` raises RateLimitError (retried, then "rate_limited"),
`[[demo:timeout]]` raises Timeout (not retried).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

from orchestration.budget import estimate_tokens
from orchestration.context import read_agent_identity
from orchestration.litellm_loader import DEMO_PROVIDER, load_litellm
from orchestration.routing import ROUTING_PROMPT_HEAD, read_previous_answerers, read_roster
from orchestration.summary import (
    LIST_ITEM_MARK,
    PREVIOUS_SUMMARY_HEADING,
    SUMMARY_PROMPT_HEAD,
    TRANSCRIPT_HEADING,
)
from orchestration.types import SUMMARY_LISTS

litellm: Any = load_litellm()
FAIL_HOOK = "[[demo:fail]]"
RATE_LIMIT_HOOK = "[[demo:rate_limit]]"
TIMEOUT_HOOK = "[[demo:timeout]]"

_QUOTE_CHARS = 80
_MIN_ROLE_WORD = 4
# Words too common to say anything about an agent's role; without this every agent whose
# role prompt says "with" or "your" would be selected for most messages.
_COMMON_WORDS = frozenset(
    {
        "about",
        "also",
        "agent",
        "agents",
        "answer",
        "been",
        "could",
        "from",
        "have",
        "into",
        "just",
        "like",
        "make",
        "more",
        "most",
        "only",
        "over",
        "room",
        "should",
        "some",
        "such",
        "than",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "very",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "would",
        "your",
    }
)
_WORD = re.compile(r"[a-z0-9_]+")
_PIECE = re.compile(r"\s*\S+")  # a word with the space before it: pieces join back exactly
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_SPEAKER_LINE = re.compile(r"^\[(?P<speaker>[^\]\n]+)\]: ?(?P<content>.*)$")
# The start of an answer of the demo's own (`_agent_answer`): a canned take on the question.
# Another agent's answer as a prompt gives it (`context._render`'s prefix: "[Ada @ada]: "):
# this turn's earlier answers follow the user's message as user messages.
_ATTRIBUTED = re.compile(r"\[[^\n]+?\]: ")
_OWN_ANSWER = re.compile(r"^\[[^\]\n]+ @[a-z0-9_]+\] On “")
_DECISION = re.compile(r"\b(decide[ds]?|decision|agreed?|will)\b", re.IGNORECASE)
_ACTION = re.compile(r"\b(todo|to-do|please|need to|needs to)\b", re.IGNORECASE)
_MAX_ITEMS = 5
_MAX_FACTS = 3

_TAKES = (
    "I would start from the constraints we are sure of and test the simplest option first.",
    "the main risk is an unstated assumption; naming it now saves a rewrite later.",
    "I see two workable paths; the cheaper one to reverse should go first.",
    "a small concrete example would settle this faster than more discussion.",
    "I agree with the direction, with one caveat: measure before optimising.",
    "the answer depends on scale; for now the straightforward design is enough.",
)


class DemoLLM(litellm.CustomLLM):
    """Sync, async and streamed answers; the stream sends the same text word by word and the
    usage with its last chunk."""

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
        return _answer(model, messages)

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
        return _answer(model, messages)

    async def astreaming(
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        response = _answer(model, messages)
        for piece in _PIECE.findall(response.choices[0].message.content):
            yield {
                "text": piece,
                "is_finished": False,
                "finish_reason": "",
                "usage": None,
                "index": 0,
                "tool_use": None,
            }
        usage = response.usage
        yield {
            "text": "",
            "is_finished": True,
            "finish_reason": "stop",
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
            "index": 0,
            "tool_use": None,
        }


_registration_lock = threading.Lock()


def register_demo_provider() -> None:
    """Route "pantheon_demo/..." models to DemoLLM. Idempotent and thread-safe."""
    with _registration_lock:
        if not any(item.get("provider") == DEMO_PROVIDER for item in litellm.custom_provider_map):
            litellm.custom_provider_map.append(
                {"provider": DEMO_PROVIDER, "custom_handler": DemoLLM()}
            )
        # litellm copies the map into these lists at the start of each completion call; doing
        # it now lets get_llm_provider() recognise the provider before the first call.
        if DEMO_PROVIDER not in litellm.provider_list:
            litellm.provider_list.append(DEMO_PROVIDER)
        if DEMO_PROVIDER not in litellm._custom_providers:
            litellm._custom_providers.append(DEMO_PROVIDER)


def _answer(model: str, messages: list) -> Any:
    system = _content_of(next((m for m in messages if _role_of(m) == "system"), None))
    users = [_content_of(m) for m in messages if _role_of(m) == "user"]
    latest_user = users[-1] if users else ""
    if not system.startswith((ROUTING_PROMPT_HEAD, SUMMARY_PROMPT_HEAD)):
        # An agent's message to answer: the last user message but this turn's earlier
        # answers, which follow it attributed to the agents who gave them.
        latest_user = next((text for text in reversed(users) if not _ATTRIBUTED.match(text)), "")
    _raise_for_hooks(latest_user, model)

    if system.startswith(ROUTING_PROMPT_HEAD):
        text = _routing_answer(system, latest_user)
    elif system.startswith(SUMMARY_PROMPT_HEAD):
        text = _summary_answer(latest_user)
    else:
        text = _agent_answer(system, latest_user, messages)

    prompt_tokens = sum(estimate_tokens(_content_of(m)) for m in messages)
    completion_tokens = estimate_tokens(text)
    return litellm.ModelResponse(
        model=model,
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    )


def _raise_for_hooks(latest_user: str, model: str) -> None:
    if FAIL_HOOK in latest_user:
        raise litellm.InternalServerError(
            message="demo provider failure requested by [[demo:fail]]",
            llm_provider=DEMO_PROVIDER,
            model=model,
        )
    if RATE_LIMIT_HOOK in latest_user:
        raise litellm.RateLimitError(
            message="demo rate limit requested by [[demo:rate_limit]]",
            llm_provider=DEMO_PROVIDER,
            model=model,
        )
    if TIMEOUT_HOOK in latest_user:
        raise litellm.Timeout(
            message="demo timeout requested by [[demo:timeout]]",
            model=model,
            llm_provider=DEMO_PROVIDER,
        )


def _routing_answer(system: str, user_message: str) -> str:
    roster = read_roster(system)
    message_words = set(_WORD.findall(user_message.lower()))
    lowered = user_message.lower()
    selected = [
        entry.key
        for entry in roster
        if entry.key in message_words
        or _mentions_name(lowered, entry.name)
        or _role_words(entry.role) & message_words
    ]
    if not selected:
        seated = {entry.key for entry in roster}
        selected = [key for key in read_previous_answerers(system) if key in seated]
    if not selected and roster:
        selected = [roster[0].key]
    return json.dumps({"selected_agent_keys": selected})


def _mentions_name(lowered_message: str, name: str) -> bool:
    name = name.strip().lower()
    if not name:
        return False
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", lowered_message) is not None


def _role_words(role: str) -> set[str]:
    return {
        word
        for word in _WORD.findall(role.lower())
        if len(word) >= _MIN_ROLE_WORD and word not in _COMMON_WORDS
    }


def _summary_answer(request: str) -> str:
    previous, _, transcript = request.partition(TRANSCRIPT_HEADING)
    speakers: list[str] = []
    contents: list[str] = []
    for line in transcript.splitlines():
        match = _SPEAKER_LINE.match(line)
        if match:
            speaker = match.group("speaker")
            if speaker not in speakers:
                speakers.append(speaker)
            contents.append(match.group("content"))
        elif contents:
            contents[-1] += "\n" + line

    questions: list[str] = []
    decisions: list[str] = []
    actions: list[str] = []
    facts: list[str] = []
    for content in contents:
        if _OWN_ANSWER.match(content):
            continue
        for sentence in _SENTENCE_END.split(content):
            sentence = sentence.strip()
            if not sentence:
                continue
            if sentence.endswith("?"):
                bucket, limit = questions, _MAX_ITEMS
            elif _ACTION.search(sentence):
                bucket, limit = actions, _MAX_ITEMS
            elif _DECISION.search(sentence):
                bucket, limit = decisions, _MAX_ITEMS
            else:
                bucket, limit = facts, _MAX_FACTS
            if sentence not in bucket and len(bucket) < limit:
                bucket.append(sentence)

    carried = _previous_lists(previous)
    facts = _carried_forward(carried["key_facts"], facts, _MAX_FACTS)
    decisions = _carried_forward(carried["decisions"], decisions, _MAX_ITEMS)
    questions = _carried_forward(carried["open_questions"], questions, _MAX_ITEMS)
    actions = _carried_forward(carried["action_items"], actions, _MAX_ITEMS)

    participants = ", ".join("the user" if s == "user" else s for s in speakers) or "nobody"
    count = len(contents)
    summary = f"{count} message{'s' if count != 1 else ''} between {participants}."
    if facts:
        summary += f" It began with: {_shorten(facts[0], 120)}"
    return json.dumps(
        {
            "summary": summary,
            "key_facts": facts,
            "decisions": decisions,
            "open_questions": questions,
            "action_items": actions,
        },
        ensure_ascii=False,
    )


def _previous_lists(request_head: str) -> dict[str, list[str]]:
    """The previous summary's lists, read back from the summary request's part before the
    transcript (`orchestration.summary.previous_for_summarizer`)."""
    _, _, previous = request_head.partition(PREVIOUS_SUMMARY_HEADING)
    by_heading = {f"{label}:": field for field, label in SUMMARY_LISTS}
    lists: dict[str, list[str]] = {field: [] for field, _ in SUMMARY_LISTS}
    current: str | None = None
    for line in previous.splitlines():
        if line in by_heading:
            current = by_heading[line]
        elif current is not None and line.startswith(LIST_ITEM_MARK):
            lists[current].append(line[len(LIST_ITEM_MARK) :].strip())
        else:
            current = None
    return lists


def _carried_forward(previous: list[str], new: list[str], limit: int) -> list[str]:
    """The previous summary's items, then the new ones it did not hold: the newest `limit`."""
    merged = previous + [item for item in new if item not in previous]
    return merged[-limit:]


def _agent_answer(system: str, latest_user: str, messages: list) -> str:
    identity = read_agent_identity(system)
    signature = f"[{identity[0]} @{identity[1]}]" if identity else "[Pantheon demo]"
    # A stable digest (never hash(), which is salted per process) keeps replies reproducible
    # while letting different agents and conversations give different takes.
    digest = hashlib.sha256(
        "\x00".join([signature, latest_user, str(len(messages))]).encode()
    ).digest()
    take = _TAKES[digest[0] % len(_TAKES)]
    return f"{signature} On “{_shorten(latest_user, _QUOTE_CHARS)}”: {take}"


def _shorten(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _role_of(message: Any) -> str:
    return message.get("role", "") if isinstance(message, dict) else getattr(message, "role", "")


def _content_of(message: Any) -> str:
    if message is None:
        return ""
    content = (
        message.get("content") if isinstance(message, dict) else getattr(message, "content", "")
    )
    if isinstance(content, list):
        # OpenAI-style content parts: only the text parts mean anything to the demo.
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""
