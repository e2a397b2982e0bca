"""What the operator console's usage pages say: unpriced calls are calls that had usage to price
and no price, lost calls' estimates are labelled, the date window and the source of every
figure are named, and figures and moments read as in the lists."""

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.urls import reverse

from pantheon.testing.admin import client_for
from sessions_app.models import Turn
from usage.models import (
    BillingProfile,
    DailyUsageRollup,
    LlmCallEvent,
    ModelPrice,
    PricingVersion,
    RollupCoverage,
)
from usage.rollups import rollup_rebuild, today
from usage.services import billing_profile_set_cap, usage_call_open, usage_calls_mark_lost
from usage.tests.dashboard import DASHBOARD, EXPORT, LEDGER, at

pytestmark = pytest.mark.django_db


def sums_figure(page: str, label: str) -> str:
    """The figure under `label` in the sums above the ledger list."""
    marker = f'<span class="label">{label}</span><span class="figure">'
    return page.split(marker, 1)[1].split("<", 1)[0]


@pytest.fixture
def calls_in_doubt(owner, ledger_row, make_agent, make_session):
    """A priced call, an unpriced one, and two the engine left without usage: one lost on a
    past day (rolled up), one lost and one still pending today. Each lost or pending row is
    written as the engine writes it (opened with its input estimate, `priced` at its default)."""
    ledger_row(owner, at=at(3), credits=Decimal("1"))
    ledger_row(owner, at=at(2), alias="llama", priced=False, provider_cost_usd=Decimal("0"))
    ledger_row(owner, at=at(1), status="lost", priced=False, credits=Decimal("0"))
    rollup_rebuild()
    session = make_session(owner, agent=make_agent(owner, "ada"))
    crashed, running = (
        Turn.objects.create(
            session=session, turn_index=index, mode="direct", status=status, user_input="hi"
        )
        for index, status in ((1, "interrupted"), (2, "running"))
    )
    for turn in (crashed, running):
        usage_call_open(
            user=owner,
            model_alias="deepseek",
            pricing=None,
            purpose="agent",
            estimated_input_tokens=500,
            session_id=session.pk,
            turn_id=turn.pk,
        )
    usage_calls_mark_lost(turn_ids=[crashed.pk])
    return LlmCallEvent.objects.get(turn=crashed)


# --- 1. unpriced means: usage to price, no price known ------------------------------------------


def test_lost_and_pending_calls_are_not_counted_as_unpriced(make_operator, calls_in_doubt):
    client = client_for(make_operator("Analyst"))

    dashboard = client.get(reverse(DASHBOARD))
    page = dashboard.content.decode()
    assert dashboard.context["report"].totals.llm_calls == 5
    assert 'id="total-unpriced">1<' in page
    assert DailyUsageRollup.objects.get(day=today() - timedelta(days=1)).unpriced_calls == 0
    export = list(csv.DictReader(io.StringIO(client.get(reverse(EXPORT)).content.decode())))
    assert sum(int(row["unpriced_calls"]) for row in export) == 1

    everything = client.get(reverse(LEDGER)).content.decode()
    assert sums_figure(everything, "Unpriced calls") == "1"
    lost = client.get(reverse(LEDGER), {"status__exact": "lost"}).content.decode()
    assert sums_figure(lost, "Calls") == "2"
    assert sums_figure(lost, "Unpriced calls") == "0"
    unpriced = client.get(reverse(LEDGER), {"priced__exact": "0"})
    assert [event.model_alias for event in unpriced.context["cl"].result_list] == ["llama"]
    assert "By pricing" in unpriced.content.decode()


def test_a_lost_calls_page_does_not_call_it_unpriced(make_operator, calls_in_doubt):
    client = client_for(make_operator("Analyst"))
    lost_page = reverse("admin:usage_llmcallevent_change", args=[calls_in_doubt.pk])

    page = client.get(lost_page).content.decode()

    assert "False when no price was known" not in page
    assert "not applicable: the call is lost" in page
    assert "estimate made before the call" in page
    unpriced = LlmCallEvent.objects.get(model_alias="llama")
    page = client.get(reverse("admin:usage_llmcallevent_change", args=[unpriced.pk]))
    assert "no price was known for the model" in page.content.decode()


