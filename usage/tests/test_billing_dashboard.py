"""The billing dashboard, its CSV export and the ledger list: figures equal the ledger, access
follows the roles, and query counts stay flat as the ledger grows."""

import csv
import io
import re
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, F, Q, Sum
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pantheon.testing.admin import client_for
from sessions_app.models import Turn
from usage.charts import daily_bar_chart
from usage.dashboard import billing_report
from usage.models import LlmCallEvent
from usage.reconcile import reconcile
from usage.rollups import rollup_rebuild, today
from usage.tests.dashboard import DASHBOARD, EXPORT, LEDGER, at
from usage.tests.factories import ledger_event

pytestmark = pytest.mark.django_db

TURNS = "admin:sessions_app_turn_changelist"


@pytest.fixture
def ledger(owner, outsider, ledger_row):
    """Calls on past days and today, two users, three aliases, one unpriced call; rolled up."""
    ledger_row(owner, at=at(40), credits=Decimal("100"))  # outside the default 30 days
    ledger_row(owner, at=at(29, 0), credits=Decimal("0.5"), provider_cost_usd=Decimal("0.002"))
    ledger_row(owner, at=at(10), alias="premium", credits=Decimal("2.25"), output_tokens=400)
    ledger_row(
        owner,
        at=at(10, 23),
        alias="llama",
        credits=Decimal("0.125"),
        priced=False,
        provider_cost_usd=Decimal("0"),
    )
    ledger_row(outsider, at=at(3), credits=Decimal("1.5"), input_tokens_fresh=1000)
    ledger_row(outsider, at=at(1, 23), alias="premium", credits=Decimal("4"))
    rollup_rebuild()
    ledger_row(owner, at=at(0, 0), credits=Decimal("0.75"))  # today: only in the ledger
    ledger_row(outsider, at=at(0, 1), alias="premium", credits=Decimal("3"))


def ledger_sums(since_days_ago: int = 29, **filters) -> dict:
    """Per (username, alias) sums straight from the ledger, for the days since then."""
    rows = (
        LlmCallEvent.objects.filter(created_at__gte=at(since_days_ago, 0), **filters)
        .values("user__username", "model_alias")
        .annotate(
            calls=Count("id"),
            input_tokens=Sum(F("input_tokens_fresh") + F("input_tokens_cached")),
            output_tokens=Sum("output_tokens"),
            credits=Sum("credits"),
            cost=Sum("provider_cost_usd"),
            unpriced=Count("id", filter=Q(priced=False)),
        )
    )
    return {
        (row["user__username"], row["model_alias"]): (
            row["calls"],
            row["input_tokens"],
            row["output_tokens"],
            row["credits"],
            row["cost"],
            row["unpriced"],
        )
        for row in rows
    }


def report_sums(report) -> dict:
    return {
        (row.username, row.model_alias): (
            row.figures.llm_calls,
            row.figures.input_tokens,
            row.figures.output_tokens,
            row.figures.credits,
            row.figures.provider_cost_usd,
            row.figures.unpriced_calls,
        )
        for row in report.rows
    }


# --- the dashboard ------------------------------------------------------------------------------


def test_the_last_30_days_per_user_and_alias_equal_the_ledger(make_operator, ledger):
    response = client_for(make_operator("Analyst")).get(reverse(DASHBOARD))

    assert response.status_code == 200
    report = response.context["report"]
    assert (report.start, report.end) == (today() - timedelta(days=29), today())
    assert report_sums(report) == ledger_sums()
    assert report.totals.credits == Decimal("12.125")  # 100 is 40 days old
    assert report.totals.llm_calls == 7
    assert report.totals.unpriced_calls == 1
    assert report.ledger_from == today()  # rollups cover every past day
    page = response.content.decode()
    assert 'id="daily-credits-chart"' in page and "<svg" in page
    assert page.count('<rect class="bar') == 30  # today's is highlighted
    assert ">12.1250<" in page  # the total credits, to 4 places as the ledger writes them
    assert "Export CSV" in page


def test_the_chart_has_one_bar_per_day_with_that_days_credits(make_operator, ledger):
    report = client_for(make_operator("Analyst")).get(reverse(DASHBOARD)).context["report"]

    daily = dict(report.daily_credits)
    assert len(daily) == 30
    assert daily[today()] == Decimal("3.75")
    assert daily[today() - timedelta(days=10)] == Decimal("2.375")
    assert daily[today() - timedelta(days=5)] == Decimal("0")
    assert sum(daily.values()) == report.totals.credits


