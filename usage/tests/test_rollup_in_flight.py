"""A rollup never freezes a day whose ledger rows can still change: a call running at midnight
(its row pending, then completed), or a lost call its provider may yet answer. The nightly
`rollup_usage` at 00:00:06 rolled up a call posted at 23:59:53 as its pending row (36
estimated input tokens, no credits); it completed at 00:00:13, and until the next night the
billing page and export said 0 credits for the day, and `reconcile_usage` said DRIFT.

Which calls may still run, and which days are past, are judged by the database's clock, which
stamps the calls. Its clock cannot be set, so the nightly run is played as it would be now: the
calls are opened some seconds before the database's last midnight (in its yesterday, the eve),
and the stale limit is stretched by the time the database has spent in its today since, so
that the window reaches back as it would from, say, 00:00:06. This process's clock (the
host's) decides nothing: one test puts it eleven minutes ahead.
"""

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models.functions import Now
from django.urls import reverse
from django.utils import timezone

from pantheon.testing.admin import client_for
from usage.dashboard import billing_report
from usage.models import CallStatus, DailyUsageRollup, LlmCallEvent
from usage.reconcile import check_rollups
from usage.rollups import rollup_rebuild, rollups_cover_until
from usage.services import usage_call_complete
from usage.tests.dashboard import EXPORT

pytestmark = pytest.mark.django_db


def database_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


def moment(day: date, clock: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(clock), tzinfo=UTC)


@pytest.fixture
def night(settings):
    """The database's last midnight, and the nightly run played at a time of it:
    `night.run_at("00:00:06", limit=600)` sets the stale limit to reach back from now as 600 s
    would from 00:00:06."""

    class Night:
        today = database_now().astimezone(UTC).date()
        eve = today - timedelta(days=1)
        midnight = moment(today, "00:00")

        def before(self, seconds: float) -> datetime:
            return self.midnight - timedelta(seconds=seconds)

        def run_at(self, clock: str, *, limit: float = 600) -> None:
            since = database_now() - moment(self.today, clock)
            settings.PANTHEON_TURN_STALE_SECONDS = limit + since.total_seconds()

    return Night()


def open_call(user, at: datetime, **fields) -> LlmCallEvent:
    """A call's row as `usage_call_open` writes it just before the call: pending, with its
    input estimate, opened `at` (by the database's clock)."""
    values = {
        "input_tokens_fresh": 36,
        "total_tokens": 36,
        "status": CallStatus.PENDING,
        "attempts": 0,
    }
    values.update(fields)
    return LlmCallEvent.objects.create(
        user=user, purpose="agent", model_alias="deepseek", created_at=at, **values
    )


def day_of(call: LlmCallEvent) -> date:
    call.refresh_from_db(fields=["created_at"])
    return call.created_at.astimezone(UTC).date()


def complete(event: LlmCallEvent) -> None:
    """What `usage_call_meter` and `usage_call_complete` write when the call answers."""
    event.provider, event.status, event.attempts = "openai", CallStatus.SUCCESS, 1
    event.input_tokens_fresh, event.output_tokens, event.total_tokens = 29, 11, 40
    event.credits, event.priced = Decimal("0.002115"), True
    with transaction.atomic():
        usage_call_complete(event=event)


def reconcile_exit() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("reconcile_usage", stdout=out)
    except SystemExit as exc:
        return exc.code, out.getvalue()
    return 0, out.getvalue()


def rollup_usage() -> list[str]:
    out = StringIO()
    call_command("rollup_usage", stdout=out)
    return out.getvalue().splitlines()


def shown_credits(client, day: date) -> tuple[Decimal, Decimal]:
    """The day's credits on the billing page's report and in the CSV export."""
    page = billing_report(start=day, end=day).totals.credits
    export = client.get(reverse(EXPORT), {"start": day, "end": day}).content.decode()
    rows = list(csv.reader(io.StringIO(export)))[1:]
    return page, sum((Decimal(row[5]) for row in rows), Decimal(0))


def test_a_call_running_at_midnight_is_not_frozen_into_its_day(night, owner, make_operator):
    client = client_for(make_operator("Analyst"))
    call = open_call(owner, night.before(7))  # 23:59:53
    eve = night.eve

    night.run_at("00:00:06")  # the nightly run, the call still running
    lines = rollup_usage()
    complete(call)

    assert shown_credits(client, eve) == (Decimal("0.002115"), Decimal("0.002115"))
    code, output = reconcile_exit()
    assert code == 0, output
    assert f"not compared: {eve} not rolled up yet" in output
    assert rollups_cover_until() == eve  # the eve had a call in flight
    assert not DailyUsageRollup.objects.filter(day=eve).exists()
    assert lines[-1] == (
        f"Stopped before {eve}: its calls still in flight (pending, or lost and awaiting "
        "their provider's late answer) may change its figures; the pages read it from the "
        "ledger, and the next run rolls it up once they settle."
    )

    night.run_at("00:30:00")  # a later run: settled, rolled up
    rollup_usage()
    assert rollups_cover_until() == night.today
    rolled = DailyUsageRollup.objects.get(day=eve)
    assert (rolled.input_tokens, rolled.output_tokens) == (29, 11)
    assert rolled.credits == Decimal("0.002115")
    assert reconcile_exit()[0] == 0
    assert shown_credits(client, eve) == (Decimal("0.002115"), Decimal("0.002115"))


