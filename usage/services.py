"""Usage writes: model aliases and the metered ledger."""

from decimal import Decimal

from django.core.exceptions import ValidationError

from orchestration.metering import compute_credits, compute_oe, compute_price_usd, round_money
from orchestration.types import LlmResult
from usage.models import LlmCallEvent, ModelAlias
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
    row = ModelAlias.objects.filter(alias=alias).first()
    created = row is None
    if created:
        if not changes.get("litellm_model"):
            raise ValidationError(
                {"litellm_model": f"Alias {alias!r} does not exist yet: --model is required."}
            )
        row = ModelAlias(alias=alias)
    for field, value in changes.items():
        setattr(row, field, value)
    row.full_clean()
    row.save()
    return row, created


def usage_call_event(
    *,
    user,
    result: LlmResult,
    pricing: AliasPricing | None,
    model_alias: str,
    purpose: str,
    room_id=None,
    session_id=None,
    turn_id=None,
    agent_key: str = "",
) -> LlmCallEvent:
    """The ledger row of one LLM call, metered but not yet saved.

    Save it inside the transaction that stores what the call produced (its message, its
    summary), so the ledger and the transcript never disagree.
    """
    fresh, cached, output = (
        result.input_tokens_fresh,
        result.input_tokens_cached,
        result.output_tokens,
    )
    oe = compute_oe(fresh=fresh, cached=cached, output=output)
    multiplier = pricing.multiplier if pricing else None
    cost, priced = _provider_cost(result=result, pricing=pricing)
    return LlmCallEvent(
        user=user,
        room_id=room_id,
        session_id=session_id,
        turn_id=turn_id,
        agent_key=agent_key or "",
        purpose=purpose,
        provider=result.provider,
        model_alias=model_alias,
        provider_model=result.provider_model,
        input_tokens_fresh=fresh,
        input_tokens_cached=cached,
        output_tokens=output,
        total_tokens=fresh + cached + output,
        oe_tokens=oe,
        provider_cost_usd=cost,
        priced=priced,
        credits=compute_credits(oe=oe, multiplier=multiplier),
        latency_ms=result.latency_ms,
        status=result.status,
        error_type=result.error_kind or "",
        attempts=result.attempts,
        pricing_version_id=pricing.pricing_version_id if pricing else None,
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