def test_the_charts_figures_are_a_table_too_and_the_tables_are_named(make_operator, ledger):
    """A screen reader reads the chart as one image and reaches no bar's tooltip, nor does a
    keyboard: each day's credits are in a table beside it, captioned, its days row headers.
    The usage table is named by its heading."""
    page = client_for(make_operator("Analyst")).get(reverse(DASHBOARD)).content.decode()

    table = re.search(r'<table id="daily-credits-table".*?</table>', page, re.S)
    assert table, "no table of the chart's figures"
    table_html = table.group(0)
    start, end = today() - timedelta(days=29), today()
    assert (
        f"<caption>Credits per day, {start:%Y-%m-%d} – {end:%Y-%m-%d} (UTC)</caption>" in table_html
    )
    days = re.findall(
        r'<tr><th scope="row">([^<]*)</th><td class="num">([^<]*)</td></tr>', table_html
    )
    assert len(days) == 30
    assert days[-1] == (f"{today():%Y-%m-%d} (so far)", "3.7500")
    assert (f"{today() - timedelta(days=10):%Y-%m-%d}", "2.3750") in days
    assert '<th scope="col">Day</th><th scope="col" class="num">Credits</th>' in table_html
    assert '<h2 id="usage-table-title">Usage per user and model</h2>' in page
    assert 'aria-labelledby="usage-table-title"' in page
    # The card clips its overflow: the table scrolls in a region of its own, a keyboard's too.
    assert re.search(
        r'<div class="pantheon-table-scroll" role="region" aria-labelledby="usage-table-title"'
        r' tabindex="0">\s*<table id="usage-table"',
        page,
    )


def test_without_recent_rollups_the_ledger_fills_the_gap(make_operator, ledger):
    from usage.models import DailyUsageRollup, RollupCoverage

    # The last rollup ran five days ago: the days since are in the ledger alone.
    last_run = today() - timedelta(days=5)
    DailyUsageRollup.objects.filter(day__gte=last_run).delete()
    RollupCoverage.objects.filter(pk=1).update(until=last_run)

    report = client_for(make_operator("Analyst")).get(reverse(DASHBOARD)).context["report"]

    assert report_sums(report) == ledger_sums()
    assert report.ledger_from == last_run  # the first day the rollups do not hold


def test_user_alias_and_date_filters(make_operator, ledger, outsider):
    client = client_for(make_operator("Analyst"))
    start, end = today() - timedelta(days=10), today() - timedelta(days=1)

    report = client.get(
        reverse(DASHBOARD), {"start": start, "end": end, "alias": "premium"}
    ).context["report"]
    assert {key: value[3] for key, value in report_sums(report).items()} == {
        ("owner", "premium"): Decimal("2.25"),
        ("outsider", "premium"): Decimal("4"),
    }

    report = client.get(reverse(DASHBOARD), {"user": "outsider"}).context["report"]
    assert report_sums(report) == ledger_sums(user=outsider)


@pytest.fixture
def bob_and_Bob(ledger_row, django_user_model, make_session):  # noqa: N802
    """Two users whose names differ only in case (Django's usernames are case-sensitive)."""
    bob = django_user_model.objects.create_user("bob")
    Bob = django_user_model.objects.create_user("Bob")  # noqa: N806
    for user, credits in ((bob, "1"), (Bob, "20")):
        session = make_session(user, title=f"{user.username}'s session")
        turn = Turn.objects.create(session=session, turn_index=1, mode="manual", user_input="hi")
        ledger_row(user, at=at(3), credits=Decimal(credits), session=session, turn=turn)
    rollup_rebuild()
    for user, credits in ((bob, "2"), (Bob, "40")):
        ledger_row(user, at=at(0, 0), credits=Decimal(credits))  # today: only in the ledger
    return bob, Bob


def test_a_username_filter_names_one_user_not_every_case_of_it(make_operator, bob_and_Bob):
    """`bob` and `Bob` are two users: filtered by `bob`, Bob's calls were summed in."""
    bob, _ = bob_and_Bob
    client = client_for(make_operator("Analyst"))

    response = client.get(reverse(DASHBOARD), {"user": "bob"})
    report = response.context["report"]
    assert [row.username for row in report.rows] == ["bob"]
    assert report.totals.credits == Decimal("3")
    assert "unknown-user" not in response.content.decode()
    # The row's link opens the same calls in the ledger.
    ledger = client.get(response.context["rows"][0]["ledger_url"])
    assert {event.user for event in ledger.context["cl"].result_list} == {bob}
    assert ledger.context["ledger_sums"]["credits"] == Decimal("3")

    export = client.get(reverse(EXPORT), {"user": "bob"}).content.decode()
    assert [row[0] for row in csv.reader(io.StringIO(export))][1:] == ["bob"]

    sums = client.get(reverse(LEDGER), {"username": "bob"}).context["ledger_sums"]
    assert (sums["llm_calls"], sums["credits"]) == (2, Decimal("3"))
    sums = client.get(reverse(LEDGER), {"username": "bob", "status": "success"}).context[
        "ledger_sums"
    ]
    assert (sums["llm_calls"], sums["credits"]) == (2, Decimal("3"))
    for name in (TURNS, "admin:sessions_app_session_changelist"):
        listed = client.get(reverse(name), {"username": "bob"}).context["cl"].result_list
        assert len(listed) == 1, name

    nobody = client.get(reverse(DASHBOARD), {"user": "BOB"})
    assert nobody.context["report"].rows == []
    assert "No user is named “BOB”" in nobody.content.decode()


