"""Reconciliation: does everything derived from the ledger still agree with it?

Each check is one SQL pass that joins a ledger aggregate with what was derived from it and
streams back only the rows that disagree (memory stays bounded: a count and a few examples).
Drift in rollups, monthly counters and turn totals is rebuilt from the ledger by `reconcile`
with `fix=True`; drift between the ledger and the transcript cannot be rebuilt (both are
records) and stays reported. The ledger itself is never edited.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, DecimalField, OuterRef, Q, QuerySet

from pantheon.figures import counted, plain_amount
from sessions_app.models import Message, MessageRole, Turn, TurnStatus
from sessions_app.selectors import stale_in_database
from usage.models import (
    CANCELLED_AFTER_WORDS,
    USAGE_TOTAL_FIELDS,
    CallPurpose,
    CallStatus,
    DailyUsageRollup,
    LlmCallEvent,
    MonthlyUsage,
)
from usage.rollups import (
    COUNTER_KEY_COLUMNS,
    COUNTER_VALUE_COLUMNS,
    ROLLUP_KEY_COLUMNS,
    ROLLUP_VALUE_COLUMNS,
    analytic_transaction,
    counter_months_rebuild,
    database_today,
    day_start,
    ledger_daily_sums,
    ledger_monthly_sums,
    rollup_days_rebuild,
    rollups_cover_until,
)
from usage.selectors import UNPRICED_CALLS, ledger_total_sums, month_of, usage_totals_of_turn

EXAMPLES = 3
_FIX_BATCH = 500


@dataclass
class CheckResult:
    """One line of the reconciliation table."""

    name: str
    checked: int  # derived rows (or turns) compared with the ledger
    drift: int  # how many of them disagree
    examples: list[str] = field(default_factory=list)
    fixable: bool = True  # rebuilt from the ledger by --fix
    informational: bool = False  # counted, never drift (unpriced, lost calls)
    # Information said under the check's line, never drift: what it left out, and why.
    note: str = ""
    # What drifted, for --fix to rebuild it alone: the days of the rollups, the months of
    # the counters, the turns of the turn totals.
    drifted: frozenset = frozenset()

    @property
    def clean(self) -> bool:
        return self.informational or self.drift == 0


@dataclass(frozen=True)
class Rebuild:
    """What --fix rebuilt from the ledger for one check (or, in a dry run, would rebuild)."""

    check: str  # the check it answers: ROLLUPS, COUNTERS, TURN_TOTALS
    derived: str  # what it rebuilds: "rollups"
    counted: str  # how much: "12 daily rows (10 replaced)"
    # Rows (or turns) written or removed: none when the drift was gone by the time the rebuild
    # came to it (another --fix, run at the same time, rebuilt it first).
    changed: int
    dry_run: bool = False

    def __str__(self) -> str:
        if self.dry_run:
            return f"would rebuild {self.derived}: {self.counted}"
        return f"{self.derived}: rebuilt {self.counted}"


@dataclass
class Report:
    since: date | None
    checks: list[CheckResult]
    ledger_rows: int
    fixed: list[Rebuild] = field(default_factory=list)  # what --fix rebuilt (or would)
    # After a rebuild: the report that found the drift (this one is the check that followed).
    before: "Report | None" = None
    # How far the rollups compared reach (information: the days after them are not drift).
    rollups: "RollupReach | None" = None

    @property
    def clean(self) -> bool:
        return all(check.clean for check in self.checks)

    def check(self, name: str) -> CheckResult:
        return next(check for check in self.checks if check.name == name)


ROLLUPS = "rollups vs ledger"
COUNTERS = "monthly counters vs ledger"
TURN_TOTALS = "turn totals vs ledger"
TRANSCRIPT = "transcript vs ledger"
UNPRICED = "unpriced calls"
LOST = "lost calls"
STUCK = "turns stuck running"


# --- the checks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollupReach:
    """How far the daily rollups reach (`RollupCoverage`, written by rollup_usage), as
    reconcile reads it for the days from `since`."""

    end: date | None  # the first day they do not hold; None: no rollup_usage recorded one
    # The past days from `since` after `end`, not rolled up yet (the first and the last).
    pending: tuple[date, date] | None

    @classmethod
    def read(cls, *, since: date | None, today_is: date | None = None) -> "RollupReach":
        """`today_is`: today by the database's clock, as the run read it (read here if not
        given): the ledger's days are its."""
        end = rollups_cover_until()
        if end is None:
            return cls(None, None)
        today_is = today_is or database_today()
        end = min(end, today_is)
        first, last = max(end, since or end), today_is - timedelta(days=1)
        return cls(end, (first, last) if first <= last else None)

    @property
    def pending_days(self) -> int:
        return 0 if self.pending is None else (self.pending[1] - self.pending[0]).days + 1

    def note(self) -> str:
        """What the rollup check left out, said under its line."""
        if self.end is None:
            return (
                "not compared: no day is rolled up yet (rollup_usage has not run); the billing "
                "pages read the ledger"
            )
        if self.pending is None:
            return ""
        first, last = self.pending
        span = str(first) if first == last else f"{first} to {last}"
        return f"not compared: {span} not rolled up yet (the next rollup_usage rolls them up)"