def test_the_input_tokens_say_they_include_lost_calls_estimates(make_operator, calls_in_doubt):
    client = client_for(make_operator("Analyst"))

    page = client.get(reverse(DASHBOARD)).content.decode()

    # The estimates stay in: a lost call may have been billed (DESIGN §7). The page says so
    # and leads to those calls.
    assert "input estimate of each" in page and "lost call" in page
    note = page.split('id="input-tokens-note"', 1)[1].split("</p>", 1)[0]
    assert "status__exact=lost" in note and "created_at__gte=" in note
    ledger = client.get(reverse(LEDGER)).content.decode()
    assert "plus the input estimate of each lost call" in ledger


# --- 3. the ledger list names its date window ---------------------------------------------------


def test_the_ledger_opened_from_a_dashboard_row_names_its_date_window(
    make_operator, calls_in_doubt
):
    client = client_for(make_operator("Analyst"))
    dashboard = client.get(reverse(DASHBOARD))
    first, last = today() - timedelta(days=29), today()

    page = client.get(dashboard.context["rows"][0]["ledger_url"]).content.decode()

    window = f"{first.isoformat()} to {last.isoformat()} (UTC)"
    assert f"Calls created <strong>{window}</strong> only" in page
    assert "By created (UTC)" in page
    sidebar = page.split('data-filter-title="created (UTC)"', 1)[1].split("</details>", 1)[0]
    assert 'class="selected"' in sidebar and window in sidebar
    assert "Calls created" not in client.get(reverse(LEDGER)).content.decode()


# --- 4. the footnotes say what was read ---------------------------------------------------------


def test_without_rollups_the_pages_say_every_figure_comes_from_the_ledger(
    make_operator, owner, ledger_row
):
    ledger_row(owner, at=at(3))
    client = client_for(make_operator("Analyst"))

    dashboard = client.get(reverse(DASHBOARD)).content.decode()
    ledger = client.get(reverse(LEDGER), {"username": "owner"}).content.decode()

    assert "Every day straight from the ledger" in dashboard
    assert "daily rollups;" not in dashboard and "Whole days" not in dashboard
    assert "Totals summed from the ledger" in ledger and "daily rollups" not in ledger


def test_with_rollups_the_pages_say_which_days_come_from_where(make_operator, owner, ledger_row):
    ledger_row(owner, at=at(3))
    rollup_rebuild()
    client = client_for(make_operator("Analyst"))

    dashboard = client.get(reverse(DASHBOARD)).content.decode()
    ledger = client.get(reverse(LEDGER), {"username": "owner"}).content.decode()

    # rollup_usage covered every whole day to yesterday, though it wrote no row for the days
    # without calls: only today comes from the ledger.
    yesterday = today() - timedelta(days=1)
    assert f"Whole days to {yesterday:%Y-%m-%d} from the daily rollups;" in dashboard
    assert "the ledger for the days after those they hold." in ledger
    # A rollup run two days ago: the day since, yesterday, is read from the ledger, and why.
    RollupCoverage.objects.filter(pk=1).update(until=yesterday)
    behind = client.get(reverse(DASHBOARD)).content.decode()
    assert (
        f"Whole days to {yesterday - timedelta(days=1):%Y-%m-%d} from the daily rollups; from "
        f"{yesterday:%Y-%m-%d} straight from the ledger, as the rollups hold no later day "
        "(rollup_usage has not rolled them up yet: it rolls up whole days, to yesterday)."
    ) in behind
    # With a rollup for yesterday, only today comes from the ledger: nothing to explain.
    ledger_row(owner, at=at(1))
    rollup_rebuild()
    only_today = client.get(reverse(DASHBOARD)).content.decode()
    assert (
        f"from {today():%Y-%m-%d} (today, the lighter bar: the day so far) straight from the "
        "ledger.</p>" in only_today
    )


def test_a_range_after_the_rollups_is_read_from_the_ledger_and_says_why(
    make_operator, owner, ledger_row
):
    ledger_row(owner, at=at(5))
    rollup_rebuild()
    RollupCoverage.objects.filter(pk=1).update(until=today() - timedelta(days=4))
    days = {"start": (today() - timedelta(days=3)).isoformat(), "end": today().isoformat()}

    page = client_for(make_operator("Analyst")).get(reverse(DASHBOARD), days).content.decode()

    assert (
        "Every day straight from the ledger (today, the lighter bar: the day so far): the daily "
        "rollups hold none of these days (rollup_usage has not rolled them up yet: it rolls up "
        "whole days, to yesterday)." in page
    )


