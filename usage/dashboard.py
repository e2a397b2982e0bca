"""Reads for the billing dashboard and its CSV export.

Whole past days come from the daily rollups and only what they do not cover yet (today, and
any day after the last rollup run) from the ledger, so a 30-day report reads a few thousand
rollup rows instead of millions of ledger rows. Every read is one aggregate query: the page
takes the same number of queries for ten calls as for ten million.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Count, F, Max, Q, Sum
from django.db.models.functions import TruncDate

from sessions_app.models import Turn
from usage.models import DailyUsageRollup, LlmCallEvent
from usage.rollups import day_start, today

FIGURES = (
    "llm_calls",
    "input_tokens",
    "output_tokens",
    "credits",
    "provider_cost_usd",
    "unpriced_calls",
)
DEFAULT_DAYS = 30


@dataclass
class Figures:
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    credits: Decimal = Decimal("0")
    provider_cost_usd: Decimal = Decimal("0")
    unpriced_calls: int = 0

    def add(self, row: dict) -> None:
        for name in FIGURES:
            setattr(self, name, getattr(self, name) + (row[name] or 0))


@dataclass
class UsageRow:
    user_id: int
    username: str
    model_alias: str
    figures: Figures


@dataclass
class Report:
    start: date  # first day
    end: date  # last day, included
    rows: list[UsageRow]  # per user × alias, most credits first
    totals: Figures
    daily_credits: list[tuple[date, Decimal]]  # every day of the range, zeros included
    ledger_from: date | None  # first day read from the ledger (None: rollups cover it all)
    active_users: dict[str, int] = field(default_factory=dict)  # DAU, WAU, MAU


def billing_report(*, start: date, end: date, username: str = "", model_alias: str = "") -> Report:
    """Usage per user × alias and per day for the days start..end (UTC, both included)."""
    boundary = _ledger_boundary(start=start, end=end)
    by_pair: dict[tuple[int, str], Figures] = defaultdict(Figures)
    by_day: dict[date, Decimal] = defaultdict(Decimal)

    if start < boundary:
        rollups = _filtered(
            DailyUsageRollup.objects.filter(day__gte=start, day__lt=boundary),
            username=username,
            model_alias=model_alias,
        )
        for row in rollups.values("user_id", "model_alias").annotate(
            **{name: Sum(name) for name in FIGURES}
        ):
            by_pair[row["user_id"], row["model_alias"]].add(row)
        for row in rollups.values("day").annotate(day_credits=Sum("credits")):
            by_day[row["day"]] += row["day_credits"]

    if boundary <= end:
        events = _filtered(
            LlmCallEvent.objects.filter(
                created_at__gte=day_start(boundary), created_at__lt=day_start(end + timedelta(1))
            ),
            username=username,
            model_alias=model_alias,
        )
        for row in (
            events.values("user_id", "model_alias")
            .annotate(
                llm_calls=Count("id"),
                input_tokens=Sum(F("input_tokens_fresh") + F("input_tokens_cached")),
                output_tokens=Sum("output_tokens"),
                credits=Sum("credits"),
                provider_cost_usd=Sum("provider_cost_usd"),
                unpriced_calls=Count("id", filter=Q(priced=False)),
            )
            .order_by()
        ):
            by_pair[row["user_id"], row["model_alias"]].add(row)
        for row in (
            events.annotate(day=TruncDate("created_at"))
            .values("day")
            .annotate(day_credits=Sum("credits"))
            .order_by()
        ):
            by_day[row["day"]] += row["day_credits"]

    usernames = dict(
        get_user_model()
        .objects.filter(pk__in={user_id for user_id, _ in by_pair})
        .values_list("pk", "username")
    )
    rows = [
        UsageRow(user_id, usernames.get(user_id, f"#{user_id}"), alias, figures)
        for (user_id, alias), figures in by_pair.items()
    ]
    rows.sort(key=lambda row: (-row.figures.credits, row.username, row.model_alias))
    totals = Figures()
    for row in rows:
        totals.add(vars(row.figures))
    days = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
    return Report(
        start=start,
        end=end,
        rows=rows,
        totals=totals,
        daily_credits=[(day, by_day.get(day, Decimal("0"))) for day in days],
        ledger_from=boundary if boundary <= end else None,
        active_users=active_users(on=end),
    )


def active_users(*, on: date) -> dict[str, int]:
    """Distinct users who posted a turn on `on` (DAU), in the 7 days (WAU) and the 30 days
    (MAU) ending that day, in one query."""
    until = day_start(on + timedelta(days=1))
    window = {"DAU": 1, "WAU": 7, "MAU": 30}
    counts = Turn.objects.filter(created_at__gte=until - timedelta(days=30), created_at__lt=until)
    return counts.aggregate(
        **{
            name: Count(
                "session__started_by",
                distinct=True,
                filter=Q(created_at__gte=until - timedelta(days=days)),
            )
            for name, days in window.items()
        }
    )


def _ledger_boundary(*, start: date, end: date) -> date:
    """The first day the report reads from the ledger: today, or the day after the newest
    rollup when `rollup_usage` has not run since (so a late rollup never hides a day)."""
    newest = DailyUsageRollup.objects.aggregate(newest=Max("day"))["newest"]
    boundary = today()
    if newest is None or newest + timedelta(days=1) < boundary:
        boundary = max(start, (newest + timedelta(days=1)) if newest else start)
    return min(boundary, today())


def _filtered(queryset, *, username: str, model_alias: str):
    if username:
        queryset = queryset.filter(user__username__iexact=username)
    if model_alias:
        queryset = queryset.filter(model_alias=model_alias)
    return queryset.order_by()