def check_rollups(*, since: date | None = None, reach: RollupReach | None = None) -> CheckResult:
    """Rollups of the whole days from `since` they record they hold (`reach`, read if not
    given) against the ledger summed per day, user and alias: a missing, stale or extra rollup
    row (one for a day they do not hold, today or later included) is drift. The past days
    after their end (yesterday, before the nightly rollup_usage) are not rolled up yet: not
    compared, and said in the check's note, as is a database no rollup_usage has recorded a
    reach in (nothing vouches for its rows: the pages read the ledger, and the first
    rollup_usage replaces them all)."""
    reach = reach or RollupReach.read(since=since)
    if reach.end is None:
        return CheckResult(ROLLUPS, 0, 0, note=reach.note())
    ledger = ledger_daily_sums(since=since, until=reach.end)
    rollups = DailyUsageRollup.objects.all()
    if since is not None:
        rollups = rollups.filter(day__gte=since)
    derived = rollups.values_list(*ROLLUP_KEY_COLUMNS, *ROLLUP_VALUE_COLUMNS).order_by()
    joined = _full_join_drift(
        ledger=ledger,
        derived=derived,
        keys=ROLLUP_KEY_COLUMNS,
        values=ROLLUP_VALUE_COLUMNS,
        user_at=1,
        drifted_at=0,  # the day
        describe=lambda key, user, ledger_row, derived_row: (
            f"{key[0]} {user} {key[2]}: ledger {_figures(ledger_row)}, "
            f"rollup {_figures(derived_row)}"
        ),
    )
    return CheckResult(
        ROLLUPS,
        rollups.count() + joined.missing,
        joined.drift,
        joined.examples,
        note=reach.note(),
        drifted=frozenset(joined.drifted),
    )


def check_counters(*, since: date | None = None) -> CheckResult:
    """Monthly counters from the month of `since` against the ledger per user and UTC month:
    their credits (what a cap reads) and their calls (those completed: `ledger_monthly_sums`),
    which the console's monthly usage shows."""
    since_month = month_of(day_start(since)) if since is not None else None
    ledger = ledger_monthly_sums(since_month=since_month)
    counters = MonthlyUsage.objects.all()
    if since_month is not None:
        counters = counters.filter(month__gte=since_month)
    derived = counters.values_list(*COUNTER_KEY_COLUMNS, *COUNTER_VALUE_COLUMNS).order_by()
    joined = _full_join_drift(
        ledger=ledger,
        derived=derived,
        keys=COUNTER_KEY_COLUMNS,
        values=COUNTER_VALUE_COLUMNS,
        user_at=0,
        drifted_at=1,  # the month
        # A month of lost calls alone moved no counter (0 credits, no call counted): no row is
        # 0, not drift.
        absent_is_zero=True,
        describe=lambda key, user, ledger_row, derived_row: (
            f"{user} {str(key[1])[:7]}: ledger {_counted(ledger_row)}, "
            f"counter {_counted(derived_row)}"
        ),
    )
    return CheckResult(
        COUNTERS,
        counters.count() + joined.missing,
        joined.drift,
        joined.examples,
        drifted=frozenset(joined.drifted),
    )


