"""`usage_month_totals`: a month's per-user totals from a shell, for a month-end close a script can
run: the billing dashboard's per-user CSV for the month's days, to the last decimal, as a table, a
CSV or JSON; a month malformed or not begun is a usage error (exit 2), an unknown user exit 1."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import ManagementUtility, call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pantheon.testing.admin import client_for
from usage import dashboard
from usage.models import DailyUsageRollup, LlmCallEvent, RollupCoverage
from usage.rollups import rollup_rebuild
from usage.selectors import month_of, next_month_start
from usage.tests.dashboard import EXPORT

pytestmark = pytest.mark.django_db


def month_bounds() -> tuple[datetime, datetime]:
    """The last calendar month (UTC): its first moment, and the first of this month."""
    this_start = datetime.combine(month_of(), datetime.min.time(), tzinfo=UTC)
    last_start = datetime.combine(month_of(this_start - timedelta(days=1)), datetime.min.time())
    return last_start.replace(tzinfo=UTC), this_start


def totals(*args: str) -> str:
    out = io.StringIO()
    call_command("usage_month_totals", *args, stdout=out)
    return out.getvalue()


def as_json(*args: str) -> dict:
    return json.loads(totals(*args, "--format", "json"))


@pytest.fixture
def month(owner, outsider, ledger_row, django_user_model):
    """Last month's calls of two users, amounts with all the ledger's decimals, one at the
    month's last millisecond, one at this month's first moment, one lost, one failed; a user
    with calls in another month only. Last month's days rolled up."""
    start, end = month_bounds()
    ledger_row(owner, at=start, credits=Decimal("1.2500000001"), provider_cost_usd=Decimal("0.01"))
    ledger_row(
        owner,
        at=start + timedelta(days=3),
        alias="premium",
        credits=Decimal("0.0000725150"),
        provider_cost_usd=Decimal("0.0000000003"),
    )
    ledger_row(owner, at=start + timedelta(days=5), status="lost", credits=Decimal("0"))
    ledger_row(
        owner, at=end - timedelta(milliseconds=1), alias="llama", credits=Decimal("0.125")
    )  # 23:59:59.999 on the last day
    ledger_row(owner, at=end, credits=Decimal("7"))  # 00:00:00 of this month
    ledger_row(
        outsider,
        at=start + timedelta(days=9),
        alias="premium",
        status="error",
        credits=Decimal("4"),
        input_tokens_fresh=7,
        input_tokens_cached=0,
        output_tokens=0,
        priced=False,
    )
    idle = django_user_model.objects.create_user(username="idle", password="idle-pass-123")
    ledger_row(idle, at=start - timedelta(microseconds=1), credits=Decimal("9"))  # the month before
    rollup_rebuild()
    return start, end


def per_user_csv(month_start: datetime, last_day, **filters) -> str:
    """The billing dashboard's per-user CSV of those days, as an Analyst downloads it."""
    analyst = get_user_model().objects.filter(username="analyst").first()
    if analyst is None:
        analyst = get_user_model().objects.create_user(
            "analyst", password="operator-pass-123", is_staff=True
        )
        analyst.groups.add(Group.objects.get(name="Analyst"))
    response = client_for(analyst).get(
        reverse(EXPORT), {"start": month_start.date(), "end": last_day, "rows": "user", **filters}
    )
    assert response.status_code == 200, response.content
    return response.content.decode()


