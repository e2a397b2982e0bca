"""The ledger row written per LLM call: OE, credits, provider cost, pricing versions.

DESIGN §3: oe = fresh × 0.35 + cached × 0.10 + output; credits = oe / 10 000 × max(multiplier,
0.5); cost from the alias's ModelPrice, else the provider's own estimate, else 0 and unpriced.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import ProtectedError, Sum
from django.utils import timezone

from orchestration.gateway import read_usage
from orchestration.types import AliasConfig, ChatMessage, LlmCall, LlmResult
from rooms.models import RoomMode
from sessions_app.models import Session, Turn
from usage.models import LlmCallEvent, ModelAlias, ModelPrice, PricingVersion
from usage.selectors import alias_pricing
from usage.tests.factories import usage_record_call

pytestmark = pytest.mark.django_db

# 1234 fresh, 567 cached, 89 output:
# oe = 1234 × 0.35 + 567 × 0.10 + 89 = 431.9 + 56.7 + 89 = 577.6
OE = Decimal("577.60")
CREDITS_X1 = Decimal("0.0577600000")  # 577.6 / 10 000


@pytest.fixture(autouse=True)
def without_the_seeded_price_list():
    """These tests build the price lists they need; the migrations' seeded list goes first."""
    PricingVersion.objects.all().delete()


def result(
    *,
    fresh: int = 1234,
    cached: int = 567,
    output: int = 89,
    status: str = "success",
    error_kind: str | None = None,
    attempts: int = 1,
    provider_cost_usd: Decimal | None = None,
) -> LlmResult:
    return LlmResult(
        status=status,
        text="" if error_kind else "an answer",
        input_tokens_fresh=fresh,
        input_tokens_cached=cached,
        output_tokens=output,
        latency_ms=42,
        attempts=attempts,
        provider="openrouter",
        provider_model="openrouter/deepseek/deepseek-chat",
        error_kind=error_kind,
        provider_cost_usd=provider_cost_usd,
    )


def record(user, llm_result: LlmResult, alias: str = "deepseek", **context) -> LlmCallEvent:
    pricing = alias_pricing(aliases=[alias]).get(alias)
    event = usage_record_call(
        user=user,
        result=llm_result,
        pricing=pricing,
        model_alias=alias,
        purpose=context.pop("purpose", "agent"),
        **context,
    )
    event.refresh_from_db()
    return event


def pricing_version(name: str, multiplier: str, *, days_ago: float = 1) -> PricingVersion:
    return PricingVersion.objects.create(
        name=name,
        default_multiplier=Decimal(multiplier),
        effective_from=timezone.now() - timedelta(days=days_ago),
    )


def price(version: PricingVersion, alias: str = "deepseek", **prices) -> ModelPrice:
    defaults = {
        "input_usd_per_mtok": Decimal("0.14"),
        "cached_input_usd_per_mtok": Decimal("0.014"),
        "output_usd_per_mtok": Decimal("0.28"),
    }
    defaults.update(prices)
    return ModelPrice.objects.create(
        pricing_version=version, model_alias=ModelAlias.objects.get(alias=alias), **defaults
    )


# --- OE and credits -----------------------------------------------------------------------------


def test_without_a_pricing_version_the_multiplier_is_one_and_the_row_has_no_version(owner):
    assert PricingVersion.objects.count() == 0
    pricing = alias_pricing(aliases=["deepseek"])["deepseek"]
    assert pricing.pricing_version_id is None
    assert pricing.multiplier is None

    event = record(owner, result())

    assert event.oe_tokens == OE
    assert str(event.oe_tokens) == "577.60"
    assert event.credits == CREDITS_X1
    assert str(event.credits) == "0.0577600000"
    assert event.pricing_version is None
    assert (event.input_tokens_fresh, event.input_tokens_cached, event.output_tokens) == (
        1234,
        567,
        89,
    )
    assert event.total_tokens == 1234 + 567 + 89
    assert (event.status, event.error_type, event.attempts, event.latency_ms) == (
        "success",
        "",
        1,
        42,
    )
    assert (event.provider, event.provider_model, event.model_alias) == (
        "openrouter",
        "openrouter/deepseek/deepseek-chat",
        "deepseek",
    )


