"""The turn engine: `POST sessions/{id}/turns`.

`turn_run` prepares a turn, then hands it to a `TurnRunner`, whose methods are its life:

1. prepare    -- (`turn_prepare`) refuse early: nothing is written and no LLM is called for a
                 refused request (suspended account, credit cap, no agents, no valid tag,
                 unusable model alias, a prompt larger than the context budget).
2. claim      -- one short transaction: interrupt a stale running turn, promote a pending mode,
                 insert the turn as `running` with the next `turn_index` and the user's message,
                 and open the first call's ledger row as `pending`. The database arbitrates
                 races: the unique (session, turn_index) and "one running turn per session"
                 constraints turn a lost race into a 409 before any LLM is called.
3. route      -- (orchestrator) the manager model picks who answers.
4. answer     -- per agent: build its context and call its model with no transaction open;
                 then one transaction completes the call's ledger row with its message, records
                 the turn's progress and opens the next call's pending row.
5. summarize  -- when due, the summary call, committed like a step.
6. finish     -- the turn's status, usage totals and context audit commit with the last step.

Every call's ledger row is committed as `pending` before the call and completed in the
transaction that stores what it produced, so the ledger never disagrees with the transcript
and a worker that dies mid-call leaves its row behind (`recover_turns` marks it lost).

A running turn whose last progress is older than `PANTHEON_TURN_STALE_SECONDS` no longer blocks
its session: the next claim interrupts it (and `recover_turns` does, on an operator's word).
Should its worker still be alive, its step finds the turn no longer running under its row lock
and writes nothing: the call's lost row takes the usage the provider reported, and the client
hears the 409 of a session taken over, or the 503 `turn_interrupted` of a recovered turn. A
streamed step finds it so sooner, at its next save of the text so far (`_StreamedStep`).

Its user may end it too (`POST turns/{id}/cancel`, or the delete of its session or room:
`turn_cancelled`), as a recovery does: the worker running it, if it is the process that took
the cancel, abandons its provider call at once (`TurnRunner.cancel`); elsewhere it finds the
turn ended as above, and a streamed step closes its provider's stream. A streamed answer whose
first words had reached its user is then billed for what it streamed, as a stream that failed
after its first words is (`end`).

Per-turn work is bounded: one read of the session carries the claim state and the latest
summary (`selectors.session_for_turn`), and a turn reads at most
`PANTHEON_CONTEXT_HISTORY_LIMIT` messages newer than that summary (and the rest of the oldest
exchange they reach into), never the whole history.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Model, Q, QuerySet, Subquery, Sum

from orchestration import budget as context_budget
from orchestration.context import (
    ContextPlan,
    build_agent_messages,
    full_prompt_tokens_at_most,
    minimal_prompt_tokens,
    summary_for_agents,
)
from orchestration.gateway import LlmGateway, answer_tokens_at_most
from orchestration.metering import compute_credits, compute_oe
from orchestration.planning import parse_tags, tagged_in_code_only
from orchestration.routing import (
    FallbackReason,
    RoutingDecision,
    fit_routing_messages,
    parse_routing,
)
from orchestration.summary import (
    LIST_FIELDS,
    SummaryExtraction,
    SummaryPrompt,
    fit_summary_messages,
    parse_summary,
)
from orchestration.types import (
    AgentSpec,
    CallPurpose,
    CallStatus,
    ChatMessage,
    ConversationSummary,
    ErrorKind,
    HistoryMessage,
    LlmCall,
    LlmResult,
    Role,
)
from pantheon import draining, exceptions, logging_context, runner
from pantheon.compiled import (
    Chain,
    CompiledInsert,
    CompiledRead,
    CompiledUpdate,
    insert_together,
)
from pantheon.db import connection_lost, database
from pantheon.fields import blank
from pantheon.llm import alias_config, get_gateway
from pantheon.threads import own_thread
from rooms.models import Room, RoomMode
from rooms.selectors import room_roster
from sessions_app import events
from sessions_app.models import (
    DIRECT_MODE,
    Message,
    MessageRole,
    MessageStatus,
    Session,
    SessionSummary,
    Turn,
    TurnContextAudit,
    TurnFailure,
    TurnQuerySet,
    TurnStatus,
    TurnStreamChunk,
)
from sessions_app.selectors import TurnState, stale_before
from sessions_app.serializers import render_message, render_turn
from sessions_app.services import (
    turn_record_cancelled_answer,
    turn_record_late_answer,
    turns_interrupt,
)
from usage import selectors as usage_selectors
from usage.models import USAGE_TOTAL_FIELDS, BillingProfile, LlmCallEvent
from usage.selectors import AliasPricing
from usage.services import (
    usage_call_complete,
    usage_call_complete_chained,
    usage_call_meter,
    usage_call_open,
)

logger = logging.getLogger(__name__)

# How many messages since the last summary a summary call reads at most.
SUMMARY_TRANSCRIPT_LIMIT = 200
# The message fields a prompt needs, read with `.values()` (cheaper than model instances).
HISTORY_FIELDS = (
    "sequence",
    "role",
    "content",
    "agent_key",
    "agent_name",
    "agent_id",
    "token_estimate",
)


# The messages later prompts and summaries read: answers that have text. An empty answer (a
# provider that filtered it away, a reasoning stream cut at its limit) stays on the timeline,
# but it says nothing to a model, and some providers' APIs (Anthropic's) refuse an assistant
# message without a visible character. The empty ones are left out as they are read; those of
# invisible characters alone (white space, zero-width) once read (`_visible`), by the rule
# names and messages are held to (`pantheon.fields.blank`), which no database's pattern
# matches alike.
IN_HISTORY = Q(status=MessageStatus.OK) & ~Q(content="")
# How many messages a turn reads at most, beyond PANTHEON_CONTEXT_HISTORY_LIMIT, back to the
# question of the oldest exchange it read: an exchange is a question and at most one answer a
# seat (a room seats at most 50 agents).
EXCHANGE_READ_LIMIT = 64


@dataclass(frozen=True)
class TurnPlan:
    """What a turn will do, decided before anything is written."""

    session: Session
    state: TurnState  # the session's latest turn, timeline end and summary
    user: Any
    user_input: str
    mode: str
    roster: tuple[AgentSpec, ...]
    candidates: tuple[AgentSpec, ...]  # who may answer: tagged, seated, or the direct agent
    pricing: Mapping[str, AliasPricing]
    model_alias_override: str
    room_goal: str
    billing: BillingProfile | None  # as loaded with the user; locked again at the claim
    # The smallest prompt of each answering agent (system prompt and input), in tokens.
    prompt_floor: Mapping[str, int] = field(default_factory=dict)

    def alias_for(self, agent: AgentSpec) -> str:
        return self.model_alias_override or agent.model_alias

    @property
    def prompt_roster(self) -> tuple[AgentSpec, ...]:
        """The room's agents an agent's system prompt names: those who can answer (their alias
        exists and is enabled), as the manager chooses among them and a tag of another is
        refused."""
        return tuple(agent for agent in self.roster if _usable(self.pricing, self.alias_for(agent)))

    def budget(self, alias: str) -> context_budget.ContextBudget:
        row = self.pricing[alias].alias
        return context_budget.ContextBudget.for_window(row.context_window, row.max_output_tokens)

    def token_model(self, alias: str) -> str | None:
        """The model whose tokenizer counts prompts: the real one when calls go to it (litellm
        counts with it where it knows it), none for the demo backend (a plain estimate)."""
        if settings.PANTHEON_LLM_BACKEND != "live":
            return None
        return self.pricing[alias].alias.litellm_model


@dataclass(frozen=True)
class Balance:
    """Where the user stands after a turn: the month's credits, the cap, and whether the
    credits passed `PANTHEON_LOW_BALANCE_SHARE` of the cap (warn before the 402)."""

    month_credits_used: Decimal
    credit_cap: Decimal | None
    low_balance: bool


@dataclass(frozen=True)
class TurnOutcome:
    """What the API answers: the turn, its messages in timeline order, the user's balance, and
    the turn's body as rendered once for both the JSON answer and the stream's last event."""

    turn: Turn
    messages: list[Message]
    balance: Balance | None
    body: dict[str, Any]


@dataclass
class PlannedCall:
    """An LLM call the turn will make next; `event` is its pending ledger row once opened."""

    alias: str
    purpose: CallPurpose
    messages: tuple[ChatMessage, ...]
    estimated_tokens: int
    agent: AgentSpec | None = None
    event: LlmCallEvent | None = None
    # Its first words reached the turn's listener (a streamed answer): a cancel bills them.
    spoken: bool = False

    @property
    def opened(self) -> LlmCallEvent:
        assert self.event is not None, "the call's ledger row is opened before the call"
        return self.event


@dataclass(frozen=True)
class SummaryRef:
    """The session's latest summary, up to the message `to_sequence`."""

    content: ConversationSummary
    to_sequence: int

    @classmethod
    def latest(cls, state: TurnState) -> SummaryRef | None:
        if state.summary_to_sequence is None:
            return None
        summary = ConversationSummary(
            text=state.summary_text or "",
            key_facts=_summary_items(state.summary_key_facts),
            decisions=_summary_items(state.summary_decisions),
            open_questions=_summary_items(state.summary_open_questions),
            action_items=_summary_items(state.summary_action_items),
        )
        return cls(content=summary, to_sequence=state.summary_to_sequence)


def _summary_items(stored: Any) -> tuple[str, ...]:
    """A summary's stored list as text items: what the summarizer gave is a list of strings,
    but the console lets an operator store any JSON."""
    if not isinstance(stored, list):
        return ()
    return tuple(
        str(item)
        for item in stored
        if isinstance(item, str | int | float) and not isinstance(item, bool)
    )


@dataclass(frozen=True)
class TurnListener:
    """Who hears a turn's events as they happen (a streamed request)."""

    send: Callable[[events.TurnEvent], None]


async def turn_run(
    *,
    session: Session,
    user,
    message: str,
    model_alias_override: str = "",
    gateway: LlmGateway | None = None,
    listener: TurnListener | None = None,
) -> TurnOutcome:
    """Run one turn. `session` comes from `selectors.session_for_turn`: it carries the claim
    state (latest turn, end of the timeline, latest summary)."""
    # The turn's ids are bound to log lines for the turn only, whoever calls.
    with logging_context.request_scope(**logging_context.current()):
        plan = await database(turn_prepare)(
            session=session,
            user=user,
            user_input=message,
            model_alias_override=model_alias_override,
        )
        return await TurnRunner(plan, gateway).run(listener)