@pytest.mark.parametrize("rolled_up", [True, False], ids=["rollups", "ledger"])
def test_the_csv_is_the_dashboards_per_user_csv_byte_for_byte(month, rolled_up):
    start, end = month
    if not rolled_up:  # the same month read from the ledger (no rollup_usage has run)
        DailyUsageRollup.objects.all().delete()
        RollupCoverage.objects.all().delete()
    last_day = (end - timedelta(days=1)).date()

    out = totals("--month", f"{start:%Y-%m}", "--format", "csv")

    assert out == per_user_csv(start, last_day)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["username"] for row in rows] == ["outsider", "owner"]  # idle: no calls in it
    owner = rows[1]
    # 1.2500000001 + 0.0000725150 + 0 + 0.125: the last millisecond in, this month's 7 out.
    assert owner["credits"] == "1.3750725151"
    assert owner["provider_cost_usd"] == "0.0102000003"  # 0.01 + 0.0000000003 + 2 × 0.0001
    assert owner["llm_calls"] == "4"  # the lost call counted, as the CSV and GET usage count it


def test_table_and_json_give_the_csvs_figures_to_the_last_decimal(month):
    start, end = month
    csv_rows = {
        row["username"]: row
        for row in csv.DictReader(
            io.StringIO(per_user_csv(start, (end - timedelta(days=1)).date()))
        )
    }

    document = as_json("--month", f"{start:%Y-%m}")
    table = totals("--month", f"{start:%Y-%m}").splitlines()

    figures = ["user_id", "llm_calls", "input_tokens", "output_tokens", "credits"]
    figures += ["provider_cost_usd", "unpriced_calls"]
    for user in document["users"]:
        assert {name: str(user[name]) for name in figures} == {
            name: csv_rows[user["username"]][name] for name in figures
        }
        line = next(line for line in table if line.startswith(user["username"] + " "))
        for name in figures:
            assert f" {user[name]}" in line
    assert document["totals"]["credits"] == "5.3750725151"  # owner's 1.3750725151 + outsider's 4
    assert document["totals"]["llm_calls"] == 5 and document["totals"]["users"] == 2
    assert next(line for line in table if line.startswith("TOTAL")).split() == [
        "TOTAL",
        "2",
        "users",
        "5",
        "487",  # 4 × 120 + 7
        "40",
        "0.0103000003",
        "5.3750725151",
        "1",
    ]


@pytest.mark.parametrize("rolled_up", [True, False], ids=["rollups", "ledger"])
def test_a_call_at_the_last_millisecond_is_its_months_and_one_at_midnight_the_next(
    month, rolled_up
):
    start, end = month
    if not rolled_up:
        DailyUsageRollup.objects.all().delete()
        RollupCoverage.objects.all().delete()

    last = as_json("--month", f"{start:%Y-%m}", "--user", "owner")
    this = as_json("--month", f"{end:%Y-%m}", "--user", "owner")

    assert [user["llm_calls"] for user in last["users"]] == [4]
    assert [user["credits"] for user in this["users"]] == ["7.0000000000"]
    assert (last["from"], last["to"]) == (
        start.date().isoformat(),
        (end - timedelta(days=1)).date().isoformat(),
    )
    assert last["under_way"] is False and this["under_way"] is True
    assert this["to"] == (next_month_start(end) - timedelta(days=1)).date().isoformat()


def test_json_parses_with_amounts_as_exact_decimal_strings(month):
    start, _ = month

    text = totals("--month", f"{start:%Y-%m}", "--format", "json")
    document = json.loads(text, parse_float=lambda value: pytest.fail(f"a float: {value}"))

    assert document["month"] == f"{start:%Y-%m}"
    owner = next(user for user in document["users"] if user["username"] == "owner")
    assert owner["credits"] == "1.3750725151" and isinstance(owner["llm_calls"], int)
    assert Decimal(document["totals"]["provider_cost_usd"]) == sum(
        Decimal(user["provider_cost_usd"]) for user in document["users"]
    )


def test_a_user_without_calls_in_the_month_has_no_row_and_totals_of_zero(month):
    start, _ = month

    document = as_json("--month", f"{start:%Y-%m}", "--user", "idle")
    table = totals("--month", f"{start:%Y-%m}", "--user", "idle")

    assert document["users"] == [] and document["user"] == "idle"
    assert document["totals"]["credits"] == "0.0000000000" and document["totals"]["users"] == 0
    assert "idle" not in [
        user["username"] for user in as_json("--month", f"{start:%Y-%m}")["users"]
    ]
    assert table.splitlines()[1].split()[:4] == ["TOTAL", "0", "users", "0"]


