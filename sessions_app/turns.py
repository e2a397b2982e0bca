"""The turn engine: `POST sessions/{id}/turns`, read top to bottom.

1. prepare   -- validate and refuse early: nothing is written and no LLM is called for a
                refused request (suspended account, credit cap, no agents, no valid tag,
                unusable model alias, input larger than the context budget).
2. claim     -- one short transaction inserts the turn as `running` with the next
                `turn_index`, and the user's message. The database arbitrates races: the
                unique (session, turn_index) and "one running turn per session" constraints
                turn a lost race into a 409 before any LLM is called.
3. steps     -- each LLM call runs with no transaction open; afterwards its assistant message
                and its ledger row commit together in one transaction, which also records the
                turn's progress.
4. finish    -- the summary, the context audit, the turn status and the turn's aggregated
                usage commit in one transaction: with the last step's rows when no summary is
                due, else after the summary call (which also runs outside any transaction).

A running turn whose last progress is older than `PANTHEON_TURN_STALE_SECONDS` no longer blocks
its session: the next claim marks it `interrupted`. Should its worker still be alive, each of
its commits checks the turn is still running first; if not, it keeps only the ledger row (the
call was made and is billed), writes nothing into the timeline, and answers 409.

Per-turn work is bounded and does not grow with the session: one read of the session carries
the claim state and the latest summary (`selectors.session_for_turn`), and a turn reads at most
`PANTHEON_CONTEXT_HISTORY_LIMIT` messages newer than that summary, never the whole history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from orchestration import budget as context_budget
from orchestration.context import ContextPlan, build_agent_messages, minimal_input_tokens
from orchestration.gateway import LlmGateway
from orchestration.planning import parse_tags, roundtable_order
from orchestration.routing import RoutingDecision, build_routing_messages, parse_routing
from orchestration.summary import build_summary_messages, parse_summary
from orchestration.types import AgentSpec, ChatMessage, HistoryMessage, LlmCall, LlmResult
from pantheon import exceptions
from pantheon.llm import alias_config, get_gateway
from rooms.models import Room, RoomMode
from rooms.selectors import room_roster
from sessions_app.models import (
    DIRECT_MODE,
    Message,
    MessageRole,
    MessageStatus,
    Session,
    SessionSummary,
    Turn,
    TurnContextAudit,
    TurnStatus,
)
from usage import selectors as usage_selectors
from usage.models import CallPurpose, LlmCallEvent
from usage.selectors import AliasPricing
from usage.services import usage_call_event

logger = logging.getLogger(__name__)

# How many messages since the last summary a summary call reads at most.
SUMMARY_TRANSCRIPT_LIMIT = 200
# Room the summary prompt's instructions and each message's speaker label take, in tokens.
SUMMARY_PROMPT_TOKENS = 300
SPEAKER_LABEL_TOKENS = 8


@dataclass(frozen=True)
class TurnPlan:
    """What a turn will do, decided before anything is written."""

    session: Session
    user: object
    user_input: str
    mode: str
    roster: tuple[AgentSpec, ...]
    candidates: tuple[AgentSpec, ...]  # who may answer: tagged, seated, or the direct agent
    pricing: dict[str, AliasPricing]
    model_alias_override: str
    room_goal: str

    def alias_for(self, agent: AgentSpec) -> str:
        return _alias_of(agent, self.model_alias_override)


@dataclass(frozen=True)
class SummaryRef:
    text: str
    to_sequence: int


@dataclass
class TurnRun:
    """What a running turn has produced so far, in memory (its ledger rows may not be saved
    yet: a step saves them in its commit, `_fail` after an error)."""

    turn: Turn
    next_sequence: int
    history: list[HistoryMessage]
    summary: SummaryRef | None
    messages: list[Message] = field(default_factory=list)
    events: list[LlmCallEvent] = field(default_factory=list)
    plans: list[tuple[AgentSpec, ContextPlan]] = field(default_factory=list)


def turn_run(
    *,
    session: Session,
    user,
    message: str,
    model_alias_override: str = "",
    gateway: LlmGateway | None = None,
) -> Turn:
    """Run one turn. `session` comes from `selectors.session_for_turn`: it carries the claim
    state (latest turn, end of the timeline, latest summary)."""
    plan = _prepare(
        session=session, user=user, user_input=message, model_alias_override=model_alias_override
    )
    history = _recent_history(session)
    run = _claim(plan, history)
    try:
        gateway = gateway or get_gateway()
        agents = _choose_agents(plan, run, gateway)
        for index, agent in enumerate(agents):
            result, event, alias = _call_agent(plan, run, gateway, agent)
            finishing = index == len(agents) - 1 and not _summary_due(plan, run)
            _commit_step(plan, run, agent, alias, result, event, finishing=finishing)
        if run.turn.status == TurnStatus.RUNNING:
            _summarize_and_finish(plan, run, gateway)
    except BaseException:
        try:
            _fail(run)
        except Exception:
            logger.exception("turn %s: could not record its failure", run.turn.pk)
        raise
    run.turn.prefetched_messages = run.messages
    return run.turn


# --- 1. prepare ---------------------------------------------------------------------------------


def _prepare(*, session: Session, user, user_input: str, model_alias_override: str) -> TurnPlan:
    _refuse_if_billing_blocks(user)

    if session.is_direct:
        if session.agent is None:
            raise exceptions.AgentUnavailable()
        mode = DIRECT_MODE
        roster = (_agent_spec(session.agent),)
        candidates = roster
        room_goal = ""
    else:
        room = session.room
        mode = room.effective_mode
        roster = tuple(_agent_spec(agent) for agent in room_roster(room=room))
        if not roster:
            raise exceptions.NoRoomAgents()
        candidates = roster
        if mode == RoomMode.MANUAL:
            tagged = parse_tags(user_input, [agent.key for agent in roster])
            if not tagged:
                raise exceptions.NoValidTaggedAgents()
            by_key = {agent.key: agent for agent in roster}
            candidates = tuple(by_key[key] for key in tagged)
        elif mode == RoomMode.ROUNDTABLE:
            candidates = tuple(roundtable_order(roster))
        room_goal = room.goal

    manager = settings.PANTHEON_MANAGER_MODEL_ALIAS
    aliases = {_alias_of(agent, model_alias_override) for agent in candidates}
    # The summarizer is loaded with the rest (same query) but never blocks a turn.
    pricing = usage_selectors.alias_pricing(
        aliases=[*aliases, manager, settings.PANTHEON_SUMMARIZER_MODEL_ALIAS]
    )
    if mode == RoomMode.ORCHESTRATOR:
        # The manager routes among the agents that can answer; one on a disabled alias is
        # left out of the choice rather than failing the whole turn.
        _require_usable(pricing, manager)
        candidates = tuple(
            agent
            for agent in candidates
            if _usable(pricing, _alias_of(agent, model_alias_override))
        )
        if not candidates:
            _require_usable(pricing, model_alias_override or roster[0].model_alias)
    else:
        for alias in sorted(aliases):
            _require_usable(pricing, alias)

    plan = TurnPlan(
        session=session,
        user=user,
        user_input=user_input,
        mode=mode,
        roster=roster,
        candidates=candidates,
        pricing=pricing,
        model_alias_override=model_alias_override,
        room_goal=room_goal,
    )
    _refuse_if_input_too_large(plan)
    return plan


def _alias_of(agent: AgentSpec, model_alias_override: str) -> str:
    return model_alias_override or agent.model_alias


def _usable(pricing: dict[str, AliasPricing], alias: str) -> bool:
    return alias in pricing and pricing[alias].alias.enabled


def _require_usable(pricing: dict[str, AliasPricing], alias: str) -> None:
    if alias not in pricing:
        raise exceptions.UnknownModelAlias(f"Model alias {alias!r} does not exist.")
    if not pricing[alias].alias.enabled:
        raise exceptions.ModelAliasUnavailable(f"Model alias {alias!r} is disabled.")


def _refuse_if_billing_blocks(user) -> None:
    profile = usage_selectors.billing_profile_for(user=user)
    if profile is None:
        return
    if profile.is_suspended:
        raise exceptions.AccountSuspended()
    if profile.monthly_credit_cap is not None:
        used = usage_selectors.credits_used(user=user, since=usage_selectors.month_start())
        if used >= profile.monthly_credit_cap:
            raise exceptions.CreditCapExceeded(
                f"{_plain(used)} of {_plain(profile.monthly_credit_cap)} monthly credits are used."
            )


def _plain(amount) -> str:
    """A Decimal as people write it: 100, 12.5 (never 1E+2)."""
    return format(amount.normalize(), "f")


def _refuse_if_input_too_large(plan: TurnPlan) -> None:
    """The input alone must fit the input budget of every agent that would answer."""
    for agent in plan.candidates:
        pricing = plan.pricing[plan.alias_for(agent)]
        budget = _budget(pricing)
        tokens = minimal_input_tokens(user_input=plan.user_input, model=_token_model(pricing))
        if not context_budget.fits(tokens, budget):
            raise exceptions.ContextBudgetExceeded(
                f"The message is about {tokens} tokens; {agent.name} on "
                f"{pricing.alias.alias} has an input budget of {budget.input_budget}."
            )


def _budget(pricing: AliasPricing) -> context_budget.ContextBudget:
    alias = pricing.alias
    return context_budget.ContextBudget.for_window(alias.context_window, alias.max_output_tokens)


def _token_model(pricing: AliasPricing) -> str | None:
    """The model whose tokenizer counts prompts: the real one when calls go to it (litellm
    counts with it where it knows it), none for the demo backend (a plain estimate)."""
    return pricing.alias.litellm_model if settings.PANTHEON_LLM_BACKEND == "live" else None


def _agent_spec(agent) -> AgentSpec:
    return AgentSpec(
        key=agent.agent_key,
        name=agent.name,
        role_prompt=agent.role_prompt,
        model_alias=agent.model_alias,
    )


def _recent_history(session: Session) -> list[HistoryMessage]:
    """The newest raw messages after the latest summary (bounded), oldest first."""
    messages = Message.objects.filter(session=session, status=MessageStatus.OK)
    if session.summary_to_sequence is not None:
        messages = messages.filter(sequence__gt=session.summary_to_sequence)
    recent = list(
        messages.order_by("-sequence").values(*HISTORY_FIELDS)[
            : settings.PANTHEON_CONTEXT_HISTORY_LIMIT
        ]
    )
    return [_history_message(row) for row in reversed(recent)]


HISTORY_FIELDS = ("sequence", "role", "content", "agent_key", "agent_name", "token_estimate")


def _history_message(row: dict) -> HistoryMessage:
    return HistoryMessage(
        role=row["role"],
        content=row["content"],
        agent_key=row["agent_key"] or None,
        agent_name=row["agent_name"] or None,
        token_estimate=row["token_estimate"],
    )


# --- 2. claim -----------------------------------------------------------------------------------


def _claim(plan: TurnPlan, history: list[HistoryMessage]) -> TurnRun:
    session = plan.session
    now = timezone.now()
    try:
        with transaction.atomic():
            if session.last_turn_status == TurnStatus.RUNNING:
                stale_before = now - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS)
                if session.last_turn_progress_at >= stale_before:
                    raise exceptions.TurnConflict()
                interrupted = Turn.objects.filter(
                    pk=session.last_turn_id,
                    status=TurnStatus.RUNNING,
                    progress_at__lt=stale_before,
                ).update(
                    status=TurnStatus.INTERRUPTED,
                    completed_at=now,
                    **usage_selectors.usage_totals_for_turn(turn_id=session.last_turn_id),
                )
                if interrupted:
                    logger.warning(
                        "turn %s of session %s made no progress for %ss; marked interrupted",
                        session.last_turn_index,
                        session.pk,
                        settings.PANTHEON_TURN_STALE_SECONDS,
                    )

            if session.room is not None and plan.mode != session.room.current_mode:
                # A queued mode change takes effect with this turn, unless it was changed again
                # since we read the room.
                Room.objects.filter(pk=session.room_id, pending_mode=plan.mode).update(
                    current_mode=plan.mode, pending_mode=None, updated_at=now
                )

            # The state was read with the session, outside this transaction: if another request
            # claimed in between, these inserts collide with its rows and we answer 409.
            turn = Turn.objects.create(
                session=session,
                turn_index=(session.last_turn_index or 0) + 1,
                mode=plan.mode,
                status=TurnStatus.RUNNING,
                user_input=plan.user_input,
                model_alias_override=plan.model_alias_override,
                roster=[_roster_entry(agent) for agent in plan.roster],
                created_at=now,
                progress_at=now,
            )
            sequence = (session.last_sequence or 0) + 1
            user_message = Message.objects.create(
                session=session,
                turn=turn,
                sequence=sequence,
                role=MessageRole.USER,
                content=plan.user_input,
                token_estimate=context_budget.estimate_tokens(plan.user_input),
                created_at=now,
            )
    except IntegrityError as exc:
        # Another request claimed the same turn_index, or a running turn, first.
        raise exceptions.TurnConflict() from exc
    summary = None
    if session.summary_to_sequence is not None:
        summary = SummaryRef(text=session.summary_text, to_sequence=session.summary_to_sequence)
    return TurnRun(
        turn=turn,
        next_sequence=sequence + 1,
        history=history,
        summary=summary,
        messages=[user_message],
    )


def _roster_entry(agent: AgentSpec) -> dict:
    return {
        "agent_key": agent.key,
        "name": agent.name,
        "model_alias": agent.model_alias,
        "role_prompt": agent.role_prompt,
    }


# --- 3. steps -----------------------------------------------------------------------------------


def _choose_agents(plan: TurnPlan, run: TurnRun, gateway: LlmGateway) -> Sequence[AgentSpec]:
    if plan.mode != RoomMode.ORCHESTRATOR:
        return plan.candidates

    manager = settings.PANTHEON_MANAGER_MODEL_ALIAS
    choosable = [agent.key for agent in plan.candidates]
    messages = build_routing_messages(
        user_input=plan.user_input, roster=plan.candidates, room_goal=plan.room_goal
    )
    result, event = _call(plan, run, gateway, manager, messages, CallPurpose.ROUTING)
    if result.ok:
        decision = parse_routing(result.text, choosable)
    else:
        logger.warning(
            "turn %s: routing call failed (%s); falling back to the first agent",
            run.turn.pk,
            result.error_kind,
        )
        decision = RoutingDecision(
            selected_agent_keys=(choosable[0],), fallback_used=True, raw_excerpt=""
        )
    routing = {
        "manager_model_alias": manager,
        "selected_agent_keys": list(decision.selected_agent_keys),
        "fallback_used": decision.fallback_used,
    }
    _commit(run, [event], advance=lambda: _progress(run, routing=routing))
    run.turn.routing = routing
    by_key = {agent.key: agent for agent in plan.candidates}
    return [by_key[key] for key in decision.selected_agent_keys]


def _call_agent(
    plan: TurnPlan, run: TurnRun, gateway: LlmGateway, agent: AgentSpec
) -> tuple[LlmResult, LlmCallEvent, str]:
    """Build the agent's context and call its model; no transaction is open here."""
    alias = plan.alias_for(agent)
    same_turn = [
        HistoryMessage(
            role="assistant",
            content=message.content,
            agent_key=message.agent_key,
            agent_name=message.agent_name,
            token_estimate=message.token_estimate,
        )
        for message in run.messages
        if message.role == MessageRole.ASSISTANT and message.status == MessageStatus.OK
    ]
    context = build_agent_messages(
        agent=agent,
        roster=plan.roster,
        room_goal=plan.room_goal,
        mode=plan.mode,
        summary=run.summary.text if run.summary else None,
        history=run.history,
        same_turn=same_turn,
        user_input=plan.user_input,
        budget=_budget(plan.pricing[alias]),
        model=_token_model(plan.pricing[alias]),
    )
    run.plans.append((agent, context))
    result, event = _call(plan, run, gateway, alias, context.messages, CallPurpose.AGENT, agent.key)
    return result, event, alias