def test_an_active_pricing_version_multiplies_credits_and_is_stamped_on_the_row(owner):
    version = pricing_version("launch", "2")

    event = record(owner, result())

    assert event.oe_tokens == OE  # the multiplier never changes the OE
    assert event.credits == Decimal("0.1155200000")  # 577.6 / 10 000 × 2
    assert event.pricing_version_id == version.id


def test_the_newest_version_already_in_effect_wins(owner):
    pricing_version("old", "3", days_ago=30)
    current = pricing_version("current", "2", days_ago=1)

    event = record(owner, result())

    assert event.pricing_version_id == current.id
    assert event.credits == Decimal("0.1155200000")


def test_a_future_dated_pricing_version_is_not_active(owner):
    pricing_version("next year", "3", days_ago=-365)

    event = record(owner, result())

    assert event.pricing_version is None
    assert event.credits == CREDITS_X1


def test_a_future_version_does_not_displace_the_active_one(owner):
    current = pricing_version("current", "2", days_ago=1)
    pricing_version("next month", "3", days_ago=-30)

    event = record(owner, result())

    assert event.pricing_version_id == current.id
    assert event.credits == Decimal("0.1155200000")


@pytest.mark.parametrize(
    ("multiplier", "credits"),
    [
        ("0.2", "0.0288800000"),  # floored to 0.5: 577.6 / 10 000 × 0.5
        ("0", "0.0288800000"),  # zero too: no price list makes a call free
        ("0.5", "0.0288800000"),
        ("0.75", "0.0433200000"),  # above the floor: used as is
    ],
)
def test_the_multiplier_floor_of_half_always_applies(owner, multiplier, credits):
    version = pricing_version("cheap", multiplier)

    event = record(owner, result())

    assert event.credits == Decimal(credits)
    assert event.pricing_version_id == version.id


def test_credits_keep_ten_decimal_places_exactly(owner):
    # oe = 1 × 0.35 = 0.35 → 0.000035 credits; × 1.2345 = 0.0000432075
    pricing_version("odd", "1.2345")

    event = record(owner, result(fresh=1, cached=0, output=0))

    assert event.oe_tokens == Decimal("0.35")
    assert event.credits == Decimal("0.0000432075")


# --- cached tokens ------------------------------------------------------------------------------


