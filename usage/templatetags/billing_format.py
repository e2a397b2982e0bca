"""Figures as an operator reads them: thousands separated, money to the cent or finer."""

from decimal import ROUND_HALF_UP, Decimal

from django import template

from pantheon.console import CREDITS_PLACES

register = template.Library()


def _decimal(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


@register.filter
def count(value) -> str:
    """1234567 → 1,234,567"""
    return f"{int(value or 0):,}"


@register.filter
def credits(value) -> str:
    """To 4 decimals, as the ledger's rows and the user pages write credits (up to the ledger's
    6 as needed, so a cheap call never reads 0)."""
    return f"{_rounded(_decimal(value), CREDITS_PLACES):,}"


@register.filter
def usd(value) -> str:
    """$1,234.57 above $100, $0.0052 below (up to 6 places as needed): a call costs fractions
    of a cent."""
    amount = _decimal(value)
    places = 2 if abs(amount) >= 100 or amount == 0 else 4
    return f"${_rounded(amount, places):,}"


def _rounded(amount: Decimal, places: int) -> Decimal:
    """`amount` to `places`, or to as many more (up to 6, the ledger's) as it takes not to read
    0 when it is not: a $0.000046 call read $0.0000 above a row saying 0.000046."""
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    while rounded == 0 and amount != 0 and places < 6:
        places += 2
        rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return rounded


@register.filter
def compact(value) -> str:
    """A count that must fit a card: 99,999 as is, then three figures: 123K, 1.23M, 12.3B.
    Pages give the exact count alongside (a title, a table)."""
    number = int(value or 0)
    if abs(number) < 100_000:
        return f"{number:,}"
    sign = "-" if number < 0 else ""
    units = ((10**3, "K"), (10**6, "M"), (10**9, "B"), (10**12, "T"))
    for index, (size, suffix) in enumerate(units):
        scaled = abs(number) / size
        last = index == len(units) - 1
        if scaled >= 1000 and not last:
            continue
        shown = f"{scaled:.{0 if scaled >= 100 else 1 if scaled >= 10 else 2}f}"
        if float(shown) >= 1000 and not last:  # 999,999 reads 1.00M, not 1000K
            continue
        return f"{sign}{shown}{suffix}"
    return f"{number:,}"