def _commit_step(
    plan: TurnPlan,
    run: TurnRun,
    agent: AgentSpec,
    alias: str,
    result: LlmResult,
    event: LlmCallEvent,
    *,
    finishing: bool,
) -> None:
    """The step's assistant message and ledger row, in one transaction; with the turn's finish
    when this is its last step and no summary is due."""
    message = Message(
        session=plan.session,
        turn=run.turn,
        sequence=run.next_sequence,
        role=MessageRole.ASSISTANT,
        agent_key=agent.key,
        agent_name=agent.name,
        model_alias=alias,
        content=result.text if result.ok else "",
        status=MessageStatus.OK if result.ok else MessageStatus.ERROR,
        error_code="" if result.ok else (result.error_kind or "provider_error"),
        token_estimate=context_budget.estimate_tokens(result.text) if result.ok else 0,
    )
    run.messages.append(message)
    run.next_sequence += 1
    _commit(
        run,
        [event],
        advance=lambda: _finish(plan, run) if finishing else _progress(run),
        write=lambda: message.save(force_insert=True),
    )


def _call(
    plan: TurnPlan,
    run: TurnRun,
    gateway: LlmGateway,
    alias: str,
    messages: Sequence[ChatMessage],
    purpose: str,
    agent_key: str = "",
) -> tuple[LlmResult, LlmCallEvent]:
    """One LLM call and its ledger row, metered at once (saved by the step's commit, or by
    `_fail` should anything go wrong before it)."""
    call = LlmCall(
        alias=alias_config(plan.pricing[alias].alias),
        messages=tuple(messages),
        purpose=purpose,
        agent_key=agent_key or None,
    )
    result = gateway.complete(call)
    event = usage_call_event(
        user=plan.user,
        result=result,
        pricing=plan.pricing.get(alias),
        model_alias=alias,
        purpose=purpose,
        room_id=plan.session.room_id,
        session_id=plan.session.pk,
        turn_id=run.turn.pk,
        agent_key=agent_key,
    )
    run.events.append(event)
    return result, event