def check_turns(*, since: date | None = None) -> tuple[CheckResult, CheckResult]:
    """Finished turns from `since` against their ledger rows, in one pass:

    - turn totals: the usage stored on the turn must equal the sums of its events;
    - transcript: one `agent` event per assistant message (messages have no link to events,
      so the counts per turn are compared), lost calls aside: they never got their message,
      nor did calls billed as their turn was cancelled (`CANCELLED_AFTER_WORDS`).

    Running turns are skipped (they write as they go); events whose turn was deleted point at
    nothing on purpose (SET NULL) and are fine.
    """
    totals_drift, transcript_drift = 0, 0
    totals_drifted = set()
    totals_examples: list[str] = []
    transcript_examples: list[str] = []
    checked = _finished_turns(since).count()
    for row in _turn_drift_rows(since):
        turn_id, stored, summed, messages, agent_events = row
        if stored != summed:
            totals_drift += 1
            totals_drifted.add(turn_id)
            if len(totals_examples) < EXAMPLES:
                totals_examples.append(
                    f"turn {turn_id}: stored {_figures(stored)}, ledger {_figures(summed)}"
                )
        if messages != agent_events:
            transcript_drift += 1
            if len(transcript_examples) < EXAMPLES:
                transcript_examples.append(
                    f"turn {turn_id}: {messages} assistant messages, {agent_events} agent calls"
                )
    return (
        CheckResult(
            TURN_TOTALS, checked, totals_drift, totals_examples, drifted=frozenset(totals_drifted)
        ),
        CheckResult(TRANSCRIPT, checked, transcript_drift, transcript_examples, fixable=False),
    )


def count_unpriced_and_lost(*, since: date | None = None) -> tuple[int, CheckResult, CheckResult]:
    """(ledger rows, unpriced calls, lost calls) from `since`: counted, never drift."""
    events = LlmCallEvent.objects.all()
    if since is not None:
        events = events.filter(created_at__gte=day_start(since))
    counts = events.aggregate(
        rows=Count("id"),
        unpriced=Count("id", filter=UNPRICED_CALLS),
        lost=Count("id", filter=Q(status=CallStatus.LOST)),
    )
    return (
        counts["rows"],
        CheckResult(UNPRICED, counts["rows"], counts["unpriced"], informational=True),
        CheckResult(LOST, counts["rows"], counts["lost"], informational=True),
    )


def count_stuck_turns(*, since: date | None = None) -> CheckResult:
    """Turns still `running` with no progress for the stale limit (checked: the running ones):
    their worker died, and `recover_turns` or their session's next turn ends them. Counted,
    never drift: a running turn's totals are settled when it ends."""
    stale = stale_in_database()  # the clock turns write their progress by
    turns = Turn.objects.running()
    if since is not None:
        turns = turns.filter(created_at__gte=day_start(since))
    counts = turns.aggregate(
        running=Count("id"), stuck=Count("id", filter=Q(progress_at__lt=stale))
    )
    return CheckResult(STUCK, counts["running"], counts["stuck"], informational=True)