def test_a_username_nobody_has_is_said_so_on_the_ledger_and_refused_by_the_export(
    make_operator, ledger
):
    """The ledger list read as a user without calls (sums of 0, an empty list) and the export
    gave a file of its header alone, where the dashboard says "No user is named …"."""
    client = client_for(make_operator("Analyst"))

    listed = client.get(reverse(LEDGER), {"username": "nosuch", "status": "success"})
    export = client.get(reverse(EXPORT), {"user": "nosuch"})
    dashboard = client.get(reverse(DASHBOARD), {"user": "nosuch"}).content.decode()
    known = client.get(reverse(LEDGER), {"username": "owner"})

    said = [str(message) for message in listed.context["messages"]]
    assert said == ["No user is named “nosuch”: nothing below is theirs."]
    assert list(listed.context["cl"].result_list) == []
    assert [str(message) for message in known.context["messages"]] == []
    assert export.status_code == 400
    assert export["Content-Type"] == "text/plain; charset=utf-8"
    assert export.content.decode() == (
        "No user is named “nosuch”: there are no calls of theirs to export."
    )
    assert "pantheon-export" not in dashboard  # no button to that refusal
    assert "pantheon-export" in client.get(reverse(DASHBOARD)).content.decode()


@pytest.mark.parametrize(
    "query",
    [
        {"start": "2026-02-30"},
        {"start": "2026-11-20", "end": "2026-11-01"},
        {"start": "2020-01-01", "end": "2026-01-01"},
        {"alias": "no-such-alias"},
        # Days at the calendar's edges overflowed the window's arithmetic: 500s.
        {"start": "9999-12-01", "end": "9999-12-31"},
        {"end": "0001-01-05"},
        {"start": "0001-01-01", "end": "0001-01-01"},
    ],
)
def test_bad_filters_are_a_400_with_the_reason_on_the_page(make_operator, query):
    response = client_for(make_operator("Analyst")).get(reverse(DASHBOARD), query)
    export = client_for(make_operator("Analyst", "analyst2")).get(reverse(EXPORT), query)

    assert export.status_code == 400
    assert response.status_code == 400
    page = response.content.decode()
    assert 'class="errorlist' in page
    assert "report" not in response.context
    assert "<title>Error: Billing |" in page
    if "alias" in query:
        assert "The model alias no-such-alias is no alias of this list." in page
    # An input marked invalid names, by its aria-describedby, the list that says why.
    for described in re.findall(r'aria-invalid="true" aria-describedby="([^"]+)"', page):
        assert re.search(rf'<ul class="errorlist[^"]*" id="{described}"><li>', page), described


def test_active_users_count_distinct_users_with_turns(
    make_operator, owner, outsider, make_agent, make_session
):
    def turn_by(user, days_ago: int, index: int) -> None:
        session = make_session(user, agent=make_agent(user, f"a{index}"))
        Turn.objects.create(
            session=session,
            turn_index=1,
            mode="direct",
            status="completed",
            user_input="x",
            created_at=at(days_ago),
        )

    turn_by(owner, 0, 1)
    turn_by(owner, 0, 2)  # the same user twice today
    turn_by(outsider, 5, 3)
    turn_by(make_operator("Analyst", "third"), 20, 4)
    turn_by(make_operator("Owner", "fourth"), 45, 5)

    report = client_for(make_operator("Analyst")).get(reverse(DASHBOARD)).context["report"]

    assert report.active_users == {"DAU": 1, "WAU": 2, "MAU": 3}


