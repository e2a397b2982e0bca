"""What derives from the ledger: daily rollups and monthly counters, rebuilt in SQL.

The ledger (LlmCallEvent) is the truth and is never edited here. Both rebuilds are one
`INSERT ... SELECT ... GROUP BY` inside a transaction that first removes the rows it replaces,
so they are idempotent, take constant memory however long the ledger is, and run on
PostgreSQL and SQLite alike (the SELECT is compiled by the ORM for the database in use).
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Count, DateField, Min, Q, QuerySet, Sum, Value
from django.db.models.functions import TruncDate, TruncMonth
from django.utils import timezone

from orchestration.metering import round_money
from sessions_app.models import TurnStatus
from sessions_app.selectors import stale_in_database
from usage.models import CallStatus, DailyUsageRollup, LlmCallEvent, MonthlyUsage, RollupCoverage
from usage.selectors import (
    UNPRICED_CALLS,
    database_now,
    ledger_total_sums,
    month_of,
    next_month_start,
)

# DailyUsageRollup's columns in the order `ledger_daily_sums` selects them.
ROLLUP_KEY_COLUMNS = ("day", "user_id", "model_alias")
ROLLUP_VALUE_COLUMNS = (
    "llm_calls",
    "input_tokens",
    "output_tokens",
    "credits",
    "provider_cost_usd",
    "unpriced_calls",
)
# MonthlyUsage's, in the order `ledger_monthly_sums` selects them.
COUNTER_KEY_COLUMNS = ("user_id", "month")
COUNTER_VALUE_COLUMNS = ("credits", "llm_calls")


# Memory for one sort or hash table of one statement, on the database server, while the
# rollups and reconcile aggregate a million rows: enough to keep a month of (day, user, alias)
# groups in memory instead of spilling them to disk. Pages never need this.
ANALYTIC_WORK_MEM = "256MB"


@contextmanager
def analytic_transaction() -> Iterator[None]:
    """A transaction for a few big aggregates. On PostgreSQL: ANALYTIC_WORK_MEM, and
    server-side cursors planned for their whole result (by default the planner optimises a
    cursor for its first tenth and picks slow nested loops for these joins)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL work_mem = '{ANALYTIC_WORK_MEM}'")
                cursor.execute("SET LOCAL cursor_tuple_fraction = 1")
        yield


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def today() -> date:
    """The UTC day by this host's clock. Which days are past for the ledger, and which is
    today on the billing pages, is `database_today`'s."""
    return timezone.now().astimezone(UTC).date()


def database_today() -> date:
    """The UTC day by the database's clock, the one the ledger's rows are stamped by
    (`TurnState.now`): one query, read once by each run of the nightly commands, which decide
    by it which days are whole. By a host's own clock, a host minutes ahead that ran
    `rollup_usage` just after its midnight closed a day the database was still in, and the
    calls stamped later that day showed as drift."""
    return database_now().astimezone(UTC).date()


def ledger_daily_sums(*, since: date | None, until: date) -> QuerySet:
    """The ledger summed per UTC day, user and alias for days in [since, until): one row per
    rollup, columns named and ordered as ROLLUP_KEY_COLUMNS + ROLLUP_VALUE_COLUMNS (prefixed
    `sum_` where LlmCallEvent has a field of the same name)."""
    events = LlmCallEvent.objects.filter(created_at__lt=day_start(until))
    if since is not None:
        events = events.filter(created_at__gte=day_start(since))
    return (
        events.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values(*ROLLUP_KEY_COLUMNS)
        .annotate(
            **{f"sum_{name}": sum_ for name, (sum_, _) in ledger_total_sums().items()},
            sum_unpriced_calls=Count("id", filter=UNPRICED_CALLS),
        )
        .order_by()
    )


