"""The orchestrator mode's manager contract: which agents answer a message.

The manager model must answer `{"selected_agent_keys": ["key", ...]}` (a single
`{"selected_agent_key": "key"}` is accepted too). Anything unusable falls back to the first
agent of the roster, with a warning, so a confused manager never fails a turn.

The manager also reads the conversation's previous exchange (`previous_exchange`: the user's
last message and the answers to it, each cut short, with who gave them), so that a follow-up
such as "elaborate on that" can go to whoever answered. Its cost is bounded: at most
`_EXCHANGE_ANSWERS` answers of at most `_EXCHANGE_MESSAGE_TOKENS` tokens each, its question as
long, and the keys of the others who answered.

The manager's prompt is kept to its alias's budget (`fit_routing_messages`): the previous
exchange is left out first, then the roster is shown with shorter roles and room goal, and the
user's message is cut short.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestration.budget import estimate_tokens
from orchestration.context import cut_to_fit, within_tokens
from orchestration.json_contract import first_json_object
from orchestration.types import AgentSpec, ChatMessage, HistoryMessage, Role

logger = logging.getLogger(__name__)

ROUTING_PROMPT_HEAD = (
    "You are the manager of a Pantheon room: you decide which agents answer the user's message."
)
# The roster travels as one JSON line so that the demo provider can read it back exactly.
ROSTER_LINE_PREFIX = "Roster (JSON, in seating order): "

# The manager's answer often quotes or paraphrases the user's message: its text is logged only at
# DEBUG (off in production, LOG_LEVEL=INFO), the warning saying its length alone; so are the
# unknown keys it named, which may be any text (their count is said).
_EXCERPT_CHARS = 200
_ROLE_CHARS = 500
# Shorter and shorter roles and room goal (characters; None: whole) for a roster that leaves the
# user's message too little room in the manager's budget.
_DETAIL_LADDER: tuple[tuple[int, int | None], ...] = (
    (_ROLE_CHARS, None),
    (200, 1000),
    (80, 200),
    (0, 0),
)
# What the user's message keeps at least, in tokens, before the roster is shortened.
_MIN_MESSAGE_TOKENS = 256
# The previous exchange shown to the manager: its question and its newest answers, each cut to
# this many tokens; the keys of the other agents who answered it, at most _EXCHANGE_KEYS.
PREVIOUS_EXCHANGE_HEADING = (
    "The previous exchange of this conversation, for context only (a follow-up such as "
    '"elaborate on that" may be for the agents who answered it):'
)
ALSO_ANSWERED_PREFIX = "Also answered by: "
_EXCHANGE_MESSAGE_TOKENS = 100
_EXCHANGE_ANSWERS = 3
_EXCHANGE_KEYS = 10
_ANSWER_LINE = re.compile(r"^\[[^\]\n]*?(?: @(?P<key>[a-z0-9_]{1,32}))?\]: ")


class FallbackReason:
    """Why a turn's routing fell back to the first choosable agent (`RoutingDecision`)."""

    MANAGER_FAILED = "manager_failed"  # the call failed (its ledger row says how)
    NO_JSON = "no_json"  # the answer held no JSON object
    NO_SELECTION = "no_selection"  # no `selected_agent_keys` in it
    UNKNOWN_AGENTS = "unknown_agents"  # it named no agent that could answer
    EMPTY_SELECTION = "empty_selection"  # it named no one


# Each reason in words, for the API's schema and the console: "the manager fell back: …".
FALLBACK_REASONS = {
    FallbackReason.MANAGER_FAILED: "its call failed",
    FallbackReason.NO_JSON: "its answer held no JSON",
    FallbackReason.NO_SELECTION: "its answer held no selection",
    FallbackReason.UNKNOWN_AGENTS: "it named no agent that could answer",
    FallbackReason.EMPTY_SELECTION: "its answer chose no one",
}


@dataclass(frozen=True)
class RoutingDecision:
    selected_agent_keys: tuple[str, ...]
    fallback_used: bool
    # Why it fell back (a FallbackReason), None when it did not.
    fallback_reason: str | None = None
    # Keys the manager named that no choosable agent has (left out of the choice).
    ignored_agent_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class RosterEntry:
    key: str
    name: str
    role: str


def build_routing_messages(
    *,
    user_input: str,
    roster: Sequence[AgentSpec],
    room_goal: str = "",
    history: Sequence[HistoryMessage] = (),
    model: str | None = None,
) -> tuple[ChatMessage, ...]:
    exchange = previous_exchange(history, roster, model)
    return (
        _routing_system(roster, room_goal, _ROLE_CHARS, None, exchange),
        ChatMessage(role=Role.USER, content=user_input),
    )


