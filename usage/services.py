"""Usage writes: model aliases and the metered ledger."""

from collections.abc import Iterable
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from orchestration.metering import compute_credits, compute_oe, compute_price_usd, round_money
from orchestration.types import LlmResult
from usage.models import CallStatus, LlmCallEvent, ModelAlias
from usage.selectors import AliasPricing


def model_alias_set(
    *,
    alias: str,
    litellm_model: str | None = None,
    api_base: str | None = None,
    api_key_env: str | None = None,
    context_window: int | None = None,
    enabled: bool | None = None,
) -> tuple[ModelAlias, bool]:
    """Create or update an alias; only the fields given change. Returns (alias, created)."""
    changes = {
        "litellm_model": litellm_model,
        "api_base": api_base,
        "api_key_env": api_key_env,
        "context_window": context_window,
        "enabled": enabled,
    }
    changes = {field: value for field, value in changes.items() if value is not None}
    existing = ModelAlias.objects.filter(alias=alias).first()
    created = existing is None
    if existing is None and not changes.get("litellm_model"):
        raise ValidationError(
            {"litellm_model": f"Alias {alias!r} does not exist yet: --model is required."}
        )
    row = existing or ModelAlias(alias=alias)
    for field, value in changes.items():
        setattr(row, field, value)
    row.full_clean()
    row.save()
    return row, created


def usage_call_open(
    *,
    user,
    model_alias: str,
    pricing: AliasPricing | None,
    purpose: str,
    estimated_input_tokens: int = 0,
    room_id=None,
    session_id=None,
    turn_id=None,
    agent_key: str = "",
) -> LlmCallEvent:
    """The ledger row of a call about to start, as `pending`, with its input estimate.

    Commit it before the call: should the worker die during the call, the row stays behind,
    pending, for `recover_turns` to mark lost (the provider may have billed it).
    """
    return LlmCallEvent.objects.create(
        user=user,
        room_id=room_id,
        session_id=session_id,
        turn_id=turn_id,
        agent_key=agent_key or "",
        purpose=purpose,
        model_alias=model_alias,
        provider_model=pricing.alias.litellm_model if pricing else "",
        input_tokens_fresh=estimated_input_tokens,
        total_tokens=estimated_input_tokens,
        status=CallStatus.PENDING,
        attempts=0,
        pricing_version_id=pricing.pricing_version_id if pricing else None,
    )


def usage_call_meter(
    *, event: LlmCallEvent, result: LlmResult, pricing: AliasPricing | None
) -> None:
    """Fill a pending row, in memory, with the finished call's usage, OE, credits and cost.
    `usage_call_complete` saves them."""
    fresh, cached, output = (
        result.input_tokens_fresh,
        result.input_tokens_cached,
        result.output_tokens,
    )
    oe = compute_oe(fresh=fresh, cached=cached, output=output)
    cost, priced = _provider_cost(result=result, pricing=pricing)
    event.provider = result.provider
    event.provider_model = result.provider_model
    event.input_tokens_fresh = fresh
    event.input_tokens_cached = cached
    event.output_tokens = output
    event.total_tokens = fresh + cached + output
    event.oe_tokens = oe
    event.provider_cost_usd = cost
    event.priced = priced
    event.credits = compute_credits(oe=oe, multiplier=pricing.multiplier if pricing else None)
    event.latency_ms = result.latency_ms
    event.status = result.status
    event.error_type = result.error_kind or ""
    event.attempts = result.attempts


# What completing a call changes on its row (the triggers of the ledger allow only these).
OUTCOME_FIELDS = (
    "provider",
    "provider_model",
    "input_tokens_fresh",
    "input_tokens_cached",
    "output_tokens",
    "total_tokens",
    "oe_tokens",
    "provider_cost_usd",
    "priced",
    "credits",
    "latency_ms",
    "status",
    "error_type",
    "attempts",
)


def usage_call_complete(*, event: LlmCallEvent) -> bool:
    """Save a metered row (`usage_call_meter`) that is still pending.

    Run it in the transaction that stores what the call produced (its message, its summary),
    so the ledger and the transcript never disagree, after taking the turn's row lock: a
    recovery that marks a dead worker's calls lost takes that lock first, so a running turn's
    pending row cannot turn lost under us. False (nothing written) if the row is not pending.
    """
    outcome = {name: getattr(event, name) for name in OUTCOME_FIELDS}
    return bool(
        LlmCallEvent.objects.filter(pk=event.pk, status=CallStatus.PENDING).update(**outcome)
    )


def usage_record_call(
    *,
    user,
    result: LlmResult,
    pricing: AliasPricing | None,
    model_alias: str,
    purpose: str,
    **context,
) -> LlmCallEvent:
    """Open, meter and complete a ledger row at once, for a call already made."""
    with transaction.atomic():
        event = usage_call_open(
            user=user, model_alias=model_alias, pricing=pricing, purpose=purpose, **context
        )
        usage_call_meter(event=event, result=result, pricing=pricing)
        usage_call_complete(event=event)
    return event


def usage_calls_mark_lost(*, turn_ids: Iterable) -> int:
    """Mark the still-pending calls of these turns `lost`: started, never completed, in doubt
    (the provider may have billed them). They keep their input estimate and cost no credits."""
    return LlmCallEvent.objects.filter(turn_id__in=turn_ids, status=CallStatus.PENDING).update(
        status=CallStatus.LOST, error_type="lost"
    )


def _provider_cost(*, result: LlmResult, pricing: AliasPricing | None) -> tuple[Decimal, bool]:
    """The alias's own price first, then litellm's cost table; unknown is recorded as unpriced."""
    if pricing is not None and pricing.has_price:
        cost = compute_price_usd(
            fresh=result.input_tokens_fresh,
            cached=result.input_tokens_cached,
            output=result.output_tokens,
            input_per_mtok=pricing.input_usd_per_mtok,
            cached_input_per_mtok=pricing.cached_input_usd_per_mtok,
            output_per_mtok=pricing.output_usd_per_mtok,
        )
        return cost, True
    if result.provider_cost_usd is not None:
        # Rounded like every stored amount, so a turn's total equals the sum of its rows.
        return round_money(result.provider_cost_usd), True
    return Decimal("0"), False