# --- 5. the cards hold big figures --------------------------------------------------------------


def test_the_token_card_shows_big_figures_compact_with_the_exact_ones_in_its_title(
    make_operator, owner, ledger_row
):
    ledger_row(owner, at=at(1), input_tokens_fresh=10**9, output_tokens=345_678_901)
    ledger_row(owner, at=at(2), input_tokens_fresh=10**9, input_tokens_cached=234_567_890)
    ledger_row(owner, at=at(3), input_tokens_fresh=10**9)

    page = client_for(make_operator("Analyst")).get(reverse(DASHBOARD)).content.decode()

    card = page.split('id="total-tokens"', 1)[1].split("</div>", 1)[0]
    assert "3,234,567,930 input tokens" in card and "345,678,921 output tokens" in card
    assert '">3.23B <span class="quiet">·</span> 346M</span>' in card


# --- 6. records and lists read alike ------------------------------------------------------------


def test_a_ledger_event_page_shows_figures_and_moments_as_the_list(
    make_operator, owner, ledger_row
):
    event = ledger_row(
        owner,
        at=datetime(2026, 12, 3, 7, 39, 21, tzinfo=UTC),
        credits=Decimal("0.16617"),
        provider_cost_usd=Decimal("0.0000123"),
    )
    client = client_for(make_operator("Analyst"))

    page = client.get(reverse("admin:usage_llmcallevent_change", args=[event.pk]))
    page = page.content.decode()

    assert "0.1661700000" not in page and "0.0000123000" not in page
    assert '<span title="0.16617">0.1662</span>' in page
    assert "0.000012" in page
    assert "2026-12-03 07:39:21 UTC" in page
    assert "Dec. 3, 2026" not in page
    listed = client.get(reverse(LEDGER)).content.decode()
    assert "0.1662" in listed and "2026-12-03 07:39:21" in listed


def test_an_amount_reads_alike_on_every_page_that_shows_it(make_operator, owner, ledger_row):
    """Provider cost read 0.000129 in the ledger and on the event's page but $0.0001 on the
    dashboard, and a zero cost $0.00 beside $0.0035; prices read 0.280000 in their inputs and
    lists, where the cap's input read 5. One rule per quantity now, zero included."""
    seeded = PricingVersion.objects.get()
    ledger_row(
        owner,
        at=at(1),
        credits=Decimal("0.0123"),
        provider_cost_usd=Decimal("0.000129"),
        pricing_version=seeded,  # its prices are read-only now
    )
    free = ledger_row(
        owner, at=at(1), alias="llama", credits=Decimal("0"), provider_cost_usd=Decimal("0")
    )
    priced = ledger_row(owner, at=at(1), alias="qwen", provider_cost_usd=Decimal("0.000129"))
    client = client_for(make_operator("Owner", "boss"))

    dashboard = client.get(reverse(DASHBOARD)).content.decode()
    table = dashboard.split('id="usage-table"', 1)[1]
    cells = {
        alias: re.findall(r'<td class="num[^"]*">([^<]*)</td>', row)[3:5]
        for alias, row in re.findall(r'pantheon-alias">(\w+)</span></td>(.*?)</tr>', table, re.S)
    }
    assert cells == {
        "deepseek": ["0.0123", "$0.000129"],
        "qwen": ["0.0047", "$0.000129"],
        "llama": ["0.0000", "$0.000000"],
    }
    assert 'id="total-cost" style="--chars: 9">$0.000258</span>' in dashboard
    ledger = client.get(reverse(LEDGER)).content.decode()
    assert ledger.count('<td class="field-cost">$0.000129</td>') == 2
    assert '<td class="field-cost">$0.000000</td>' in ledger
    assert '<td class="field-credits_used">0.0000</td>' in ledger
    assert sums_figure(ledger, "Provider cost") == "$0.000258"
    for event, cost in ((priced, "$0.000129"), (free, "$0.000000")):
        page = client.get(reverse("admin:usage_llmcallevent_change", args=[event.pk]))
        assert f'<div class="readonly">{cost}</div>' in page.content.decode()

    prices = client.get(reverse("admin:usage_modelprice_changelist")).content.decode()
    deepseek = ModelPrice.objects.get(model_alias__alias="deepseek")  # 0.28, 0.028, 0.42
    assert '<td class="field-input_price">0.28</td>' in prices
    assert '<td class="field-output_price">15</td>' in prices  # premium's
    assert "0.280000" not in prices and "x1.0000" not in prices and "· x1<" in prices
    # A list no ledger row is stamped with: its prices are inputs, which read alike.
    spare = PricingVersion.objects.create(name="spare", effective_from=at(-1))
    ModelPrice.objects.create(
        pricing_version=spare,
        model_alias=deepseek.model_alias,
        credit_multiplier=Decimal("2.5"),
        input_usd_per_mtok=Decimal("0.28"),
        output_usd_per_mtok=Decimal("0.42"),
    )
    for page in (
        client.get(reverse("admin:usage_modelprice_change", args=[spare.prices.get().pk])),
        client.get(reverse("admin:usage_pricingversion_change", args=[spare.pk])),
    ):
        inputs = dict(
            re.findall(r'name="(?:prices-0-)?(\w+)" value="([^"]*)"', page.content.decode())
        )
        assert {name: inputs[name] for name in ("credit_multiplier", "input_usd_per_mtok")} == {
            "credit_multiplier": "2.5",
            "input_usd_per_mtok": "0.28",
        }
    # The seeded list prices the ledger rows above: read-only, its prices read as listed.
    stamped = client.get(
        reverse("admin:usage_pricingversion_change", args=[seeded.pk])
    ).content.decode()
    assert "0.280000" not in stamped and "1.0000" not in stamped
    assert re.search(r'"field-input_usd_per_mtok">\s*<p>0.28</p>', stamped)