def ledger_monthly_sums(*, since_month: date | None, until_month: date | None = None) -> QuerySet:
    """The ledger summed per user and UTC calendar month from `since_month` on (to the month
    before `until_month`, if given), as COUNTER_KEY_COLUMNS + COUNTER_VALUE_COLUMNS (values
    prefixed `sum_`). Its calls are those a counter counts: a call counts once it completes
    (`usage_call_complete`), so neither a call under way nor one marked lost is among them (a
    rebuild that counted every row counted a call under way twice once it completed, and lost
    calls the counter never counts)."""
    events = LlmCallEvent.objects.all()
    if since_month is not None:
        events = events.filter(created_at__gte=day_start(since_month))
    if until_month is not None:
        events = events.filter(created_at__lt=day_start(until_month))
    return (
        events.annotate(month=TruncMonth("created_at", output_field=DateField(), tzinfo=UTC))
        .values(*COUNTER_KEY_COLUMNS)
        .annotate(
            sum_credits=Sum("credits"),
            sum_llm_calls=Count("id", filter=~Q(status__in=UNCOUNTED_CALLS)),
        )
        .order_by()
    )


# Ledger rows no monthly counter counts among its calls: under way, or marked lost.
UNCOUNTED_CALLS = (CallStatus.PENDING, CallStatus.LOST)


# Ledger rows whose figures may still change: a call under way (`pending`: completed, or marked
# lost, when it ends), and a `lost` call nothing was heard of yet (no provider), which takes its
# provider's usage and cost once if the provider answers after all (the ledger's guard, usage
# migrations 0015 and 0018).
UNSETTLED_CALLS = Q(status=CallStatus.PENDING) | Q(status=CallStatus.LOST, provider="")


def unsettled_from() -> date | None:
    """The first UTC day with a ledger row that may still change (UNSETTLED_CALLS): among the
    rows opened within the stale limit (PANTHEON_TURN_STALE_SECONDS), and the pending rows of
    turns still running that made progress within it; None: no such day.

    A row is opened just before its call is sent, and the stale limit is longer than a plain
    call can take (system check pantheon.W001): an older row's call has ended, so it is either
    settled or its worker died, and no answer will ever come to change it (`recover_turns`
    marks it lost, which changes none of the figures the rollups sum). A streamed answer is
    bounded per chunk, not in all, and its saves keep its turn's progress fresh: a long one
    outlives the stale limit, and its row holds its day back while its turn runs. So a row
    stuck pending holds its day back for the stale limit at most, never the rollups forever.
    Two index scans: the ledger's last few minutes, and its pending rows.

    "Within the stale limit" is by the database's clock, the one the rows and the turns'
    progress are stamped by (`TurnState.now`): run on a host whose clock was more than the
    limit ahead, the window held none of the rows a running call had just opened, and the
    rollups froze its day while the call ran (reconcile then said DRIFT once it completed)."""
    recent = stale_in_database()
    opened = LlmCallEvent.objects.filter(UNSETTLED_CALLS, created_at__gte=recent)
    streaming = LlmCallEvent.objects.filter(
        status=CallStatus.PENDING, turn__status=TurnStatus.RUNNING, turn__progress_at__gte=recent
    )
    firsts = [
        rows.order_by().aggregate(first=Min("created_at"))["first"] for rows in (opened, streaming)
    ]
    first = min((moment for moment in firsts if moment is not None), default=None)
    return None if first is None else first.astimezone(UTC).date()


@dataclass(frozen=True)
class RebuildResult:
    since: date | None  # None: from the first ledger row
    until: date  # exclusive
    rows_removed: int
    rows_written: int
    calls: int
    dry_run: bool
    # The `since` asked for, when the rebuild began earlier: the days between the rollups' end
    # and it had never been rolled up (a rollup rebuild only).
    asked_since: date | None = None
    # The day the rebuild stopped before, sooner than asked, because calls of it were still in
    # flight (`unsettled_from`); None: it was not held back.
    held_back: date | None = None


def rollups_cover_until() -> date | None:
    """The first UTC day the rollups do not hold (every day before it is in them), or None
    before the first rebuild."""
    return RollupCoverage.objects.filter(pk=1).values_list("until", flat=True).first()