def test_active_users_of_a_range_that_ends_later_are_counted_back_from_today(
    make_operator, owner, make_agent, make_session
):
    """With a last day to come, day and week were counted back from it ("0 · 0 · 1" with
    someone active today): they are counted from today, and the card says so."""
    Turn.objects.create(
        session=make_session(owner, agent=make_agent(owner, "ada")),
        turn_index=1,
        mode="direct",
        status="completed",
        user_input="x",
        created_at=at(0),
    )
    client = client_for(make_operator("Analyst"))
    later = (today() + timedelta(days=10)).isoformat()

    ending_later = client.get(reverse(DASHBOARD), {"end": later})
    ending_today = client.get(reverse(DASHBOARD))

    assert ending_later.context["report"].active_users == {"DAU": 1, "WAU": 1, "MAU": 1}
    page = ending_later.content.decode()
    assert ">1 · 1 · 1</span>" in page
    assert "day · week · month to today, all users" in page
    assert f"Users who posted a turn on {today().isoformat()}," in page
    assert "day · week · month, all users" in ending_today.content.decode()


def test_a_range_wholly_to_come_speaks_of_no_bar_of_today(make_operator, owner, ledger_row):
    """A range of days still to come said its figures came "(today, the lighter bar: the day
    so far)" straight from the ledger, and counted users "to today" as if the range reached
    it; with or without rollups alike."""
    client = client_for(make_operator("Analyst"))
    days = {
        "start": (today() + timedelta(days=10)).isoformat(),
        "end": (today() + timedelta(days=20)).isoformat(),
    }

    without_rollups = client.get(reverse(DASHBOARD), days).content.decode()
    ledger_row(owner, at=at(3), credits=Decimal("1"))
    rollup_rebuild()
    with_rollups = client.get(reverse(DASHBOARD), days).content.decode()

    for page in (without_rollups, with_rollups):
        source = re.search(r'id="figures-source">(.*?)</p>', page).group(1)
        assert source == "These days are still to come: the ledger has no calls of them yet."
        assert "day · week · month to today (this range is still to come), all users" in page
        assert 'class="bar today"' not in page


@pytest.mark.parametrize(
    "given, shown",
    [
        ({"end": "2026-12-31"}, {"start": "2026-12-02", "end": "2026-12-31"}),
        ({"start": "10 days ago"}, {"start": "10 days ago", "end": "today"}),
        ({}, {"start": "30 days ago", "end": "today"}),
        (
            {"start": "2026-11-01", "end": "2026-11-03"},
            {"start": "2026-11-01", "end": "2026-11-03"},
        ),
    ],
)
def test_the_date_boxes_show_the_days_the_page_reports(make_operator, given, shown):
    """Given only the last day, the heading read 2026-12-02 – 2026-12-31 above an empty From
    box."""
    named = {
        "today": today(),
        "10 days ago": today() - timedelta(days=10),
        "30 days ago": today() - timedelta(days=29),
    }
    given = {key: str(named.get(value, value)) for key, value in given.items()}
    shown = {key: str(named.get(value, value)) for key, value in shown.items()}

    response = client_for(make_operator("Analyst")).get(reverse(DASHBOARD), given)

    page = response.content.decode()
    boxes = dict(re.findall(r'<input type="date" name="(start|end)" value="([^"]*)"', page))
    assert boxes == shown
    assert f"{shown['start']} – {shown['end']}" in page


# --- access -------------------------------------------------------------------------------------


def test_who_may_open_the_dashboard_and_the_export(client, make_operator, owner, django_user_model):
    for name in (DASHBOARD, EXPORT):
        assert client.get(reverse(name)).status_code == 302  # to the login page
        assert client_for(owner).get(reverse(name)).status_code == 302  # not staff
        bare_staff = django_user_model.objects.create_user(f"bare-{name}", is_staff=True)
        assert client_for(bare_staff).get(reverse(name)).status_code == 403
        for group in ("Analyst", "Owner"):
            user = make_operator(group, f"{group}-{name}")
            assert client_for(user).get(reverse(name)).status_code == 200


# --- the export ---------------------------------------------------------------------------------


def test_the_csv_has_one_row_per_user_and_alias_equal_to_the_ledger(make_operator, ledger):
    response = client_for(make_operator("Analyst")).get(reverse(EXPORT))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    header, data = rows[0], rows[1:]
    assert header == [
        "username",
        "model_alias",
        "llm_calls",
        "input_tokens",
        "output_tokens",
        "credits",
        "provider_cost_usd",
        "unpriced_calls",
        "user_id",  # beside the name, which can change or be given to someone else
    ]
    ids = dict(get_user_model().objects.values_list("username", "pk"))
    assert all(row[8] == str(ids[row[0]]) for row in data)
    parsed = {
        (row[0], row[1]): (
            int(row[2]),
            int(row[3]),
            int(row[4]),
            Decimal(row[5]),
            Decimal(row[6]),
            int(row[7]),
        )
        for row in data
    }
    assert len(parsed) == len(data)  # one row per pair, no totals row
    assert parsed == ledger_sums()
    # Credits and dollars as fixed-point text to the ledger's places, a zero too ("0E-10").
    decimals = [cell for row in data for cell in row[5:7]]
    assert "0.0000000000" in decimals
    assert all(re.fullmatch(r"\d+\.\d{10}", cell) for cell in decimals), decimals
    assert all(row[0] in ("owner", "outsider") for row in data)


