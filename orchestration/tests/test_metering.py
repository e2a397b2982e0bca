from decimal import Decimal

import pytest

from orchestration.metering import (
    MULTIPLIER_FLOOR,
    compute_credits,
    compute_oe,
    compute_price_usd,
)


def test_oe_weights_fresh_cached_and_output():
    oe = compute_oe(fresh=1000, cached=200, output=300)
    assert oe == Decimal("670.00")
    assert str(oe) == "670.00"


def test_oe_keeps_fractions_exactly():
    assert compute_oe(fresh=1, cached=1, output=0) == Decimal("0.45")
    assert compute_oe(fresh=3, cached=0, output=0) == Decimal("1.05")


def test_credits_with_multiplier_two():
    credits = compute_credits(oe=Decimal("670.00"), multiplier=Decimal("2"))
    assert str(credits) == "0.1340000000"


def test_floor_applies_below_half():
    assert Decimal("0.5") == MULTIPLIER_FLOOR
    floored = compute_credits(oe=Decimal("670.00"), multiplier=Decimal("0.2"))
    assert floored == Decimal("0.0335000000")
    assert floored == compute_credits(oe=Decimal("670.00"), multiplier=Decimal("0.5"))


def test_floor_applies_to_a_zero_multiplier_too():
    assert compute_credits(oe=Decimal("1000"), multiplier=Decimal("0")) == Decimal("0.05")


def test_no_pricing_version_means_multiplier_one():
    assert compute_credits(oe=Decimal("670.00"), multiplier=None) == Decimal("0.0670000000")


def test_credits_round_half_up_at_ten_places():
    # 0.01 / 10_000 * 1.00005 = 0.00000100005: half-up gives ...01, banker's rounding ...00.
    credits = compute_credits(oe=Decimal("0.01"), multiplier=Decimal("1.00005"))
    assert credits == Decimal("0.0000010001")


def test_credits_are_decimal_not_float():
    credits = compute_credits(
        oe=compute_oe(fresh=7, cached=3, output=11), multiplier=Decimal("1.3")
    )
    assert isinstance(credits, Decimal)
    assert credits == Decimal("0.0017875000")  # (2.45 + 0.3 + 11) / 10_000 * 1.3


def test_price_per_million_tokens():
    price = compute_price_usd(
        fresh=1_000_000,
        cached=500_000,
        output=250_000,
        input_per_mtok=Decimal("0.59"),
        cached_input_per_mtok=Decimal("0.10"),
        output_per_mtok=Decimal("0.79"),
    )
    assert price == Decimal("0.8375000000")


def test_cached_price_falls_back_to_input_price():
    price = compute_price_usd(
        fresh=0,
        cached=1000,
        output=0,
        input_per_mtok=Decimal("3"),
        cached_input_per_mtok=None,
        output_per_mtok=Decimal("15"),
    )
    assert price == Decimal("0.0030000000")


def test_negative_tokens_are_rejected():
    with pytest.raises(ValueError):
        compute_oe(fresh=-1, cached=0, output=0)
