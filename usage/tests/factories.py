"""Ledger rows for tests of any app (usage totals, billing refusals, query guards)."""

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from usage.models import LlmCallEvent
from usage.services import usage_month_add


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
    # The row and its monthly counter move together, as in the turn engine.
    with transaction.atomic():
        row = LlmCallEvent.objects.create(user=user, model_alias=alias, created_at=at, **values)
        usage_month_add(user_id=user.pk, at=at, credits=row.credits)
    return row
