"""Figures as an operator reads them: counts thousands separated, amounts as the whole console
writes them (`pantheon.figures`)."""

from django import template

from pantheon import figures

register = template.Library()


@register.filter
def count(value) -> str:
    """1234567 → 1,234,567"""
    return f"{int(value or 0):,}"


@register.filter
def credits(value) -> str:
    """Credits as the whole console writes them (`pantheon.figures.credits_text`)."""
    return figures.credits_text(value)


@register.filter
def usd(value) -> str:
    """Dollars as the whole console writes them (`pantheon.figures.usd_text`)."""
    return figures.usd_text(value)


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
