"""What an agent sees on a call: its system prompt, then as much recent history as fits.

Order of the messages: the system prompt (identity, role, room goal, mode, the other agents,
the latest summary: its text, then its lists, `summary_for_agents`), the newest history that
fits under the prune line, the user's input, and last the answers other agents already gave
to it in this turn, in the order they were given. The first message after the system prompt
is a user's, as some providers require: the history starts at a user's message (answers at
its start whose question it does not hold, because the summary folded it in or the read began
in the middle of an exchange, are left out), or there is none and the input comes first. So
is the last, as a provider expects of the message it answers (some read a last assistant
message as the start of their own answer): this turn's answers are user messages, each
prefixed with who gave it, after the question they answer. In the history an agent's own
earlier answers are shown as its own, the others' prefixed with who gave them
(`HistoryMessage.given_by`).

The prompt must leave its alias's window room for the answer the call asks for, so it is kept
within the input budget. Its parts give way oldest first:
1. the history, a whole exchange (a user's message and the answers after it) at a time, oldest
   first, down to the prune line (90 % of the budget); when not even the newest exchange fits
   (a roundtable of many seats), its question stays with as many of its newest answers as fit;
2. then, down to the budget, the summary in the system prompt, cut short (from its end: its
   lists go before its text) or left out;
3. then the answers given earlier in this turn, earliest first, each cut short or left out: a
   roundtable's later agents build on them, so they go last.
The agent's system prompt without the summary and the user's input never give way: the turn is
refused up front when they do not fit (`minimal_prompt_tokens`), and a prompt still over the
budget is never sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestration.budget import ContextBudget, estimate_tokens
from orchestration.types import AgentSpec, ChatMessage, ConversationSummary, HistoryMessage, Role

# The first line of every agent system prompt, in a room and in a direct session (a
# one-to-one conversation); the demo provider reads the identity back.
_IDENTITY_LINE = "You are {name} (@{key}), an agent in a Pantheon room."
_DIRECT_IDENTITY_LINE = (
    "You are {name} (@{key}), a Pantheon agent in a one-to-one conversation with the user."
)
_IDENTITY = re.compile(
    r"You are (?P<name>.+) \(@(?P<key>[a-z0-9_]{1,32})\), "
    r"(?:an agent in a Pantheon room|a Pantheon agent in a one-to-one conversation with the user)"
    r"\."
)
_DIRECT_MODE = "direct"

_MODE_NOTES = {
    "manual": "The user tagged you by name; answer what was asked of you.",
    "roundtable": (
        "Every agent answers in turn, in seating order; build on what the agents before you "
        "said in this turn instead of repeating it."
    ),
    "orchestrator": "The room's manager chose you to answer this message.",
}
# The note of a mode for an agent with nobody else in the room to answer.
_LONE_MODE_NOTES = {"roundtable": "You hold the room's only seat: you answer every message."}
_ROSTER_ROLE_CHARS = 160
# What a text cut to fit a budget ends with, so that the model knows it is not all.
CUT_MARK = " [… cut to fit the context window]"
# A text cut to fewer tokens than this is left out instead: a stub says nothing.
_MIN_CUT_TOKENS = 32
# How far back a cut looks for the end of a word.
_WORD_SEARCH_CHARS = 40


@dataclass(frozen=True)
class ContextPlan:
    messages: tuple[ChatMessage, ...]
    estimated_tokens_full: int
    estimated_tokens: int
    history_pruned: int
    pruned: bool
    # The history's part of `estimated_tokens_full` (before any is pruned): what a summary folds.
    history_tokens_full: int = 0
    # This turn's earlier answers left out of the prompt, and cut short in it.
    same_turn_dropped: int = 0
    same_turn_cut: int = 0
    summary_cut: bool = False


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
    summary: ConversationSummary | None,
    history: Sequence[HistoryMessage],
    same_turn: Sequence[HistoryMessage],
    user_input: str,
    budget: ContextBudget,
    model: str | None = None,
) -> ContextPlan:
    def system_prompt(summary: str | None) -> str:
        return _system_prompt(
            agent=agent, roster=roster, room_goal=room_goal, mode=mode, summary=summary
        )

    summary_text = summary_for_agents(summary)
    system = system_prompt(summary_text)
    rendered_history = [_render(message, agent, roster, model) for message in history]
    rendered_same_turn = [
        _render(message, agent, roster, model, as_role=Role.USER) for message in same_turn
    ]

    system_tokens = estimate_tokens(system, model)
    input_tokens = estimate_tokens(user_input, model)
    same_turn_tokens = sum(tokens for _, tokens in rendered_same_turn)
    fixed_tokens = system_tokens + same_turn_tokens + input_tokens
    history_tokens = sum(tokens for _, tokens in rendered_history)
    full_tokens = fixed_tokens + history_tokens

    # Keep the newest contiguous stretch of history: skipping a large message to fit an older
    # one would leave the agent answering a conversation with a hole in it. It starts at a
    # user's message: exchanges (a question and the answers after it) go whole, and answers
    # whose question is not in it (read from the middle of an exchange) are left out too. When
    # not even the newest exchange fits whole, its question and newest answers that fit do.
    limit = budget.prune_limit
    kept = 0
    kept_tokens = 0
    stretch = 0
    stretch_tokens = 0
    for count, (message, tokens) in enumerate(reversed(rendered_history), start=1):
        if fixed_tokens + stretch_tokens + tokens > limit:
            break
        stretch, stretch_tokens = count, stretch_tokens + tokens
        if message.role == Role.USER:
            kept, kept_tokens = count, stretch_tokens
    kept_history = [message for message, _ in rendered_history[len(rendered_history) - kept :]]
    if not kept and stretch:
        kept_history, kept_tokens = _newest_exchange_in_part(
            rendered_history, stretch, limit - fixed_tokens
        )
    pruned_count = len(rendered_history) - len(kept_history)

    # No history is left when the rest is past the budget; then the summary gives way, the
    # oldest of what is left, and this turn's earlier answers, earliest first.
    summary_cut = False
    room = budget.input_budget - same_turn_tokens - input_tokens
    if summary_text and system_tokens > room:
        shorter = cut_to_fit(
            summary_text,
            lambda candidate: estimate_tokens(system_prompt(candidate), model) <= room,
        )
        if shorter is not None and estimate_tokens(shorter, model) < _MIN_CUT_TOKENS:
            shorter = None
        system = system_prompt(shorter)
        system_tokens = estimate_tokens(system, model)
        summary_cut = True
    fitted_same_turn, dropped, cut = _fit_same_turn(
        rendered_same_turn,
        excess=system_tokens + same_turn_tokens + input_tokens - budget.input_budget,
        model=model,
    )
    same_turn_tokens = sum(tokens for _, tokens in fitted_same_turn)

    return ContextPlan(
        messages=(
            ChatMessage(role=Role.SYSTEM, content=system),
            *kept_history,
            ChatMessage(role=Role.USER, content=user_input),
            *(message for message, _ in fitted_same_turn),
        ),
        estimated_tokens_full=full_tokens,
        estimated_tokens=system_tokens + kept_tokens + same_turn_tokens + input_tokens,
        history_pruned=pruned_count,
        history_tokens_full=history_tokens,
        pruned=bool(pruned_count or dropped or cut or summary_cut),
        same_turn_dropped=dropped,
        same_turn_cut=cut,
        summary_cut=summary_cut,
    )


def _newest_exchange_in_part(
    rendered: Sequence[tuple[ChatMessage, int]], answers: int, room: int
) -> tuple[list[ChatMessage], int]:
    """When not even the newest exchange fits whole (a roundtable of many seats), but its newest
    `answers` do: its question and the newest of those answers that fit beside it within
    `room`, and their tokens; nothing when its question is not in the history read or no answer
    fits beside it."""
    older = rendered[: len(rendered) - answers]
    found = next((part for part in reversed(older) if part[0].role == Role.USER), None)
    if found is None:
        return [], 0
    question, used = found
    kept: list[ChatMessage] = []
    for message, tokens in reversed(rendered[len(rendered) - answers :]):
        if used + tokens > room:
            break
        kept.insert(0, message)
        used += tokens
    return ([question, *kept], used) if kept else ([], 0)


def _fit_same_turn(
    rendered: Sequence[tuple[ChatMessage, int]], *, excess: int, model: str | None
) -> tuple[list[tuple[ChatMessage, int]], int, int]:
    """This turn's earlier answers less `excess` tokens, taken from the earliest: an answer is
    cut short when what is left of it still says something, else left out. Returns the
    answers kept (with their estimates), how many were left out and how many cut."""
    kept: list[tuple[ChatMessage, int]] = []
    dropped = cut = 0
    for message, tokens in rendered:
        if excess <= 0:
            kept.append((message, tokens))
            continue
        allowance = tokens - excess
        if allowance >= _MIN_CUT_TOKENS:
            shorter = cut_to_fit(message.content, within_tokens(allowance, model))
            if shorter is not None:
                shorter_tokens = estimate_tokens(shorter, model)
                kept.append((ChatMessage(role=message.role, content=shorter), shorter_tokens))
                excess -= tokens - shorter_tokens
                cut += 1
                continue
        excess -= tokens
        dropped += 1
    return kept, dropped, cut


def cut_to_fit(text: str, fits: Callable[[str], bool]) -> str | None:
    """`text` if it fits, else its longest beginning that fits once marked as cut
    (`CUT_MARK`), or None when not even the mark does. `fits` grows stricter as its text
    grows (a token estimate under a limit), so the cut is found by bisection."""
    if fits(text):
        return text
    if not fits(_cut(text, 0)):
        return None
    fitting, too_long = 0, len(text)
    while too_long - fitting > 1:
        middle = (fitting + too_long) // 2
        if fits(_cut(text, middle)):
            fitting = middle
        else:
            too_long = middle
    # After a whole word, when one ends near the cut (`fitting` < len(text): all did not fit).
    lowest = max(fitting - _WORD_SEARCH_CHARS, 0)
    word_end = next(
        (index for index in range(fitting, lowest, -1) if text[index].isspace()), fitting
    )
    return _cut(text, word_end)


def within_tokens(limit: int, model: str | None) -> Callable[[str], bool]:
    """`cut_to_fit`'s test for a text that must come to at most `limit` tokens."""
    return lambda text: estimate_tokens(text, model) <= limit


