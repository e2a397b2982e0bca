"""A rollup never freezes a day whose ledger rows can still change: a call running at midnight
(its row pending, then completed), or a lost call its provider may yet answer. The nightly
`rollup_usage` at 00:00:06 rolled up a call posted at 23:59:53 as its pending row (36
estimated input tokens, no credits); it completed at 00:00:13, and until the next night the
billing page and export said 0 credits for the day, and `reconcile_usage` said DRIFT.

Which calls may still run is judged by the database's clock, which stamps them; which days are
past, by this process's (the host's). The database's clock cannot be set, so the calls here are
opened some seconds before its now, and this process's clock is put in the next day, as at
the nightly run."""

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
def clock(monkeypatch, settings):
    """This process's clock, fake (`timezone.now`): `clock.set(day, "00:00:06")`."""
    settings.PANTHEON_TURN_STALE_SECONDS = 600

    class Clock:
        now = timezone.now()

        def set(self, day: date, time: str) -> None:
            self.now = moment(day, time)

    fake = Clock()
    monkeypatch.setattr("django.utils.timezone.now", lambda: fake.now)
    return fake


def open_call(user, seconds_ago: float, **fields) -> LlmCallEvent:
    """A call's row as `usage_call_open` writes it just before the call: pending, with its
    input estimate, opened `seconds_ago` by the database's clock."""
    values = {
        "input_tokens_fresh": 36,
        "total_tokens": 36,
        "status": CallStatus.PENDING,
        "attempts": 0,
    }
    values.update(fields)
    at = database_now() - timedelta(seconds=seconds_ago)
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


def test_a_call_running_at_midnight_is_not_frozen_into_its_day(clock, owner, make_operator):
    client = client_for(make_operator("Analyst"))
    call = open_call(owner, seconds_ago=7)
    eve = day_of(call)

    clock.set(eve + timedelta(days=1), "00:00:06")  # the nightly run, the call still running
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

    clock.set(eve + timedelta(days=2), "00:00:06")  # the next night: settled, rolled up
    rollup_usage()
    assert rollups_cover_until() == eve + timedelta(days=2)
    rolled = DailyUsageRollup.objects.get(day=eve)
    assert (rolled.input_tokens, rolled.output_tokens) == (29, 11)
    assert rolled.credits == Decimal("0.002115")
    assert reconcile_exit()[0] == 0
    assert shown_credits(client, eve) == (Decimal("0.002115"), Decimal("0.002115"))


def test_a_host_whose_clock_is_ahead_holds_back_the_day_of_a_call_just_opened(
    owner, settings, monkeypatch
):
    """A host whose clock ran eleven minutes ahead ran the nightly rollup at 00:00:06 by its
    clock, 23:49:06 by the database's: a call opened a few seconds before was more than the
    stale limit old by the host's clock, so the rollups froze its day with its pending row (no
    credits) while it ran. Here the host's clock reads 00:11 of the day after the call's, the
    call opened 5 s before by the database's."""
    settings.PANTHEON_TURN_STALE_SECONDS = 600
    call = open_call(owner, seconds_ago=5)
    day = day_of(call)
    ahead = moment(day + timedelta(days=1), "00:11:00") - database_now()
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + ahead)

    result = rollup_rebuild()

    assert (result.until, result.held_back) == (day, day)
    assert rollups_cover_until() == day
    assert not DailyUsageRollup.objects.filter(day=day).exists()
    complete(call)
    assert check_rollups().drift == 0


def test_a_lost_call_awaiting_its_providers_late_answer_holds_its_day(clock, owner):
    lost = open_call(owner, 120, status=CallStatus.LOST, error_type="lost", attempts=1)
    open_call(  # heard already (its provider recorded): final, holds nothing back
        owner, 120, status=CallStatus.LOST, error_type="lost", attempts=1, provider="openai"
    )
    eve = day_of(lost)

    clock.set(eve + timedelta(days=1), "00:01:00")
    rollup_rebuild()
    assert rollups_cover_until() == eve

    # The provider answers after all: the row takes its usage, once (still lost, no credit).
    LlmCallEvent.objects.filter(pk=lost.pk, provider="").update(
        provider="openai", input_tokens_fresh=29, output_tokens=11, total_tokens=40
    )
    clock.set(eve + timedelta(days=1), "00:02:00")
    result = rollup_rebuild()
    assert (result.until, result.held_back) == (eve + timedelta(days=1), None)
    assert DailyUsageRollup.objects.get(day=eve).output_tokens == 11


def test_a_row_stuck_pending_past_the_stale_limit_holds_no_day_back(clock, owner, settings):
    """A worker that died mid-call leaves its row pending until `recover_turns` marks it lost
    (which changes none of its figures): past the stale limit no live call can still answer,
    and the rollups go on. (The ledger's rows cannot be moved: the limit is, around a row
    600 s old by the database's clock.)"""
    call = open_call(owner, seconds_ago=600)
    eve = day_of(call)
    clock.set(eve + timedelta(days=1), "00:10:00")

    settings.PANTHEON_TURN_STALE_SECONDS = 610  # within it: the call may still answer
    assert rollup_rebuild().held_back == eve
    settings.PANTHEON_TURN_STALE_SECONDS = 590  # past it
    result = rollup_rebuild()

    assert (result.until, result.held_back) == (eve + timedelta(days=1), None)
    assert DailyUsageRollup.objects.get(day=eve).input_tokens == 36
    assert reconcile_exit()[0] == 0


def test_a_streamed_answer_longer_than_the_stale_limit_holds_its_day_while_its_turn_runs(
    clock, owner, make_agent, make_session
):
    """A stream is bounded per chunk, not in all, and its saves keep its turn's progress fresh:
    a call opened at 23:50 and still streaming at 00:05 was frozen into the eve at 0 credits
    (the rule looked at rows opened within the stale limit only), and reconcile said DRIFT
    once it completed."""
    from sessions_app.models import Turn

    session = make_session(owner, agent=make_agent(owner, "ada"))
    opened = database_now() - timedelta(seconds=900)  # past the stale limit
    turn = Turn.objects.create(
        session=session,
        turn_index=1,
        mode="direct",
        status="running",
        user_input="go",
        created_at=opened,
        progress_at=opened,
    )
    call = open_call(owner, seconds_ago=900, session=session, turn=turn)
    eve = day_of(call)

    clock.set(eve + timedelta(days=1), "00:05:00")
    # Its stream still saving, 2 s ago by the database's clock.
    Turn.objects.filter(pk=turn.pk).update(progress_at=Now() - timedelta(seconds=2))
    assert rollup_rebuild().held_back == eve

    complete(call)
    Turn.objects.filter(pk=turn.pk).update(status="completed")
    clock.set(eve + timedelta(days=1), "00:06:00")
    assert rollup_rebuild().held_back is None
    assert DailyUsageRollup.objects.get(day=eve).output_tokens > 0
    # The rollups against the ledger (the turn here is a bare row: its totals are not kept).
    assert check_rollups().drift == 0