def _commit(
    run: TurnRun,
    events: Sequence[LlmCallEvent],
    *,
    advance: Callable[[], bool],
    write: Callable[[], object] = lambda: None,
) -> None:
    """One transaction: `advance` the turn under its row lock (progress or finish), `write`
    what the step produced if the turn is still running, and the ledger rows in any case.

    A turn that is no longer running was interrupted by a stale-turn takeover: its calls were
    made and are billed, on the interrupted turn, but nothing more enters the timeline."""
    with transaction.atomic():
        running = advance()
        if running:
            write()
        LlmCallEvent.objects.bulk_create(events)
        if not running:
            Turn.objects.filter(pk=run.turn.pk, status=TurnStatus.INTERRUPTED).update(
                **usage_selectors.usage_totals_for_turn(turn_id=run.turn.pk)
            )
    if not running:
        raise exceptions.TurnConflict()


def _progress(run: TurnRun, **changes) -> bool:
    """Record that the turn advanced, if it is still running. The row lock this takes orders
    us against a stale-turn takeover."""
    return bool(
        Turn.objects.filter(pk=run.turn.pk, status=TurnStatus.RUNNING).update(
            progress_at=timezone.now(), **changes
        )
    )


def _fail(run: TurnRun) -> None:
    """After an unexpected error: store any ledger row not yet saved (the call was made), and
    mark the turn failed so it does not block its session until the stale limit. Provider
    problems never get here; the gateway reports them as results."""
    with transaction.atomic():
        stored = set(LlmCallEvent.objects.filter(turn_id=run.turn.pk).values_list("pk", flat=True))
        LlmCallEvent.objects.bulk_create([e for e in run.events if e.pk not in stored])
        Turn.objects.filter(pk=run.turn.pk, status=TurnStatus.RUNNING).update(
            status=TurnStatus.FAILED,
            completed_at=timezone.now(),
            **usage_selectors.usage_totals_for_turn(turn_id=run.turn.pk),
        )


