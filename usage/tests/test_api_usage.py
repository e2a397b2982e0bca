"""`GET /api/v1/usage`. (The billing refusals a turn meets before any spend are tested with the
turns, in sessions_app/tests/test_turn_refusals.py.)"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from rooms.models import RoomMode
from usage.models import BillingProfile
from usage.selectors import month_start, next_month_start
from usage.services import usage_month_add
from usage.tests.factories import ledger_event

pytestmark = pytest.mark.django_db

USAGE_URL = "/api/v1/usage"
BODY_KEYS = {"from", "to", "credits_used", "month_credits_used", "credit_cap", "by_model"}
ROW_KEYS = {"model_alias", "llm_calls", "input_tokens", "output_tokens", "credits"}
ROW_KEYS |= {"provider_cost_usd"}


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- auth and shape -----------------------------------------------------------------------------


def test_anonymous_is_401(anon_client):
    assert anon_client.get(USAGE_URL).status_code == 401


def test_without_events_the_body_is_empty_and_spans_this_month(owner_client):
    response = owner_client.get(USAGE_URL)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == BODY_KEYS
    assert parse(body["from"]) == month_start()
    assert parse(body["to"]) == next_month_start()
    assert parse(body["from"]).day == 1
    assert (parse(body["from"]).hour, parse(body["from"]).minute) == (0, 0)
    assert Decimal(body["credits_used"]) == 0
    assert Decimal(body["month_credits_used"]) == 0
    assert body["credit_cap"] is None
    assert body["by_model"] == []


def test_the_body_reads_from_then_to_as_documented(owner_client):
    """`from` came last, after `by_model` (the field is `from_` in Python, renamed at the end):
    a range read from its end, in curl's output and in the schema's example."""
    body = owner_client.get(USAGE_URL).json()

    assert list(body)[:2] == ["from", "to"]


def test_by_model_groups_this_months_events_by_alias(owner, owner_client, this_month):
    ledger_event(owner, at=this_month, alias="deepseek")
    ledger_event(
        owner,
        at=this_month + timedelta(seconds=5),
        alias="deepseek",
        input_tokens_fresh=1000,
        input_tokens_cached=0,
        output_tokens=50,
        credits=Decimal("0.04"),
        provider_cost_usd=Decimal("0.000205618"),
    )
    ledger_event(
        owner,
        at=this_month,
        alias="llama",
        purpose="routing",
        input_tokens_fresh=7,
        input_tokens_cached=3,
        output_tokens=2,
        credits=Decimal("0.0000123456"),
        provider_cost_usd=Decimal("0"),
        priced=False,
    )
    # Outside the default range: last month and next month.
    ledger_event(owner, at=month_start() - timedelta(seconds=1), credits=Decimal("100"))
    ledger_event(owner, at=next_month_start(), credits=Decimal("100"))

    body = owner_client.get(USAGE_URL).json()

    assert [set(row) for row in body["by_model"]] == [ROW_KEYS, ROW_KEYS]
    assert body["by_model"] == [
        {
            "model_alias": "deepseek",
            "llm_calls": 2,
            "input_tokens": 120 + 1000,
            "output_tokens": 60,
            "credits": "0.0447000000",
            "provider_cost_usd": "0.0003056180",
        },
        {
            "model_alias": "llama",
            "llm_calls": 1,
            "input_tokens": 10,
            "output_tokens": 2,
            "credits": "0.0000123456",
            "provider_cost_usd": "0.0000000000",
        },
    ]
    assert body["credits_used"] == "0.0447123456"


def test_failed_calls_count_as_calls(owner, owner_client, this_month):
    ledger_event(owner, at=this_month)
    ledger_event(
        owner,
        at=this_month,
        status="timeout",
        error_type="timeout",
        attempts=3,
        input_tokens_fresh=0,
        input_tokens_cached=0,
        output_tokens=0,
        credits=Decimal("0"),
        provider_cost_usd=Decimal("0"),
    )

    (row,) = owner_client.get(USAGE_URL).json()["by_model"]

    assert (row["llm_calls"], row["input_tokens"], row["output_tokens"]) == (2, 120, 10)
    assert row["credits"] == "0.0047000000"


def test_another_users_events_never_show(
    owner, outsider, owner_client, outsider_client, this_month
):
    ledger_event(owner, at=this_month, alias="deepseek")
    ledger_event(outsider, at=this_month, alias="qwen", credits=Decimal("7"))
    BillingProfile.objects.create(user=outsider, monthly_credit_cap=Decimal("9"))

    body = owner_client.get(USAGE_URL).json()

    assert [row["model_alias"] for row in body["by_model"]] == ["deepseek"]
    assert body["credits_used"] == "0.0047000000"
    assert body["credit_cap"] is None

    other = outsider_client.get(USAGE_URL).json()
    assert [row["model_alias"] for row in other["by_model"]] == ["qwen"]
    assert other["credits_used"] == "7.0000000000"


# --- from / to ----------------------------------------------------------------------------------


@pytest.fixture
def spread(owner):
    """One deepseek event a day across a month boundary, credits 1, 2, 4, 8 (sums are unique)."""
    ledger_event(owner, at=utc(2024, 1, 30, 12), credits=Decimal("1"))
    ledger_event(owner, at=utc(2024, 1, 31, 23, 59, 59), credits=Decimal("2"))
    ledger_event(owner, at=utc(2024, 2, 1, 0, 0, 0), credits=Decimal("4"))
    ledger_event(owner, at=utc(2024, 2, 15, 8), credits=Decimal("8"))


def credits_between(client, query: str) -> Decimal:
    response = client.get(f"{USAGE_URL}?{query}")
    assert response.status_code == 200, response.json()
    rows = response.json()["by_model"]
    return sum((Decimal(row["credits"]) for row in rows), Decimal("0"))


def test_from_and_to_filter_by_created_at(owner_client, spread):
    assert credits_between(owner_client, "from=2024-01-01&to=2024-01-31") == 3
    assert credits_between(owner_client, "from=2024-02-01&to=2024-02-29") == 12
    assert credits_between(owner_client, "from=2024-01-31&to=2024-02-01") == 6
    assert credits_between(owner_client, "from=2024-01-01&to=2024-12-31") == 15
    assert credits_between(owner_client, "from=2023-01-01&to=2023-12-31") == 0


def test_a_bare_to_date_includes_that_whole_day(owner_client, spread):
    body = owner_client.get(f"{USAGE_URL}?from=2024-01-31&to=2024-01-31").json()

    assert parse(body["from"]) == utc(2024, 1, 31)
    assert parse(body["to"]) == utc(2024, 2, 1)
    assert [(row["llm_calls"], row["credits"]) for row in body["by_model"]] == [(1, "2.0000000000")]


def test_datetimes_are_exact_bounds_with_to_excluded(owner_client, spread):
    assert credits_between(owner_client, "from=2024-01-30T12:00:00Z&to=2024-02-01T00:00:00Z") == 3
    assert credits_between(owner_client, "from=2024-01-30T12:00:01Z&to=2024-02-01T00:00:01Z") == 6


def test_from_alone_spans_to_the_end_of_that_month(owner_client, spread):
    body = owner_client.get(f"{USAGE_URL}?from=2024-01-31").json()

    assert parse(body["to"]) == utc(2024, 2, 1)
    assert sum(Decimal(row["credits"]) for row in body["by_model"]) == 2


def test_every_figure_follows_the_range_and_the_month_is_named_apart(owner, owner_client, spread):
    ledger_event(owner, at=month_start() + timedelta(seconds=1), credits=Decimal("0.5"))
    ledger_event(
        owner, at=month_start() + timedelta(seconds=2), alias="premium", credits=Decimal("0.25")
    )

    body = owner_client.get(f"{USAGE_URL}?from=2024-01-01&to=2024-01-31").json()

    assert body["credits_used"] == "3.0000000000"  # 1 + 2: January 2024 only
    assert sum(Decimal(row["credits"]) for row in body["by_model"]) == 3
    assert body["month_credits_used"] == "0.7500000000"  # this month, whatever the range

    this_month = owner_client.get(USAGE_URL).json()
    assert this_month["credits_used"] == this_month["month_credits_used"] == "0.7500000000"
    assert [row["model_alias"] for row in this_month["by_model"]] == ["deepseek", "premium"]


def test_month_credits_used_reads_the_monthly_counter(owner, owner_client):
    # The counter is what the cap counts: the API shows the same figure, not a re-sum.
    usage_month_add(user_id=owner.pk, at=month_start(), credits=Decimal("4.25"))
    usage_month_add(user_id=owner.pk, at=month_start() - timedelta(days=1), credits=Decimal("9"))

    body = owner_client.get(USAGE_URL).json()

    assert body["month_credits_used"] == "4.2500000000"
    assert body["credits_used"] == "0.0000000000"  # no ledger rows in the range


def test_usage_takes_a_constant_number_of_queries(owner, owner_client):
    def queries_for(events: int) -> int:
        for index in range(events):
            ledger_event(
                owner, at=month_start() + timedelta(seconds=index + 1), alias=f"a{index % 4}"
            )
        with CaptureQueriesContext(connection) as captured:
            assert owner_client.get(USAGE_URL).status_code == 200
        return len(captured)

    assert queries_for(2) == queries_for(40)


def test_to_before_from_is_400(owner_client):
    response = owner_client.get(f"{USAGE_URL}?from=2024-02-01&to=2024-01-31")

    assert response.status_code == 400
    assert "to" in response.json()


@pytest.mark.parametrize(
    "query",
    ["from=yesterday", "to=2024-13-01", "from=2024-02-30", "to=31/01/2024", "to=2024-01-31T25:00"],
)
def test_a_garbage_date_is_400(owner_client, query):
    response = owner_client.get(f"{USAGE_URL}?{query}")

    assert response.status_code == 400


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        ("2024-01-30T12:00:00.1234567Z", "2024-01-30T12:00:00.123456Z"),  # .NET's "o"
        ("2024-01-30T12:00:00.123456789Z", "2024-01-30T12:00:00.123456Z"),  # Go's RFC3339Nano
        ("2024-01-30T07:00:00.000000001-05:00", "2024-01-30T12:00:00Z"),
    ],
)
def test_a_datetime_with_more_than_six_fractional_digits_is_read_to_the_microsecond(
    owner_client, sent, read
):
    """RFC 3339 bounds no fraction of a second: .NET writes 7 digits, Go and Java up to 9.
    Such a bound was a 400 "Use an ISO datetime" though it was one; the ledger keeps
    microseconds, so the rest of the fraction is dropped, as Python's own parser drops it."""
    response = owner_client.get(f"{USAGE_URL}?from={sent}")

    assert response.status_code == 200, response.json()
    assert response.json()["from"] == read