def test_the_csv_takes_the_dashboards_filters(make_operator, ledger):
    client = client_for(make_operator("Owner", "boss"))

    response = client.get(reverse(EXPORT), {"user": "owner", "alias": "premium"})
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert [row[:2] for row in rows[1:]] == [["owner", "premium"]]

    assert client.get(reverse(EXPORT), {"start": "tomorrow"}).status_code == 400


@pytest.mark.parametrize("username", ["+cmd", "=1+2", "@sum", "-2", "\tcmd", "\r=1"])
def test_a_username_a_spreadsheet_would_run_is_quoted(
    make_operator, ledger_row, django_user_model, username
):
    tricky = django_user_model.objects.create_user(username)  # no validation: as code or SQL may
    ledger_row(tricky, at=at(2), credits=Decimal("1"))

    response = client_for(make_operator("Analyst")).get(reverse(EXPORT))

    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert [row[:2] for row in rows[1:]] == [["'" + username, "deepseek"]]


# --- the ledger list ----------------------------------------------------------------------------


def test_the_ledger_list_shows_the_sums_of_the_current_filter(make_operator, ledger, owner):
    client = client_for(make_operator("Analyst"))

    response = client.get(reverse(LEDGER), {"username": "owner", "model_alias": "premium"})

    assert response.status_code == 200
    sums = response.context["ledger_sums"]
    assert (sums["llm_calls"], sums["credits"], sums["output_tokens"]) == (1, Decimal("2.25"), 400)
    assert sums["source"] == "rollups"  # user, alias and dates: the rollups can answer
    everything = client.get(reverse(LEDGER)).context["ledger_sums"]
    assert everything["llm_calls"] == LlmCallEvent.objects.count() == 8
    assert everything["credits"] == Decimal("112.125")
    assert everything["unpriced_calls"] == 1
    unpriced = client.get(reverse(LEDGER), {"priced__exact": "0"})
    assert unpriced.context["ledger_sums"]["source"] == "ledger"
    assert unpriced.context["ledger_sums"]["llm_calls"] == 1
    page = unpriced.content.decode()
    assert 'class="pantheon-sums"' in page and ">0.1250<" in page
    # Named for a screen reader: a name on a div of no role is one it does not read.
    assert (
        '<div class="pantheon-sums" role="group" aria-label="Totals for the current filter">'
        in page
    )


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"username": "owner"},
        {"model_alias": "premium"},
        {"username": "outsider", "model_alias": "premium"},
        {"created_at__year": "{year}"},
        {"created_at__year": "{year}", "created_at__month": "{month}"},
        {"created_at__year": "{year}", "created_at__month": "{month}", "created_at__day": "{day}"},
        {"created_at__year": "{year}", "created_at__day": "{day}"},  # Django: January {day}
        {"status": "success"},
        {"purpose": "agent", "username": "owner"},
        {"q": "ada"},
    ],
)
def test_the_ledger_sums_equal_the_rows_listed_whatever_the_filter(make_operator, ledger, query):
    when = today() - timedelta(days=10)
    query = {
        key: value.format(year=when.year, month=when.month, day=when.day)
        for key, value in query.items()
    }
    response = client_for(make_operator("Analyst")).get(reverse(LEDGER), query)

    assert response.status_code == 200
    listed = response.context["cl"].queryset
    sums = response.context["ledger_sums"]
    assert sums["llm_calls"] == listed.count()
    assert sums["credits"] == (listed.aggregate(total=Sum("credits"))["total"] or 0)
    assert response.context["cl"].result_count == listed.count()


def test_the_ledger_drills_down_from_the_first_to_the_last_call(make_operator, ledger):
    client = client_for(make_operator("Analyst"))
    first, last = today() - timedelta(days=40), today()

    page = client.get(reverse(LEDGER)).content.decode()
    if first.year == last.year:  # one year: straight to its months, first to last
        expected = [f"created_at__month={month}" for month in (first.month, last.month)]
    else:
        expected = [f"created_at__year={year}" for year in (first.year, last.year)]
    assert all(link in page for link in expected)
    drill = client.get(
        reverse(LEDGER), {"created_at__year": today().year, "created_at__month": today().month}
    ).content.decode()
    assert f"created_at__day={today().day}" in drill


