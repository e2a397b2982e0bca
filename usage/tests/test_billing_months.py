"""Closing a month from the billing dashboard: the calendar months (UTC) one click away, and each
user's totals for a month in one CSV row, equal to the ledger, the monthly counter and
`GET usage` of that month."""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, F, Sum
from django.urls import reverse

from pantheon.testing.admin import client_for
from usage.models import LlmCallEvent, MonthlyUsage
from usage.rollups import rollup_rebuild, today
from usage.selectors import month_of
from usage.tests.dashboard import DASHBOARD, EXPORT

pytestmark = pytest.mark.django_db


def last_month() -> tuple[datetime, datetime]:
    """The last calendar month (UTC): its first moment, and the first of this month."""
    this_start = datetime.combine(month_of(), datetime.min.time(), tzinfo=UTC)
    return datetime.combine(month_of(this_start - timedelta(days=1)), datetime.min.time(), UTC), (
        this_start
    )


@pytest.fixture
def closed_month(owner, outsider, ledger_row):
    """Last month's calls of two users on three aliases, one at its last moment and one at
    this month's first (a turn across midnight), one lost; rolled up."""
    start, end = last_month()
    ledger_row(owner, at=start, credits=Decimal("1.25"), provider_cost_usd=Decimal("0.01"))
    ledger_row(owner, at=start + timedelta(days=3), alias="premium", credits=Decimal("2.5"))
    ledger_row(owner, at=end - timedelta(microseconds=1), alias="llama", credits=Decimal("0.125"))
    ledger_row(owner, at=end, credits=Decimal("7"))  # this month's
    ledger_row(owner, at=start + timedelta(days=5), status="lost", credits=Decimal("0"))
    ledger_row(outsider, at=start + timedelta(days=9), alias="premium", credits=Decimal("4"))
    ledger_row(outsider, at=start - timedelta(microseconds=1), credits=Decimal("9"))  # before
    rollup_rebuild()
    return start, end


def test_the_per_user_export_has_each_users_month_as_ledger_counter_and_api_say(
    make_operator, closed_month, owner, outsider
):
    start, end = closed_month
    last_day = (end - timedelta(days=1)).date()
    response = client_for(make_operator("Analyst")).get(
        reverse(EXPORT), {"start": start.date(), "end": last_day, "rows": "user"}
    )

    assert response.status_code == 200
    assert (
        f"pantheon-usage-per-user-{start.date()}-to-{last_day}.csv"
        in (response["Content-Disposition"])
    )
    header, *data = list(csv.reader(io.StringIO(response.content.decode())))
    assert header == [
        "username",
        "llm_calls",
        "input_tokens",
        "output_tokens",
        "credits",
        "provider_cost_usd",
        "unpriced_calls",
        "user_id",
    ]
    assert [row[0] for row in data] == ["outsider", "owner"]  # one row each, by name
    ledger = {
        row["user__username"]: row
        for row in LlmCallEvent.objects.filter(created_at__gte=start, created_at__lt=end)
        .values("user__username")
        .annotate(
            calls=Count("id"),
            tokens_in=Sum(F("input_tokens_fresh") + F("input_tokens_cached")),
            credits=Sum("credits"),
            cost=Sum("provider_cost_usd"),
        )
    }
    for row in data:
        sums = ledger[row[0]]
        assert (int(row[1]), int(row[2]), Decimal(row[4]), Decimal(row[5])) == (
            sums["calls"],
            sums["tokens_in"],
            sums["credits"],
            sums["cost"],
        )
    owner_row = next(row for row in data if row[0] == "owner")
    assert owner_row[4] == "3.8750000000"  # 1.25 + 2.5 + 0.125: not the 7 of this month
    assert owner_row[-1] == str(owner.pk)
    # The month's counter, which the caps read, and `GET usage` of that month say the same.
    counters = dict(
        MonthlyUsage.objects.filter(month=start.date()).values_list("user__username", "credits")
    )
    assert {row[0]: Decimal(row[4]) for row in data} == counters
    for user, row in ((owner, owner_row), (outsider, data[0])):
        api = client_for(user).get("/api/v1/usage", {"from": start.date().isoformat()}).json()
        assert Decimal(api["credits_used"]) == Decimal(row[4])
        assert sum(model["llm_calls"] for model in api["by_model"]) == int(row[1])