def fit_routing_messages(
    *,
    user_input: str,
    roster: Sequence[AgentSpec],
    room_goal: str,
    input_budget: int,
    history: Sequence[HistoryMessage] = (),
    model: str | None = None,
) -> tuple[ChatMessage, ...]:
    """The routing prompt within the manager's `input_budget`: the user's message cut short
    (its beginning, where who it is for is usually said); when the rest leaves the message too
    little, the previous exchange of `history` left out first, then the roster's roles and the
    room goal shortened. When not even the start of the message fits beside the bare roster,
    the message is left whole and the prompt does not fit: such a call is not sent, and
    routing falls back as on any failed call."""
    wanted = min(estimate_tokens(user_input, model), _MIN_MESSAGE_TOKENS)
    exchange = previous_exchange(history, roster, model)
    first_role_chars, first_goal_chars = _DETAIL_LADDER[0]
    ladder = [(first_role_chars, first_goal_chars, exchange)] if exchange else []
    ladder += [(role_chars, goal_chars, "") for role_chars, goal_chars in _DETAIL_LADDER]
    for role_chars, goal_chars, shown in ladder:
        system = _routing_system(roster, room_goal, role_chars, goal_chars, shown)
        room = input_budget - estimate_tokens(system.content, model)
        if room >= wanted:
            break
    message = cut_to_fit(user_input, within_tokens(room, model))
    return system, ChatMessage(role=Role.USER, content=user_input if message is None else message)


def previous_exchange(
    history: Sequence[HistoryMessage], roster: Sequence[AgentSpec], model: str | None = None
) -> str:
    """The manager's view of the last exchange of `history` (its last user message and the
    answers after it), or "" when it holds none: the heading, the question and the newest
    `_EXCHANGE_ANSWERS` answers, each cut to `_EXCHANGE_MESSAGE_TOKENS`, then the keys of the
    agents whose answers are not shown. An answer is named by the agent of `roster` (those
    the manager chooses from) who gave it, as that agent is called now ("[Name @key]: ..."):
    its key may have changed since, or gone to another agent. An answerer the manager cannot
    choose is named without a key."""
    start = next(
        (index for index in range(len(history) - 1, -1, -1) if history[index].role == Role.USER),
        None,
    )
    if start is None:
        return ""
    question, answers = history[start], history[start + 1 :]
    shown = answers[-_EXCHANGE_ANSWERS:]
    lines = [PREVIOUS_EXCHANGE_HEADING]
    for message in (question, *shown):
        # Its beginning only: more than the cut keeps (no token is 16 characters), and the cut
        # bisects over what it is given (an answer of 20,000 characters took 1.5-3.7 ms).
        content = " ".join(message.content[: _EXCHANGE_MESSAGE_TOKENS * 16].split())
        cut = cut_to_fit(content, within_tokens(_EXCHANGE_MESSAGE_TOKENS, model)) or ""
        lines.append(f"[{message.answerer_among(roster) or message.role}]: {cut}")
    hidden = [
        f"@{agent.key}"
        for message in answers[: len(answers) - len(shown)]
        if (agent := message.answerer_in(roster)) is not None
    ]
    hidden = list(dict.fromkeys(hidden))
    if hidden:
        more = len(hidden) - _EXCHANGE_KEYS
        lines.append(
            ALSO_ANSWERED_PREFIX
            + ", ".join(hidden[:_EXCHANGE_KEYS])
            + (f" and {more} more" if more > 0 else "")
        )
    return "\n".join(lines)


def read_previous_answerers(system_prompt: str) -> tuple[str, ...]:
    """The keys of the agents who answered the previous exchange, as `previous_exchange` shows
    it in a routing prompt, in its order; empty when it shows none."""
    _, found, exchange = system_prompt.partition(PREVIOUS_EXCHANGE_HEADING)
    if not found:
        return ()
    keys: list[str] = []
    for line in exchange.strip("\n").splitlines()[1:]:  # the question's line first
        if line.startswith(ALSO_ANSWERED_PREFIX):
            named = line[len(ALSO_ANSWERED_PREFIX) :].split(" and ")[0].split(", ")
            keys[:0] = [key.lstrip("@") for key in named]
            continue
        match = _ANSWER_LINE.match(line)
        if match is None:
            break
        if match.group("key"):  # an answerer the manager cannot choose has none
            keys.append(match.group("key"))
    return tuple(dict.fromkeys(keys))


def _routing_system(
    roster: Sequence[AgentSpec],
    room_goal: str,
    role_chars: int,
    goal_chars: int | None,
    exchange: str = "",
) -> ChatMessage:
    roster_json = json.dumps(
        [
            {"key": agent.key, "name": agent.name, "role": agent.role_prompt.strip()[:role_chars]}
            for agent in roster
        ],
        ensure_ascii=False,
    )
    lines = [
        ROUTING_PROMPT_HEAD,
        'Answer with strict JSON only, exactly {"selected_agent_keys": ["key", ...]}: '
        "no prose, no code fences.",
        "Select the agents whose role fits the message, using their keys exactly as written "
        "in the roster, most relevant first. If none clearly fits, select the single most "
        "relevant agent. Never invent a key.",
        ROSTER_LINE_PREFIX + roster_json,
    ]
    goal = room_goal.strip()
    if goal_chars is not None and len(goal) > goal_chars:
        goal = goal[:goal_chars].rstrip() + "…" if goal_chars else ""
    if goal:
        lines.append(f"Room goal: {goal}")
    if exchange:
        lines += ["", exchange]
    return ChatMessage(role=Role.SYSTEM, content="\n".join(lines))


