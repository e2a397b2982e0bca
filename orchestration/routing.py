"""The orchestrator mode's manager contract: which agents answer a message.

The manager model must answer `{"selected_agent_keys": ["key", ...]}` (a single
`{"selected_agent_key": "key"}` is accepted too). Anything unusable falls back to the first
agent of the roster, with a warning, so a confused manager never fails a turn.

The manager's prompt is kept to its alias's budget (`fit_routing_messages`): the user's message
is cut short, and a roster too long for it is shown with shorter roles and room goal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestration.budget import estimate_tokens
from orchestration.context import cut_to_fit, within_tokens
from orchestration.json_contract import first_json_object
from orchestration.types import AgentSpec, ChatMessage, Role

logger = logging.getLogger(__name__)

ROUTING_PROMPT_HEAD = (
    "You are the manager of a Pantheon room: you decide which agents answer the user's message."
)
# The roster travels as one JSON line so that the demo provider can read it back exactly.
ROSTER_LINE_PREFIX = "Roster (JSON, in seating order): "

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


@dataclass(frozen=True)
class RoutingDecision:
    selected_agent_keys: tuple[str, ...]
    fallback_used: bool


@dataclass(frozen=True)
class RosterEntry:
    key: str
    name: str
    role: str


def build_routing_messages(
    *, user_input: str, roster: Sequence[AgentSpec], room_goal: str = ""
) -> tuple[ChatMessage, ...]:
    return (
        _routing_system(roster, room_goal, _ROLE_CHARS, None),
        ChatMessage(role=Role.USER, content=user_input),
    )


def fit_routing_messages(
    *,
    user_input: str,
    roster: Sequence[AgentSpec],
    room_goal: str,
    input_budget: int,
    model: str | None = None,
) -> tuple[ChatMessage, ...]:
    """The routing prompt within the manager's `input_budget`: the user's message cut short
    (its beginning, where who it is for is usually said); when the roster leaves the message
    too little, the roster's roles and the room goal shortened first. When not even the start
    of the message fits beside the bare roster, the message is left whole and the prompt does
    not fit: such a call is not sent, and routing falls back as on any failed call."""
    wanted = min(estimate_tokens(user_input, model), _MIN_MESSAGE_TOKENS)
    for role_chars, goal_chars in _DETAIL_LADDER:
        system = _routing_system(roster, room_goal, role_chars, goal_chars)
        room = input_budget - estimate_tokens(system.content, model)
        if room >= wanted:
            break
    message = cut_to_fit(user_input, within_tokens(room, model))
    return system, ChatMessage(role=Role.USER, content=user_input if message is None else message)


def _routing_system(
    roster: Sequence[AgentSpec], room_goal: str, role_chars: int, goal_chars: int | None
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
    excerpt = raw[:_EXCERPT_CHARS]
    answer = first_json_object(raw)
    if answer is None:
        return _fallback(roster_keys, excerpt, "the answer holds no JSON object")

    requested = _requested_keys(answer)
    if requested is None:
        return _fallback(roster_keys, excerpt, "no selected_agent_keys in the answer")

    known = set(roster_keys)
    selected: list[str] = []
    unknown: list[str] = []
    for key in requested:
        if key in known:
            if key not in selected:
                selected.append(key)
        elif key not in unknown:
            unknown.append(key)

    if not selected:
        reason = f"unknown agent keys {unknown}" if unknown else "an empty selection"
        return _fallback(roster_keys, excerpt, reason)
    if unknown:
        logger.warning(
            "Routing answer named unknown agent keys %s; kept %s. Raw answer (first 200 chars): %s",
            unknown,
            selected,
            excerpt,
        )
    return RoutingDecision(selected_agent_keys=tuple(selected), fallback_used=False)


def _requested_keys(answer: dict[str, Any]) -> list[str] | None:
    value = answer.get("selected_agent_keys", answer.get("selected_agent_key"))
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    # Models echo "@ada" or "Ada" for "ada"; keys are lowercase by construction.
    return [item.strip().lstrip("@").lower() for item in items if isinstance(item, str)]


def _fallback(roster_keys: Sequence[str], excerpt: str, reason: str) -> RoutingDecision:
    first = (roster_keys[0],) if roster_keys else ()
    logger.warning(
        "Routing answer unusable (%s); falling back to %s. Raw answer (first 200 chars): %s",
        reason,
        first[0] if first else "no agent (empty roster)",
        excerpt,
    )
    return RoutingDecision(selected_agent_keys=first, fallback_used=True)