def test_billing_profiles_list_caps_like_credits_and_says_no_cap(
    make_operator, owner, outsider, ledger_row
):
    ledger_row(owner, at=datetime.now(UTC), credits=Decimal("6.17388"))
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("100"))
    BillingProfile.objects.create(user=outsider)
    client = client_for(make_operator("Analyst"))

    page = client.get(reverse("admin:usage_billingprofile_changelist")).content.decode()

    assert "100.0000000000" not in page and "6.17388" not in page
    assert ">100.0000<" in page and ">6.1739<" in page
    assert ">no cap<" in page
    assert "By is suspended" not in page and "By billing status" in page
    suspended = client.get(
        reverse("admin:usage_billingprofile_changelist"), {"is_suspended__exact": "1"}
    )
    assert list(suspended.context["cl"].result_list) == []


def test_a_cap_reads_alike_on_every_page_that_shows_it(make_operator, owner, outsider):
    """A cap of 12.123456 read 12.1235 in the profiles' list and on the user's page (another
    limit than the one set) and 12.123456 on the set-cap page, where a cap of 5 read 5 beside
    the list's 5.0000. As credits now, to every decimal set: 12.123456, 5.0000, 1,000.0000."""
    fine = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("12.123456"))
    round_ = BillingProfile.objects.create(user=outsider, monthly_credit_cap=Decimal("5"))
    boss = client_for(make_operator("Owner", "boss"))
    profiles = reverse("admin:usage_billingprofile_changelist")
    selected = {"action": "set_cap", "_selected_action": [fine.pk, round_.pk]}

    listed = boss.get(profiles).content.decode()
    set_cap_page = boss.post(profiles, selected).content.decode()
    user_page = boss.get(reverse("admin:auth_user_change", args=[owner.pk])).content.decode()
    read_only = (
        client_for(make_operator("Analyst"))
        .get(reverse("admin:usage_billingprofile_change", args=[fine.pk]))
        .content.decode()
    )
    done = boss.post(profiles, {**selected, "apply": "1", "cap": "1000"}, follow=True)

    rows = r'<tr><td>\w+</td><td class="num">([^<]*)</td>'
    caps = sorted(re.findall(r'class="field-credit_cap">([^<]*)<', listed))
    assert caps == ["12.123456", "5.0000"]
    assert sorted(re.findall(rows, set_cap_page)) == ["12.123456", "5.0000"]
    assert '<div class="readonly">12.123456</div>' in user_page
    assert '<div class="readonly">12.123456</div>' in read_only
    said = [str(message) for message in done.context["messages"]]
    assert said == ["Set a cap of 1,000.0000 for 2 users."]
    assert re.findall(r'class="field-credit_cap">([^<]*)<', done.content.decode()) == [
        "1,000.0000",
        "1,000.0000",
    ]


