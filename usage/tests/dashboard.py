"""What the billing dashboard's tests share: its URL names and moments some days back."""

from datetime import UTC, datetime, timedelta

from usage.rollups import today

DASHBOARD = "admin:billing"
EXPORT = "admin:billing_export"
LEDGER = "admin:usage_llmcallevent_changelist"


def at(days_ago: int, hour: int = 12) -> datetime:
    day = today() - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
