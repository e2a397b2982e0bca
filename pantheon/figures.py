"""How the console writes amounts.

- Every amount an operator types or the admin log records: plainly, as written: 0.28, 15,
  2.5, 1000 (no padding zeros of the column, no exponent as in 1E+3, no -0).
"""

from decimal import Decimal


def as_decimal(value) -> Decimal:
    """`value` as a Decimal: SQLite sums decimal columns as floats, and an empty sum is None."""
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def plain_amount(value) -> str:
    """A price, a multiplier or a typed amount as people write it: 0.28, 15, 1000, 0."""
    amount = as_decimal(value).normalize()
    return "0" if amount == 0 else format(amount, "f")