def test_monthly_usage_shows_months_as_months(make_operator, owner, ledger_row):
    ledger_row(owner, at=datetime(2026, 11, 20, tzinfo=UTC))
    ledger_row(owner, at=datetime(2026, 12, 3, tzinfo=UTC))
    client = client_for(make_operator("Analyst"))
    changelist = reverse("admin:usage_monthlyusage_changelist")

    page = client.get(changelist).content.decode()

    assert ">2026-12<" in page and ">2026-11<" in page
    assert "Dec. 1, 2026" not in page
    assert "Today" not in page and "Past 7 days" not in page
    november = client.get(changelist, {"month": "2026-11-01"})
    assert [usage.month.month for usage in november.context["cl"].result_list] == [11]


@pytest.mark.parametrize("written", ["2026-11", "2026-11-01"])
def test_monthly_usage_takes_a_month_as_it_shows_one(make_operator, owner, ledger_row, written):
    """?month=2026-11, a month as the list, the commands and the README write it, listed no
    counter at all, as if nobody had used anything that month."""
    ledger_row(owner, at=datetime(2026, 11, 20, tzinfo=UTC))
    ledger_row(owner, at=datetime(2026, 12, 3, tzinfo=UTC))
    client = client_for(make_operator("Analyst"))

    listed = client.get(reverse("admin:usage_monthlyusage_changelist"), {"month": written})

    assert [usage.month for usage in listed.context["cl"].result_list] == [date(2026, 11, 1)]
    selected = re.search(
        r'<li class="selected">\s*<a href="\?month=([^"]*)">', listed.content.decode()
    )
    assert selected is not None and selected.group(1) == "2026-11-01"


@pytest.mark.parametrize("written", ["garbage", "2026-13", "2026-11-31"])
def test_monthly_usage_says_a_month_it_cannot_take(make_operator, owner, ledger_row, written):
    """A month no calendar holds is refused as every list's bad filter is (the list unfiltered,
    saying so), not answered with an empty list that reads as no usage."""
    ledger_row(owner, at=datetime(2026, 11, 20, tzinfo=UTC))
    client = client_for(make_operator("Analyst"))

    listed = client.get(
        reverse("admin:usage_monthlyusage_changelist"), {"month": written}, follow=True
    )

    assert listed.redirect_chain[-1][0].endswith("?e=1")
    assert "could not be filtered as the address asked" in listed.content.decode()
    assert len(listed.context["cl"].result_list) == 1


def test_daily_rollups_show_days_as_the_ledger_does(make_operator, owner, ledger_row):
    ledger_row(owner, at=at(3))
    rollup_rebuild()

    page = client_for(make_operator("Analyst")).get(
        reverse("admin:usage_dailyusagerollup_changelist")
    )

    assert f">{(today() - timedelta(days=3)).isoformat()}<" in page.content.decode()


def test_a_billing_profiles_cap_input_reads_as_it_was_set(make_operator, owner, outsider):
    """The cap column keeps 10 decimal places; the input shows the amount, not its padding."""
    capped = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("2500"))
    fine = BillingProfile.objects.create(user=outsider, monthly_credit_cap=Decimal("12.125"))
    client = client_for(make_operator("Owner", "boss"))

    for profile, shown in ((capped, "2500"), (fine, "12.125")):
        page = client.get(
            reverse("admin:usage_billingprofile_change", args=[profile.pk])
        ).content.decode()
        assert f'name="monthly_credit_cap" value="{shown}"' in page
        assert "0000000" not in page

    saved = client.post(
        reverse("admin:usage_billingprofile_change", args=[fine.pk]),
        {"user": outsider.pk, "monthly_credit_cap": "12.125"},
    )
    assert saved.status_code == 302
    fine.refresh_from_db()
    assert fine.monthly_credit_cap == Decimal("12.125") and not fine.is_suspended