# --- query counts stay flat ---------------------------------------------------------------------


@pytest.fixture
def grow(owner, make_agent, make_session):
    """Add turns (each with one ledger row) to reach `total` turns; rolled up."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    made = {"count": 0}

    def add(total: int) -> None:
        turns, events = [], []
        for index in range(made["count"], total):
            created = at(index % 20, index % 24)
            turn = Turn(
                session=session,
                turn_index=index + 1,
                mode="direct",
                status="completed",
                user_input="x",
                created_at=created,
            )
            turns.append(turn)
            events.append(
                LlmCallEvent(
                    user=owner,
                    session=session,
                    turn=turn,
                    purpose="agent",
                    model_alias=("deepseek", "llama", "premium")[index % 3],
                    status="success",
                    credits=Decimal("0.01"),
                    created_at=created,
                )
            )
        Turn.objects.bulk_create(turns)
        LlmCallEvent.objects.bulk_create(events)
        made["count"] = total
        rollup_rebuild()

    return add


def queries(client, url: str, query: dict | None = None) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url, query or {}).status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    ("name", "query"),
    [
        (TURNS, {}),
        (TURNS, {"status": "completed", "username": "owner"}),
        (LEDGER, {}),
        (LEDGER, {"username": "owner", "model_alias": "deepseek", "priced__exact": "1"}),
        (DASHBOARD, {}),
        (DASHBOARD, {"user": "owner"}),
    ],
)
def test_query_counts_are_the_same_at_10_and_500_rows(make_operator, grow, name, query):
    client = client_for(make_operator("Analyst"))

    grow(10)
    small = queries(client, reverse(name), query)
    grow(500)
    large = queries(client, reverse(name), query)

    assert small == large, f"{name}: {small} queries at 10 rows, {large} at 500"
    assert LlmCallEvent.objects.count() == 500


def test_the_dashboard_counts_users_by_alias_across_many_users(make_operator, django_user_model):
    # 60 users × 3 aliases: more pairs than one page of the table shows; totals cover all.
    users = django_user_model.objects.bulk_create(
        django_user_model(username=f"user{index:03}") for index in range(60)
    )
    LlmCallEvent.objects.bulk_create(
        LlmCallEvent(
            user=user,
            purpose="agent",
            model_alias=alias,
            status="success",
            credits=Decimal("0.5"),
            created_at=at(0),
        )
        for user in users
        for alias in ("deepseek", "llama", "premium")
    )

    response = client_for(make_operator("Analyst")).get(reverse(DASHBOARD))

    assert len(response.context["report"].rows) == 180
    assert len(response.context["rows"]) == 100
    assert response.context["report"].totals.credits == Decimal("90")
    assert "and 80 more rows" in response.content.decode()
    per_user = defaultdict(int)
    for row in response.context["report"].rows:
        per_user[row.username] += row.figures.llm_calls
    assert set(per_user.values()) == {3}


def _a_late_row_rebuilt(owner, *, credits: Decimal) -> None:
    """A ledger row landing late on a past day (3 days ago), then the rollups rebuilt."""
    LlmCallEvent.objects.create(
        user=owner,
        purpose="agent",
        model_alias="deepseek",
        status="success",
        credits=credits,
        created_at=at(3),
    )
    rollup_rebuild()


def test_a_rollup_rebuild_is_seen_at_once_despite_the_cache(make_operator, ledger, owner):

    client = client_for(make_operator("Analyst"))
    before = client.get(reverse(DASHBOARD)).context["report"].totals.credits
    assert client.get(reverse(DASHBOARD)).context["report"].totals.credits == before  # cached

    _a_late_row_rebuilt(owner, credits=Decimal("5"))

    assert client.get(reverse(DASHBOARD)).context["report"].totals.credits == before + 5


def test_the_ledger_lists_cached_totals_are_each_days_own(make_operator, ledger):
    """Each day's list shows that day's totals, not those of the day a page cached first."""
    client = client_for(make_operator("Analyst"))
    for days_ago in (10, 3, 10):
        day = at(days_ago).date()
        params = {
            "created_at__year": day.year,
            "created_at__month": day.month,
            "created_at__day": day.day,
        }
        sums = client.get(reverse(LEDGER), params).context["ledger_sums"]
        rows = LlmCallEvent.objects.filter(
            created_at__gte=at(days_ago, 0), created_at__lt=at(days_ago - 1, 0)
        )
        assert sums["source"] == "rollups"
        assert (sums["llm_calls"], sums["credits"]) == (
            rows.count(),
            rows.aggregate(credits=Sum("credits"))["credits"],
        )


def test_the_ledger_lists_rollup_totals_are_summed_once_until_a_rebuild(
    make_operator, ledger, owner
):
    """The ledger list's totals above its rows (and its count) summed every rollup row at each
    page view: 1.3 s at 1.3 million rollups (18 months of 2,000 users). They are cached as the
    dashboard's are, and a rebuild is seen at once."""
    client = client_for(make_operator("Analyst"))
    before = client.get(reverse(LEDGER)).context["ledger_sums"]

    with CaptureQueriesContext(connection) as again:
        sums = client.get(reverse(LEDGER)).context["ledger_sums"]

    assert sums == before and sums["source"] == "rollups"
    assert not [q for q in again.captured_queries if "usage_dailyusagerollup" in q["sql"]]
    _a_late_row_rebuilt(owner, credits=Decimal("5"))
    after = client.get(reverse(LEDGER)).context["ledger_sums"]
    assert after["credits"] == before["credits"] + 5
    assert after["llm_calls"] == before["llm_calls"] + 1