def test_a_provider_silent_on_cached_tokens_means_zero_cached_and_all_input_fresh(owner):
    # What the gateway reads from a provider usage block without any cached-token field.
    call = LlmCall(
        alias=AliasConfig(alias="deepseek", litellm_model="openai/deepseek"),
        messages=(ChatMessage("user", "Hello"),),
        purpose="agent",
    )
    prompt, cached, completion = read_usage(
        {"usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}}, call
    )
    assert (prompt, cached, completion) == (1000, 0, 50)

    event = record(owner, result(fresh=prompt - cached, cached=cached, output=completion))

    assert (event.input_tokens_fresh, event.input_tokens_cached) == (1000, 0)
    assert event.total_tokens == 1050
    assert event.oe_tokens == Decimal("400.00")  # 1000 × 0.35 + 50
    assert event.credits == Decimal("0.0400000000")


def test_cached_tokens_are_weighted_at_a_tenth(owner):
    event = record(owner, result(fresh=0, cached=1000, output=0))

    assert event.oe_tokens == Decimal("100.00")
    assert event.credits == Decimal("0.0100000000")


# --- provider cost ------------------------------------------------------------------------------


def test_a_model_price_in_the_active_version_prices_the_call_exactly(owner):
    version = pricing_version("launch", "1")
    price(version)

    event = record(owner, result(provider_cost_usd=Decimal("9.99")))

    # (1234 × 0.14 + 567 × 0.014 + 89 × 0.28) / 1 000 000
    # = (172.76 + 7.938 + 24.92) / 1 000 000 = 0.000205618; the own price beats the estimate.
    assert event.priced is True
    assert event.provider_cost_usd == Decimal("0.000205618")
    assert str(event.provider_cost_usd) == "0.0002056180"


def test_cached_input_without_its_own_price_is_charged_as_fresh_input(owner):
    version = pricing_version("launch", "1")
    price(version, cached_input_usd_per_mtok=None)

    event = record(owner, result())

    # (1234 × 0.14 + 567 × 0.14 + 89 × 0.28) / 1 000 000 = (172.76 + 79.38 + 24.92) / 10^6
    assert event.provider_cost_usd == Decimal("0.00027706")
    assert event.priced is True


def test_a_price_of_another_alias_or_an_inactive_version_does_not_apply(owner):
    active = pricing_version("launch", "1")
    price(active, alias="llama")
    future = pricing_version("future", "1", days_ago=-10)
    price(future, alias="deepseek")

    event = record(owner, result())

    assert event.priced is False
    assert event.provider_cost_usd == Decimal("0")
    assert event.pricing_version_id == active.id


def test_no_price_and_no_provider_estimate_is_recorded_as_unpriced_zero(owner):
    event = record(owner, result(provider_cost_usd=None))

    assert event.priced is False
    assert event.provider_cost_usd == Decimal("0")


def test_no_model_price_falls_back_to_the_provider_estimate(owner):
    pricing_version("launch", "1")  # a version, but no price for deepseek in it

    event = record(owner, result(provider_cost_usd=Decimal("0.0012345")))

    assert event.priced is True
    assert event.provider_cost_usd == Decimal("0.0012345")


def test_a_provider_estimate_of_exactly_zero_still_counts_as_priced(owner):
    event = record(owner, result(provider_cost_usd=Decimal("0")))

    assert event.priced is True
    assert event.provider_cost_usd == Decimal("0")


# --- failed calls -------------------------------------------------------------------------------


def test_a_failed_call_is_still_a_ledger_row(owner):
    event = record(
        owner,
        result(fresh=0, cached=0, output=0, status="timeout", error_kind="timeout", attempts=3),
        agent_key="ada",
    )

    assert LlmCallEvent.objects.filter(user=owner).count() == 1
    assert (event.status, event.error_type, event.attempts) == ("timeout", "timeout", 3)
    assert (event.input_tokens_fresh, event.input_tokens_cached, event.output_tokens) == (0, 0, 0)
    assert event.total_tokens == 0
    assert event.oe_tokens == Decimal("0")
    assert event.credits == Decimal("0")
    assert event.agent_key == "ada"
    assert event.purpose == "agent"


def test_a_row_without_context_keeps_empty_context(owner):
    event = record(owner, result(), purpose="summary")

    assert (event.room_id, event.session_id, event.turn_id, event.agent_key) == (
        None,
        None,
        None,
        "",
    )
    assert event.purpose == "summary"


# --- through the API ----------------------------------------------------------------------------


@pytest.fixture
def roundtable(owner, make_agent, make_room, make_session):
    agents = [make_agent(owner, key) for key in ("ada", "grace", "linus")]
    room = make_room(owner, agents=agents, mode=RoomMode.ROUNDTABLE)
    return make_session(owner, room=room)


def test_a_roundtable_turn_writes_one_event_per_agent_and_its_usage_sums_them(
    owner, owner_client, roundtable, fake_gateway, post_turn
):
    version = pricing_version("launch", "2")
    price(version)
    fake_gateway.usage = (1000, 300, 77)

    response = post_turn(owner_client, roundtable, "What should we build first?")

    assert response.status_code == 201
    body = response.json()
    turn = Turn.objects.get(pk=body["id"])
    events = list(LlmCallEvent.objects.filter(turn=turn).order_by("created_at"))
    assert len(events) == 3
    assert [event.agent_key for event in events] == ["ada", "grace", "linus"]
    for event in events:
        assert event.purpose == "agent"
        assert event.user_id == owner.id
        assert event.room_id == roundtable.room_id
        assert event.session_id == roundtable.id
        assert event.model_alias == "deepseek"
        assert event.status == "success"
        assert event.pricing_version_id == version.id
        assert event.priced is True
        # oe = 1000 × 0.35 + 300 × 0.10 + 77 = 457 → 0.0457 × 2
        assert event.oe_tokens == Decimal("457.00")
        assert event.credits == Decimal("0.0914")
        # (1000 × 0.14 + 300 × 0.014 + 77 × 0.28) / 10^6 = 0.00016576
        assert event.provider_cost_usd == Decimal("0.00016576")

    usage = body["usage"]
    totals = LlmCallEvent.objects.filter(turn=turn).aggregate(
        fresh=Sum("input_tokens_fresh"),
        cached=Sum("input_tokens_cached"),
        output=Sum("output_tokens"),
        credits=Sum("credits"),
        cost=Sum("provider_cost_usd"),
    )
    assert usage["llm_calls"] == 3
    assert usage["input_tokens"] == totals["fresh"] + totals["cached"] == 3900
    assert usage["output_tokens"] == totals["output"] == 231
    assert isinstance(usage["credits"], str)
    assert isinstance(usage["provider_cost_usd"], str)
    assert Decimal(usage["credits"]) == totals["credits"] == Decimal("0.2742")
    assert Decimal(usage["provider_cost_usd"]) == totals["cost"] == Decimal("0.00049728")

    # The stored turn agrees with its POST body.
    again = owner_client.get(f"/api/v1/turns/{turn.id}").json()["usage"]
    assert again["llm_calls"] == 3
    assert Decimal(again["credits"]) == Decimal(usage["credits"])
    assert Decimal(again["provider_cost_usd"]) == Decimal(usage["provider_cost_usd"])


def test_an_unpriced_turn_reports_zero_cost_and_unpriced_events(
    owner_client, roundtable, fake_gateway, post_turn
):
    response = post_turn(owner_client, roundtable, "Hello")

    assert response.status_code == 201
    events = LlmCallEvent.objects.filter(turn_id=response.json()["id"])
    assert events.count() == 3
    assert not events.filter(priced=True).exists()
    assert Decimal(response.json()["usage"]["provider_cost_usd"]) == Decimal("0")
    # fake usage (100, 20, 10): oe = 35 + 2 + 10 = 47 → 0.0047 each at ×1
    assert Decimal(response.json()["usage"]["credits"]) == Decimal("0.0141")


def test_a_failed_agent_call_is_metered_with_its_attempts(
    owner_client, roundtable, fake_gateway, post_turn
):
    fake_gateway.fail["grace"] = "rate_limited"

    response = post_turn(owner_client, roundtable, "Hello")

    assert response.status_code == 201
    assert response.json()["status"] == "partial"
    failed = LlmCallEvent.objects.get(turn_id=response.json()["id"], agent_key="grace")
    assert (failed.status, failed.error_type, failed.attempts) == (
        "rate_limited",
        "rate_limited",
        3,
    )
    assert failed.credits == Decimal("0")
    assert response.json()["usage"]["llm_calls"] == 3


# --- the ledger outlives chats ------------------------------------------------------------------


def test_deleting_the_turn_and_the_session_keeps_the_events(
    owner, owner_client, roundtable, fake_gateway, post_turn
):
    response = post_turn(owner_client, roundtable, "Hello")
    assert response.status_code == 201
    turn = Turn.objects.get(pk=response.json()["id"])
    event_ids = set(LlmCallEvent.objects.filter(turn=turn).values_list("id", flat=True))
    assert len(event_ids) == 3

    turn.delete()

    events = LlmCallEvent.objects.filter(id__in=event_ids)
    assert events.count() == 3
    assert set(events.values_list("turn_id", flat=True)) == {None}
    assert set(events.values_list("session_id", flat=True)) == {roundtable.id}

    Session.objects.filter(pk=roundtable.pk).delete()

    assert events.count() == 3
    assert set(events.values_list("session_id", flat=True)) == {None}
    assert set(events.values_list("room_id", flat=True)) == {roundtable.room_id}
    assert set(events.values_list("user_id", flat=True)) == {owner.id}
    assert events.aggregate(total=Sum("credits"))["total"] == Decimal("0.0141")


def test_deleting_the_session_cascades_turns_but_not_events(
    owner_client, roundtable, fake_gateway, post_turn
):
    post_turn(owner_client, roundtable, "Hello")
    room = roundtable.room

    Session.objects.filter(pk=roundtable.pk).delete()
    room.delete()

    events = LlmCallEvent.objects.all()
    assert events.count() == 3
    assert set(events.values_list("session_id", "turn_id", "room_id")) == {(None, None, None)}


def test_deleting_a_user_with_ledger_rows_is_refused(
    owner, owner_client, roundtable, fake_gateway, post_turn
):
    post_turn(owner_client, roundtable, "Hello")

    with pytest.raises(ProtectedError):
        owner.delete()

    assert type(owner).objects.filter(pk=owner.pk).exists()
    assert LlmCallEvent.objects.filter(user=owner).count() == 3
