"""Reads for the billing dashboard and its CSV export.

Whole past days come from the daily rollups and only the days after those they hold (today,
any day since the last rollup run, and a day that run held back because calls of it were still
in flight: `RollupCoverage` records how far they reach) from the ledger, so a 30-day report
reads a few thousand rollup rows instead of millions of ledger rows. A day the rollups never
held is read from the ledger, never as a quiet day. Every read is one aggregate query: the
page takes the same number of queries for ten calls as for ten million.
"""

import csv
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, models, transaction
from django.db.models import Count, Max, QuerySet, Sum
from django.db.models.functions import TruncDate

from pantheon.figures import fixed_point
from sessions_app.models import Turn
from usage.models import DailyUsageRollup, LlmCallEvent, RollupCoverage, UsageTotals
from usage.rollups import ROLLUP_VALUE_COLUMNS, database_today, day_start, today
from usage.selectors import UNPRICED_CALLS, ledger_total_sums

FIGURES = ROLLUP_VALUE_COLUMNS
DEFAULT_DAYS = 30
# The rollups only change when they are rewritten (`rollup_usage`, `reconcile_usage --fix`), and
# each rewrite moves `RollupCoverage.rebuilt_at` (`usage.rollups._record_rebuild`): their sums
# for a range are cached under it, so the next rewrite is seen at once.
ROLLUP_CACHE_SECONDS = 6 * 3600


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
    rollups_to: date | None = None  # last day read from the rollups (None: none were read)
    active_users: dict[str, int] = field(default_factory=dict)  # DAU, WAU, MAU
    active_on: date | None = None  # the day they are counted back from


# The ledger summed into FIGURES, and the rollups summed into the same names.
LEDGER_FIGURES = {
    **{name: sum_ for name, (sum_, _) in ledger_total_sums().items()},
    "unpriced_calls": Count("id", filter=UNPRICED_CALLS),
}
ROLLUP_FIGURES = {name: Sum(name) for name in FIGURES}


