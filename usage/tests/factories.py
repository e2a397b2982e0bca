"""Ledger rows for tests of any app (usage totals, billing refusals, query guards)."""

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from orchestration.types import CallStatus, LlmResult
from usage.models import LlmCallEvent
from usage.selectors import AliasPricing
from usage.services import (
    usage_call_complete,
    usage_call_meter,
    usage_call_open,
    usage_month_add,
)


def answered(**fields) -> LlmResult:
    """A provider's answer to one call: 100 tokens in, 10 out (`fields` override)."""
    return LlmResult(
        **{
            "status": CallStatus.SUCCESS,
            "text": "hi",
            "input_tokens_fresh": 100,
            "input_tokens_cached": 0,
            "output_tokens": 10,
            "latency_ms": 5,
            "attempts": 1,
            "provider": "fake",
            "provider_model": "fake/model",
            **fields,
        }
    )


def ledger_event(user, *, at: datetime, alias: str = "deepseek", **fields) -> LlmCallEvent:
    """A successful agent call of 100 fresh + 20 cached input and 10 output tokens, 0.0047
    credits, unless `fields` say otherwise, counted in its user's month."""
    values = {
        "purpose": "agent",
        "status": "success",
        "input_tokens_fresh": 100,
        "input_tokens_cached": 20,
        "output_tokens": 10,
        "credits": Decimal("0.0047"),
        "provider_cost_usd": Decimal("0.0001"),
        "priced": True,
    }
    values.update(fields)
    values["total_tokens"] = (
        values["input_tokens_fresh"] + values["input_tokens_cached"] + values["output_tokens"]
    )
    # The row and its monthly counter move together, as in the turn engine, which counts a
    # call once it completes: not while it is under way, nor once it is marked lost.
    with transaction.atomic():
        row = LlmCallEvent.objects.create(user=user, model_alias=alias, created_at=at, **values)
        if row.status not in ("pending", "lost"):
            usage_month_add(user_id=user.pk, at=at, credits=row.credits)
    return row


def usage_record_call(
    *,
    user,
    result: LlmResult,
    pricing: AliasPricing | None,
    model_alias: str,
    purpose: str,
    **context,
) -> LlmCallEvent:
    """Open, meter and complete a ledger row at once, as the turn engine does around a
    call, for a call already made."""
    with transaction.atomic():
        event = usage_call_open(
            user=user, model_alias=model_alias, pricing=pricing, purpose=purpose, **context
        )
        usage_call_meter(event=event, result=result, pricing=pricing)
        usage_call_complete(event=event)
    return event