def reconcile(
    *,
    since: date | None = None,
    fix: bool = False,
    dry_run: bool = False,
    today_is: date | None = None,
) -> Report:
    """Run every check; with `fix`, rebuild what drifted from the ledger, then check again.

    With `dry_run`, `fix` only says what it would rebuild. `today_is`: today by the database's
    clock (`database_today`), read once for the whole run if not given.
    """
    today_is = today_is or database_today()
    report = _check_all(since, today_is)
    if not fix or report.clean:
        return report
    fixable = {check.name for check in report.checks if not check.clean and check.fixable}
    fixed = []
    # What drifted only: the days, months and turns the check found (three rollups and two
    # counters rebuilt every rollup and counter of the year: 11.5 s at 700,000 ledger rows).
    # The days the rollups hold: rolling up the days after them is rollup_usage's nightly
    # work, not a fix (and a dry run counts what the fix rebuilds). Read under the rebuild's
    # lock: a rollup_usage that ran since the check, or runs now, moved the end, and it is not
    # to be moved back.
    if ROLLUPS in fixable and rollups_cover_until() is not None:
        days = report.check(ROLLUPS).drifted
        result = rollup_days_rebuild(days=days, dry_run=dry_run, today_is=today_is)
        how_many = (
            f"{counted(result.rows_written, 'daily row')} ({result.rows_removed:,} replaced) "
            f"of {counted(len(days), 'day')}"
        )
        changed = result.rows_written + result.rows_removed
        fixed.append(Rebuild(ROLLUPS, "rollups", how_many, changed, dry_run))
    if COUNTERS in fixable:
        months = report.check(COUNTERS).drifted
        result = counter_months_rebuild(months=months, dry_run=dry_run, today_is=today_is)
        how_many = (
            f"{counted(result.rows_written, 'counter')} ({result.rows_removed:,} replaced) "
            f"of {counted(len(months), 'month')}"
        )
        changed = result.rows_written + result.rows_removed
        fixed.append(Rebuild(COUNTERS, "monthly counters", how_many, changed, dry_run))
    if TURN_TOTALS in fixable:
        turns = report.check(TURN_TOTALS).drifted
        count = turn_totals_rebuild(since=since, turn_ids=turns, dry_run=dry_run)
        fixed.append(Rebuild(TURN_TOTALS, "turn totals", counted(count, "turn"), count, dry_run))
    if dry_run:
        report.fixed = fixed
        return report
    before, report = report, _check_again(report, {rebuild.check for rebuild in fixed}, today_is)
    report.fixed, report.before = fixed, before
    return report


def turn_totals_rebuild(*, since: date | None, turn_ids: Iterable, dry_run: bool = False) -> int:
    """Store on each of these finished turns whose totals drifted (those the check found,
    asked again) the sums of its events; returns how many turns were (or, with `dry_run`,
    would be) rebuilt."""
    turn_ids = list(turn_ids)
    rows = (
        row
        for start in range(0, len(turn_ids), _FIX_BATCH)
        for row in _turn_drift_rows(since, turn_ids=turn_ids[start : start + _FIX_BATCH])
    )
    drifted = [turn_id for turn_id, stored, summed, *_ in rows if stored != summed]
    if dry_run:
        return len(drifted)
    totals = usage_totals_of_turn(OuterRef("pk"))
    for start in range(0, len(drifted), _FIX_BATCH):
        with transaction.atomic():
            Turn.objects.filter(pk__in=drifted[start : start + _FIX_BATCH]).exclude(
                status=TurnStatus.RUNNING
            ).update(**totals)
    return len(drifted)


# --- plumbing -----------------------------------------------------------------------------------


def _check_again(before: Report, rebuilt: set[str], today_is: date) -> Report:
    """After a rebuild: the checks of what it rebuilt, run again; the others as `before` found
    them (a rebuild changes nothing they read: the ledger and the transcript are records).
    Every check again took as long as the first (6 s at 700,000 ledger rows)."""
    since, checks, reach = before.since, {}, before.rollups
    with analytic_transaction():
        if TURN_TOTALS in rebuilt:
            checks[TURN_TOTALS], checks[TRANSCRIPT] = check_turns(since=since)
        if ROLLUPS in rebuilt:
            reach = RollupReach.read(since=since, today_is=today_is)
            checks[ROLLUPS] = check_rollups(since=since, reach=reach)
        if COUNTERS in rebuilt:
            checks[COUNTERS] = check_counters(since=since)
    return Report(
        since=since,
        checks=[checks.get(check.name, check) for check in before.checks],
        ledger_rows=before.ledger_rows,
        rollups=reach,
    )


def _check_all(since: date | None, today_is: date) -> Report:
    # One pass over the ledger per check: sharing one daily aggregate (a temporary table) was
    # measured slower at a million rows than summing again (bench/ledger.py).
    with analytic_transaction():
        rows, unpriced, lost = count_unpriced_and_lost(since=since)
        totals, transcript = check_turns(since=since)
        reach = RollupReach.read(since=since, today_is=today_is)
        rollups = check_rollups(since=since, reach=reach)
        counters = check_counters(since=since)
        stuck = count_stuck_turns(since=since)
    return Report(
        since=since,
        checks=[rollups, counters, totals, transcript, unpriced, lost, stuck],
        ledger_rows=rows,
        rollups=reach,
    )