# --- 4. finish ----------------------------------------------------------------------------------


def _pressure(plan: TurnPlan, run: TurnRun) -> tuple[context_budget.ContextBudget, ContextPlan]:
    """The fullest context of the turn relative to its own budget: it decides the ladder."""
    agent, context = max(
        run.plans,
        key=lambda item: (
            item[1].estimated_tokens_full
            / max(1, _budget(plan.pricing[plan.alias_for(item[0])]).input_budget)
        ),
    )
    return _budget(plan.pricing[plan.alias_for(agent)]), context


def _summary_due(plan: TurnPlan, run: TurnRun) -> bool:
    budget, context = _pressure(plan, run)
    due = context_budget.summary_due(
        estimated_tokens=context.estimated_tokens_full,
        budget=budget,
        turn_index=run.turn.turn_index,
    )
    if not due:
        return False
    summarizer = settings.PANTHEON_SUMMARIZER_MODEL_ALIAS
    if not _usable(plan.pricing, summarizer):
        logger.warning(
            "turn %s: a summary is due but alias %r is unusable; skipped", run.turn.pk, summarizer
        )
        return False
    return True


def _summarize_and_finish(plan: TurnPlan, run: TurnRun, gateway: LlmGateway) -> None:
    summarizer = settings.PANTHEON_SUMMARIZER_MODEL_ALIAS
    transcript = _summary_transcript(plan, run)
    if not transcript:
        # Nothing before this turn is left unsummarized (a first turn, say).
        _commit(run, [], advance=lambda: _finish(plan, run))
        return

    messages = build_summary_messages(
        previous_summary=run.summary.text if run.summary else None,
        transcript=[_history_message(row) for row in transcript],
    )
    result, event = _call(plan, run, gateway, summarizer, messages, CallPurpose.SUMMARY)
    extraction = parse_summary(result.text) if result.ok else None
    if extraction is None or not extraction.summary:
        # A failed call or an empty summary must not replace what the last summary knew.
        logger.warning(
            "turn %s: no usable summary (%s); the previous summary stays",
            run.turn.pk,
            result.error_kind or "empty summary text",
        )
        extraction = None

    def write_summary():
        if extraction is not None:
            SessionSummary.objects.create(
                session=plan.session,
                turn=run.turn,
                from_sequence=transcript[0]["sequence"],
                to_sequence=transcript[-1]["sequence"],
                summary_text=extraction.summary,
                key_facts=list(extraction.key_facts),
                decisions=list(extraction.decisions),
                open_questions=list(extraction.open_questions),
                action_items=list(extraction.action_items),
                valid_json=extraction.valid_json,
            )

    _commit(
        run,
        [event],
        advance=lambda: _finish(plan, run, summary_triggered=True),
        write=write_summary,
    )