def rollup_rebuild(
    *,
    since: date | None = None,
    until: date | None = None,
    dry_run: bool = False,
    today_is: date | None = None,
) -> RebuildResult:
    """Recompute DailyUsageRollup for whole UTC days from `since` (default: all) to the day
    before `until` (default and latest: today, so to yesterday), and record that they reach it.
    Today is `today_is`, the day by the database's clock as its caller read it (read here if
    not given: `database_today`).

    Rollups from `since` on are replaced, a stray one for `until` or later included: today is
    still being written, and the dashboard reads today from the ledger. A `since` after the
    rollups' end (or before any rebuild) begins at their end (or the first call) instead, so
    no day is ever left out between them (`RollupCoverage`); the result says so.

    Nor is a day rolled up while rows of it may still change (`unsettled_from`: a call that
    was running at midnight when the nightly run came): the rollups stop before it, the
    dashboard reads it from the ledger meanwhile, and the next run rolls it up once settled.
    The result says which day held them back.

    The rollups' end is read under the rebuild's lock, which rebuilds take in turn: one that
    waited for another starts from where that one left them.
    """
    if dry_run:
        with analytic_transaction():
            span = _rebuild_span(since, until, today_is or database_today())
            sums = ledger_daily_sums(since=span.since, until=span.until)
            totals = sums.aggregate(groups=Count("*"), calls=Sum("sum_llm_calls"))
            stale = _rollups_from(span.since).count()
        return RebuildResult(
            span.since,
            span.until,
            stale,
            totals["groups"] or 0,
            totals["calls"] or 0,
            True,
            span.asked_since,
            span.held_back,
        )
    columns = [*ROLLUP_KEY_COLUMNS, *ROLLUP_VALUE_COLUMNS, "updated_at"]
    with analytic_transaction():
        _lock_for_rebuild(DailyUsageRollup)
        span = _rebuild_span(since, until, today_is or database_today())
        # In the unique index's order: the insert appends to it instead of touching it at random.
        select = (
            ledger_daily_sums(since=span.since, until=span.until)
            .annotate(stamp=Value(timezone.now()))
            .order_by(*ROLLUP_KEY_COLUMNS)
        )
        removed = _rollups_from(span.since).delete()[0]
        written = _insert_from(DailyUsageRollup, columns, select)
        calls = _rollups_from(span.since).aggregate(calls=Sum("llm_calls"))["calls"] or 0
        _record_rebuild(until=span.until)
    if connection.vendor == "postgresql":
        # Fresh statistics for the dashboard's plans: the table was just rewritten.
        with connection.cursor() as cursor:
            cursor.execute(f'ANALYZE "{DailyUsageRollup._meta.db_table}"')
    return RebuildResult(
        span.since, span.until, removed, written, calls, False, span.asked_since, span.held_back
    )


def rollup_days_rebuild(
    *, days: Iterable[date], dry_run: bool = False, today_is: date | None = None
) -> RebuildResult:
    """Recompute the rollups of these days only (those `reconcile_usage --fix` found drifted),
    as `rollup_rebuild` does all of them: the day's rows replaced by the ledger's sums, a day
    the rollups do not hold (a stray row) only cleared. A few days of a year of rollups
    rebuilt the whole year (48,358 rows, to repair 3). The rollups' end is read under the
    rebuild's lock, as `rollup_rebuild` reads it, and never moved: a fix that waited for the
    nightly `rollup_usage` rebuilds no day past where that one left them, and a day that
    agrees with the ledger under the lock (another fix rebuilt it first) is left. The rewrite is
    recorded all the same (`_record_rebuild`): the dashboard's cache of the old sums was kept
    for hours after a fix. `today_is`: as `rollup_rebuild` takes it."""
    days = sorted(set(days))
    current = today_is or database_today()
    columns = [*ROLLUP_KEY_COLUMNS, *ROLLUP_VALUE_COLUMNS, "updated_at"]
    removed = written = calls = 0
    with analytic_transaction():
        if not dry_run:
            _lock_for_rebuild(DailyUsageRollup)
        end = rollups_cover_until()
        end = current if end is None else min(end, current)
        # Not a day that agrees with the ledger now (another --fix, whose lock this one waited
        # for, rebuilt it): it stays as it is, and is not said to be rebuilt.
        days = [day for day in days if not _day_agrees(day, end)]
        for first, last in _runs(days):
            stale = DailyUsageRollup.objects.filter(day__gte=first, day__lte=last)
            sums = ledger_daily_sums(since=first, until=min(last + timedelta(days=1), end))
            held = first < end  # else only stray rows to clear
            if dry_run:
                removed += stale.count()
                if held:
                    totals = sums.aggregate(groups=Count("*"), calls=Sum("sum_llm_calls"))
                    written += totals["groups"] or 0
                    calls += totals["calls"] or 0
                continue
            removed += stale.delete()[0]
            if held:
                select = sums.annotate(stamp=Value(timezone.now())).order_by(*ROLLUP_KEY_COLUMNS)
                written += _insert_from(DailyUsageRollup, columns, select)
                calls += stale.aggregate(calls=Sum("llm_calls"))["calls"] or 0
        if not dry_run:
            _record_rebuild()
    since = days[0] if days else None
    return RebuildResult(since, end, removed, written, calls, dry_run)