def test_the_history_of_a_cap_writes_its_values_as_people_do(make_operator, owner, outsider):
    """It wrote "0E-10 → 1E+3", "1000.0000000000 → 12.5", "1E-6 → -0": the column's value
    (str() of a Decimal of 10 places) before, what was typed after. Both now as the set-cap
    action writes a cap: plain figures, no exponent, no padding, no -0 (and what is typed is a
    plain number: 1E3 and -0 are refused, `test_an_amount_is_typed_as_a_plain_number`)."""
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("0"))
    other = BillingProfile.objects.create(user=outsider, monthly_credit_cap=Decimal("5"))
    operator = make_operator("Owner", "boss")
    client = client_for(operator)
    change = reverse("admin:usage_billingprofile_change", args=[profile.pk])

    for typed in ("1000.00", "12.5", "0.000001", "0", "12"):
        saved = client.post(change, {"monthly_credit_cap": typed})
        assert saved.status_code == 302, typed
    client.post(
        reverse("admin:usage_billingprofile_changelist"),
        {"action": "set_cap", "_selected_action": [other.pk], "apply": "1", "cap": "0.0"},
    )

    logged = [
        entry.get_change_message()
        for entry in LogEntry.objects.filter(user=operator).order_by("pk")
    ]
    assert logged == [
        "Changed Monthly credit cap: 0 → 1000.",
        "Changed Monthly credit cap: 1000 → 12.5.",
        "Changed Monthly credit cap: 12.5 → 0.000001.",
        "Changed Monthly credit cap: 0.000001 → 0.",
        "Changed Monthly credit cap: 0 → 12.",
        "Set monthly credit cap: 5 → 0.",
    ]


def test_a_billing_profile_stays_with_its_user_and_is_not_deleted(make_operator, owner, outsider):
    """Moved to another user, a profile handed over its cap and left its user uncapped;
    deleted, it lifted the cap and the suspension without an entry saying so."""
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("2500"))
    client = client_for(make_operator("Owner", "boss"))
    change = reverse("admin:usage_billingprofile_change", args=[profile.pk])

    moved = client.post(change, {"user": outsider.pk, "monthly_credit_cap": "2500"})
    deleted = client.post(
        reverse("admin:usage_billingprofile_delete", args=[profile.pk]), {"post": "yes"}
    )

    assert moved.status_code == 302
    assert deleted.status_code == 403
    profile.refresh_from_db()
    assert profile.user == owner and profile.monthly_credit_cap == Decimal("2500")
    assert 'name="user"' not in client.get(change).content.decode()


def test_an_action_that_changes_nothing_says_so(make_operator, owner):
    profile = BillingProfile.objects.create(user=owner, is_suspended=True)
    client = client_for(make_operator("Owner", "boss"))
    changelist = reverse("admin:usage_billingprofile_changelist")
    selected = {"_selected_action": [profile.pk]}

    again = client.post(changelist, {**selected, "action": "suspend"}, follow=True)
    same_cap = client.post(
        changelist,
        {**selected, "action": "set_cap", "apply": "1", "cap": "", "no_cap": "on"},
        follow=True,
    )

    said = [str(m) for m in again.context["messages"]]
    assert said == ["Nothing changed: they were all suspended already."]
    assert [str(m) for m in same_cap.context["messages"]] == [
        "Nothing changed: they all had that cap already."
    ]


@pytest.mark.parametrize(
    "amount, as_usd, as_credits",
    [
        ("0.000046", "$0.000046", "0.000046"),  # read $0.0000 above a row of 0.000046
        ("0.0000000123", "$0.00000001", "0.00000001"),  # to the ledger's 10 places at most
        ("0.0052", "$0.005200", "0.0052"),
        # Zero as every other figure: it read $0.00 beside $0.0035.
        ("0", "$0.000000", "0.0000"),
        ("-0", "$0.000000", "0.0000"),
        ("1234.567", "$1,234.567000", "1,234.5670"),
    ],
)
def test_a_summed_amount_that_is_not_zero_never_reads_zero(amount, as_usd, as_credits):
    from usage.templatetags.billing_format import credits, usd

    assert usd(Decimal(amount)) == as_usd
    assert credits(Decimal(amount)) == as_credits


def test_a_profiles_page_lifts_its_cap_only_when_no_cap_is_ticked(make_operator, owner):
    """An empty box lifted it (a number box is emptied when letters are typed in it)."""
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("2500"))
    client = client_for(make_operator("Owner", "boss"))
    change = reverse("admin:usage_billingprofile_change", args=[profile.pk])

    emptied = client.post(change, {"monthly_credit_cap": ""})
    profile.refresh_from_db()
    assert emptied.status_code == 200 and profile.monthly_credit_cap == Decimal("2500")
    assert "or tick “No cap” to lift it." in emptied.content.decode()

    lifted = client.post(change, {"monthly_credit_cap": "", "no_cap": "on"})
    profile.refresh_from_db()
    assert lifted.status_code == 302 and profile.monthly_credit_cap is None


