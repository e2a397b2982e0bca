"""What an agent sees on a call: its system prompt, then as much recent history as fits.

Order of the messages: the system prompt (identity, role, room goal, mode, the other agents,
the latest summary), the newest history that fits under the prune line, the answers other
agents already gave in this turn, and last the user's input. Pruning drops the oldest
history first and never touches the same-turn answers or the user's input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from orchestration.budget import ContextBudget, estimate_tokens
from orchestration.types import AgentSpec, ChatMessage, HistoryMessage, Role

# The first line of every agent system prompt; the demo provider reads the identity back.
_IDENTITY_LINE = "You are {name} (@{key}), an agent in a Pantheon room."
_IDENTITY = re.compile(
    r"You are (?P<name>.+) \(@(?P<key>[a-z0-9_]{1,32})\), an agent in a Pantheon room\."
)

_MODE_NOTES = {
    "manual": "The user tagged you by name; answer what was asked of you.",
    "roundtable": (
        "Every agent answers in turn, in seating order; build on what the agents before you "
        "said in this turn instead of repeating it."
    ),
    "orchestrator": "The room's manager chose you to answer this message.",
    "direct": "This is a one-to-one conversation between you and the user.",
}
_ROSTER_ROLE_CHARS = 160


@dataclass(frozen=True)
class ContextPlan:
    messages: tuple[ChatMessage, ...]
    estimated_tokens_full: int
    estimated_tokens: int
    history_pruned: int
    pruned: bool


def read_agent_identity(system_prompt: str) -> tuple[str, str] | None:
    """(name, key) from an agent system prompt built here, None for any other prompt."""
    first_line = system_prompt.split("\n", 1)[0]
    match = _IDENTITY.fullmatch(first_line)
    if match is None:
        return None
    return match.group("name"), match.group("key")


def build_agent_messages(
    *,
    agent: AgentSpec,
    roster: Sequence[AgentSpec],
    room_goal: str,
    mode: str,
    summary: str | None,
    history: Sequence[HistoryMessage],
    same_turn: Sequence[HistoryMessage],
    user_input: str,
    budget: ContextBudget,
    model: str | None = None,
) -> ContextPlan:
    system = ChatMessage(
        role=Role.SYSTEM,
        content=_system_prompt(
            agent=agent, roster=roster, room_goal=room_goal, mode=mode, summary=summary
        ),
    )
    final_input = ChatMessage(role=Role.USER, content=user_input)
    rendered_history = [_render(message, agent, model) for message in history]
    rendered_same_turn = [_render(message, agent, model) for message in same_turn]

    fixed_tokens = (
        estimate_tokens(system.content, model)
        + sum(tokens for _, tokens in rendered_same_turn)
        + estimate_tokens(user_input, model)
    )
    history_tokens = [tokens for _, tokens in rendered_history]
    full_tokens = fixed_tokens + sum(history_tokens)

    # Keep the newest contiguous stretch of history: skipping a large message to fit an older
    # one would leave the agent answering a conversation with a hole in it.
    limit = budget.prune_limit
    kept = 0
    kept_tokens = 0
    for tokens in reversed(history_tokens):
        if fixed_tokens + kept_tokens + tokens > limit:
            break
        kept += 1
        kept_tokens += tokens
    kept_history = [message for message, _ in rendered_history[len(rendered_history) - kept :]]
    pruned_count = len(rendered_history) - kept

    return ContextPlan(
        messages=(
            system,
            *kept_history,
            *(message for message, _ in rendered_same_turn),
            final_input,
        ),
        estimated_tokens_full=full_tokens,
        estimated_tokens=fixed_tokens + kept_tokens,
        history_pruned=pruned_count,
        pruned=pruned_count > 0,
    )


def minimal_prompt_tokens(
    *,
    agent: AgentSpec,
    roster: Sequence[AgentSpec],
    room_goal: str,
    mode: str,
    user_input: str,
    model: str | None = None,
) -> int:
    """The floor of any prompt of this agent for this input: its system prompt (role, room goal,
    roster) and the input, before any history or summary, which can be pruned."""
    system = _system_prompt(
        agent=agent, roster=roster, room_goal=room_goal, mode=mode, summary=None
    )
    return estimate_tokens(system, model) + estimate_tokens(user_input, model)


def _system_prompt(
    *,
    agent: AgentSpec,
    roster: Sequence[AgentSpec],
    room_goal: str,
    mode: str,
    summary: str | None,
) -> str:
    name = " ".join(agent.name.split()) or agent.key
    lines = [_IDENTITY_LINE.format(name=name, key=agent.key)]
    if agent.role_prompt.strip():
        lines += ["", "Your role:", agent.role_prompt.strip()]
    lines += ["", f"Room goal: {room_goal.strip() or '(none set)'}"]
    note = _MODE_NOTES.get(mode)
    lines.append(f"Room mode: {mode}." + (f" {note}" if note else ""))

    others = [other for other in roster if other.key != agent.key]
    if others:
        lines += ["", "Other agents in this room:"]
        for other in others:
            role = " ".join(other.role_prompt.split())[:_ROSTER_ROLE_CHARS]
            lines.append(f"- {other.name} (@{other.key})" + (f": {role}" if role else ""))
        lines.append(
            'Messages by other agents are prefixed "[Name @key]:". Speak only as yourself, '
            "without such a prefix, and never write lines for the other agents."
        )
    if summary and summary.strip():
        lines += ["", "Summary of the conversation so far:", summary.strip()]
    return "\n".join(lines)


def _render(
    message: HistoryMessage, agent: AgentSpec, model: str | None
) -> tuple[ChatMessage, int]:
    """The chat message for a history entry, attributed when another agent spoke, and its
    token estimate (the caller's precomputed one when given, plus the attribution)."""
    role = Role.ASSISTANT if message.role == Role.ASSISTANT else Role.USER
    prefix = ""
    if role == Role.ASSISTANT and message.agent_key != agent.key and message.speaker:
        prefix = f"[{message.speaker}]:"
    content = f"{prefix} {message.content}" if prefix else message.content
    if message.token_estimate is None:
        tokens = estimate_tokens(content, model)
    else:
        tokens = message.token_estimate + (estimate_tokens(prefix + " ", model) if prefix else 0)
    return ChatMessage(role=role, content=content), tokens