def _day_agrees(day: date, end: date) -> bool:
    """Whether a day's rollups equal its ledger sums per user and alias, as `reconcile_usage`
    compares them (to the columns' places); a day from `end` on, which the rollups do not hold,
    agrees when it has no rollup row."""
    kept = {
        (user_id, alias): _rollup_figures(figures)
        for user_id, alias, *figures in DailyUsageRollup.objects.filter(day=day).values_list(
            "user_id", "model_alias", *ROLLUP_VALUE_COLUMNS
        )
    }
    if day >= end:
        return not kept
    sums = ledger_daily_sums(since=day, until=day + timedelta(days=1)).values_list(
        "user_id", "model_alias", *(f"sum_{name}" for name in ROLLUP_VALUE_COLUMNS)
    )
    return kept == {(user_id, alias): _rollup_figures(figures) for user_id, alias, *figures in sums}


def _rollup_figures(figures) -> tuple:
    """ROLLUP_VALUE_COLUMNS' figures as stored: the amounts to the ledger's places."""
    return tuple(
        round_money(Decimal(str(value))) if name in ("credits", "provider_cost_usd") else value
        for name, value in zip(ROLLUP_VALUE_COLUMNS, figures, strict=True)
    )


def _record_rebuild(*, until: date | None = None) -> None:
    """Record a rewrite of the rollups (and how far they now reach, if `until` is given) under
    the rebuild's lock: every rewrite, a full rebuild or the days `reconcile_usage --fix`
    repairs, moves `rebuilt_at`, which is what the dashboard caches their sums under, so the
    pages read the new rollups at once. Always forward, by a microsecond at least: a clock
    that did not move between two rewrites (or moved back) would have kept the old key."""
    coverage = RollupCoverage.objects.filter(pk=1).values_list("until", "rebuilt_at").first()
    if coverage is None:
        if until is not None:
            RollupCoverage.objects.create(pk=1, until=until)
        return
    stamp = max(timezone.now(), coverage[1] + timedelta(microseconds=1))
    # update(): the field's auto_now would set the clock's time instead.
    RollupCoverage.objects.filter(pk=1).update(until=until or coverage[0], rebuilt_at=stamp)


def _runs(days: list[date]) -> Iterator[tuple[date, date]]:
    """Sorted days as runs of consecutive days: (first, last) each."""
    first = last = None
    for day in days:
        if last is not None and day == last + timedelta(days=1):
            last = day
            continue
        if first is not None and last is not None:
            yield first, last
        first = last = day
    if first is not None and last is not None:
        yield first, last


@dataclass(frozen=True)
class _Span:
    since: date | None
    until: date
    asked_since: date | None
    held_back: date | None


def _rebuild_span(since: date | None, until: date | None, current: date) -> _Span:
    """The days a rebuild replaces, from the rollups' end as it stands (`rollup_rebuild`), to
    the first day whose rows may still change at the latest; `current` is today."""
    covered = rollups_cover_until()
    end = current if until is None else min(until, current)
    held_back = unsettled_from()
    if held_back is not None and held_back < end:
        end = held_back
    else:
        held_back = None
    asked = since
    if since is not None and (covered is None or covered < since):
        since = covered
    if since is not None and since > end:
        # The rollups reached a day found unsettled now (by a run from before this check, or
        # a call's row committed just after a run that read past it): their rows from `end` on
        # are cleared too, and the day is read from the ledger until it settles.
        since = end
    return _Span(since, end, asked if since != asked else None, held_back)


