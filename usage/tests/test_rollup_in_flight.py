"""A rollup never freezes a day whose ledger rows can still change: a call running at midnight
(its row pending, then completed), or a lost call its provider may yet answer. The nightly
`rollup_usage` at 00:00:06 rolled up a call posted at 23:59:53 as its pending row (36
estimated input tokens, no credits); it completed at 00:00:13, and until the next night the
billing page and export said 0 credits for the day, and `reconcile_usage` said DRIFT."""

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse

from pantheon.testing.admin import client_for
from usage.dashboard import billing_report
from usage.models import CallStatus, DailyUsageRollup, LlmCallEvent
from usage.reconcile import check_rollups
from usage.rollups import rollup_rebuild, rollups_cover_until
from usage.services import usage_call_complete
from usage.tests.dashboard import EXPORT

pytestmark = pytest.mark.django_db

EVE, NEW_YEAR, SECOND = date(2026, 12, 31), date(2027, 1, 1), date(2027, 1, 2)


def moment(day: date, clock: str) -> datetime:
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, seconds, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch, settings):
    """A fake `timezone.now`: `clock.set(day, "23:59:53")`."""
    settings.PANTHEON_TURN_STALE_SECONDS = 600

    class Clock:
        now = moment(EVE, "12:00:00")

        def set(self, day: date, time: str) -> None:
            self.now = moment(day, time)

    fake = Clock()
    monkeypatch.setattr("django.utils.timezone.now", lambda: fake.now)
    return fake


def open_call(user, at: datetime, **fields) -> LlmCallEvent:
    """A call's row as `usage_call_open` writes it just before the call: pending, with its
    input estimate (at the fake clock's time: the model's default is the real clock)."""
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
    clock.set(EVE, "23:59:53")
    call = open_call(owner, clock.now)

    clock.set(NEW_YEAR, "00:00:06")
    lines = rollup_usage()
    clock.set(NEW_YEAR, "00:00:13")
    complete(call)

    assert shown_credits(client, EVE) == (Decimal("0.002115"), Decimal("0.002115"))
    code, output = reconcile_exit()
    assert code == 0, output
    assert "not compared: 2026-12-31 not rolled up yet" in output
    assert rollups_cover_until() == EVE  # the eve had a call in flight
    assert not DailyUsageRollup.objects.filter(day=EVE).exists()
    assert lines[-1] == (
        "Stopped before 2026-12-31: its calls still in flight (pending, or lost and awaiting "
        "their provider's late answer) may change its figures; the pages read it from the "
        "ledger, and the next run rolls it up once they settle."
    )

    clock.set(SECOND, "00:00:06")  # the next night: settled, rolled up
    rollup_usage()
    assert rollups_cover_until() == SECOND
    rolled = DailyUsageRollup.objects.get(day=EVE)
    assert (rolled.input_tokens, rolled.output_tokens) == (29, 11)
    assert rolled.credits == Decimal("0.002115")
    assert reconcile_exit()[0] == 0
    assert shown_credits(client, EVE) == (Decimal("0.002115"), Decimal("0.002115"))


def test_a_lost_call_awaiting_its_providers_late_answer_holds_its_day(clock, owner):
    clock.set(EVE, "23:58:00")
    lost = open_call(owner, clock.now, status=CallStatus.LOST, error_type="lost", attempts=1)
    open_call(  # heard already (its provider recorded): final, holds nothing back
        owner, clock.now, status=CallStatus.LOST, error_type="lost", attempts=1, provider="openai"
    )

    clock.set(NEW_YEAR, "00:01:00")
    rollup_rebuild()
    assert rollups_cover_until() == EVE

    # The provider answers after all: the row takes its usage, once (still lost, no credit).
    LlmCallEvent.objects.filter(pk=lost.pk, provider="").update(
        provider="openai", input_tokens_fresh=29, output_tokens=11, total_tokens=40
    )
    clock.set(NEW_YEAR, "00:02:00")
    result = rollup_rebuild()
    assert (result.until, result.held_back) == (NEW_YEAR, None)
    assert DailyUsageRollup.objects.get(day=EVE).output_tokens == 11


def test_a_row_stuck_pending_past_the_stale_limit_holds_no_day_back(clock, owner):
    """A worker that died mid-call leaves its row pending until `recover_turns` marks it lost
    (which changes none of its figures): past the stale limit no live call can still answer,
    and the rollups go on."""
    clock.set(EVE, "23:59:53")
    open_call(owner, clock.now)

    clock.set(NEW_YEAR, "00:09:52")  # 599 s later: it may still answer
    assert rollup_rebuild().held_back == EVE
    clock.set(NEW_YEAR, "00:09:54")  # 601 s: past the stale limit
    result = rollup_rebuild()

    assert (result.until, result.held_back) == (NEW_YEAR, None)
    assert DailyUsageRollup.objects.get(day=EVE).input_tokens == 36
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
    clock.set(EVE, "23:50:00")
    turn = Turn.objects.create(
        session=session,
        turn_index=1,
        mode="direct",
        status="running",
        user_input="go",
        created_at=clock.now,
        progress_at=clock.now,
    )
    call = open_call(owner, clock.now, turn=turn, session=session)

    clock.set(NEW_YEAR, "00:05:00")  # 900 s on: past the stale limit, its stream still saving
    Turn.objects.filter(pk=turn.pk).update(progress_at=moment(NEW_YEAR, "00:04:58"))
    assert rollup_rebuild().held_back == EVE

    complete(call)
    Turn.objects.filter(pk=turn.pk).update(status="completed")
    clock.set(NEW_YEAR, "00:06:00")
    assert rollup_rebuild().held_back is None
    assert DailyUsageRollup.objects.get(day=EVE).output_tokens > 0
    # The rollups against the ledger (the turn here is a bare row: its totals are not kept).
    assert check_rollups().drift == 0