# --- 1. prepare ---------------------------------------------------------------------------------


def turn_prepare(
    *, session: Session, user, user_input: str, model_alias_override: str = ""
) -> TurnPlan:
    """Who answers, on which aliases, and whether it can fit: refusals before any write."""
    billing = _refuse_if_billing_blocks(user)
    if session.is_direct:
        plan = _direct_plan(session, user, user_input, model_alias_override)
    else:
        plan = _room_plan(session, user, user_input, model_alias_override)
    plan = _with_fitting_candidates(_with_usable_candidates(plan))
    return replace(plan, billing=billing)


def _refuse_if_billing_blocks(user) -> BillingProfile | None:
    """A suspended account is refused at once; the cap, and the suspension again, are checked
    at the claim, under a lock (`TurnRunner._hold_credits`)."""
    profile = usage_selectors.billing_profile_for(user=user)
    if profile is not None and profile.is_suspended:
        raise exceptions.AccountSuspended()
    return profile


def _plain(amount) -> str:
    """A Decimal as people write it: 100, 12.5 (never 1E+2)."""
    return format(amount.normalize(), "f")


def _direct_plan(session: Session, user, user_input: str, model_alias_override: str) -> TurnPlan:
    """A direct session: its one agent answers."""
    if session.agent is None:
        raise exceptions.AgentUnavailable()
    agent = _agent_spec(session.agent)
    return _plan(
        session, user, user_input, model_alias_override, DIRECT_MODE, (agent,), (agent,), ""
    )


def _room_plan(session: Session, user, user_input: str, model_alias_override: str) -> TurnPlan:
    """A room session: the tagged agents (manual), every seat in order (roundtable), or the
    seats the manager may choose from (orchestrator)."""
    room = session.room
    assert room is not None
    mode = room.effective_mode
    roster = tuple(_agent_spec(agent) for agent in room_roster(room=room))
    if not roster:
        raise exceptions.NoRoomAgents()
    candidates = roster
    if mode == RoomMode.MANUAL:
        tagged = parse_tags(user_input, [agent.key for agent in roster])
        if not tagged:
            raise exceptions.NoValidTaggedAgents(
                valid_agent_keys=_answering_keys(roster, model_alias_override),
                tagged_in_code=tagged_in_code_only(user_input, [agent.key for agent in roster]),
            )
        by_key = {agent.key: agent for agent in roster}
        candidates = tuple(by_key[key] for key in tagged)
    return _plan(
        session, user, user_input, model_alias_override, mode, roster, candidates, room.goal
    )


def _answering_keys(roster: tuple[AgentSpec, ...], model_alias_override: str) -> list[str]:
    """The seated agents a tag would reach: those on an enabled alias (or the turn's, which
    must be usable itself). None at all is refused as the disabled aliases they are on."""
    aliases = [model_alias_override or agent.model_alias for agent in roster]
    pricing = usage_selectors.alias_pricing(aliases=aliases)
    if model_alias_override:
        _require_usable(pricing, model_alias_override)
    keys = [
        agent.key for agent, alias in zip(roster, aliases, strict=True) if _usable(pricing, alias)
    ]
    if not keys:
        _require_usable(pricing, aliases[0])
    return keys


def _plan(
    session, user, user_input, model_alias_override, mode, roster, candidates, room_goal
) -> TurnPlan:
    # Every seat's alias: the prompts name only the agents who can answer (`prompt_roster`).
    aliases = {model_alias_override or agent.model_alias for agent in roster}
    state = TurnState.of(session)
    # The manager and the summarizer are loaded with the rest (one query); the summarizer
    # never blocks a turn. The list in force by the turn's clock, which stamps its calls.
    pricing = usage_selectors.alias_pricing(
        aliases=[
            *aliases,
            settings.PANTHEON_MANAGER_MODEL_ALIAS,
            settings.PANTHEON_SUMMARIZER_MODEL_ALIAS,
        ],
        at=state.now(),
    )
    return TurnPlan(
        session=session,
        state=state,
        user=user,
        user_input=user_input,
        mode=mode,
        roster=roster,
        candidates=candidates,
        pricing=pricing,
        model_alias_override=model_alias_override,
        room_goal=room_goal,
        billing=None,  # set by turn_prepare
    )


def _with_usable_candidates(plan: TurnPlan) -> TurnPlan:
    """Every answering agent's alias must exist and be enabled. The orchestrator's manager
    routes among the agents that can answer instead: one on a disabled alias is left out of
    the choice rather than failing the whole turn."""
    if plan.mode != RoomMode.ORCHESTRATOR:
        for alias in sorted({plan.alias_for(agent) for agent in plan.candidates}):
            answering = [agent for agent in plan.candidates if plan.alias_for(agent) == alias]
            _require_usable(plan.pricing, alias, agents=answering, chosen=plan.model_alias_override)
        return plan
    _require_usable(plan.pricing, settings.PANTHEON_MANAGER_MODEL_ALIAS, manager=True)
    usable = tuple(
        agent for agent in plan.candidates if _usable(plan.pricing, plan.alias_for(agent))
    )
    if not usable:
        first = plan.roster[0]
        _require_usable(
            plan.pricing, plan.alias_for(first), agents=[first], chosen=plan.model_alias_override
        )
    return replace(plan, candidates=usable)


def _usable(pricing: Mapping[str, AliasPricing], alias: str) -> bool:
    return alias in pricing and pricing[alias].alias.enabled


def _require_usable(
    pricing: Mapping[str, AliasPricing],
    alias: str,
    *,
    manager: bool = False,
    agents: Sequence[AgentSpec] = (),
    chosen: str | None = None,
) -> None:
    # The manager is an operator's setting, not the user's choice: say so, and what to do.
    # An agent's alias: say whose it is (in a roundtable one seat's alias refuses the turn),
    # or that the request's `model_alias_override` chose it.
    whose = f"The manager's model alias {alias!r}" if manager else f"Model alias {alias!r}"
    if manager:
        then = (
            ": orchestrator rooms cannot route turns until an operator fixes it; switch the "
            "room to another mode meanwhile."
        )
    elif chosen:
        then = " (the request's model_alias_override)."
    elif agents:
        named = ", ".join(f"{agent.name} (@{agent.key})" for agent in agents)
        then = f" (the alias of {named})."
    else:
        then = "."
    if alias not in pricing:
        raise exceptions.UnknownModelAlias(f"{whose} does not exist{then}")
    if not pricing[alias].alias.enabled:
        raise exceptions.ModelAliasUnavailable(f"{whose} is disabled{then}")


def _with_fitting_candidates(plan: TurnPlan) -> TurnPlan:
    """The smallest prompt each answering agent could get (its system prompt and the input,
    before any history, which can be pruned) must fit its input budget; the plan keeps them
    (`prompt_floor`). The orchestrator's manager routes among the agents whose prompt fits
    instead: one whose alias's window is too small for this message is left out of the choice,
    as one on a disabled alias is, and the turn is refused only when no seat fits."""
    floors: dict[str, int] = {}
    refusals: list[tuple[int, str]] = []  # (tokens over the budget, what a refusal says)
    for agent in plan.candidates:
        alias = plan.alias_for(agent)
        budget = plan.budget(alias)
        tokens = minimal_prompt_tokens(
            agent=agent,
            roster=plan.prompt_roster,
            room_goal=plan.room_goal,
            mode=plan.mode,
            user_input=plan.user_input,
            model=plan.token_model(alias),
        )
        if context_budget.fits(tokens, budget):
            floors[agent.key] = tokens
            continue
        refusal = (
            f"The message with {agent.name}'s instructions is about {tokens} tokens; "
            f"{alias} has an input budget of {budget.input_budget}."
        )
        if plan.mode != RoomMode.ORCHESTRATOR:
            raise exceptions.ContextBudgetExceeded(refusal)
        refusals.append((tokens - budget.input_budget, refusal))
    if not floors:
        # What it takes to be answered at all: the seat the message comes closest to fitting.
        _, closest = min(refusals, key=lambda refusal: refusal[0])
        raise exceptions.ContextBudgetExceeded(f"No agent of the room fits the message. {closest}")
    fitting = tuple(agent for agent in plan.candidates if agent.key in floors)
    return replace(plan, candidates=fitting, prompt_floor=floors)


def _agent_spec(agent) -> AgentSpec:
    return AgentSpec(
        key=agent.agent_key,
        name=agent.name,
        role_prompt=agent.role_prompt,
        model_alias=agent.model_alias,
        id=str(agent.pk),
    )


def _newest_history_read(session_id: UUID, after: int, *, limit: int) -> QuerySet:
    return (
        Message.objects.filter(IN_HISTORY, session_id=session_id, sequence__gt=after)
        .order_by("-sequence")
        .values(*HISTORY_FIELDS)[:limit]
    )


@functools.cache
def _newest_history(limit: int) -> CompiledRead:
    """A session's newest `limit` messages after a sequence, newest first: every claim reads
    them, compiled once per process (`pantheon.compiled`)."""
    return CompiledRead(
        functools.partial(_newest_history_read, limit=limit), session_id=UUID, after=int
    )


def _summary_transcript_read(session_id: UUID, after: int, before: int) -> QuerySet:
    return (
        Message.objects.filter(
            IN_HISTORY, session_id=session_id, sequence__gt=after, sequence__lt=before
        )
        .order_by("sequence")
        .values(*HISTORY_FIELDS)[: SUMMARY_TRANSCRIPT_LIMIT + 1]
    )


# The messages a due summary folds in (`TurnRunner._summary_transcript`), compiled once per
# process: building the queryset cost as much CPU as the rest of the summary's check.
_SUMMARY_TRANSCRIPT = CompiledRead(_summary_transcript_read, session_id=UUID, after=int, before=int)


def _visible(rows: list[dict]) -> list[dict]:
    """`rows` of messages (`HISTORY_FIELDS`) but those with nothing to see (`IN_HISTORY`)."""
    return [row for row in rows if not blank(row["content"])]