def _rollups_from(since: date | None) -> QuerySet:
    rollups = DailyUsageRollup.objects.all()
    return rollups if since is None else rollups.filter(day__gte=since)


def counter_months_rebuild(
    *, months: Iterable[date], dry_run: bool = False, today_is: date | None = None
) -> RebuildResult:
    """Recompute MonthlyUsage from the ledger for these months only (each month's first day:
    those `reconcile_usage --fix` found drifted; two drifted counters rebuilt every counter of
    the year). Writers that move a counter meanwhile wait for the rebuild's lock, then add on
    top of it: the rebuild counts only ledger rows committed before it, so nothing counts
    twice. A month whose counters agree with the ledger under the lock (another rebuild, which
    this one waited for, rebuilt it) is left as it is: none of its rows is counted as written
    or removed. `today_is`: as `rollup_rebuild` takes it (only said, in the result's end)."""
    months = sorted(set(months))
    columns = [*COUNTER_KEY_COLUMNS, *COUNTER_VALUE_COLUMNS, "updated_at"]
    removed = written = calls = 0
    until = (today_is or database_today()) + timedelta(days=1)
    with analytic_transaction():
        if not dry_run:
            _lock_for_rebuild(MonthlyUsage)
        for month in months:
            next_month = month_of(next_month_start(day_start(month)))
            sums = ledger_monthly_sums(since_month=month, until_month=next_month)
            stale = MonthlyUsage.objects.filter(month=month)
            if _counters_agree(sums, stale):
                # Rebuilt meanwhile (another --fix run at the same time, whose lock this one
                # waited for): nothing to rebuild, and nothing said to be.
                continue
            if dry_run:
                totals = sums.aggregate(groups=Count("*"), calls=Sum("sum_llm_calls"))
                removed += stale.count()
                written += totals["groups"] or 0
                calls += totals["calls"] or 0
                continue
            removed += stale.delete()[0]
            written += _insert_from(
                MonthlyUsage, columns, sums.annotate(stamp=Value(timezone.now()))
            )
            calls += stale.aggregate(calls=Sum("llm_calls"))["calls"] or 0
    return RebuildResult(months[0] if months else None, until, removed, written, calls, dry_run)


def _counters_agree(sums: QuerySet, counters: QuerySet) -> bool:
    """Whether a month's counters equal its ledger sums (`ledger_monthly_sums`), as
    `reconcile_usage` compares them: to the column's places, a month of lost calls alone (0 and
    0) agreeing with no counter. A month's counters are a row per user who made calls in it."""
    zero = (Decimal(0), 0)

    def figures(credits, calls) -> tuple[Decimal, int]:
        return round_money(Decimal(str(credits or 0))), int(calls or 0)

    ledger = {
        user_id: figures(credits, calls)
        for user_id, credits, calls in sums.values_list("user_id", "sum_credits", "sum_llm_calls")
    }
    kept = {
        user_id: figures(credits, calls)
        for user_id, credits, calls in counters.values_list("user_id", "credits", "llm_calls")
    }
    return all(ledger.get(user, zero) == kept.get(user, zero) for user in ledger.keys() | kept)


def _lock_for_rebuild(model) -> None:
    """On PostgreSQL, hold off writers of `model`'s table (readers go on) until the rebuild
    commits; its rows are then deleted, never truncated: a TRUNCATE's lock would wait for every
    dashboard read under way, and hold up every read until the rebuild commits. SQLite
    serializes writers by itself."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f'LOCK TABLE "{model._meta.db_table}" IN EXCLUSIVE MODE')


def _insert_from(model, columns: list[str], select: QuerySet) -> int:
    sql, params = select.query.sql_with_params()
    quoted = ", ".join(connection.ops.quote_name(column) for column in columns)
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} ({quoted}) {sql}", params)
        return cursor.rowcount
