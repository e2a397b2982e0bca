"""How the console writes amounts: one rule per quantity, for its lists, record pages, forms,
admin log and billing dashboard alike.

- Credits: to 4 decimals, thousands separated: 1,234.5678, and none is 0.0000.
- A credit cap: as credits, to every decimal it was set with (12.123456, not 12.1235: a
  limit rounded reads as another limit), at least 4: 5.0000, 1,000.0000.
- Provider cost (USD): in dollars, to 6 decimals, thousands separated: $0.000129,
  $1,234.500000, and none is $0.000000 (a call costs fractions of a cent).
- An amount of credits or dollars that is not zero never reads zero: it gets the decimals it
  needs, up to the ledger's 10 ($0.000046 read $0.0000 above a ledger row of 0.000046).
- Prices (USD per million tokens), credit multipliers, and every amount an operator types or
  the admin log records: plainly, as written: 0.28, 15, 2.5, 1000 (no padding zeros of the
  column, no exponent as in 1E+3, no -0).

And how an operator types one (a cap, a price, a multiplier; in the console and the commands
alike): as a plain number, 12 or 0.5, and nothing else (`typed_amount`). Decimal() also read
1e3 and 1E+3 as 1000, Arabic-Indic or full-width digits as ASCII ones, 1_000 as 1000; and a
browser's number box dropped the comma of 1,5 (15) or of 1,000.
"""

import re
from decimal import ROUND_HALF_UP, Decimal

CREDITS_PLACES, USD_PLACES = 4, 6
LEDGER_PLACES = 10  # the finest amount the ledger keeps

# What `typed_amount` takes, for the messages that refuse anything else.
AMOUNT_EXPECTED = (
    "a plain number such as 12 or 0.5 (digits 0-9 and at most one decimal point; "
    "no sign, exponent, comma or other separator)"
)
_PLAIN_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def as_decimal(value) -> Decimal:
    """`value` as a Decimal: SQLite sums decimal columns as floats, and an empty sum is None."""
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def places_shown(amount: Decimal, places: int) -> int:
    """`places`, or as many more (two at a time, up to the ledger's) as an amount that is not
    zero takes not to read 0."""
    while amount != 0 and places < LEDGER_PLACES and rounded(amount, places) == 0:
        places += 2
    return places


def rounded(amount: Decimal, places: int) -> Decimal:
    """`amount` to `places` decimals, half up as the ledger rounds; never -0."""
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP) + 0


def fixed_point(value, places: int) -> str:
    """A decimal column's figure as an export writes it: to the column's `places`, fixed-point
    (a quantized zero is Decimal("0E-10"), which str() writes so; SQLite sums as floats)."""
    return format(rounded(as_decimal(value), places), "f")


def credits_text(value) -> str:
    """1234.56789 → 1,234.5679; 0 → 0.0000; 0.00004 → 0.000040; 1.23E-8 → 0.00000001."""
    amount = as_decimal(value)
    return f"{rounded(amount, places_shown(amount, CREDITS_PLACES)):,f}"


def counted(count: int, thing: str) -> str:
    """'1 second', '2 seconds', '1,234 users': a count and its noun, in the plural past one
    (the nouns the project counts take an -s)."""
    return f"{count:,} {thing}{'' if count == 1 else 's'}"


def credit_cap_text(value) -> str:
    """12.123456 → 12.123456; 5 → 5.0000; 1000 → 1,000.0000."""
    amount = as_decimal(value)
    exponent = amount.normalize().as_tuple().exponent  # a letter for a NaN or infinity
    stored = -min(exponent, 0) if isinstance(exponent, int) else 0
    return f"{rounded(amount, max(stored, CREDITS_PLACES)):,f}"


def usd_text(value) -> str:
    """0.000129 → $0.000129; 1234.5 → $1,234.500000; 0 → $0.000000."""
    amount = as_decimal(value)
    return f"${rounded(amount, places_shown(amount, USD_PLACES)):,f}"


def plain_amount(value) -> str:
    """A price, a multiplier or a typed amount as people write it: 0.28, 15, 1000, 0."""
    amount = as_decimal(value).normalize()
    return "0" if amount == 0 else format(amount, "f")


def typed_amount(text: str) -> Decimal:
    """An amount as an operator types it, spaces around it aside: ASCII digits with at most one
    decimal point (12, 0.5, .5). Anything else raises ValueError: no amount is negative, and
    1,5 or 1e3 would be read as a very different figure from the one meant, or not at all."""
    plain = text.strip()
    if _PLAIN_NUMBER.fullmatch(plain) is None:
        raise ValueError(f"expected {AMOUNT_EXPECTED}, not {text!r}")
    return Decimal(plain)
