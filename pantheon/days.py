"""A day as an operator writes it, 2026-11-01, and only so: the billing dashboard's days and the
commands' `--since`; and a calendar month, 2026-11 (`usage_month_totals --month`). Python's
`date.fromisoformat` also reads week dates (2026-W49-1 is 2026-11-30) and the compact 20261101,
and `strptime`'s %m and %d take one digit; none of them is what the page or a `--help` shows. A
day so written that the calendar lacks (2026-02-30, 2026-13-01) is no such day, which is not the
same mistake as a badly written one."""

import re
from datetime import date

_WRITTEN_AS_A_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WRITTEN_AS_A_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")


class NoSuchDay(ValueError):
    """Written as a day, but none the calendar holds."""


def day_written(text: str) -> date:
    """The day `text` writes as YYYY-MM-DD; NoSuchDay for one the calendar lacks, ValueError for
    anything else (surrounding spaces included: trim first where a form would)."""
    if not _WRITTEN_AS_A_DAY.fullmatch(text):
        raise ValueError(f"{text!r} is not a day written as 2026-11-01")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise NoSuchDay(f"{text} is no such day") from None


def month_written(text: str) -> date:
    """The first day of the calendar month `text` writes as YYYY-MM; NoSuchDay for a month the
    calendar lacks (2026-13, 2026-00), ValueError for anything else (2026-1, 2026-11-01,
    202611, surrounding spaces)."""
    if not _WRITTEN_AS_A_MONTH.fullmatch(text):
        raise ValueError(f"{text!r} is not a month written as 2026-11")
    try:
        return date.fromisoformat(f"{text}-01")
    except ValueError:
        raise NoSuchDay(f"{text} is no such month") from None