def test_an_unknown_user_is_exit_1_and_a_one_line_error(month):
    start, _ = month

    with pytest.raises(CommandError) as refused:
        totals("--month", f"{start:%Y-%m}", "--user", "nobody")

    assert refused.value.returncode == 1
    assert str(refused.value) == "No user has the username 'nobody'."


def next_month() -> str:
    return f"{next_month_start():%Y-%m}"


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("2026-13", "2026-13 is no such month"),
        ("2026-00", "2026-00 is no such month"),
        ("2026-1", "expected a month written as 2026-11, not '2026-1'"),
        ("2026-11-01", "expected a month written as 2026-11, not '2026-11-01'"),
        ("202611", "expected a month written as 2026-11, not '202611'"),
        (next_month, "has not begun: nothing to report yet (this month is"),
    ],
)
def test_a_month_malformed_or_not_begun_is_the_parsers_one_line_error_exit_2(typed, error, capsys):
    typed = typed() if callable(typed) else typed

    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", "usage_month_totals", "--month", typed]).execute()

    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("manage.py usage_month_totals: error: argument --month: "), last
    assert error in last


def test_it_writes_nothing_not_even_the_rollups_cache(month, monkeypatch):
    """The dashboard keeps the rollups' sums in the cache, a database table on a server: the
    command reads them with the same query, and keeps nothing."""
    start, _ = month
    monkeypatch.setattr(
        dashboard.cache, "get_or_set", lambda *a, **k: pytest.fail("wrote to the cache")
    )
    ledger_rows = LlmCallEvent.objects.count()

    with CaptureQueriesContext(connection) as queries:
        totals("--month", f"{start:%Y-%m}", "--format", "json")

    writes = [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes == []
    assert LlmCallEvent.objects.count() == ledger_rows


def test_a_host_ahead_at_the_months_end_says_the_month_still_under_way(owner, monkeypatch):
    """The database's clock stamps the ledger: a host whose clock already read the next month
    said the month closed ("under_way": false, no "under way" in the summary) while its calls
    went on coming in, and took the next month for begun (its report of zeros)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        database_now = cursor.fetchone()[0]
    this_month = month_of(database_now)
    real = timezone.now
    ahead = next_month_start(database_now) - database_now + timedelta(seconds=30)
    monkeypatch.setattr(timezone, "now", lambda: real() + ahead)

    assert as_json("--month", f"{this_month:%Y-%m}")["under_way"] is True
    assert "; under way: to now)" in totals("--month", f"{this_month:%Y-%m}")
    with pytest.raises(CommandError, match="has not begun") as refused:
        call_command("usage_month_totals", month=f"{month_of(real() + ahead):%Y-%m}")
    assert refused.value.returncode == 2


def test_the_tables_columns_line_up_after_a_username_in_wide_characters(ledger_row):
    """A terminal gives 张 two columns: padded by its length, the row of 张伟 had its figures two
    columns right of the others' for each character of the name."""
    start, _ = month_bounds()
    for name in ("zhang", "张伟", "zoe\u0308"):
        user = get_user_model().objects.create_user(name)
        ledger_row(user, at=start + timedelta(days=1))

    table = totals("--month", f"{start:%Y-%m}").splitlines()[:5]

    def shown(line: str, end: str) -> int:
        """The terminal column `end` (the user id column's last cell) ends at."""
        before = line[: line.index(end) + len(end)]
        return sum(
            2 if "\u4e00" <= char <= "\u9fff" else 0 if char == "\u0308" else 1 for char in before
        )

    ends = [
        shown(line, line.split()[1] if not line.startswith("TOTAL") else "users") for line in table
    ]
    assert table[0].startswith("username") and len(set(ends)) == 1