@contextmanager
def page_reads() -> Iterator[None]:
    """The reads of one page, on PostgreSQL planned serially and without JIT: on aggregates of
    a few hundred thousand rows, starting parallel workers or compiling cost more than they
    save (bench/ledger.py, 1M ledger rows: the 30-day rollup sums took 67 ms serial, 146 ms
    parallel)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                cursor.execute("SET LOCAL jit = off")
        yield


@dataclass
class Sources:
    """Which days come from where: rollups for [start, boundary), the ledger from boundary."""

    rollups: QuerySet | None
    ledger: QuerySet | None
    ledger_from: date | None
    generation: str | None  # when the rollups were last rebuilt: what is cached from them
    rollups_to: date | None = None  # the last day read from the rollups (None: unbounded)


def _sources(
    *, start: date | None, end: date | None, username: str, model_alias: str, today: date
) -> Sources:
    """Rollups for the whole past days they cover (`RollupCoverage`), the ledger for today and
    any day after them (so a late `rollup_usage` never hides a day). None bounds: from the
    first / to the last."""
    coverage = RollupCoverage.objects.filter(pk=1).values_list("until", "rebuilt_at").first()
    covered, generation = coverage or (None, None)
    boundary = None if covered is None else min(today, covered)
    if boundary is not None and start is not None:
        boundary = max(boundary, start)
    rollups = ledger = None
    if boundary is not None and (start is None or start < boundary):
        rollups = DailyUsageRollup.objects.filter(day__lt=boundary)
        if start is not None:
            rollups = rollups.filter(day__gte=start)
        if end is not None:
            rollups = rollups.filter(day__lte=end)
        rollups = _filtered(rollups, username=username, model_alias=model_alias)
    if boundary is None or end is None or boundary <= end:
        ledger = LlmCallEvent.objects.all()
        lower = boundary or start
        if lower is not None:
            ledger = ledger.filter(created_at__gte=day_start(lower))
        if end is not None:
            ledger = ledger.filter(created_at__lt=day_start(end + timedelta(days=1)))
        ledger = _filtered(ledger, username=username, model_alias=model_alias)
    ledger_from = (boundary or start) if ledger is not None else None
    rollups_to = None
    if rollups is not None:
        last_rolled = boundary - timedelta(days=1)
        rollups_to = last_rolled if end is None else min(end, last_rolled)
    return Sources(
        rollups,
        ledger,
        ledger_from,
        None if generation is None else f"{generation:%Y%m%dT%H%M%S.%f}",
        rollups_to,
    )


def usage_totals_between(
    *, start: date | None = None, end: date | None = None, username: str = "", model_alias: str = ""
) -> tuple[Figures, Sources]:
    """The totals of the days start..end (UTC, both included; None: unbounded), from the
    rollups and the ledger after them: two small reads however long the ledger is. With them,
    where they were read from, for the page to say. Today is this host's here, no query: the
    rollups reach no further than the database's today (`rollup_usage`), so a host behind only
    reads a day more from the ledger, and one ahead the same days."""
    sources = _sources(
        start=start, end=end, username=username, model_alias=model_alias, today=today()
    )
    totals = Figures()
    with page_reads():
        if sources.rollups is not None:
            # Cached as the dashboard's sums are (`billing_report`): the ledger list's totals
            # over all its days summed every rollup row at each page view (1.3 s at 1.3 million).
            key = ":".join(
                str(part)
                for part in (
                    "pantheon:ledger-rollups",
                    sources.generation,
                    start,
                    sources.rollups_to,
                    username,
                    model_alias,
                )
            )
            rollups = sources.rollups
            totals.add(
                cache.get_or_set(
                    key, lambda: rollups.aggregate(**ROLLUP_FIGURES), ROLLUP_CACHE_SECONDS
                )
            )
        if sources.ledger is not None:
            totals.add(sources.ledger.aggregate(**LEDGER_FIGURES))
    return totals, sources


def billing_report(
    *,
    start: date,
    end: date,
    username: str = "",
    model_alias: str = "",
    with_activity: bool = True,
    cached: bool = True,
    today_is: date | None = None,
) -> Report:
    """Usage per user × alias and per day for the days start..end (UTC, both included), and
    the active users; without `with_activity` (the export) only the per-pair table. Without
    `cached` the rollups' sums are read and not kept in the cache (a database table): the
    same query, for a reader that writes nothing (`usage_month_totals`). `today_is`: today by
    the database's clock, which stamps the ledger, as the page read it (read here if not
    given: `database_today`)."""
    today_is = today_is or database_today()
    # Figures travel as tuples in FIGURES order: thousands of (user, alias) pairs are merged
    # here, and tuples keep that (and the cache) cheap.
    by_pair: dict[tuple[int, str], tuple] = {}
    by_day: dict[date, Decimal] = defaultdict(Decimal)

    def merge(pairs) -> None:
        for user_id, alias, *figures in pairs:
            known = by_pair.get((user_id, alias))
            figures = [value or 0 for value in figures]
            if known is not None:
                figures = [a + b for a, b in zip(known, figures, strict=True)]
            by_pair[user_id, alias] = tuple(figures)

    with page_reads():
        sources = _sources(
            start=start, end=end, username=username, model_alias=model_alias, today=today_is
        )
        if sources.rollups is not None:
            key = ":".join(
                str(part)
                for part in (
                    "pantheon:billing-rollups",
                    sources.generation,
                    start,
                    sources.ledger_from or end,
                    username,
                    model_alias,
                )
            )
            pairs, days = (
                cache.get_or_set(
                    key, lambda: _rollup_pairs_and_days(sources.rollups), ROLLUP_CACHE_SECONDS
                )
                if cached
                else _rollup_pairs_and_days(sources.rollups)
            )
            merge(pairs)
            for day, credits in days:
                by_day[day] += credits
        if sources.ledger is not None:
            events = sources.ledger
            ledger_pairs = list(
                events.values("user_id", "model_alias")
                .annotate(**LEDGER_FIGURES)
                .values_list("user_id", "model_alias", *LEDGER_FIGURES)
            )
            merge(ledger_pairs)
            credits = FIGURES.index("credits")
            if sources.ledger_from == end:  # one day (today): its credits are the pairs' sum
                by_day[end] += sum((row[2 + credits] or 0 for row in ledger_pairs), Decimal(0))
            elif with_activity:
                for day, day_credits in (
                    events.annotate(day=TruncDate("created_at"))
                    .values("day")
                    .annotate(day_credits=Sum("credits"))
                    .values_list("day", "day_credits")
                ):
                    by_day[day] += day_credits
        usernames = dict(
            get_user_model()
            .objects.filter(pk__in={user_id for user_id, _ in by_pair})
            .values_list("pk", "username")
        )
        # Counted back from the last day, or from today for a range that ends later: days to
        # come have no turns, and a week counted back from one said 0 active users.
        active_on = min(end, today_is)
        active = active_users(on=active_on) if with_activity else {}
    rows = [
        UsageRow(user_id, usernames.get(user_id, f"#{user_id}"), alias, Figures(*figures))
        for (user_id, alias), figures in by_pair.items()
    ]
    rows.sort(key=lambda row: (-row.figures.credits, row.username, row.model_alias))
    columns = list(zip(*by_pair.values(), strict=True)) if by_pair else []
    totals = Figures(*(sum(column) for column in columns)) if columns else Figures()
    days = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
    return Report(
        start=start,
        end=end,
        rows=rows,
        totals=totals,
        daily_credits=[(day, by_day.get(day, Decimal("0"))) for day in days],
        ledger_from=sources.ledger_from,
        rollups_to=sources.rollups_to,
        active_users=active,
        active_on=active_on if with_activity else None,
    )


def users_billed(
    *,
    start: date,
    end: date,
    username: str = "",
    model_alias: str = "",
    cached: bool = True,
    today_is: date | None = None,
) -> Report:
    """What to invoice each user for the days start..end (UTC, both included): the billing
    report's rows per user × alias summed per user (their alias empty), by username, and its
    totals. A user without calls in the range has no row. What the dashboard's per-user CSV
    and `usage_month_totals` both read, so that they agree to the last decimal."""
    report = billing_report(
        start=start,
        end=end,
        username=username,
        model_alias=model_alias,
        with_activity=False,
        cached=cached,
        today_is=today_is,
    )
    users: dict[int, UsageRow] = {}
    for row in report.rows:
        total = users.setdefault(row.user_id, UsageRow(row.user_id, row.username, "", Figures()))
        total.figures.add(vars(row.figures))
    report.rows = sorted(users.values(), key=lambda row: row.username)
    return report


# The figures summed from decimal columns, with their columns' places (credits, dollars).
_DECIMAL_PLACES = {
    field.name: field.decimal_places
    for field in UsageTotals._meta.get_fields()
    if isinstance(field, models.DecimalField)
}


def figure_text(name: str, value):
    """A sum as PostgreSQL gives it, to its column's decimal places (a string; a count stays an
    int): SQLite sums decimals as floats (0.0000725150000000000 for 0.0000725150)."""
    places = _DECIMAL_PLACES.get(name)
    if places is None or value is None:
        return value
    return fixed_point(value, places)


def spreadsheet_text(text: str) -> str:
    """A spreadsheet must not read a name like `+1` or `@x` as a formula, nor one behind a tab or
    carriage return it skips (OWASP's list). Usernames and alias names the console and the API
    accept hold neither; a user made in code or SQL may."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


PER_USER_HEADER = ["username", *FIGURES, "user_id"]


def per_user_csv(out, rows: list[UsageRow]) -> None:
    """The per-user CSV (`users_billed`'s rows) written to `out`: the billing dashboard's
    export with `rows=user`, and `usage_month_totals --format csv`, byte for byte. The user's
    id last (added after the others: positions stay): a username can change, or be given to
    someone else after a delete."""
    writer = csv.writer(out)
    writer.writerow(PER_USER_HEADER)
    for row in rows:
        writer.writerow(
            [
                spreadsheet_text(row.username),
                *(figure_text(name, getattr(row.figures, name)) for name in FIGURES),
                row.user_id,
            ]
        )


def _rollup_pairs_and_days(rollups: QuerySet) -> tuple[list[tuple], list[tuple]]:
    """The rollups summed per user × alias, as (user id, alias, *FIGURES), and per day, as
    (day, credits). On PostgreSQL one scan with GROUPING SETS (a third faster than two at
    150,000 rollup rows); elsewhere two queries."""
    if connection.vendor != "postgresql":
        pairs = list(
            rollups.values("user_id", "model_alias")
            .annotate(**ROLLUP_FIGURES)
            .values_list("user_id", "model_alias", *ROLLUP_FIGURES)
        )
        days = list(
            rollups.values("day")
            .annotate(day_credits=Sum("credits"))
            .values_list("day", "day_credits")
        )
        return pairs, days
    rows = rollups.values("user_id", "model_alias", "day", *FIGURES)
    inner, params = rows.query.sql_with_params()
    sums = ", ".join(f"SUM(r.{name})" for name in FIGURES)
    sql = (
        f"SELECT r.user_id, r.model_alias, r.day, {sums} FROM ({inner}) r"
        " GROUP BY GROUPING SETS ((r.user_id, r.model_alias), (r.day))"
    )
    credits = FIGURES.index("credits")
    pairs, days = [], []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for user_id, alias, day, *figures in cursor.fetchall():
            if day is None:  # a (user, alias) row: rollups always have a day
                pairs.append((user_id, alias, *figures))
            else:
                days.append((day, figures[credits]))
    return pairs, days


def active_users(*, on: date) -> dict[str, int]:
    """Distinct users who posted a turn on `on` (DAU), in the 7 days (WAU) and the 30 days
    (MAU) ending that day, in one query."""
    until = day_start(on + timedelta(days=1))
    window = {"DAU": 1, "WAU": 7, "MAU": 30}
    # Each user's latest turn in the 30 days (one row per active user), counted here: cheaper
    # than three COUNT(DISTINCT ...) over every turn of the month.
    latest = (
        Turn.objects.filter(created_at__gte=until - timedelta(days=30), created_at__lt=until)
        .values("session__started_by")
        .annotate(latest=Max("created_at"))
        .order_by()
        .values_list("latest", flat=True)
    )
    moments = list(latest)
    return {
        name: sum(moment >= until - timedelta(days=days) for moment in moments)
        for name, days in window.items()
    }


def _filtered(queryset, *, username: str, model_alias: str):
    if username:
        queryset = queryset.filter(user__username=username)  # case-sensitive, as Django
    if model_alias:
        queryset = queryset.filter(model_alias=model_alias)
    return queryset.order_by()
