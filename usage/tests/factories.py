"""Ledger rows for tests of any app (usage totals, billing refusals, query guards)."""

from datetime import datetime
from decimal import Decimal

from usage.models import LlmCallEvent


def ledger_event(user, *, at: datetime, alias: str = "deepseek", **fields) -> LlmCallEvent:
    """A successful agent call of 100 fresh + 20 cached input and 10 output tokens, 0.0047
    credits, unless `fields` say otherwise."""
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
    return LlmCallEvent.objects.create(user=user, model_alias=alias, created_at=at, **values)