def test_the_per_user_export_takes_the_dashboards_filters(make_operator, closed_month):
    start, end = closed_month
    client = client_for(make_operator("Owner", "boss"))
    query = {"start": start.date(), "end": (end - timedelta(days=1)).date(), "rows": "user"}

    rows = list(csv.reader(io.StringIO(client.get(reverse(EXPORT), query).content.decode())))
    assert [row[0] for row in rows[1:]] == ["outsider", "owner"]
    response = client.get(reverse(EXPORT), {**query, "user": "owner", "alias": "premium"})
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert [(row[0], row[4]) for row in rows[1:]] == [("owner", "2.5000000000")]


def test_rows_other_than_per_user_are_a_400_that_says_what_it_takes(make_operator):
    response = client_for(make_operator("Analyst")).get(reverse(EXPORT), {"rows": "alias"})

    assert response.status_code == 400
    assert response.content.decode() == "rows is 'user' (one row per user) or left out."


def test_the_dashboard_links_this_and_last_calendar_month_with_its_filters(
    make_operator, closed_month
):
    start, end = closed_month
    page = (
        client_for(make_operator("Analyst"))
        .get(reverse(DASHBOARD), {"user": "owner", "alias": "premium"})
        .content.decode()
    )

    billing = reverse(DASHBOARD)
    last_day = (end - timedelta(days=1)).date()
    assert (
        f'id="last-month" href="{billing}?start={start.date()}&amp;end={last_day}'
        "&amp;user=owner&amp;alias=premium"
    ) in page
    assert (
        f'id="this-month" href="{billing}?start={end.date()}&amp;end={today()}'
        "&amp;user=owner&amp;alias=premium"
    ) in page
    export = reverse(EXPORT)
    assert "Per-user CSV</a>" in page
    assert f'href="{export}?start=' in page and "&amp;rows=user" in page


def test_last_month_on_the_dashboard_is_the_months_invoice(make_operator, closed_month):
    start, end = closed_month
    client = client_for(make_operator("Analyst"))
    last_day = (end - timedelta(days=1)).date()

    page = client.get(
        reverse(DASHBOARD), {"start": start.date(), "end": last_day, "user": "owner"}
    ).content.decode()

    assert '<span class="figure" id="total-credits" style="--chars: 6">3.8750</span>' in page


def test_monthly_usage_says_its_calls_are_completed_ones_and_opens_the_months_billing(
    make_operator, closed_month
):
    """The counter counts completed calls, the dashboard every call, a lost one too (owner's
    last month: 3 completed, 4 in all): the list says which it counts, and leads to the
    month's figures on the dashboard, whose footnote says why they differ."""
    start, end = closed_month
    client = client_for(make_operator("Analyst"))

    listed = client.get(
        reverse("admin:usage_monthlyusage_changelist"),
        {"month": start.date().isoformat(), "username": "owner"},
    ).content.decode()

    assert "Completed calls" in listed
    assert '<td class="field-calls">3</td>' in listed
    last_day = (end - timedelta(days=1)).date()
    link = f"{reverse(DASHBOARD)}?user=owner&amp;start={start.date()}&amp;end={last_day}"
    assert f'<a href="{link}">the month on the billing dashboard</a>' in listed
    dashboard = client.get(link.replace("&amp;", "&")).content.decode()
    assert '<span class="figure" id="total-calls">4</span>' in dashboard
    assert '<span class="figure" id="total-credits" style="--chars: 6">3.8750</span>' in dashboard
    assert "the monthly counters do not count it among their calls" in dashboard