def cap_typed(client, profile: BillingProfile, typed: str):
    """`typed` posted as a cap on the profile's page, then in the set-cap action: both answers."""
    page = client.post(
        reverse("admin:usage_billingprofile_change", args=[profile.pk]),
        {"monthly_credit_cap": typed},
    )
    action = client.post(
        reverse("admin:usage_billingprofile_changelist"),
        {"action": "set_cap", "_selected_action": [profile.pk], "apply": "1", "cap": typed},
    )
    return page, action


@pytest.mark.parametrize(
    "typed, error",
    [
        # Within the column's 24 digits and 10 places: on SQLite it was stored as the double
        # 1e14, which no read of the profile could turn back into the column's decimal (a 500
        # on its pages, its user's page and every API call with the user's token).
        ("99999999999999.9999999999", "A cap is at most 1,000,000,000 credits."),
        ("1000000000.000001", "A cap is at most 1,000,000,000 credits."),
        ("12.1234567", "A cap has at most 6 decimal places."),
    ],
)
def test_a_cap_that_no_database_would_keep_exactly_is_refused(make_operator, owner, typed, error):
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("5"))
    client = client_for(make_operator("Owner", "boss"))

    page, action = cap_typed(client, profile, typed)

    assert page.status_code == 200
    assert page.context["adminform"].form.errors["monthly_credit_cap"] == [error]
    assert action.status_code == 200 and action.context["form"].errors["cap"] == [error]
    assert error in action.content.decode()
    with pytest.raises(ValidationError) as refused:
        billing_profile_set_cap(profile=profile, cap=Decimal(typed))
    assert refused.value.message_dict == {"monthly_credit_cap": [error]}
    profile.refresh_from_db()
    assert profile.monthly_credit_cap == Decimal("5")


def test_the_largest_and_the_finest_cap_are_taken(make_operator, owner):
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("5"))
    client = client_for(make_operator("Owner", "boss"))
    change = reverse("admin:usage_billingprofile_change", args=[profile.pk])

    for typed in ("1000000000", "999999999.999999", "0.000001", "12.50000000"):
        assert client.post(change, {"monthly_credit_cap": typed}).status_code == 302, typed
        profile.refresh_from_db()
        assert profile.monthly_credit_cap == Decimal(typed)


def test_a_user_who_used_up_their_cap_reads_over_cap_not_active(
    make_operator, owner, outsider, django_user_model, ledger_row
):
    """Their turns are refused once the month's credits reach the cap: "active" said otherwise."""
    ledger_row(owner, at=datetime.now(UTC), credits=Decimal("7"))
    ledger_row(outsider, at=datetime.now(UTC), credits=Decimal("3"))
    capped = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("7"))
    BillingProfile.objects.create(user=outsider, monthly_credit_cap=Decimal("7"))
    BillingProfile.objects.create(
        user=django_user_model.objects.create_user("sam"), is_suspended=True
    )
    client = client_for(make_operator("Analyst"))

    listed = client.get(reverse("admin:usage_billingprofile_changelist")).content.decode()
    rows = {
        name: re.search(rf">{name}</a>.*?pantheon-badge \w+\">([^<]+)<", listed, re.S).group(1)
        for name in ("owner", "outsider", "sam")
    }
    assert rows == {"owner": "over cap", "outsider": "active", "sam": "suspended"}
    # The status filter's "0" lists the over-cap rows too: it does not call them active.
    assert ">not suspended</a>" in listed and ">active</a>" not in listed
    for page in (
        reverse("admin:usage_billingprofile_change", args=[capped.pk]),
        reverse("admin:auth_user_change", args=[owner.pk]),
    ):
        shown = client.get(page).content.decode()
        assert 'pantheon-badge warn">over cap<' in shown and ">active<" not in shown, page