def test_a_host_whose_clock_is_ahead_holds_back_the_day_of_a_call_just_opened(
    night, owner, monkeypatch
):
    """A host whose clock ran eleven minutes ahead ran the nightly rollup at 00:11:06 by its
    clock, 00:00:06 by the database's: a call opened at 23:59:53 was more than the stale limit
    old by the host's clock, so the rollups froze its day with its pending row (no credits)
    while it ran."""
    call = open_call(owner, night.before(7))
    night.run_at("00:00:06")
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + timedelta(minutes=11))

    result = rollup_rebuild()

    assert (result.until, result.held_back) == (night.eve, night.eve)
    assert rollups_cover_until() == night.eve
    assert not DailyUsageRollup.objects.filter(day=night.eve).exists()
    complete(call)
    assert check_rollups().drift == 0


def test_a_host_ahead_past_midnight_closes_no_day_the_database_is_still_in(owner, monkeypatch):
    """A host whose clock ran minutes ahead ran the nightly rollup at its midnight, with no
    call opened in the last minutes: it rolled up the day the database was still in, and the
    calls stamped later that day (by the database's clock) were missing from its rollup, shown
    as drift by reconcile_usage and as missing from the billing pages' past days."""
    first = open_call(owner, database_now())
    complete(first)
    today = day_of(first)
    ahead = moment(today + timedelta(days=1), "00:00:30") - database_now()
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + ahead)

    rollup_usage()
    later = open_call(owner, database_now())  # stamped later the same day
    complete(later)

    code, output = reconcile_exit()
    assert code == 0, output
    assert rollups_cover_until() == today
    assert not DailyUsageRollup.objects.filter(day=today).exists()


def test_a_lost_call_awaiting_its_providers_late_answer_holds_its_day(night, owner):
    lost = open_call(owner, night.before(60), status=CallStatus.LOST, error_type="lost", attempts=1)
    open_call(  # heard already (its provider recorded): final, holds nothing back
        owner,
        night.before(60),
        status=CallStatus.LOST,
        error_type="lost",
        attempts=1,
        provider="openai",
    )
    eve = night.eve

    night.run_at("00:01:00")
    rollup_rebuild()
    assert rollups_cover_until() == eve

    # The provider answers after all: the row takes its usage, once (still lost, no credit).
    LlmCallEvent.objects.filter(pk=lost.pk, provider="").update(
        provider="openai", input_tokens_fresh=29, output_tokens=11, total_tokens=40
    )
    night.run_at("00:02:00")
    result = rollup_rebuild()
    assert (result.until, result.held_back) == (night.today, None)
    assert DailyUsageRollup.objects.get(day=eve).output_tokens == 11


def test_a_row_stuck_pending_past_the_stale_limit_holds_no_day_back(night, owner):
    """A worker that died mid-call leaves its row pending until `recover_turns` marks it lost
    (which changes none of its figures): past the stale limit no live call can still answer,
    and the rollups go on. (The ledger's rows cannot be moved: the limit is, around a row
    opened at 23:50, run at 00:00.)"""
    open_call(owner, night.before(600))
    eve = night.eve

    night.run_at("00:00:00", limit=610)  # within it: the call may still answer
    assert rollup_rebuild().held_back == eve
    night.run_at("00:00:00", limit=590)  # past it
    result = rollup_rebuild()

    assert (result.until, result.held_back) == (night.today, None)
    assert DailyUsageRollup.objects.get(day=eve).input_tokens == 36
    assert reconcile_exit()[0] == 0


def test_a_streamed_answer_longer_than_the_stale_limit_holds_its_day_while_its_turn_runs(
    night, owner, make_agent, make_session
):
    """A stream is bounded per chunk, not in all, and its saves keep its turn's progress fresh:
    a call opened at 23:50 and still streaming at 00:05 was frozen into the eve at 0 credits
    (the rule looked at rows opened within the stale limit only), and reconcile said DRIFT
    once it completed."""
    from sessions_app.models import Turn

    session = make_session(owner, agent=make_agent(owner, "ada"))
    opened = night.before(600)  # 23:50
    turn = Turn.objects.create(
        session=session,
        turn_index=1,
        mode="direct",
        status="running",
        user_input="go",
        created_at=opened,
        progress_at=opened,
    )
    call = open_call(owner, opened, session=session, turn=turn)
    eve = night.eve

    night.run_at("00:05:00")  # the call past the stale limit
    # Its stream still saving, 2 s ago by the database's clock.
    Turn.objects.filter(pk=turn.pk).update(progress_at=Now() - timedelta(seconds=2))
    assert rollup_rebuild().held_back == eve

    complete(call)
    Turn.objects.filter(pk=turn.pk).update(status="completed")
    night.run_at("00:06:00")
    assert rollup_rebuild().held_back is None
    assert DailyUsageRollup.objects.get(day=eve).output_tokens > 0
    # The rollups against the ledger (the turn here is a bare row: its totals are not kept).
    assert check_rollups().drift == 0