def _finished_turns(since: date | None) -> QuerySet:
    turns = Turn.objects.exclude(status=TurnStatus.RUNNING)
    if since is not None:
        turns = turns.filter(created_at__gte=day_start(since))
    return turns


def _turn_drift_rows(since: date | None, *, turn_ids: list | None = None) -> Iterator[tuple]:
    """(turn id, stored totals, ledger sums, assistant messages, agent events) of each finished
    turn from `since` (of these turns, if given) where something disagrees, streamed from one
    SQL statement."""
    turns = _finished_turns(since)
    events = LlmCallEvent.objects.filter(turn__isnull=False)
    messages = Message.objects.filter(turn__isnull=False, role=MessageRole.ASSISTANT)
    if turn_ids is not None:
        turns = turns.filter(pk__in=turn_ids)
        events = events.filter(turn__in=turn_ids)
        messages = messages.filter(turn__in=turn_ids)
    if since is not None:  # a turn's events and messages are no older than the turn
        events = events.filter(created_at__gte=day_start(since))
        messages = messages.filter(created_at__gte=day_start(since))
    event_sums = (
        events.values("turn_id")
        .annotate(
            **{f"e_{name}": sum_ for name, (sum_, _) in ledger_total_sums().items()},
            # A lost call never produced its message (its worker died), nor did one whose
            # user cancelled its turn as it spoke (billed, its answer dropped): not a gap.
            e_agent_calls=Count(
                "id",
                filter=Q(purpose=CallPurpose.AGENT)
                & ~Q(status=CallStatus.LOST)
                & ~Q(error_type=CANCELLED_AFTER_WORDS),
            ),
        )
        .order_by()
    )
    message_counts = messages.values("turn_id").annotate(m_count=Count("id")).order_by()
    turn_sql, turn_params = (
        turns.values("id", *USAGE_TOTAL_FIELDS).order_by().query.sql_with_params()
    )
    event_sql, event_params = event_sums.query.sql_with_params()
    message_sql, message_params = message_counts.query.sql_with_params()
    summed = [_as_stored(f"COALESCE(e.e_{name}, 0)", Turn, name) for name in USAGE_TOTAL_FIELDS]
    stored = [_as_stored(f"t.{name}", Turn, name) for name in USAGE_TOTAL_FIELDS]
    differs = " OR ".join(f"{s} <> {e}" for s, e in zip(stored, summed, strict=True))
    sql = f"""
        SELECT t.id, {", ".join(stored)}, {", ".join(summed)},
               COALESCE(m.m_count, 0), COALESCE(e.e_agent_calls, 0)
        FROM ({turn_sql}) t
        LEFT JOIN ({event_sql}) e ON e.turn_id = t.id
        LEFT JOIN ({message_sql}) m ON m.turn_id = t.id
        WHERE {differs} OR COALESCE(m.m_count, 0) <> COALESCE(e.e_agent_calls, 0)
    """
    size = len(USAGE_TOTAL_FIELDS)
    for row in _stream(sql, (*turn_params, *event_params, *message_params)):
        yield (
            row[0],
            _normalized(row[1 : 1 + size]),
            _normalized(row[1 + size : 1 + 2 * size]),
            row[-2],
            row[-1],
        )


@dataclass
class JoinDrift:
    """What a full join of ledger sums with derived rows found."""

    drift: int  # keys whose figures disagree, a derived row missing or extra included
    missing: int  # of those, keys the ledger has and the derived data lacks
    examples: list[str]  # a few, described
    drifted: set = field(default_factory=set)  # the `drifted_at` part of their keys