def _summary_transcript(plan: TurnPlan, run: TurnRun) -> list[dict]:
    """The messages to fold into the summary, oldest first: those since the last summary and
    before this turn (whose exchange stays raw, so the next turn reads the latest exchange
    verbatim), as many as fit the summarizer's budget. What does not fit stays in the raw
    history and goes into the next summary."""
    after = run.summary.to_sequence if run.summary else 0
    rows = (
        Message.objects.filter(
            session=plan.session,
            sequence__gt=after,
            sequence__lt=run.messages[0].sequence,
            status=MessageStatus.OK,
        )
        .order_by("sequence")
        .values(*HISTORY_FIELDS)[:SUMMARY_TRANSCRIPT_LIMIT]
    )
    budget = _budget(plan.pricing[settings.PANTHEON_SUMMARIZER_MODEL_ALIAS])
    room = budget.prune_limit - SUMMARY_PROMPT_TOKENS
    if run.summary:
        room -= context_budget.estimate_tokens(run.summary.text)
    transcript: list[dict] = []
    for row in rows:
        room -= row["token_estimate"] + SPEAKER_LABEL_TOKENS
        if room < 0 and transcript:
            break
        transcript.append(row)
    return transcript


def _finish(plan: TurnPlan, run: TurnRun, *, summary_triggered: bool = False) -> bool:
    """Status, aggregated usage and the context audit, if the turn is still running. The
    caller holds the transaction and saves the rows counted here (run.events) in it."""
    turn = run.turn
    answers = [m for m in run.messages if m.role == MessageRole.ASSISTANT]
    failed = sum(1 for m in answers if m.status == MessageStatus.ERROR)
    if failed == 0:
        status = TurnStatus.COMPLETED
    elif failed < len(answers):
        status = TurnStatus.PARTIAL
    else:
        status = TurnStatus.FAILED
    totals = usage_selectors.usage_totals(run.events)
    now = timezone.now()
    updated = Turn.objects.filter(pk=turn.pk, status=TurnStatus.RUNNING).update(
        status=status, completed_at=now, progress_at=now, **totals
    )
    if not updated:
        return False
    turn.status, turn.completed_at, turn.progress_at = status, now, now
    for name, value in totals.items():
        setattr(turn, name, value)

    budget, pressure = _pressure(plan, run)
    TurnContextAudit.objects.create(
        turn=turn,
        model_context_limit=budget.context_window,
        input_budget=budget.input_budget,
        estimated_tokens_before=pressure.estimated_tokens_full,
        estimated_tokens_after=pressure.estimated_tokens,
        history_messages_loaded=len(run.history),
        history_messages_pruned=max(context.history_pruned for _, context in run.plans),
        summary_used=run.summary is not None,
        summary_triggered=summary_triggered,
        pruned=any(context.pruned for _, context in run.plans),
    )
    return True
