from datetime import datetime
from decimal import Decimal

import pytest
from django.db import transaction

from usage.models import LlmCallEvent
from usage.services import usage_month_add


@pytest.fixture
def ledger_row():
    """Write one ledger row as the turn engine does: the row and its user's monthly counter in
    one transaction."""

    def write(user, *, at: datetime, alias: str = "deepseek", **fields) -> LlmCallEvent:
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
        with transaction.atomic():
            event = LlmCallEvent.objects.create(
                user=user, model_alias=alias, created_at=at, **values
            )
            usage_month_add(user_id=user.pk, at=at, credits=event.credits)
        return event

    return write