def _full_join_drift(
    *,
    ledger: QuerySet,
    derived: QuerySet,
    keys: tuple,
    values: tuple,
    user_at: int,
    drifted_at: int,
    describe,
    absent_is_zero: bool = False,
) -> JoinDrift:
    """Rows of `ledger` (keys + `sum_` values) and `derived` (keys + values) that disagree,
    matched on `keys`. The keys compared are the derived rows plus the missing ones, so a
    check's "checked" is never smaller than its drift. A few are described by
    `describe(key, username, ledger figures, derived figures)`, the user id being
    `key[user_at]` (operators know users by name). The day or month of each (a date, at
    `key[drifted_at]`) is collected: what a fix rebuilds. With `absent_is_zero`, a row missing
    on one side agrees with 0 on the other."""
    ledger_sql, ledger_params = ledger.query.sql_with_params()
    derived_sql, derived_params = derived.query.sql_with_params()
    on = " AND ".join(f"l.{key} = d.{key}" for key in keys)
    sums = [_as_stored(f"l.sum_{name}", derived.model, name) for name in values]
    kept = [_as_stored(f"d.{name}", derived.model, name) for name in values]
    if absent_is_zero:
        sums = [f"COALESCE({sum_}, 0)" for sum_ in sums]
        kept = [f"COALESCE({row}, 0)" for row in kept]
    differs = " OR ".join(
        f"{sum_} IS DISTINCT FROM {row}" for sum_, row in zip(sums, kept, strict=True)
    )
    key_of = ", ".join(f"COALESCE(l.{key}, d.{key})" for key in keys)
    sql = f"""
        SELECT {key_of}, {", ".join(sums)}, {", ".join(kept)},
               CASE WHEN d.{keys[0]} IS NULL THEN 1 ELSE 0 END
        FROM ({ledger_sql}) l FULL OUTER JOIN ({derived_sql}) d ON {on}
        WHERE {differs}
    """
    result, found = JoinDrift(0, 0, []), []
    for row in _stream(sql, (*ledger_params, *derived_params)):
        result.drift += 1
        result.missing += row[-1]
        result.drifted.add(_as_date(row[drifted_at]))
        if len(found) < EXAMPLES:
            key = row[: len(keys)]
            ledger_row = row[len(keys) : len(keys) + len(values)]
            derived_row = row[len(keys) + len(values) : -1]
            found.append((key, ledger_row, derived_row))
    users = get_user_model().objects.filter(pk__in={key[user_at] for key, _, _ in found})
    names = dict(users.values_list("pk", "username"))
    result.examples = [
        describe(key, names.get(key[user_at], f"#{key[user_at]}"), ledger_row, derived_row)
        for key, ledger_row, derived_row in found
    ]
    return result


def _as_stored(expression: str, model, name: str) -> str:
    """A figure in SQL rounded to the decimal places of column `name` of `model`, to compare
    sums with stored totals. On SQLite decimals are floats: a sum, or a counter that was added
    to many times, ends a few units in the last place off (0.049740000000000006 for 0.04974),
    drift that is not there. On PostgreSQL (numeric) rounding to the column's scale changes
    nothing."""
    field = model._meta.get_field(name)
    if isinstance(field, DecimalField):
        return f"ROUND({expression}, {field.decimal_places})"
    return expression


def _stream(sql: str, params: Iterable) -> Iterator[tuple]:
    """Rows of `sql` a batch at a time (PostgreSQL: a server-side cursor)."""
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, tuple(params))
        while batch := cursor.fetchmany(2000):
            yield from batch


def _as_date(value) -> date:
    """A day or month from raw SQL: a date, or on SQLite its text (`2026-11-01`)."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _normalized(figures: Iterable) -> tuple:
    return tuple(Decimal(str(value)) if value is not None else None for value in figures)


def _figures(row) -> str:
    """'3 calls, 0.0141 credits' from a row of USAGE_TOTAL_FIELDS (or rollup columns)."""
    if row is None or all(value is None for value in row):
        return "nothing"
    return f"{row[0]} calls, {plain_amount(row[3])} credits"


def _counted(row) -> str:
    """'2 credits, 3 calls' from a counter's values (COUNTER_VALUE_COLUMNS), or 'nothing'."""
    if row is None or row[0] is None:
        return "nothing"
    return f"{plain_amount(row[0])} credits, {counted(row[1], 'call')}"