def test_a_read_only_profile_page_shows_the_cap_as_the_list_does(make_operator, owner, outsider):
    """An Analyst read "Monthly credit cap: 7.0000000000" and "No cap: None", whatever the cap."""
    capped = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("7"))
    uncapped = BillingProfile.objects.create(user=outsider)
    client = client_for(make_operator("Analyst"))

    capped_page, uncapped_page = (
        client.get(reverse("admin:usage_billingprofile_change", args=[profile.pk])).content.decode()
        for profile in (capped, uncapped)
    )

    assert '<div class="readonly">7.0000</div>' in capped_page
    assert "7.0000000000" not in capped_page
    assert '<div class="readonly">no cap</div>' in uncapped_page
    for page in (capped_page, uncapped_page):
        assert "None" not in page and "No cap:" not in page


def test_a_cap_of_only_spaces_asks_for_a_cap_or_no_cap(make_operator, owner):
    """It read "Enter a number.", on the page and in the set-cap action."""
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("2500"))
    client = client_for(make_operator("Owner", "boss"))
    rule = "Give a cap in credits, or tick “No cap” to lift it."

    page = client.post(
        reverse("admin:usage_billingprofile_change", args=[profile.pk]),
        {"monthly_credit_cap": "   "},
    ).content.decode()
    action = client.post(
        reverse("admin:usage_billingprofile_changelist"),
        {"_selected_action": [profile.pk], "action": "set_cap", "apply": "1", "cap": "   "},
    ).content.decode()

    for said in (page, action):
        assert rule in said and "Enter a number." not in said
    profile.refresh_from_db()
    assert profile.monthly_credit_cap == Decimal("2500")
    spaced = client.post(
        reverse("admin:usage_billingprofile_change", args=[profile.pk]),
        {"monthly_credit_cap": " 7 "},
    )
    profile.refresh_from_db()
    assert spaced.status_code == 302 and profile.monthly_credit_cap == Decimal("7")


# Each was read as a number (the page stored 1e3 as 1000, the action Arabic-Indic 12 as 12, 1_000
# as 1000), or is a figure the operator may not have meant: 1,5 is one and a half to who writes
# a decimal comma, and the browser's number box sent it as 15 (and 1,000 as 1000).
NOT_PLAIN = ["1e3", "1E+3", "\u0661\u0662", "\uff11\uff12", "1,000", "1,5", "1_000", "1 000", "-0"]
PLAIN_RULE = (
    "Enter a plain number such as 12 or 0.5 (digits 0-9 and at most one decimal point; "
    "no sign, exponent, comma or other separator)."
)


@pytest.mark.parametrize("typed", NOT_PLAIN)
def test_an_amount_is_typed_as_a_plain_number(make_operator, owner, typed):
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("2500"))
    client = client_for(make_operator("Owner", "boss"))

    page, action = cap_typed(client, profile, typed)

    assert page.context["adminform"].form.errors == {"monthly_credit_cap": [PLAIN_RULE]}
    assert action.context["form"].errors == {"cap": [PLAIN_RULE]}
    profile.refresh_from_db()
    assert profile.monthly_credit_cap == Decimal("2500")
    assert not LogEntry.objects.exists()


def test_a_plain_amount_is_saved_and_the_box_sends_what_was_typed(make_operator, owner):
    """The cap boxes were number boxes, which send the server only what the browser reads as a
    number: 1,5 arrived as 15. Text boxes (a phone still offers its digit pad) send it as typed,
    for the server to refuse."""
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("2500"))
    client = client_for(make_operator("Owner", "boss"))
    change = reverse("admin:usage_billingprofile_change", args=[profile.pk])
    changelist = reverse("admin:usage_billingprofile_changelist")
    selected = {"_selected_action": [profile.pk], "action": "set_cap"}

    saved = client.post(change, {"monthly_credit_cap": "1000"})
    profile.refresh_from_db()
    assert saved.status_code == 302 and profile.monthly_credit_cap == Decimal("1000")
    client.post(changelist, {**selected, "apply": "1", "cap": " .5 "})
    profile.refresh_from_db()
    assert profile.monthly_credit_cap == Decimal("0.5")

    action_form = client.post(changelist, selected).content.decode()
    for page, name in (
        (client.get(change).content.decode(), "monthly_credit_cap"),
        (action_form, "cap"),
    ):
        box = re.search(rf'<input [^>]*name="{name}"[^>]*>', page).group()
        assert 'type="text"' in box and 'inputmode="decimal"' in box, box
