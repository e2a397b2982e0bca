"""Figures as an operator reads them: thousands separated, money to the cent or finer."""

from decimal import ROUND_HALF_UP, Decimal

from django import template

register = template.Library()


def _decimal(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


@register.filter
def count(value) -> str:
    """1234567 → 1,234,567"""
    return f"{int(value or 0):,}"


@register.filter
def credits(value) -> str:
    """Two decimals; four below 0.01, so a cheap call never reads 0.00."""
    amount = _decimal(value)
    places = 2 if amount == 0 or abs(amount) >= Decimal("0.01") else 4
    return f"{amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,}"


@register.filter
def usd(value) -> str:
    """$1,234.57 above $100, $0.0052 below: a call costs fractions of a cent."""
    amount = _decimal(value)
    places = 2 if abs(amount) >= 100 or amount == 0 else 4
    return f"${amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,}"
