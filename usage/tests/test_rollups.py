"""`rollup_usage`: the ledger summed per UTC day, user and alias, rebuilt idempotently."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import psycopg
import pytest
from django.core.management import CommandError, ManagementUtility, call_command
from django.db import connection, transaction

from usage.models import DailyUsageRollup
from usage.rollups import counter_months_rebuild, rollup_rebuild, today

pytestmark = pytest.mark.django_db


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def days():
    """Three whole past days and today."""
    now = today()
    return {"d3": now - timedelta(days=3), "d2": now - timedelta(days=2), "today": now}


@pytest.fixture
def ledger(owner, outsider, ledger_row, days):
    d3, d2 = days["d3"], days["d2"]
    ledger_row(owner, at=at(d3, 0), credits=Decimal("0.1"), provider_cost_usd=Decimal("0.01"))
    ledger_row(
        owner,
        at=at(d3, 23),
        credits=Decimal("0.2"),
        input_tokens_fresh=300,
        input_tokens_cached=50,
        output_tokens=40,
        provider_cost_usd=Decimal("0"),
        priced=False,
    )
    ledger_row(owner, at=at(d3), alias="premium", credits=Decimal("1.5"))
    ledger_row(owner, at=at(d2), status="error", credits=Decimal("0"), output_tokens=0)
    ledger_row(outsider, at=at(d2), credits=Decimal("0.3"))
    ledger_row(owner, at=at(days["today"], 0), credits=Decimal("9"))  # today: not rolled up


def rollups() -> dict:
    return {
        (row.day, row.user.username, row.model_alias): (
            row.llm_calls,
            row.input_tokens,
            row.output_tokens,
            row.credits,
            row.provider_cost_usd,
            row.unpriced_calls,
        )
        for row in DailyUsageRollup.objects.select_related("user")
    }


def test_whole_past_days_are_summed_per_day_user_and_alias(ledger, days):
    result = rollup_rebuild()

    d3, d2 = days["d3"], days["d2"]
    assert rollups() == {
        # 100 + 20 fresh+cached, then 300 + 50; outputs 10 + 40; one of the two unpriced
        (d3, "owner", "deepseek"): (2, 470, 50, Decimal("0.3"), Decimal("0.01"), 1),
        (d3, "owner", "premium"): (1, 120, 10, Decimal("1.5"), Decimal("0.0001"), 0),
        (d2, "owner", "deepseek"): (1, 120, 0, Decimal("0"), Decimal("0.0001"), 0),
        (d2, "outsider", "deepseek"): (1, 120, 10, Decimal("0.3"), Decimal("0.0001"), 0),
    }
    assert (result.rows_written, result.calls, result.until) == (4, 5, days["today"])


def test_a_second_run_gives_the_same_rows(ledger):
    rollup_rebuild()
    first = rollups()

    again = rollup_rebuild()

    assert rollups() == first
    assert (again.rows_removed, again.rows_written) == (4, 4)
    assert DailyUsageRollup.objects.count() == 4


def test_since_rebuilds_only_from_that_day(ledger, days):
    rollup_rebuild()
    older = DailyUsageRollup.objects.filter(day=days["d3"])
    older.update(llm_calls=99)  # tampered, but before --since: left alone

    result = rollup_rebuild(since=days["d2"])

    assert (result.rows_removed, result.rows_written) == (2, 2)
    assert set(older.values_list("llm_calls", flat=True)) == {99}
    assert DailyUsageRollup.objects.filter(day=days["d2"]).count() == 2


def test_a_stray_rollup_for_today_is_removed(ledger, owner, days):
    DailyUsageRollup.objects.create(day=days["today"], user=owner, model_alias="deepseek")

    rollup_rebuild()

    assert not DailyUsageRollup.objects.filter(day=days["today"]).exists()


def test_dry_run_counts_and_writes_nothing(ledger):
    result = rollup_rebuild(dry_run=True)

    assert (result.rows_written, result.calls, result.dry_run) == (4, 5, True)
    assert not DailyUsageRollup.objects.exists()


def test_the_command_prints_one_line_and_is_idempotent(ledger, days):
    out = StringIO()
    call_command("rollup_usage", stdout=out)
    call_command("rollup_usage", stdout=out)

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("Rolled up 5 calls into 4 daily rows (4 replaced) from the first")
    assert DailyUsageRollup.objects.count() == 4

    dry = StringIO()
    call_command("rollup_usage", "--since", str(days["d2"]), "--dry-run", stdout=dry)
    assert dry.getvalue().startswith("Would roll up 2 calls into 2 daily rows (2 replaced)")


def test_verbosity_0_is_quiet_for_cron(ledger):
    """Django's `-v 0` ("minimal output", offered by --help): a nightly run that worked says
    nothing, so cron mails only failures. A dry run still says what it would do."""
    out = StringIO()
    call_command("rollup_usage", verbosity=0, stdout=out)
    assert out.getvalue() == ""
    assert DailyUsageRollup.objects.count() == 4

    call_command("rollup_usage", "--dry-run", verbosity=0, stdout=out)
    assert out.getvalue().startswith("Would roll up 5 calls")


def test_a_bad_since_is_a_clear_error():
    with pytest.raises(CommandError, match="ISO date"):
        call_command("rollup_usage", "--since", "yesterday")


@pytest.mark.parametrize("command", ["rollup_usage", "reconcile_usage"])
# Python's date.fromisoformat took a week date (2026-11-30) and the compact form; the help
# says 2026-11-01, as the billing dashboard takes it.
@pytest.mark.parametrize("since", ["garbage", "2026-W49-1", "20261101", "2026-1-1", "2026-11-1"])
def test_a_bad_since_on_the_command_line_is_one_line_not_a_traceback(command, since, capsys):
    with pytest.raises(CommandError, match=f"argument --since: expected an ISO date.*{since}"):
        call_command(command, "--since", since)

    # As `manage.py` runs it: the parser's usage and one error line, exit status 2.
    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", command, "--since", since]).execute()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"manage.py {command}: error: argument --since: "
        f"expected an ISO date like 2026-11-01, not '{since}'"
    )


@pytest.mark.parametrize("command", ["rollup_usage", "reconcile_usage"])
@pytest.mark.parametrize("since", ["2026-02-30", "2026-13-01", "2025-02-29", "2026-00-10"])
def test_a_since_the_calendar_lacks_is_no_such_day(command, since, capsys):
    """Written as a day, but none: not "expected an ISO date", which it is written as."""
    with pytest.raises(CommandError, match=f"argument --since: {since} is no such day$"):
        call_command(command, "--since", since)

    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", command, "--since", since]).execute()
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"manage.py {command}: error: argument --since: {since} is no such day"
    )


def test_a_since_in_the_future_is_refused_and_nothing_is_rebuilt(ledger, days):
    rollup_rebuild()
    tomorrow = days["today"] + timedelta(days=1)
    DailyUsageRollup.objects.update(llm_calls=99)
    out = StringIO()

    with pytest.raises(CommandError, match=f"--since {tomorrow} is in the future") as refused:
        call_command("rollup_usage", "--since", str(tomorrow), stdout=out)
    assert refused.value.returncode == 2  # a usage error, as a bad date's

    assert out.getvalue() == ""  # no inverted range printed
    assert set(DailyUsageRollup.objects.values_list("llm_calls", flat=True)) == {99}
    call_command("rollup_usage", "--since", str(days["today"]), stdout=out)  # today: still fine


def test_counters_rebuild_from_the_ledger(ledger, owner, days):
    from usage.models import MonthlyUsage
    from usage.selectors import month_credits

    expected = month_credits(user=owner, at=at(days["today"]))
    MonthlyUsage.objects.all().update(credits=Decimal("123"))

    counter_months_rebuild(months=MonthlyUsage.objects.values_list("month", flat=True))

    assert month_credits(user=owner, at=at(days["today"])) == expected
    assert sum(MonthlyUsage.objects.values_list("llm_calls", flat=True)) == 6


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_full_rebuild_neither_waits_for_nor_blocks_the_dashboard(
    ledger, outsider, ledger_row, days
):
    """A full rebuild truncated the rollups: it waited for every dashboard read under way, and
    every dashboard read waited for the whole rebuild (1.5 s at 200,000 ledger rows). It now
    deletes under the lock that only holds off writers: readers go on, and see the rollups as
    they were until the rebuild commits."""
    rollup_rebuild()
    ledger_row(outsider, at=at(days["d3"]), credits=Decimal("0.4"))  # one more rollup row
    table = DailyUsageRollup._meta.db_table
    settings = connection.settings_dict
    with psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
    ) as reader:
        count = f'SELECT count(*) FROM "{table}"'
        before = reader.execute(count).fetchone()[0]  # a dashboard read, its transaction open
        assert before == 4
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            rollup_rebuild()  # a TRUNCATE waited for the read above, and timed out
            reader.commit()
            reader.execute("SET lock_timeout = '2s'")
            # The rebuild has not committed: a read is not held up (a TRUNCATE's lock timed it
            # out) and finds the rollups of before.
            assert reader.execute(count).fetchone()[0] == before
            reader.commit()
        assert reader.execute(count).fetchone()[0] == before + 1
