"""The metering formula: tokens → output-equivalent tokens (OE) → credits, and USD prices.

Everything is exact Decimal arithmetic: a ledger that bills from floats drifts by fractions
of a cent that an audit cannot reproduce.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

FRESH_INPUT_WEIGHT = Decimal("0.35")
CACHED_INPUT_WEIGHT = Decimal("0.10")
OE_PER_CREDIT = Decimal(10_000)
MULTIPLIER_FLOOR = Decimal("0.5")
DEFAULT_MULTIPLIER = Decimal(1)
MONEY_QUANTUM = Decimal("1E-10")

_OE_QUANTUM = Decimal("0.01")
_TOKENS_PER_MTOK = Decimal(1_000_000)


def round_money(amount: Decimal) -> Decimal:
    """USD and credits as the ledger stores them: 10 decimal places, half up."""
    return _as_decimal(amount).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def compute_oe(*, fresh: int, cached: int, output: int) -> Decimal:
    _require_counts(fresh=fresh, cached=cached, output=output)
    oe = fresh * FRESH_INPUT_WEIGHT + cached * CACHED_INPUT_WEIGHT + output
    return oe.quantize(_OE_QUANTUM, rounding=ROUND_HALF_UP)


def compute_credits(*, oe: Decimal, multiplier: Decimal | None) -> Decimal:
    """Credits for `oe`; `multiplier` None means no pricing version is active (×1).

    The floor applies to every multiplier, zero included, so no price can make a call free.
    """
    effective = DEFAULT_MULTIPLIER if multiplier is None else _as_decimal(multiplier)
    effective = max(effective, MULTIPLIER_FLOOR)
    credits = _as_decimal(oe) / OE_PER_CREDIT * effective
    return round_money(credits)


def compute_price_usd(
    *,
    fresh: int,
    cached: int,
    output: int,
    input_per_mtok: Decimal,
    cached_input_per_mtok: Decimal | None,
    output_per_mtok: Decimal,
) -> Decimal:
    """USD for one call from per-million-token prices; cached input without a price of its
    own is charged as fresh input, never as free."""
    _require_counts(fresh=fresh, cached=cached, output=output)
    input_price = _as_decimal(input_per_mtok)
    cached_price = (
        input_price if cached_input_per_mtok is None else _as_decimal(cached_input_per_mtok)
    )
    output_price = _as_decimal(output_per_mtok)
    usd = (fresh * input_price + cached * cached_price + output * output_price) / _TOKENS_PER_MTOK
    return round_money(usd)


def _as_decimal(value: Decimal | int | float | str) -> Decimal:
    # A float is converted through its shortest repr: Decimal(0.1) would carry the binary
    # expansion 0.1000000000000000055511151231257827... into the ledger.
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def _require_counts(**counts: int) -> None:
    for name, count in counts.items():
        if count < 0:
            raise ValueError(f"{name} tokens cannot be negative (got {count})")