def test_a_reconcile_fix_is_seen_at_once_despite_the_cache(make_operator, ledger, outsider):
    """`reconcile_usage --fix` rebuilds drifted days (`rollup_days_rebuild`), which never moved
    what the cache is keyed on: the page and the export showed the drift for up to 6 hours."""
    day = at(3).date()
    client = client_for(make_operator("Analyst"))

    def shown() -> tuple[Decimal, Decimal]:
        page = billing_report(start=day, end=day).totals.credits
        export = client.get(reverse(EXPORT), {"start": day, "end": day}).content.decode()
        (row,) = list(csv.reader(io.StringIO(export)))[1:]
        return page, Decimal(row[5])

    assert shown() == (Decimal("1.5"), Decimal("1.5"))
    with connection.cursor() as cursor:  # drift, as a bad write to the rollups would leave
        cursor.execute(
            "UPDATE usage_dailyusagerollup SET credits = 0, output_tokens = 0"
            " WHERE day = %s AND user_id = %s",
            [day, outsider.pk],
        )
    cache.clear()
    assert shown() == (Decimal("0"), Decimal("0"))

    report = reconcile(fix=True)

    assert report.clean and report.before is not None and not report.before.clean
    assert shown() == (Decimal("1.5"), Decimal("1.5"))


def test_the_ledger_finds_a_turns_calls_by_the_ids_its_log_lines_carry(
    make_operator, owner, owner_client, make_agent, make_session, fake_gateway, post_turn
):
    agent = make_agent(owner, "ada")
    first, second = make_session(owner, agent=agent), make_session(owner, agent=agent)
    turn = post_turn(owner_client, first, "hello").json()
    post_turn(owner_client, first, "again")
    post_turn(owner_client, second, "elsewhere")
    client = client_for(make_operator("Analyst"))

    def found(term: str) -> set:
        response = client.get(reverse(LEDGER), {"q": term})
        assert response.status_code == 200
        return {row.pk for row in response.context["cl"].result_list}

    assert found(turn["id"]) == set(
        LlmCallEvent.objects.filter(turn_id=turn["id"]).values_list("pk", flat=True)
    )
    assert found(str(first.pk)) == set(
        LlmCallEvent.objects.filter(session=first).values_list("pk", flat=True)
    )
    assert len(found(str(first.pk))) > len(found(turn["id"])) > 0
    assert len(found("ada")) == LlmCallEvent.objects.filter(agent_key="ada").count() == 3
    assert found("not-an-id") == set()


def test_a_day_out_of_range_says_which_day(make_operator):
    """Both said "Ensure this value is greater than or equal to 1970-01-01.", naming neither."""
    response = client_for(make_operator("Analyst")).get(
        reverse(DASHBOARD), {"start": "0001-01-01", "end": "0001-01-05"}
    )

    page = response.content.decode()
    assert "The first day must be a day from 1970-01-01 to 9998-12-31." in page
    assert "The last day must be a day from 1970-01-01 to 9998-12-31." in page


def test_the_dashboard_writes_days_and_credits_as_the_console_does(make_operator, owner):
    """It read "Wed 4 Nov 2026 – Thu 3 Dec 2026", credits to 2 places beside the ledger's 4, a
    tooltip of "150 credits" for 149.61, and an empty chart's axis "0, 0, 0, 0, 0"."""
    ledger_event(owner, at=at(0, hour=0), credits=Decimal("149.6113"))
    client = client_for(make_operator("Analyst"))

    page = client.get(reverse(DASHBOARD)).content.decode()
    nobody = client.get(reverse(DASHBOARD), {"user": "nosuch"}).content.decode()

    start = today() - timedelta(days=29)
    assert f"{start:%Y-%m-%d} – {today():%Y-%m-%d}" in page
    assert ">149.6113<" in page
    assert f"{today():%Y-%m-%d}: 149.6113 credits" in page
    assert "day · week · month, all users" in page
    assert "No user is named “nosuch”: nothing below is theirs." in nobody
    assert nobody.count('class="axis" x="56"') == 1  # the baseline's label alone