def test_an_offsets_plus_sent_unescaped_is_400_saying_so(owner_client):
    """A client east of UTC writing its midnight with its offset, unescaped: the + arrives a
    space, and the refusal said only to use an ISO datetime, which it had written."""
    typed = owner_client.get(f"{USAGE_URL}?from=2024-02-01T00:00:00+13:00")
    escaped = owner_client.get(f"{USAGE_URL}?from=2024-02-01T00:00:00%2B13:00")

    assert typed.status_code == 400
    assert "%2B" in typed.json()["from"][0]
    assert escaped.status_code == 200
    assert escaped.json()["from"].startswith("2024-01-31T11:00:00")


def test_an_empty_parameter_means_the_default(owner_client):
    body = owner_client.get(f"{USAGE_URL}?from=&to=").json()

    assert (parse(body["from"]), parse(body["to"])) == (month_start(), next_month_start())


def test_a_basic_iso_date_includes_that_whole_day(owner_client, spread):
    assert credits_between(owner_client, "from=2024-01-31&to=20240131") == 2


def test_a_non_iso_date_is_400(owner_client):
    response = owner_client.get(f"{USAGE_URL}?from=2024-01-01&to=2024-1-31")

    assert response.status_code == 400
    assert "to" in response.json()


def test_to_alone_covers_the_month_it_falls_in(owner_client):
    body = owner_client.get(f"{USAGE_URL}?to=2024-01-31").json()

    assert body["from"].startswith("2024-01-01T00:00:00")
    assert body["to"].startswith("2024-02-01T00:00:00")


