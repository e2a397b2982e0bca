"""How far the rollups reach (`RollupCoverage`): a day the rollups never held is read from the
ledger, and `rollup_usage --since` never leaves a day out. An operations tester following the
README's nightly `rollup_usage --since` (two days back) on a ledger with history got a
billing page, and a ledger list, that read the older days as empty."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Sum
from django.urls import reverse

from pantheon.testing.admin import client_for
from pantheon.testing.concurrency import finished, in_thread, someone_waits_on_a_lock
from usage.models import DailyUsageRollup, LlmCallEvent, RollupCoverage
from usage.rollups import rollup_days_rebuild, rollup_rebuild, rollups_cover_until, today
from usage.tests.dashboard import DASHBOARD, LEDGER, at

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(owner, outsider, ledger_row):
    """Calls 40, 20 and 3 days back, yesterday and today, none rolled up yet."""
    for days_ago, credits in [(40, "1"), (20, "2"), (3, "4"), (1, "8"), (0, "16")]:
        ledger_row(owner, at=at(days_ago), credits=Decimal(credits))
    ledger_row(outsider, at=at(20, 1), credits=Decimal("32"))


def ledger_credits(since_days_ago: int) -> Decimal:
    return LlmCallEvent.objects.filter(created_at__gte=at(since_days_ago, 0)).aggregate(
        total=Sum("credits")
    )["total"]


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command("rollup_usage", *args, stdout=out)
    return out.getvalue().splitlines()


def test_a_first_nightly_run_with_since_rolls_up_from_the_first_call(history, make_operator):
    lines = run("--since", str(today() - timedelta(days=2)))

    assert lines[0].startswith("Rolled up 5 calls into 5 daily rows (0 replaced) from the first")
    assert lines[1] == (
        f"Begun at the first call (no rollup had been made), not at --since "
        f"{today() - timedelta(days=2)}: the rollups leave out no day in between."
    )
    assert rollups_cover_until() == today()
    assert DailyUsageRollup.objects.aggregate(calls=Sum("llm_calls"))["calls"] == 5

    client = client_for(make_operator("Analyst"))
    report = client.get(reverse(DASHBOARD), {"start": at(45).date()}).context["report"]
    assert (report.totals.llm_calls, report.totals.credits) == (6, ledger_credits(45))
    listed = client.get(reverse(LEDGER))
    assert listed.context["cl"].result_count == 6
    assert listed.context["ledger_sums"]["credits"] == Decimal("63")


def test_a_since_after_the_rollups_end_begins_at_their_end(history):
    rollup_rebuild()
    # Two nights missed: the rollups end five days back.
    five_back = today() - timedelta(days=5)
    DailyUsageRollup.objects.filter(day__gte=five_back).delete()
    RollupCoverage.objects.filter(pk=1).update(until=five_back)

    lines = run("--since", str(today() - timedelta(days=2)))

    assert lines[0].startswith(f"Rolled up 2 calls into 2 daily rows (0 replaced) from {five_back}")
    assert lines[1].startswith(f"Begun at their end, {five_back}, not at --since")
    assert DailyUsageRollup.objects.aggregate(calls=Sum("llm_calls"))["calls"] == 5

    # A since the rollups reach is taken as asked.
    assert run("--since", str(today() - timedelta(days=2)))[1:] == []


def test_rollups_no_coverage_vouches_for_are_not_read(history, owner, make_operator):
    """A database migrated with rollups and no record of their reach (before the first
    rollup_usage of the new code): the ledger alone, though slower."""
    rollup_rebuild()
    DailyUsageRollup.objects.filter(day=at(20).date()).delete()  # a gap nothing recorded
    RollupCoverage.objects.all().delete()

    client = client_for(make_operator("Analyst"))
    report = client.get(reverse(DASHBOARD), {"start": at(45).date()}).context["report"]
    assert report.totals.credits == ledger_credits(45) == Decimal("63")
    assert report.ledger_from == at(45).date()
    assert client.get(reverse(LEDGER)).context["cl"].result_count == 6


def test_a_ledger_list_whose_count_fell_behind_its_rows_still_shows_one_page(
    history, owner, ledger_row, make_operator
):
    """Rows written on a day already rolled up (by hand, as the tester did) are not in the
    rollups' count: the list said "6 results" for 6 + 150 rows and rendered every one of them
    unsliced, as Django does a list its count fits on one page."""
    rollup_rebuild()
    for minute in range(150):
        ledger_row(owner, at=at(3).replace(minute=minute % 60, second=minute // 60))

    page = client_for(make_operator("Analyst")).get(reverse(LEDGER))

    changelist = page.context["cl"]
    assert changelist.result_count == 6  # from the rollups (reconcile_usage reports the drift)
    assert len(list(changelist.result_list)) == changelist.list_per_page == 100


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_fix_that_waited_for_the_nightly_run_does_not_move_the_rollups_end_back(history):
    """`reconcile_usage --fix` read the rollups' end before it took the rebuild's lock: run
    while the nightly `rollup_usage` rebuilt them to today, it waited, then rebuilt them to the
    end it had read, two days back, dropping the days the nightly run had just rolled up (the
    billing pages then read them from the ledger again, slower, until the next night)."""
    two_back = today() - timedelta(days=2)
    rollup_rebuild(until=two_back)
    DailyUsageRollup.objects.filter(day=at(20).date()).update(llm_calls=99)  # a drift to fix

    with transaction.atomic():
        # The nightly run, under way: it holds the rebuild's lock until it commits.
        connection.cursor().execute(
            f'LOCK TABLE "{DailyUsageRollup._meta.db_table}" IN EXCLUSIVE MODE'
        )
        fixing, outcome = in_thread(
            lambda: call_command("reconcile_usage", "--fix", stdout=StringIO())
        )
        assert someone_waits_on_a_lock(), "the fix never waited for the nightly run"
        rollup_rebuild()
    finished(fixing)

    assert not isinstance(outcome[0], Exception), outcome
    assert rollups_cover_until() == today()
    calls = DailyUsageRollup.objects.values("day").annotate(calls=Sum("llm_calls"))
    assert {row["day"]: row["calls"] for row in calls} == {
        at(40).date(): 1,
        at(20).date(): 2,  # the drift fixed
        at(3).date(): 1,
        at(1).date(): 1,  # rolled up by the nightly run, and kept
    }


def test_every_rewrite_moves_what_the_dashboard_caches_under_even_on_a_still_clock(
    history, monkeypatch
):
    """The dashboard keys its cache of the rollups' sums on `rebuilt_at`: a repair of a few
    days moved nothing, nor did two rebuilds within one tick of the clock."""
    rollup_rebuild()
    still = RollupCoverage.objects.get(pk=1).rebuilt_at
    monkeypatch.setattr("django.utils.timezone.now", lambda: still)
    stamps = [still]
    for rewrite in (
        rollup_rebuild,
        lambda: rollup_days_rebuild(days=[today() - timedelta(days=3)]),
        lambda: rollup_days_rebuild(days=[today() - timedelta(days=3)], dry_run=True),
    ):
        rewrite()
        stamps.append(RollupCoverage.objects.get(pk=1).rebuilt_at)

    assert stamps[0] < stamps[1] < stamps[2] == stamps[3]  # a dry run rewrites nothing
    assert rollups_cover_until() == today()