def test_the_day_axis_names_the_year_when_the_range_crosses_one(make_operator, owner):
    """It read "Dec 30", then "Jan 2": of which years? Within one year the labels stay short."""
    first = date(2026, 12, 30)
    crossing = [(first + timedelta(days=offset), Decimal(offset)) for offset in range(5)]
    within = [(date(2026, 11, 4) + timedelta(days=offset), Decimal(1)) for offset in range(5)]

    labels = [tick.label for tick in daily_bar_chart(crossing).day_labels]
    short = [tick.label for tick in daily_bar_chart(within).day_labels]
    page = (
        client_for(make_operator("Analyst"))
        .get(reverse(DASHBOARD), {"start": "2025-12-20", "end": "2026-01-10"})
        .content.decode()
    )

    assert labels == ["Dec 30 2026", "Dec 31 2026", "Jan 1 2027", "Jan 2 2027", "Jan 3 2027"]
    assert short == ["Nov 4", "Nov 5", "Nov 6", "Nov 7", "Nov 8"]
    assert ">Dec 20 2025</text>" in page and ">Jan 10 2026</text>" in page


def axis_labels(page: str) -> list[tuple[float, str]]:
    """The credits axis of the dashboard's chart, bottom up: each label's height and text."""
    ticks = re.findall(
        r'<text class="axis" x="\d+" y="([\d.]+)" text-anchor="end"[^>]*>([^<]*)<', page
    )
    return [(float(y), label) for y, label in ticks]


@pytest.mark.parametrize(
    ("days", "labels"),
    [
        # The tester's alice × qwen: the axis read 0, 0.0062, 0.0125, 0.0188, 0.025.
        (["0.0183", "0.0248", "0.0091", "0.012"], ["0", "0.005", "0.01", "0.015", "0.02", "0.025"]),
        (["7", "3"], ["0", "2", "4", "6", "8"]),  # it read 0, 2.5, 5, 7.5, 10
        (["2.5"], ["0", "0.5", "1", "1.5", "2", "2.5"]),  # 0, 0.625, 1.25, 1.88, 2.5
        (["0.00003"], ["0", "0.00001", "0.00002", "0.00003"]),  # 0, 0, 0, 0, 0
    ],
)
def test_the_credits_axis_steps_evenly_in_round_figures(make_operator, owner, days, labels):
    for offset, credits in enumerate(days, start=1):
        ledger_event(owner, at=at(offset), alias="qwen", credits=Decimal(credits))

    page = (
        client_for(make_operator("Analyst"))
        .get(reverse(DASHBOARD), {"user": owner.username, "alias": "qwen"})
        .content.decode()
    )

    ticks = axis_labels(page)
    assert [label for _, label in ticks] == labels
    gaps = {round(below - above, 2) for (below, _), (above, _) in pairwise(ticks)}
    assert len(gaps) == 1  # evenly spaced, as their values are


def test_a_long_axis_label_is_written_in_full():
    """The chart keeps room left of the plot for its longest label."""
    chart = daily_bar_chart([(date(2026, 11, 4), Decimal("99999999"))])

    assert chart.gridlines[-1].label == "100,000,000"
    assert chart.plot_left - 8 >= 7 * len("100,000,000")
    assert chart.bars[0].x >= chart.plot_left


def test_a_host_ahead_past_midnight_shows_the_databases_today(
    make_operator, owner, ledger_row, monkeypatch
):
    """The ledger is stamped by the database's clock: a console host minutes ahead, already in
    the next day, showed that day as today (its bar empty, highlighted) and the day's calls in
    the bar before it, and its "this month" link ran to a day not begun."""
    client = client_for(make_operator("Analyst"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        now = cursor.fetchone()[0]
    ledger_row(owner, at=now, credits=Decimal("0.75"))
    day = now.date()
    ahead = datetime.combine(day + timedelta(days=1), time(0, 0, 30), tzinfo=UTC) - now
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + ahead)

    page = client.get(reverse(DASHBOARD))

    report = page.context["report"]
    assert report.end == day
    assert report.daily_credits[-1] == (day, Decimal("0.75"))
    assert page.context["months"]["this"]["end"] == day.isoformat()