def test_a_to_not_after_from_is_400(owner_client):
    response = owner_client.get(f"{USAGE_URL}?from=2024-02-01&to=2024-01-31T23:00:00Z")

    assert response.status_code == 400


# --- cap ----------------------------------------------------------------------------------------


def test_credit_cap_is_null_without_a_profile_and_the_cap_with_one(owner, owner_client):
    assert owner_client.get(USAGE_URL).json()["credit_cap"] is None

    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("12.5"))
    assert owner_client.get(USAGE_URL).json()["credit_cap"] == "12.5000000000"

    BillingProfile.objects.filter(user=owner).update(monthly_credit_cap=None)
    assert owner_client.get(USAGE_URL).json()["credit_cap"] is None


# --- a turn's spend ---------------------------------------------------------------------------


def test_a_turns_spend_shows_in_usage(
    owner, owner_client, make_agent, make_room, make_session, fake_gateway, post_turn
):
    agents = [make_agent(owner, "ada"), make_agent(owner, "grace")]
    session = make_session(owner, room=make_room(owner, agents=agents, mode=RoomMode.ROUNDTABLE))
    turn = post_turn(owner_client, session, "Hello").json()

    body = owner_client.get(USAGE_URL).json()

    (row,) = body["by_model"]
    assert row["model_alias"] == "deepseek"
    assert row["llm_calls"] == turn["usage"]["llm_calls"] == 2
    assert row["input_tokens"] == turn["usage"]["input_tokens"] == 240
    assert row["output_tokens"] == turn["usage"]["output_tokens"] == 20
    assert Decimal(row["credits"]) == Decimal(turn["usage"]["credits"]) == Decimal("0.0094")
    assert Decimal(body["credits_used"]) == Decimal("0.0094")