def _history_entry(fields: Mapping[str, Any]) -> HistoryMessage:
    """A message (a `.values()` row or `vars()` of a Message) as a prompt shows it."""
    return HistoryMessage(
        role=Role(fields["role"]),
        content=fields["content"],
        agent_key=fields["agent_key"] or None,
        agent_name=fields["agent_name"] or None,
        token_estimate=_token_estimate(fields["content"], fields["token_estimate"]),
        agent_id=str(fields["agent_id"]) if fields["agent_id"] else None,
    )


def _token_estimate(content: str, stored: int) -> int:
    """A message's stored plain estimate; for one stored when every character counted 5/16 of a
    token (ceil(length × 5/16)), which the text of other scripts runs far past (Chinese about
    1.4 tokens a character), its estimate now. ASCII text counts as it did."""
    if content.isascii() or stored != -(-len(content) * 5 // 16):
        return stored
    return context_budget.estimate_tokens(content)


# --- the running turn ---------------------------------------------------------------------------


# How long a turn that lost its database waits to write its ending before its request answers:
# the database may be back at once (a connection dropped, a quick restart). If it is not, the
# API writes the ending in the background once it is back (`sessions_app.api_turns`); each
# section waiting on it here would have kept the client waiting one more DB_POOL_TIMEOUT.
OUTAGE_ENDING_WAIT_SECONDS = 5.0


class TurnRunner:
    """One turn from claim to finish; its public methods are the lifecycle, in order."""

    def __init__(self, plan: TurnPlan, gateway: LlmGateway | None = None) -> None:
        self.plan = plan
        self.gateway = gateway or get_gateway()
        self.turn: Turn | None = None
        self.history: list[HistoryMessage] = []
        self.summary: SummaryRef | None = None
        self.messages: list[Message] = []  # the user's message, then the answers
        self.events: list[LlmCallEvent] = []  # every call's ledger row, in call order
        self.contexts: list[tuple[str, ContextPlan]] = []  # (alias, context) per agent call
        self.pending: PlannedCall | None = None  # opened, not yet made
        self._made: PlannedCall | None = None  # the call just made, settled by the next section
        self.next_sequence = 0
        self.clock = events.StepClock()  # the ids of the turn's events
        self.listener: TurnListener | None = None
        self._month_credits: Decimal | None = None  # after the latest completed call
        self._transcript: list[dict] = []  # what the summary call folds in
        self._summary_prompt: SummaryPrompt | None = None  # its prompt, counted
        # Its failure could not be written (the database was away): it is still `running`.
        self.left_running = False
        # Its user cancelled it (`cancel`), and the provider call it was making then.
        self.cancelled = False
        self._calling: asyncio.Future | None = None
        self._started = time.monotonic()  # what the turn's ending line counts its time from

    async def run(self, listener: TurnListener | None = None) -> TurnOutcome:
        """The turn's life. Database work runs in short synchronous sections (`database`),
        each its own transaction, with the connection back in the pool when it ends: a turn
        waiting on its provider holds no connection and no thread. `listener` hears the turn's
        events as they happen (a streamed request). The turn is claimed first, unless its
        caller claimed it already in a section of its own (the API does, with its checks)."""
        self.listener = listener
        if self.turn is None:
            await database(self.claim)()
        self._emit(events.turn_started(self._turn))
        with draining.stoppable(self._turn.pk, self.cancel):
            return await self._run_to_its_end()

    async def _run_to_its_end(self) -> TurnOutcome:
        try:
            await self._run_steps()
        except BaseException as exc:
            # Cancelled: the worker is stopping (`pantheon.draining`), not a failure. A lost
            # connection: the database went away under a section (a restart, a failover), not
            # the turn's fault either. Both end the turn `interrupted`, which a retry with its
            # Idempotency-Key runs afresh.
            stopped = isinstance(exc, asyncio.CancelledError)
            if isinstance(exc, exceptions.TurnConflict):  # taken over while it stalled
                failure = TurnFailure.CONFLICT
            elif isinstance(exc, exceptions.TurnCancelled):  # its user cancelled it
                failure = TurnFailure.CANCELLED
            elif isinstance(exc, exceptions.TurnRecovered):  # recover_turns ended it
                failure = TurnFailure.INTERRUPTED
            elif connection_lost(exc):
                failure = TurnFailure.DATABASE_UNAVAILABLE
            else:
                failure = TurnFailure.INTERRUPTED if stopped else TurnFailure.SERVER_ERROR
            # A stopping worker's turn is INTERRUPTED above.
            interrupted = failure in (
                TurnFailure.DATABASE_UNAVAILABLE,
                TurnFailure.INTERRUPTED,
                TurnFailure.CANCELLED,
            )
            try:
                outage = failure == TurnFailure.DATABASE_UNAVAILABLE
                try:
                    # Past the wait the section goes on in its thread (a thread cannot be
                    # stopped midway) and what it finds is dropped.
                    ended = await asyncio.wait_for(
                        database(self.fail)(
                            status=TurnStatus.INTERRUPTED if interrupted else TurnStatus.FAILED,
                            failure=failure,
                        ),
                        OUTAGE_ENDING_WAIT_SECONDS if outage else None,
                    )
                except TimeoutError:
                    ended = None  # could not tell, as when the database refused
                self.left_running = ended is None
                # Whoever ended it (this, a takeover, or the turn itself: the section under way
                # as it was cancelled, or whose connection went after its commit, committed its
                # last step), the stream ends as its replay does.
                if self.left_running:  # the database is away: it cannot tell either
                    ending = events.turn_failed(code=str(failure), body=None)
                else:
                    ending = await self._ending(failure)
            except asyncio.CancelledError:
                # Cancelled again meanwhile (the worker's last moments): the stream still gets
                # its last event, the bare code (the sections, shielded, run to their end).
                self._emit(events.turn_failed(code=str(failure), body=None))
                raise
            self._emit(ending)
            self._log_end(failure)
            raise
        balance = self._balance()
        body = render_turn(self._turn, self.messages, balance)
        self._emit(events.turn_ended(self._turn, body))
        self._log_end(None)
        return TurnOutcome(turn=self._turn, messages=self.messages, balance=balance, body=body)

    def _log_end(self, failure: TurnFailure | None) -> None:
        """One line as the turn ends, however it ends, with the ids of the request that started
        it: what became of a turn whose client left (its request's line said 499, and nothing
        more was written), or of one whose agents all failed (its request's line says 201, each
        failed call a line of its own). From what the turn holds in memory: no query. The
        failed calls' own lines say why and how long each took; the ledger what each cost."""
        turn = self._turn
        if failure is None:
            status, code = str(turn.status), ""
        else:
            # Ended from outside its steps: its totals are the database's (`turns_interrupt`),
            # not read again here.
            status = "interrupted" if failure != TurnFailure.SERVER_ERROR else "failed"
            if self.left_running:
                status = "running"  # the database could not be told: recover_turns ends it
            code = str(failure)
        level = logging.INFO if status == TurnStatus.COMPLETED else logging.WARNING
        if not logger.isEnabledFor(level):
            return  # nothing to build (a server at LOG_LEVEL=WARNING, for completed turns)
        failed = [
            f"{message.agent_key or '-'}: {message.error_code}"
            for message in self.messages
            if message.role == Role.ASSISTANT and message.status == MessageStatus.ERROR
        ]
        duration_ms = round((time.monotonic() - self._started) * 1000, 1)
        if failure is None:
            calls, credits = turn.llm_calls, turn.credits
            cost = f"{calls} LLM call(s), {_plain(credits)} credits"
        else:
            calls, credits = len(self.events), None
            cost = f"{calls} LLM call(s) opened"
        logger.log(
            level,
            "turn %s ended %s%s in %.1f ms: %s%s",
            turn.pk,
            status,
            f" ({code})" if code else "",
            duration_ms,
            cost,
            f"; failed answers: {', '.join(failed)}" if failed else "",
            extra={
                "turn_status": status,
                "failure_code": code or None,
                "llm_calls": calls,
                "credits": None if credits is None else _plain(credits),
                "failed_answers": len(failed),
                "duration_ms": duration_ms,
            },
        )

    def _balance(self) -> Balance | None:
        if self._month_credits is None:
            return None
        cap = self.plan.billing.monthly_credit_cap if self.plan.billing else None
        share = Decimal(str(settings.PANTHEON_LOW_BALANCE_SHARE))
        return Balance(
            month_credits_used=self._month_credits,
            credit_cap=cap,
            low_balance=cap is not None and self._month_credits >= cap * share,
        )

    async def _run_steps(self) -> None:
        """Route (orchestrator), answer agent by agent, summarize when due."""
        listener = self.listener
        if self.plan.mode == RoomMode.ORCHESTRATOR:
            result = await self._make(self._pending_call())
            agents = await database(self.route)(result)
            self._emit(events.routing(self._turn))
        else:
            agents = list(self.plan.candidates)
        for position, agent in enumerate(agents):
            following = agents[position + 1] if position + 1 < len(agents) else None
            call = self._pending_call()
            self._emit(
                events.step_started(
                    self.clock,
                    sequence=self.next_sequence,
                    agent={
                        "agent_id": str(agent.id) if agent.id else None,
                        "agent_key": agent.key,
                        "agent_name": agent.name,
                        "model_alias": call.alias,
                    },
                )
            )
            result = await self._make(call, streamed=listener is not None)
            message = await database(self.answer)(agent, result, next_agent=following)
            if listener is not None:
                self._emit(events.step_completed(self.clock, render_message(message)))
            self.clock.advance(len(message.content))
        if self.pending is not None:
            result = await self._make(self._pending_call())
            await database(self.summarize)(result)

    # --- 2. claim -------------------------------------------------------------------------------

    def claim(self, *, also: Callable[[Turn], None] | None = None) -> None:
        """Insert the turn, its user message and the first call's pending row, or answer 409.
        `also` runs in the claim's transaction with the new turn (an Idempotency-Key names
        it)."""
        self.summary = SummaryRef.latest(self.plan.state)
        self.history = self._recent_history()
        if self.plan.mode == RoomMode.ORCHESTRATOR:
            first = self._routing_call()
        else:
            first = self._agent_call(self.plan.candidates[0])
        # A capped user's worst case is worked out before the lock their claims queue on.
        billing = self.plan.billing
        capped = billing is not None and billing.monthly_credit_cap is not None
        worst = self._worst_case_credits(first) if capped else None
        now = self.plan.state.now()
        try:
            with transaction.atomic():
                if self._hold_prices():
                    worst = None  # worked out again at the prices now held
                reserved = self._hold_credits(now, first, worst)
                self._interrupt_stale_turn(now)
                # The turn's insert locks its session's row (the database counts the turn on
                # it: `Session.turn_count`), before its room's: rows are locked in the order of
                # a user's forgetting (turns, sessions, rooms), never the other way round.
                self._insert_turn(now, reserved)
                self._promote_pending_mode(now)
                self._open(first)
                if also is not None:
                    also(self._turn)
        except IntegrityError as exc:
            # Another request claimed the same turn_index, or a running turn, first: the 409
            # names the session's running turn, if one runs (a read on this path only).
            running = Turn.objects.running().filter(session=self.plan.session)
            raise exceptions.TurnConflict(
                running_turn_id=running.values_list("pk", flat=True).first()
            ) from exc
        # From here on every log line of the turn says which it is (joins the ledger's turn_id).
        logging_context.bind(session_id=self.plan.session.pk, turn_id=self._turn.pk)

    def _hold_prices(self) -> bool:
        """The turn's rows are priced at their price list's prices as they stand when the
        first is stamped: a list no ledger row was stamped with when the plan read it may have
        changed since. Its prices are then read again, and held until the claim commits
        (`alias_prices_held`; no query for a list stamped already). Returns whether they were
        read again."""
        held = usage_selectors.alias_prices_held(self.plan.pricing)
        if held is self.plan.pricing:
            return False
        self.plan = replace(self.plan, pricing=held)
        return True

    def _recent_history(self) -> list[HistoryMessage]:
        """The newest raw messages after the latest summary (bounded), oldest first. A read
        that ends in the middle of an exchange (its oldest message an answer) reads on, back to
        that exchange's question (EXCHANGE_READ_LIMIT): a prompt's history starts with a
        question (`orchestration.context`), and in a room with as many seats as the limit, the
        newest messages are all answers."""
        # A sequence is never negative: with no summary, the whole history.
        after = self.summary.to_sequence if self.summary is not None else -1
        limit = settings.PANTHEON_CONTEXT_HISTORY_LIMIT
        rows = _newest_history(limit).values(session_id=self.plan.session.pk, after=after)
        if len(rows) == limit and rows[-1]["role"] != MessageRole.USER:
            messages = Message.objects.filter(IN_HISTORY, session=self.plan.session)
            messages = messages.filter(sequence__gt=after)
            newest_first = messages.order_by("-sequence").values(*HISTORY_FIELDS)
            oldest = rows[-1]["sequence"]
            question = (
                messages.filter(role=MessageRole.USER, sequence__lt=oldest)
                .order_by("-sequence")
                .values("sequence")[:1]
            )
            rows += newest_first.filter(sequence__gte=Subquery(question), sequence__lt=oldest)[
                :EXCHANGE_READ_LIMIT
            ]
        return [_history_entry(row) for row in reversed(_visible(rows))]

    def _interrupt_stale_turn(self, now) -> None:
        """The session's running turn blocks this one (409) unless it made no progress for the
        stale limit: then it is interrupted and its calls in flight marked lost."""
        state = self.plan.state
        if state.last_turn_status != TurnStatus.RUNNING:
            return
        if state.turn_in_progress():
            # Its id came with the session (`session_for_turn`): a client can follow or cancel it.
            raise exceptions.TurnConflict(running_turn_id=state.last_turn_id)
        assert state.last_turn_id is not None
        stale = Turn.objects.filter(pk=state.last_turn_id, progress_at__lt=stale_before(now))
        if turns_interrupt(turns=stale, failure=TurnFailure.CONFLICT).turn_ids:
            logger.warning(
                "turn %s of session %s made no progress for %ss; marked interrupted",
                state.last_turn_index,
                self.plan.session.pk,
                settings.PANTHEON_TURN_STALE_SECONDS,
            )

    def _promote_pending_mode(self, now) -> None:
        """A queued mode change takes effect with this turn, unless it was changed again since
        the room was read."""
        room = self.plan.session.room
        if room is not None and self.plan.mode != room.current_mode:
            Room.objects.filter(pk=room.pk, pending_mode=self.plan.mode).update(
                current_mode=self.plan.mode, pending_mode=None, updated_at=now
            )

    def _hold_credits(self, now, first: PlannedCall, worst: Decimal | None) -> Decimal:
        """For a user with a billing profile: under a lock on it, where concurrent claims of
        the user queue, refuse a suspended account (uncapped too: a suspension that commits
        after the plan read the account found no turn of this one's to end) or a reached cap,
        counting what the user's running turns hold as spent; then this turn holds its worst
        case until it ends (`worst`, unless the cap was set since the plan read the user). 20
        concurrent turns at the edge of a cap overshoot it by at most one turn."""
        profile = self.plan.billing
        if profile is None:
            return Decimal("0")
        locked = BillingProfile.objects.select_for_update().get(pk=profile.pk)
        if locked.is_suspended:
            raise exceptions.AccountSuspended()
        cap = locked.monthly_credit_cap
        if cap is None:
            return Decimal("0")
        # What running turns hold first, then what the month used: a turn that ends between
        # the two reads (its credits move into the month as its hold goes, in one commit) is
        # then counted twice, never missed. Read the other way round, it was neither held nor
        # used, and one more turn got past the cap. (A cancelled turn's streamed words are
        # billed in a commit after its hold goes: a claim in between misses that part answer.)
        held = Turn.objects.running().filter(
            session__started_by=self.plan.user, progress_at__gte=stale_before(now)
        ).aggregate(total=Sum("reserved_credits"))["total"] or Decimal("0")
        used = usage_selectors.month_credits(user=self.plan.user, at=now)
        if used + held >= cap:
            raise exceptions.CreditCapExceeded(
                f"{_plain(used)} of {_plain(cap)} monthly credits are used"
                + (f" and {_plain(held)} are held by turns in progress." if held else ".")
            )
        return worst if worst is not None else self._worst_case_credits(first)

    def _worst_case_credits(self, first: PlannedCall) -> Decimal:
        """Every call the turn may make, at its alias's multiplier, with its input estimate
        and the alias's max output: the routing call, each agent (a later one also reading the
        answers before it), and the summary if this turn may make one (`_summary_hold`)."""
        plan = self.plan
        history = sum(message.token_estimate or 0 for message in self.history)
        summary = (
            context_budget.estimate_tokens(summary_for_agents(self.summary.content))
            if self.summary
            else 0
        )
        calls: list[tuple[str, int]] = []
        if first.purpose == CallPurpose.ROUTING:
            calls.append((first.alias, first.estimated_tokens))
        earlier_answers = 0
        for agent in plan.candidates:
            alias = plan.alias_for(agent)
            floor = plan.prompt_floor.get(agent.key, 0)
            estimate = min(
                floor + history + summary + earlier_answers, plan.budget(alias).input_budget
            )
            calls.append((alias, estimate))
            earlier_answers += plan.pricing[alias].alias.max_output_tokens
        summary_input = self._summary_hold()
        if summary_input is not None:
            calls.append((settings.PANTHEON_SUMMARIZER_MODEL_ALIAS, summary_input))
        total = Decimal("0")
        for alias, input_tokens in calls:
            pricing = plan.pricing[alias]
            oe = compute_oe(fresh=input_tokens, cached=0, output=pricing.alias.max_output_tokens)
            total += compute_credits(oe=oe, multiplier=pricing.multiplier)
        return total

    def _summary_hold(self) -> int | None:
        """The input of the summary call this turn may make, at most; None when it cannot
        make one. A summary folds in the history since the latest summary, before this turn
        (`_summary_transcript`): with none (a first turn), or no usable summarizer, there is
        none. It is due every SUMMARY_EVERY_TURNS turns, or when an agent's history takes its
        whole prompt to SUMMARIZE_AT of its budget (`_summary_due`), which this bounds before
        any answer: every answer before that agent's at the most its call allows, and its
        prompt without history at its floor. Its prompt is
        then the one `_summary_due` will fit from the same history and summary, unless the
        claim read only the newest part of the history: then as much as its budget takes."""
        plan = self.plan
        summarizer = settings.PANTHEON_SUMMARIZER_MODEL_ALIAS
        if not self.history or not _usable(plan.pricing, summarizer):
            return None
        if not self._summary_may_be_due():
            return None
        limit = plan.budget(summarizer).prune_limit
        if self._history_unread():
            return limit  # older messages wait to be summarized too: unread here
        # The transcript `_summary_transcript` reads: it may end in the middle of an exchange,
        # where the whole history's summary would fold in less.
        following = self.history[SUMMARY_TRANSCRIPT_LIMIT:]
        prompt = fit_summary_messages(
            previous_summary=self.summary.content if self.summary else None,
            transcript=self.history[:SUMMARY_TRANSCRIPT_LIMIT],
            limit=limit,
            model=plan.token_model(summarizer),
            next_role=following[0].role if following else None,
        )
        return None if prompt is None else prompt.estimated_tokens

    def _summary_may_be_due(self) -> bool:
        """Whether `_summary_due` may find a summary due, whatever the agents answer."""
        if self._history_unread():
            return True
        plan = self.plan
        turn_index = (plan.state.last_turn_index or 0) + 1
        largest = [self._largest_answer(agent) for agent in plan.candidates]
        for position, agent in enumerate(plan.candidates):
            if plan.mode == RoomMode.ORCHESTRATOR:  # the manager's order: any other before it
                before = [answer for answer in largest if not answer.given_by(agent)]
            else:
                before = largest[:position]
            alias = plan.alias_for(agent)
            floor = plan.prompt_floor.get(agent.key, 0)
            tokens = full_prompt_tokens_at_most(
                agent=agent,
                roster=plan.prompt_roster,
                floor=floor,
                summary=self.summary.content if self.summary else None,
                history=self.history,
                same_turn=before,
                model=plan.token_model(alias),
            )
            # The prompt without its history is at least the floor (the answers before it may
            # be empty): all but the floor may be history, as far as this bound knows.
            if context_budget.summary_due(
                estimated_tokens=tokens,
                history_tokens=tokens - floor,
                budget=plan.budget(alias),
                turn_index=turn_index,
            ):
                return True
        return False

    def _history_unread(self) -> bool:
        """Whether the claim's read of the history since the latest summary came back full
        (`_recent_history`): older messages may lie between that summary and the read, which no
        prompt shows until a summary folds them in. A summary is then due on this turn, whatever
        its index: one every SUMMARY_EVERY_TURNS turns folds at most SUMMARY_TRANSCRIPT_LIMIT
        messages, fewer than a room of many seats adds meanwhile (50 seats: 408), and a backlog
        (summaries that stopped while the summarizer's alias was unusable) would wait for
        hundreds of turns; the summary fell further behind with every turn, and the agents never
        saw the middle of the conversation."""
        return len(self.history) >= settings.PANTHEON_CONTEXT_HISTORY_LIMIT

    def _largest_answer(self, agent: AgentSpec) -> HistoryMessage:
        """The agent's answer in this turn as a later prompt counts it, at its largest."""
        max_output = self.plan.pricing[self.plan.alias_for(agent)].alias.max_output_tokens
        return HistoryMessage(
            role=Role.ASSISTANT,
            content="",
            agent_key=agent.key,
            agent_name=agent.name,
            token_estimate=answer_tokens_at_most(max_output),
            agent_id=agent.id,
        )

    def _insert_turn(self, now, reserved: Decimal) -> None:
        """The state was read with the session, outside this transaction: if another request
        claimed in between, these inserts collide with its rows (IntegrityError → 409)."""
        plan = self.plan
        self.turn = Turn(
            session=plan.session,
            turn_index=(plan.state.last_turn_index or 0) + 1,
            mode=plan.mode,
            status=TurnStatus.RUNNING,
            worker=runner.this_process(),
            user_input=plan.user_input,
            model_alias_override=plan.model_alias_override,
            roster=[_roster_entry(agent) for agent in plan.roster],
            reserved_credits=reserved,
            created_at=now,
            progress_at=now,
        )
        self.next_sequence = (plan.state.last_sequence or 0) + 1
        question = self._add_message(
            role=MessageRole.USER,
            content=plan.user_input,
            token_estimate=context_budget.estimate_tokens(plan.user_input),
            created_at=now,
            saved=False,
        )
        # One statement (`insert_together`): the turn's insert still comes first.
        insert_together([(_TURN_ROW, self.turn), (_MESSAGE_ROW, question)])

    # --- 3. route -------------------------------------------------------------------------------

    def route(self, result: LlmResult) -> list[AgentSpec]:
        """The manager's choice of agents; garbage or a failed call falls back to the first."""
        call = self._just_made()
        choosable = [agent.key for agent in self.plan.candidates]
        if result.ok:
            decision = parse_routing(result.text, choosable)
        else:
            logger.warning(
                "turn %s: routing call failed (%s); falling back to the first agent",
                self._turn.pk,
                result.error_kind,
            )
            decision = RoutingDecision(
                selected_agent_keys=(choosable[0],),
                fallback_used=True,
                fallback_reason=FallbackReason.MANAGER_FAILED,
            )
        routing = {
            "manager_model_alias": call.alias,
            "selected_agent_keys": list(decision.selected_agent_keys),
            "fallback_used": decision.fallback_used,
            "fallback_reason": decision.fallback_reason,
            "ignored_agent_keys": list(decision.ignored_agent_keys),
        }
        by_key = {agent.key: agent for agent in self.plan.candidates}
        agents = [by_key[key] for key in decision.selected_agent_keys]
        first = self._agent_call(agents[0])
        with self._step(completing=call.opened, routing=routing):
            self._open(first)
        self._turn.routing = routing
        return agents

    # --- 4. answer ------------------------------------------------------------------------------

    def answer(
        self, agent: AgentSpec, result: LlmResult, *, next_agent: AgentSpec | None
    ) -> Message:
        """The agent's answer in one commit: its ledger row, its message, and either the next
        call's pending row or (when this was the last call) the turn's finish. A failed
        answer keeps what was streamed of it before the failure."""
        call = self._just_made()
        message = self._add_message(
            role=MessageRole.ASSISTANT,
            agent_key=agent.key,
            agent_name=agent.name,
            agent_id=agent.id,  # the roster snapshot's (`_roster_entry`)
            model_alias=call.alias,
            content=result.text,
            status=MessageStatus.OK if result.ok else MessageStatus.ERROR,
            error_code="" if result.ok else (result.error_kind or "provider_error"),
            token_estimate=context_budget.estimate_tokens(result.text) if result.ok else 0,
            saved=False,
        )
        if next_agent is not None:
            following: PlannedCall | None = self._agent_call(next_agent)
        else:
            following = self._summary_call() if self._summary_due() else None
        finishing = following is None
        # The last step's message and the turn's audit: in the step's one statement, or for a
        # streamed step in one after its saved text (now the message) is deleted.
        rows = []
        if finishing:
            rows = [(_MESSAGE_ROW, message), (_AUDIT_ROW, self._audit(summary_triggered=False))]
        streamed = self.listener is not None
        chained = () if streamed else rows
        with self._step(completing=call.opened, finishing=finishing, rows=chained):
            if streamed:
                TurnStreamChunk.objects.filter(turn=self._turn).delete()
                if rows:
                    insert_together(rows)
            if following is not None:
                _MESSAGE_ROW.insert(message)
                self._open(following)
        return message

    # --- 5. summarize ---------------------------------------------------------------------------

    def summarize(self, result: LlmResult) -> None:
        """The summary call's commit finishes the turn. A failed call or an empty summary never
        replaces what the previous summary knew."""
        call = self._just_made()
        extraction: SummaryExtraction | None = parse_summary(result.text) if result.ok else None
        if extraction is None or not extraction.summary:
            logger.warning(
                "turn %s: no usable summary (%s); the previous summary stays",
                self._turn.pk,
                result.error_kind or "empty summary text",
            )
            extraction = None
        elif self.summary is not None:
            # A list the answer left out (every list, for an answer in prose) says nothing of
            # the one the summarizer was given to carry forward, which stays as it was rather
            # than emptied by one stray answer. An empty list given empties it.
            previous = self.summary.content
            extraction = replace(
                extraction,
                **{
                    field: getattr(previous, field)
                    for field in LIST_FIELDS
                    if field not in extraction.lists_given
                },
            )
        with self._step(completing=call.opened, finishing=True):
            if extraction is not None:
                self._save_summary(extraction)
            _AUDIT_ROW.insert(self._audit(summary_triggered=True))

    def _summary_due(self) -> bool:
        if not any(
            message.status == MessageStatus.OK
            for message in self.messages
            if message.role == Role.ASSISTANT
        ):
            return False  # every answer failed: nothing new to sum up, nor worth a call
        # Any agent's prompt that its history took to the line: the fullest may be there
        # without any (the answers before it in a roundtable), which no summary relieves.
        due = self._history_unread() or any(
            context_budget.summary_due(
                estimated_tokens=context.estimated_tokens_full,
                history_tokens=context.history_tokens_full,
                budget=self.plan.budget(alias),
                turn_index=self._turn.turn_index,
            )
            for alias, context in self.contexts
        )
        if not due:
            return False
        summarizer = settings.PANTHEON_SUMMARIZER_MODEL_ALIAS
        if not _usable(self.plan.pricing, summarizer):
            logger.warning(
                "turn %s: a summary is due but alias %r is unusable; skipped",
                self._turn.pk,
                summarizer,
            )
            return False
        rows = self._summary_transcript()
        following = rows[SUMMARY_TRANSCRIPT_LIMIT:]  # the next message, if the read stopped short
        rows = _visible(rows[:SUMMARY_TRANSCRIPT_LIMIT])
        prompt = fit_summary_messages(
            previous_summary=self.summary.content if self.summary else None,
            transcript=[_history_entry(row) for row in rows],
            limit=self.plan.budget(summarizer).prune_limit,
            model=self.plan.token_model(summarizer),
            next_role=following[0]["role"] if following else None,
        )
        if prompt is None:
            if rows:
                logger.warning(
                    "turn %s: a summary is due but alias %r has no room for a transcript; skipped",
                    self._turn.pk,
                    summarizer,
                )
            # Nothing before this turn is left unsummarized (a first turn, say): nothing to do.
            return False
        # What does not fit stays in the raw history and goes into the next summary.
        self._transcript = rows[: prompt.transcript_used]
        self._summary_prompt = prompt
        return True

    def _summary_transcript(self) -> list[dict]:
        """The messages to fold into the summary, oldest first: those since the last summary
        and before this turn (whose exchange stays raw, so the next turn reads the latest
        exchange verbatim), at most SUMMARY_TRANSCRIPT_LIMIT of them; the summary call takes
        as many as fit the summarizer's budget (`fit_summary_messages`). A capped user's turn
        holds credits for this call from the history it read at its claim (`_summary_hold`):
        these are the same messages, this turn's own left out. One more is read, if there is
        one: whether the last ends its exchange."""
        after = self.summary.to_sequence if self.summary else 0
        return _SUMMARY_TRANSCRIPT.values(
            session_id=self.plan.session.pk, after=after, before=self.messages[0].sequence
        )

    def _save_summary(self, extraction: SummaryExtraction) -> None:
        SessionSummary.objects.create(
            session=self.plan.session,
            turn=self.turn,
            from_sequence=self._transcript[0]["sequence"],
            to_sequence=self._transcript[-1]["sequence"],
            summary_text=extraction.summary,
            key_facts=list(extraction.key_facts),
            decisions=list(extraction.decisions),
            open_questions=list(extraction.open_questions),
            action_items=list(extraction.action_items),
            valid_json=extraction.valid_json,
        )

    # --- 6. finish (or fail) --------------------------------------------------------------------

    def _audit(self, *, summary_triggered: bool) -> TurnContextAudit:
        """The context audit of the turn, from its fullest context relative to its budget (for
        its finishing step to insert)."""
        alias, pressure = self._pressure()
        budget = self.plan.budget(alias)
        audit = TurnContextAudit(
            turn=self._turn,
            model_context_limit=budget.context_window,
            input_budget=budget.input_budget,
            estimated_tokens_before=pressure.estimated_tokens_full,
            estimated_tokens_after=pressure.estimated_tokens,
            history_messages_loaded=len(self.history),
            history_messages_pruned=max(context.history_pruned for _, context in self.contexts),
            summary_used=self.summary is not None,
            summary_triggered=summary_triggered,
            pruned=any(context.pruned for _, context in self.contexts),
        )
        return audit

    def fail(
        self,
        status: TurnStatus = TurnStatus.FAILED,
        failure: TurnFailure = TurnFailure.SERVER_ERROR,
    ) -> bool | None:
        """After an unexpected error (a bug, the database): end the turn `failed` (or
        `interrupted`, its worker stopping) with the totals of its stored ledger rows and mark
        its calls in flight lost, so it does not block its session until the stale limit;
        `failure` is the code its replays end with.
        Provider problems never get here: the gateway reports them as results. A turn taken
        over as stale is left as it is, but for the text its stream had saved (the takeover
        leaves it) and the usage the provider reported for the call that ran as it was taken
        over (its row lost). Returns whether this call ended the turn, None when it
        could not tell: the database was still unreachable (a connection lost in a restart is
        back within the pool's DB_POOL_TIMEOUT, which this waits for). The turn is then still
        `running` (`left_running`): the API tries `end` again in the background until the
        database is back (`sessions_app.api_turns`), else the stale limit lets the next claim
        or `recover_turns` end it."""
        if self.turn is None:
            return False
        try:
            return self.end(status, failure)
        except Exception:
            logger.exception("turn %s: could not record its failure", self.turn.pk)
            return None

    def end(self, status: TurnStatus, failure: TurnFailure) -> bool:
        """`fail`'s work, which raises what the database raised. Returns whether this call
        ended the turn (False: it had ended already). A turn its user cancelled after the
        first words of a streamed answer reached them bills that call for what it streamed
        (`turn_record_cancelled_answer`), after the cancel marked its row lost."""
        # The call just made, if its step was not stored: its row is still pending (the filter
        # leaves a stored one be), and the usage the provider reported is known.
        made = self._made
        # Unless its user cancelled the turn after its first words reached them (a streamed
        # answer, whole or abandoned): they got those words, which are billed as a stream that
        # failed after its first words is, not lost at no credit.
        spoken = made if made and made.spoken and failure == TurnFailure.CANCELLED else None
        heard = [made.opened] if made is not None and spoken is None else []
        ended = turns_interrupt(
            turns=Turn.objects.filter(pk=self._turn.pk),
            status=status,
            failure=failure,
            heard=heard,
        )
        if spoken is not None:
            # Its row was marked lost by the cancel (or just now): billed once.
            turn_record_cancelled_answer(spoken=spoken.opened)
        elif not ended.turn_ids and heard:
            # Ended from outside while that call ran (`_taken_over`): its row was marked lost
            # with the input estimate, and the provider has answered since.
            turn_record_late_answer(heard=heard[0])
        # The turn has ended either way; its stream's last save waited for (`make`).
        TurnStreamChunk.objects.filter(turn=self._turn).delete()
        return bool(ended.turn_ids)

    async def _ending(self, failure: TurnFailure) -> events.TurnEvent:
        """The last event of a turn that did not run to its end: its replay's, so that a
        client following it live and one replaying it later read the same ending. The bare
        code, with no turn, when the database cannot tell (it may be what failed)."""
        try:
            replay = await database(events.turn_replay)(self._turn)
        except Exception:
            logger.warning("turn %s: could not read how it ended", self._turn.pk, exc_info=True)
        else:
            if replay.finished:
                return replay.events[-1]
        return events.turn_failed(code=str(failure), body=None)

    # --- the steps' machinery -------------------------------------------------------------------

    @property
    def _turn(self) -> Turn:
        assert self.turn is not None, "the turn is claimed first"
        return self.turn

    def _just_made(self) -> PlannedCall:
        assert self._made is not None, "a call is made first"
        return self._made

    def _pending_call(self) -> PlannedCall:
        assert self.pending is not None and self.pending.event is not None
        return self.pending

    def _routing_call(self) -> PlannedCall:
        """The manager's prompt within its alias's budget, with the previous exchange of the
        history read (bounded) for a follow-up: a message too long for it is cut short, the
        exchange left out and the roster's roles shortened first (`fit_routing_messages`)."""
        manager = settings.PANTHEON_MANAGER_MODEL_ALIAS
        messages = fit_routing_messages(
            user_input=self.plan.user_input,
            roster=self.plan.candidates,
            room_goal=self.plan.room_goal,
            input_budget=self.plan.budget(manager).input_budget,
            history=self.history,
            model=self.plan.token_model(manager),
        )
        return self._planned(manager, CallPurpose.ROUTING, messages)

    def _agent_call(self, agent: AgentSpec) -> PlannedCall:
        """The agent's context: its system prompt, the latest summary, the history that fits,
        and what the agents before it said in this turn."""
        alias = self.plan.alias_for(agent)
        context = build_agent_messages(
            agent=agent,
            roster=self.plan.prompt_roster,
            room_goal=self.plan.room_goal,
            mode=self.plan.mode,
            summary=self.summary.content if self.summary else None,
            history=self.history,
            same_turn=[
                _history_entry(vars(message))
                for message in self.messages
                if message.role == MessageRole.ASSISTANT
                and message.status == MessageStatus.OK
                and not blank(message.content)
            ],
            user_input=self.plan.user_input,
            budget=self.plan.budget(alias),
            model=self.plan.token_model(alias),
        )
        self.contexts.append((alias, context))
        if context.same_turn_dropped or context.same_turn_cut or context.summary_cut:
            # The first agent's prompt is built as the turn is claimed, before it has an id.
            logger.info(
                "%s: %s's prompt is cut to %s's input budget (%d tokens): %d earlier "
                "answers of the turn left out, %d cut short, summary %s",
                "the turn being claimed" if self.turn is None else f"turn {self.turn.pk}",
                agent.key,
                alias,
                self.plan.budget(alias).input_budget,
                context.same_turn_dropped,
                context.same_turn_cut,
                "cut" if context.summary_cut else "whole",
            )
        return PlannedCall(
            alias=alias,
            purpose=CallPurpose.AGENT,
            messages=context.messages,
            estimated_tokens=context.estimated_tokens,
            agent=agent,
        )

    def _summary_call(self) -> PlannedCall:
        """The prompt `_summary_due` fitted to the summarizer's budget (and counted so)."""
        prompt = self._summary_prompt
        assert prompt is not None, "a summary call follows _summary_due"
        return self._planned(
            settings.PANTHEON_SUMMARIZER_MODEL_ALIAS,
            CallPurpose.SUMMARY,
            prompt.messages,
            estimated_tokens=prompt.estimated_tokens,
        )

    def _planned(
        self,
        alias: str,
        purpose: CallPurpose,
        messages: Sequence[ChatMessage],
        *,
        estimated_tokens: int | None = None,
    ) -> PlannedCall:
        if estimated_tokens is None:
            model = self.plan.token_model(alias)
            estimated_tokens = sum(
                context_budget.estimate_tokens(m.content, model) for m in messages
            )
        return PlannedCall(
            alias=alias,
            purpose=purpose,
            messages=tuple(messages),
            estimated_tokens=estimated_tokens,
        )

    def _open(self, call: PlannedCall) -> None:
        """Commit the call's ledger row as pending (the caller holds the transaction)."""
        call.event = usage_call_open(
            user=self.plan.user,
            model_alias=call.alias,
            pricing=self.plan.pricing.get(call.alias),
            purpose=call.purpose,
            estimated_input_tokens=call.estimated_tokens,
            room_id=self.plan.session.room_id,
            session_id=self.plan.session.pk,
            turn_id=self._turn.pk,
            agent_key=call.agent.key if call.agent else "",
            at=self.plan.state.now(),
        )
        self.events.append(call.event)
        self.pending = call

    def cancel(self) -> None:
        """Its user cancelled the turn (`POST turns/{id}/cancel`), which has ended it in the
        database already: the provider call in flight is abandoned now (its connection closed,
        so the provider stops), and the turn ends as one taken over does, with the code of a
        cancel (`TurnCancelled`). Between calls, the next one is not made. On the event loop
        (`pantheon.draining.stop`)."""
        self.cancelled = True
        if self._calling is not None:
            # A streamed answer's words so far are billed as the turn ends (`_make`, `end`).
            self._calling.cancel()

    async def _abandonable(self, call: Coroutine[Any, Any, LlmResult]) -> LlmResult:
        """`call` (a provider call), which `cancel` abandons; a stopping worker's cancellation
        reaches it as before."""
        if self.cancelled:
            call.close()
            raise exceptions.TurnCancelled(turn_id=self._turn.pk)
        calling = self._calling = asyncio.ensure_future(call)
        try:
            return await calling
        except asyncio.CancelledError:
            task = asyncio.current_task()
            stopping = task is not None and task.cancelling() > 0
            if self.cancelled and not stopping:
                raise exceptions.TurnCancelled(turn_id=self._turn.pk) from None
            raise
        finally:
            self._calling = None

    async def _make(self, call: PlannedCall, *, streamed: bool = False) -> LlmResult:
        """The LLM call itself, with no transaction and no connection held, metered onto its
        pending row. Streamed, its text reaches the listener as the provider speaks, and is
        saved every `PANTHEON_STREAM_SAVE_SECONDS` for replays from other hosts. A cancel of the
        turn abandons it (`cancel`); one after its first words reached the listener meters
        what it streamed, estimated (the provider's usage never comes), for `end` to bill."""
        pricing = self.plan.pricing[call.alias]
        request = LlmCall(
            alias=alias_config(pricing.alias),
            messages=call.messages,
            purpose=call.purpose,
            agent_key=call.agent.key if call.agent else None,
        )
        budget = self.plan.budget(call.alias)
        if call.estimated_tokens > budget.input_budget:
            result = self._unsent(call, budget)
        elif streamed:
            step = _StreamedStep(self, call)
            try:
                result = await self._abandonable(step.make(request))
            except exceptions.TurnCancelled:
                if call.spoken:
                    # Its user got its first words: what it streamed is billed (`end`).
                    result = self.gateway.abandoned(
                        request, step.text, latency_ms=step.elapsed_ms()
                    )
                    usage_call_meter(event=call.opened, result=result, pricing=pricing)
                    self._made, self.pending = call, None
                raise
        else:
            result = await self._abandonable(self.gateway.complete(request))
        usage_call_meter(event=call.opened, result=result, pricing=pricing)
        self._made, self.pending = call, None
        return result

    def _unsent(self, call: PlannedCall, budget: context_budget.ContextBudget) -> LlmResult:
        """A call whose prompt does not fit its alias's budget even cut down (its window would
        not hold the prompt and the answer asked for) is not sent: it fails as the provider
        would have refused it, `context_window_exceeded`, at no cost. An agent's answer is then
        an error, as any failed call's; routing falls back, the summary is skipped."""
        message = (
            f"The prompt is about {call.estimated_tokens} tokens; {call.alias} has an input "
            f"budget of {budget.input_budget}. It was not sent."
        )
        logger.warning(
            "turn %s: %s call for %s not sent: %s",
            self._turn.pk,
            call.purpose,
            call.agent.key if call.agent else "-",
            message,
        )
        return LlmResult(
            status=CallStatus.ERROR,
            text="",
            input_tokens_fresh=0,
            input_tokens_cached=0,
            output_tokens=0,
            latency_ms=0,
            attempts=0,
            provider="",
            provider_model=self.plan.pricing[call.alias].alias.litellm_model,
            error_kind=ErrorKind.CONTEXT_WINDOW_EXCEEDED,
            error_message=message,
        )

    def _emit(self, event: events.TurnEvent) -> None:
        if self.listener is not None:
            self.listener.send(event)

    @contextmanager
    def _step(
        self,
        *,
        completing: LlmCallEvent,
        finishing: bool = False,
        rows: Sequence[tuple[CompiledInsert, Model]] = (),
        **changes: Any,
    ) -> Iterator[None]:
        """The transaction of a step, which stores what the call `completing` produced. It
        first takes the turn's row lock, recording progress (`changes` included) or, when
        `finishing`, ending the turn with its status and totals; a recovery or a stale takeover
        takes the same lock first, so they are ordered. If the turn is no longer running it was
        taken over: nothing is written (`_taken_over` says what to answer). The call's ledger
        row is completed last: that moves the user's month counter, a row every turn of the
        user locks, so it stays locked only until the commit right after (concurrent turns of
        one user queue on it for one statement, not for the whole step). `rows`, for a step
        that writes nothing in its body, are inserted after the turn's row is written and
        before the call's is completed: on PostgreSQL all of the step's writes are then one
        statement (`pantheon.compiled.Chain`), in that order, each written only if the one
        before it was (none if the turn no longer runs)."""
        with transaction.atomic():
            # A chat deleted since the claim (its session, its room, its account forgotten)
            # stores no step: its delete ends the running turns it sees, and this one, whose
            # claim it could not see yet (read before it, committed after), ends here.
            now = self.plan.state.now()
            if finishing:
                status = Turn.final_status(
                    message.status for message in self.messages if message.role == Role.ASSISTANT
                )
                totals = usage_selectors.usage_totals(self.events)
                if status == TurnStatus.FAILED:  # `end` drops a broken-off stream's text too
                    turn = _alive_running_turn(self._turn.pk, self.plan.session.pk)
                    update = None
                    running = turn.end(status, totals=totals, now=now)
                else:
                    ending = {"completed_at": now, "progress_at": now, **totals}
                    update = (
                        _TURN_ENDED,
                        {"status": status, "failure_code": TurnFailure.NONE, **ending},
                    )
            else:
                update = (_turn_progressed(tuple(changes)), {"progress_at": now, **changes})
            where = {"turn_id": self._turn.pk, "session_id": self.plan.session.pk}
            chain = None
            if update is not None and rows and connection.vendor == "postgresql":
                chain = Chain("turn", *update[0].statement(update[1], **where))
                if not all(chain.insert(insert, instance) for insert, instance in rows):
                    chain = None
            if chain is not None:
                completed = usage_call_complete_chained(event=completing, chain=chain)
                running, count, moved = chain.run(["turn", "completed"], ["moved"])
                if not running:
                    raise self._taken_over(completing)
                yield
                self._month_credits = completed(count, moved)
            else:
                if update is not None:
                    running = update[0].update(update[1], **where)
                if not running:
                    raise self._taken_over(completing)
                yield
                if rows:
                    insert_together(rows)
                self._month_credits = usage_call_complete(event=completing)
        self._turn.progress_at = now
        if finishing:
            self._turn.status, self._turn.completed_at = status, now
            for name, value in totals.items():
                setattr(self._turn, name, value)

    def _taken_over(self, call: LlmCallEvent) -> exceptions.PantheonError:
        """What a step answers when its turn was ended from outside while its call ran: by
        `recover_turns` (`turn_interrupted`: the client hears what a turn interrupted by a
        restart answers, a 503 of that code), by a later turn taking the stalled session
        over (`turn_conflict`: the 409 of a session taken) or by its user's cancel
        (`turn_cancelled`, a 409 of that code); or its chat was deleted by a delete that could
        not see its claim (the turn still runs: it ends as that delete's cancel would have).
        Nothing of the step is written; the call's row, marked lost, gets what the provider
        reported (`end`)."""
        status, failure = Turn.objects.filter(pk=self._turn.pk).values_list(
            "status", "failure_code"
        ).first() or (None, None)
        if status == TurnStatus.RUNNING:
            # Still running: its chat was deleted after its claim, by a delete that could not
            # see the claim yet. It ends as that delete ends the turns it sees, as a cancel.
            logger.info(
                "turn %s: its chat was deleted while its %s call for %s ran: its answer is not "
                "stored, and the turn ends as a cancel",
                self._turn.pk,
                call.purpose,
                call.agent_key or "-",
            )
            return exceptions.TurnCancelled(turn_id=self._turn.pk)
        if failure == TurnFailure.CANCELLED:
            logger.info(
                "turn %s was cancelled while its %s call for %s ran: its answer is not stored",
                self._turn.pk,
                call.purpose,
                call.agent_key or "-",
            )
            return exceptions.TurnCancelled(turn_id=self._turn.pk)
        logger.warning(
            "turn %s was taken over (%s) while its %s call for %s ran: its answer is not "
            "stored, and the call stays lost with the usage its provider reported",
            self._turn.pk,
            failure or "ended",
            call.purpose,
            call.agent_key or "-",
        )
        if failure == TurnFailure.INTERRUPTED:
            return exceptions.TurnRecovered()
        return exceptions.TurnConflict()

    def _add_message(self, *, saved: bool = True, **fields: Any) -> Message:
        """A message of the turn, stamped by the turn's clock (the database's: `TurnState.now`),
        as its question was: by the host's, a host behind showed an answer written before the
        question it answers."""
        fields.setdefault("created_at", self.plan.state.now())
        message = Message(
            session=self.plan.session, turn=self.turn, sequence=self.next_sequence, **fields
        )
        if saved:
            _MESSAGE_ROW.insert(message)
        self.messages.append(message)
        self.next_sequence += 1
        return message

    def _pressure(self) -> tuple[str, ContextPlan]:
        """The fullest agent context of the turn relative to its own budget, for the audit."""
        return max(
            self.contexts,
            key=lambda item: (
                item[1].estimated_tokens_full / max(1, self.plan.budget(item[0]).input_budget)
            ),
        )


def _alive_running_turn(turn_id: UUID, session_id: UUID) -> TurnQuerySet:
    """The turn while it runs and its chat is not deleted (`_step`)."""
    return Turn.objects.filter(pk=turn_id).while_alive(session_id).running()


# A turn's writes, compiled once per process (`pantheon.compiled`): Django built and compiled
# each afresh, and the ending's UPDATE (with its EXISTS of the live session) alone cost over
# ten times the CPU of running it. `TurnQuerySet.end` writes what `_TURN_ENDED` writes.
_TURN_ROW = CompiledInsert(Turn)
_MESSAGE_ROW = CompiledInsert(Message)
_AUDIT_ROW = CompiledInsert(TurnContextAudit)
_TURN_ENDED = CompiledUpdate(
    _alive_running_turn,
    ("status", "failure_code", "completed_at", "progress_at", *USAGE_TOTAL_FIELDS),
    turn_id=UUID,
    session_id=UUID,
)


@functools.cache
def _turn_progressed(changes: tuple[str, ...]) -> CompiledUpdate:
    """A step's progress, with the turn's `changes` (its routing)."""
    return CompiledUpdate(
        _alive_running_turn, ("progress_at", *changes), turn_id=UUID, session_id=UUID
    )


def _roster_entry(agent: AgentSpec) -> dict:
    return {
        "agent_id": agent.id,
        "agent_key": agent.key,
        "name": agent.name,
        "model_alias": agent.model_alias,
        "role_prompt": agent.role_prompt,
    }


# What failed, in `_StreamedStep._save_failed`'s log line (%s: the agent, or the call's purpose).
_ANSWER_SAVE = "a save of the answer streaming from %s"
_REASONING_LOOK = "a look at the turn while %s reasons"
_REASONING_SAVE = "a save of the progress of %s's reasoning"


class _StreamedStep:
    """One answer streamed to the listener as the provider speaks. The text so far is saved
    (at most every `PANTHEON_STREAM_SAVE_SECONDS`, one save at a time) so that any host can
    replay the running turn: each save appends the words heard since the last one as a chunk
    (`TurnStreamChunk`), so a long answer's saves write its text once, not once a save; the
    step's commit replaces them with the message. A stream that
    keeps talking is progress: its saves move the turn's `progress_at` too (at most every
    tenth of the stale limit), so a long answer is never taken for a dead turn. So is a
    reasoning model's reasoning before its answer, which has no text to save: it moves the
    turn's progress alone, as often.

    A save (or a move of progress) that finds its turn ended elsewhere (`recover_turns`, a
    stale takeover, a cancel in another process) saves nothing and ends the step there: its
    listener hears no more of the discarded answer, and the turn ends as a step that found it
    so at its commit does (`TurnRunner._taken_over`). The provider's stream is read to its end
    meanwhile, by no one, for the usage its lost row takes (`_hear_the_rest`); but a cancelled
    turn's is closed at once, as a cancel in this process closes it (`TurnRunner.cancel`), and
    what it streamed is billed (its user got it) once the turn ends (`TurnRunner.end`)."""

    def __init__(self, runner: TurnRunner, call: PlannedCall) -> None:
        self.runner = runner
        self.call = call
        self.sequence = runner.next_sequence
        self.pieces: list[str] = []
        self.length = 0
        # What the saves have stored (characters), and the pieces heard since, for the next.
        self.saved = 0
        self.unsaved: list[str] = []
        self.started = self.saved_at = self.progress_at = time.monotonic()
        self.saving: asyncio.Task | None = None
        # The first pieces, until a look at the turn lets them through (`hear`); then None.
        self.held: list[str] | None = []
        # What to answer once a save found the turn ended elsewhere (set on the event loop).
        self.ended: asyncio.Future[exceptions.PantheonError] | None = None

    async def make(self, request: LlmCall) -> LlmResult:
        self.ended = asyncio.get_running_loop().create_future()
        reading = asyncio.ensure_future(
            self.runner.gateway.stream(request, self.hear, self.hear_reasoning)
        )
        try:
            try:
                await asyncio.wait((reading, self.ended), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if self.saving is not None:
                    # Never let a save land after the commit that clears it.
                    await asyncio.gather(self.saving, return_exceptions=True)
        except asyncio.CancelledError:
            # The worker is stopping: the provider's stream is closed, as it always was.
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            raise
        if not self.ended.done():
            return reading.result()
        ended = self.ended.result()
        if isinstance(ended, exceptions.TurnCancelled):
            # Cancelled by its user, in another process: the provider's stream is closed, as
            # `TurnRunner.cancel` closes it in this one. The lost row keeps the estimate, or,
            # once its first words reached the listener, is billed for them (`TurnRunner.end`).
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        else:
            _hear_the_rest(self.runner, self.call, reading)
        raise ended

    @property
    def text(self) -> str:
        """What the listener heard of the answer."""
        return "".join(self.pieces)

    def elapsed_ms(self) -> int:
        return int(round((time.monotonic() - self.started) * 1000))

    def hear(self, piece: str) -> None:
        """A piece of the answer, for the listener. After a silence as long as the saves' pace
        (`PANTHEON_STREAM_SAVE_SECONDS`, the longest a cancel from elsewhere goes unnoticed
        while words flow), the first waits, with what follows it meanwhile, for one look at the
        turn: a cancel another worker took while the provider was silent is found before any
        word reaches the client (they were shown, and billed, to a user who had pressed Stop
        before any text)."""
        if self._dropped():
            return
        if self.held is not None:
            if not self.held and time.monotonic() - self.started < self._pace():
                self.held = None  # quick: no cancel can have gone unnoticed for longer
            else:
                self.held.append(piece)
                if len(self.held) == 1:
                    # The one save slot: a progress save of its reasoning may hold it still.
                    self.saving = asyncio.create_task(self._look_before_the_first_word(self.saving))
                return
        self._deliver(piece)

    @staticmethod
    def _pace() -> float:
        return settings.PANTHEON_STREAM_SAVE_SECONDS

    async def _look_before_the_first_word(self, before: asyncio.Task | None) -> None:
        """The look is the step's first save, of the words held (`save`: the turn's running,
        read first): none goes to the listener until it says the turn still runs."""
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)
        self.saved_at = time.monotonic()
        looked = len(self.held or ())  # pieces heard later wait for the next save
        first = "".join(self.held or ())
        try:
            taken_over = await database(self.save)((0, first))
        except Exception as exc:
            # No look (the database is away): the words go out, and the next save, which
            # stores them, looks again.
            self._save_failed(exc)
            taken_over, looked, first = None, 0, ""
        held, self.held = self.held or [], None
        if self.runner.cancelled:  # cancelled in this process meanwhile: nothing more is sent
            return
        if taken_over is not None:
            if self.ended is not None and not self.ended.done():
                self.ended.set_result(taken_over)
            return
        self.saved = len(first)
        for index, piece in enumerate(held):
            self._deliver(piece, saved=index < looked)

    def _deliver(self, piece: str, *, saved: bool = False) -> None:
        if self._dropped():
            return
        self.call.spoken = True
        start, self.length = self.length, self.length + len(piece)
        self.pieces.append(piece)
        if not saved:
            self.unsaved.append(piece)
        self.runner._emit(
            events.step_delta(self.runner.clock, sequence=self.sequence, text=piece, start=start)
        )
        due = time.monotonic() - self.saved_at >= settings.PANTHEON_STREAM_SAVE_SECONDS
        if due and self.unsaved and (self.saving is None or self.saving.done()):
            self.saved_at = time.monotonic()
            # Queued with the turn's own arrival: the step waits for its last save before it
            # commits, and a turn's saves end with the turn (at most one running at a time).
            self.saving = asyncio.create_task(self._save_the_rest())

    async def _save_the_rest(self) -> None:
        """The words heard since the last save, appended at the end of what it stored. They
        count as stored once the save returns: one that failed is tried again, with the
        words heard since, by the next."""
        count = len(self.unsaved)  # pieces heard during the save wait for the next
        chunk = "".join(self.unsaved)
        if await self._heard(self.save, (self.saved, chunk)):
            self.saved += len(chunk)
            del self.unsaved[:count]

    def hear_reasoning(self) -> None:
        """A chunk of the provider's reasoning: nothing to show or save, only progress, at
        most every tenth of the stale limit, and in between a look at the turn at the saves'
        pace, as its text's saves look (`save`): a cancel taken on another host ends the
        reasoning there, and its provider's stream is closed. It went unnoticed until the
        answer's first word or the next progress (a minute by default), the provider reasoning
        on meanwhile for a call its cancel leaves lost, at no credit. One save or look runs at
        a time (the step waits for it as for a save of text)."""
        if self._dropped() or (self.saving is not None and not self.saving.done()):
            return
        if self._progress_due():
            self.saving = asyncio.create_task(
                self._heard(self.progress, self.runner.plan.state.now(), what=_REASONING_SAVE)
            )
        elif time.monotonic() - self.saved_at >= self._pace():
            self.saved_at = time.monotonic()
            self.saving = asyncio.create_task(self._heard(self.look, None, what=_REASONING_LOOK))

    async def _heard(
        self, section: Callable[[Any], Any], value: Any, *, what: str = _ANSWER_SAVE
    ) -> bool:
        """Run a save (or a progress) `section`: whether it ran. One that failed is said in the
        log, not raised: its task is awaited by no one (the step waits for the last save only),
        and the next one tries again."""
        try:
            taken_over = await database(section)(value)
        except Exception as exc:
            self._save_failed(exc, what)
            return False
        if taken_over is not None and self.ended is not None and not self.ended.done():
            self.ended.set_result(taken_over)
        return True

    def _save_failed(self, exc: Exception, what: str = _ANSWER_SAVE) -> None:
        """A save of the streaming answer failed (or, `what` says, a look at the turn or a save
        of its progress while the provider reasons, no answer yet): a lost connection
        (`pg_terminate_backend`, a failover) is a warning, as the turn rides through it (its
        step's commit is what decides); anything else an error with its traceback. Either way
        the next save tries again, with the words heard since."""
        agent = self.call.agent.key if self.call.agent is not None else self.call.purpose
        if connection_lost(exc):
            logger.warning(
                "turn %s: %s failed (the database connection was lost: %s); it is tried "
                "again by the next one",
                self.runner._turn.pk,
                what % agent,
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
        else:
            logger.error(
                "turn %s: %s failed; it is tried again by the next one",
                self.runner._turn.pk,
                what % agent,
                exc_info=exc,
            )

    def _dropped(self) -> bool:
        return self.ended is not None and self.ended.done()

    def save(self, chunk: tuple[int, str]) -> exceptions.PantheonError | None:
        """The text from character `start` on (`chunk`: start, text), saved after what the
        saves before stored while the turn runs; else what the step answers."""
        start, text = chunk
        now = self.runner.plan.state.now()
        # One indexed read, no lock (a row lock is a write, every few hundred ms). A turn ended
        # between it and the insert keeps a row no replay of an ended turn reads, deleted with
        # its ending (`TurnRunner.end`), and the next save finds it ended.
        if not Turn.objects.running().filter(pk=self.runner._turn.pk).exists():
            return self.runner._taken_over(self.call.opened)
        if text:
            row = TurnStreamChunk(
                turn=self.runner._turn, sequence=self.sequence, start=start, text=text
            )
            # One insert of the new words, every few hundred ms of a stream. A save whose
            # insert committed but whose answer was lost (its connection dropped) is tried
            # again by the next, with more words: that one replaces it.
            TurnStreamChunk.objects.bulk_create(
                [row],
                update_conflicts=True,
                unique_fields=["turn", "sequence", "start"],
                update_fields=["text"],
            )
        if self._progress_due():
            return self.progress(now)
        return None

    def look(self, _: None) -> exceptions.PantheonError | None:
        """None while the turn runs (one indexed read, as a save's); else what the step
        answers."""
        if Turn.objects.running().filter(pk=self.runner._turn.pk).exists():
            return None
        return self.runner._taken_over(self.call.opened)

    def progress(self, now) -> exceptions.PantheonError | None:
        """The turn's progress moved while it runs; else what the step answers."""
        self.progress_at = time.monotonic()
        if Turn.objects.running().filter(pk=self.runner._turn.pk).update(progress_at=now):
            return None
        return self.runner._taken_over(self.call.opened)

    def _progress_due(self) -> bool:
        return time.monotonic() - self.progress_at >= settings.PANTHEON_TURN_STALE_SECONDS / 10


def _hear_the_rest(runner: TurnRunner, call: PlannedCall, reading: asyncio.Future) -> None:
    """The rest of a streamed call whose turn was ended elsewhere while it ran: the provider's
    stream is read to its end by no one, then the call's lost row takes the usage and cost the
    provider reported, as a call that answered after its turn was ended does
    (`turn_record_late_answer`). Its turn's client is told at once. A stopping worker waits for
    it as for a turn (`pantheon.draining`), and past that closes the stream: the row keeps the
    input estimate the recovery left on it."""

    async def rest() -> None:
        try:
            result = await reading  # holding no thread: a pooled one is for database work
            usage_call_meter(
                event=call.opened, result=result, pricing=runner.plan.pricing[call.alias]
            )
            # On a thread of its own: the turn that started it has ended.
            async with own_thread():
                await database(turn_record_late_answer)(heard=call.opened)
        except Exception:
            logger.warning(
                "turn %s: could not record its provider's late answer",
                runner._turn.pk,
                exc_info=True,
            )

    draining.detach(rest())