def read_roster(system_prompt: str) -> tuple[RosterEntry, ...]:
    """The roster embedded by build_routing_messages; empty when there is none."""
    for line in system_prompt.splitlines():
        if not line.startswith(ROSTER_LINE_PREFIX):
            continue
        try:
            entries = json.loads(line[len(ROSTER_LINE_PREFIX) :])
        except ValueError:
            return ()
        if not isinstance(entries, list):
            return ()
        return tuple(
            RosterEntry(
                key=str(entry.get("key", "")),
                name=str(entry.get("name", "")),
                role=str(entry.get("role", "")),
            )
            for entry in entries
            if isinstance(entry, dict)
        )
    return ()


def parse_routing(raw: str, roster_keys: Sequence[str]) -> RoutingDecision:
    known = set(roster_keys)

    def names_a_seat(found: dict[str, Any]) -> bool:
        return bool(known.intersection(_requested_keys(found) or ()))

    # The first selection that names a seat (an example of the format, or thoughts, may come
    # before it), else the first selection, whatever it names.
    answer = first_json_object(raw, wanted=names_a_seat) or first_json_object(
        raw, wanted=lambda found: _selection(found) is not None
    )
    requested = _requested_keys(answer) if answer is not None else _cut_short_selection(raw)
    if requested is None:
        if first_json_object(raw) is None:
            return _fallback(
                roster_keys, raw, "the answer holds no JSON object", FallbackReason.NO_JSON
            )
        return _fallback(
            roster_keys,
            raw,
            "no selected_agent_keys in the answer",
            FallbackReason.NO_SELECTION,
        )

    selected: list[str] = []
    unknown: list[str] = []
    for key in requested:
        if key in known:
            if key not in selected:
                selected.append(key)
        elif key not in unknown:
            unknown.append(key)

    if not selected:
        if unknown:
            decision = _fallback(
                roster_keys,
                raw,
                f"{len(unknown)} unknown agent key(s)",
                FallbackReason.UNKNOWN_AGENTS,
            )
            return replace(decision, ignored_agent_keys=tuple(unknown))
        return _fallback(roster_keys, raw, "an empty selection", FallbackReason.EMPTY_SELECTION)
    if unknown:
        logger.warning(
            "Routing answer named %d unknown agent key(s); kept %s (an answer of %d characters)",
            len(unknown),
            selected,
            len(raw),
        )
        _log_excerpt(raw)
    return RoutingDecision(
        selected_agent_keys=tuple(selected), fallback_used=False, ignored_agent_keys=tuple(unknown)
    )


_SELECTION_NAMES = ("selected_agent_keys", "selected_agent_key")
# What a model puts around a key: "@ada", "＠ada", "`ada`", "ada.", "Ada" for "ada" (keys are
# lowercase by construction).
_KEY_WRAPPING = " \t\n@\uff20`'\".,;:!?"
# A selection cut off by the manager's output limit: its list up to where the answer stops.
_CUT_SHORT_SELECTION = re.compile(
    r'"selected_agent_keys?"\s*:\s*\[((?:\s*"[^"\\]*"\s*,?)*)', re.IGNORECASE
)


def _selection(answer: dict[str, Any]) -> Any:
    """The selection an object holds, under either name, in any case; None if none."""
    for name, value in answer.items():
        if isinstance(name, str) and name.lower() in _SELECTION_NAMES and value is not None:
            return value
    return None


def _requested_keys(answer: dict[str, Any]) -> list[str] | None:
    value = _selection(answer)
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [item.strip(_KEY_WRAPPING).lower() for item in items if isinstance(item, str)]


def _cut_short_selection(raw: str) -> list[str] | None:
    """The keys a selection that is not whole JSON names in full (`{"selected_agent_keys":
    ["linus", "gra`: linus), when the answer stopped in the middle of its list."""
    match = _CUT_SHORT_SELECTION.search(raw)
    if match is None:
        return None
    keys = re.findall(r'"([^"\\]*)"', match.group(1))
    return [key.strip(_KEY_WRAPPING).lower() for key in keys] or None


def _log_excerpt(raw: str) -> None:
    logger.debug("Routing answer (first %d chars): %s", _EXCERPT_CHARS, raw[:_EXCERPT_CHARS])


def _fallback(roster_keys: Sequence[str], raw: str, reason: str, code: str) -> RoutingDecision:
    first = (roster_keys[0],) if roster_keys else ()
    logger.warning(
        "Routing answer unusable (%s); falling back to %s (an answer of %d characters)",
        reason,
        first[0] if first else "no agent (empty roster)",
        len(raw),
    )
    _log_excerpt(raw)
    return RoutingDecision(selected_agent_keys=first, fallback_used=True, fallback_reason=code)