def _cut(text: str, length: int) -> str:
    return text[:length].rstrip() + CUT_MARK


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
    direct = mode == _DIRECT_MODE
    identity = _DIRECT_IDENTITY_LINE if direct else _IDENTITY_LINE
    lines = [identity.format(name=name, key=agent.key)]
    if agent.role_prompt.strip():
        lines += ["", "Your role:", agent.role_prompt.strip()]
    if direct:
        return "\n".join(lines) + _summary_section(summary)

    others = [other for other in roster if other.key != agent.key]
    lines += ["", f"Room goal: {room_goal.strip() or '(none set)'}"]
    note = _MODE_NOTES.get(mode)
    if not others:
        note = _LONE_MODE_NOTES.get(mode, note)
    lines.append(f"Room mode: {mode}." + (f" {note}" if note else ""))
    if others:
        lines += ["", "Other agents in this room:"]
        for other in others:
            role = " ".join(other.role_prompt.split())[:_ROSTER_ROLE_CHARS]
            lines.append(f"- {other.name} (@{other.key})" + (f": {role}" if role else ""))
        lines.append(
            'Messages by other agents are prefixed "[Name @key]:". Speak only as yourself, '
            "without such a prefix, and never write lines for the other agents."
        )
    return "\n".join(lines) + _summary_section(summary)


def summary_for_agents(summary: ConversationSummary | None) -> str:
    """The summary as agents' system prompts give it: its text, then a line for each list that
    holds anything ("Decisions: Use Postgres; Alice buys the server"). Empty for none."""
    if summary is None:
        return ""
    lines = [summary.text.strip()] if summary.text.strip() else []
    lines += [f"{label}: {'; '.join(items)}" for label, items in summary.lists()]
    return "\n".join(lines)


def _summary_section(summary: str | None) -> str:
    """The end of an agent's system prompt that gives the latest summary (`summary_for_agents`,
    or what is left of it cut short), if any."""
    if not summary or not summary.strip():
        return ""
    return f"\n\nSummary of the conversation so far:\n{summary.strip()}"


def full_prompt_tokens_at_most(
    *,
    agent: AgentSpec,
    roster: Sequence[AgentSpec],
    floor: int,
    summary: ConversationSummary | None,
    history: Sequence[HistoryMessage],
    same_turn: Sequence[HistoryMessage],
    model: str | None = None,
) -> int:
    """At most `ContextPlan.estimated_tokens_full` of `agent`'s prompt, before it is built:
    `floor` (`minimal_prompt_tokens`), the summary's part of the system prompt (its text and
    lists, `summary_for_agents`), and the history and this turn's earlier answers, whole and
    attributed as the prompt shows them (an answer not given yet with its largest estimate as
    `token_estimate`). Parts are estimated apart, which never counts less than estimating them
    together (`estimate_tokens`)."""
    rendered = (_render(message, agent, roster, model) for message in (*history, *same_turn))
    return (
        floor
        + estimate_tokens(_summary_section(summary_for_agents(summary)), model)
        + sum(tokens for _, tokens in rendered)
    )


def _render(
    message: HistoryMessage,
    agent: AgentSpec,
    roster: Sequence[AgentSpec],
    model: str | None,
    as_role: Role | None = None,
) -> tuple[ChatMessage, int]:
    """The chat message for a history entry, attributed when another agent spoke (as the
    room's roster calls it now, `HistoryMessage.answerer_among`: the key it was stored with may
    have changed, or gone to another agent of the room), and its token estimate (the caller's
    precomputed one when given, plus the attribution). `as_role`: the role it is sent with,
    when not its own (this turn's answers go as user messages)."""
    spoken = Role.ASSISTANT if message.role == Role.ASSISTANT else Role.USER
    prefix = ""
    if spoken == Role.ASSISTANT and not message.given_by(agent):
        prefix = f"[{message.answerer_among(roster)}]:"
    role = spoken if as_role is None else as_role
    content = f"{prefix} {message.content}" if prefix else message.content
    if message.token_estimate is None:
        tokens = estimate_tokens(content, model)
    else:
        tokens = message.token_estimate + (estimate_tokens(prefix + " ", model) if prefix else 0)
    return ChatMessage(role=role, content=content), tokens
