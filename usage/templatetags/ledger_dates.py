"""The ledger's date drill-down (and the daily rollups'), from the first and last call only.

Django's own date hierarchy lists the years, months or days that have rows with a DISTINCT
over every row in view: a full scan of a million-row ledger on each page. This one reads the
first and last date (two ends of an index) and offers every period between them; a period
without calls simply lists nothing.
"""

import calendar
from datetime import date, datetime

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.db.models import Max, Min
from django.utils import formats, timezone
from django.utils.text import capfirst

register = template.Library()


def ledger_date_hierarchy(cl) -> dict:
    field = cl.date_hierarchy
    year, month, day = (cl.params.get(f"{field}__{part}") for part in ("year", "month", "day"))

    def link(filters: dict) -> str:
        return cl.get_query_string(filters, [f"{field}__"])

    def title(moment: date, format_name: str) -> str:
        return capfirst(formats.date_format(moment, format_name))

    if year and month and day:
        chosen = date(int(year), int(month), int(day))
        return {
            "show": True,
            "back": {
                "link": link({f"{field}__year": year, f"{field}__month": month}),
                "title": title(chosen, "YEAR_MONTH_FORMAT"),
            },
            "choices": [{"title": title(chosen, "MONTH_DAY_FORMAT")}],
        }
    # Read with the sums above the list when they are summed from these rows (the ledger
    # admin's paginator): asked again, the first and last call read them all a second time.
    bounds = getattr(cl.paginator, "date_bounds", None)
    if bounds is None:
        bounds = cl.queryset.aggregate(first=Min(field), last=Max(field))
    if bounds["first"] is None:
        return {"show": True, "back": None, "choices": []}
    # The ledger's moments, in the console's time zone; the rollups' days as they are.
    first, last = (
        timezone.localtime(value).date() if isinstance(value, datetime) else value
        for value in (bounds["first"], bounds["last"])
    )
    if not year and first.year == last.year:
        year = first.year
    if year and month:
        year, month = int(year), int(month)
        days = [
            date(year, month, number)
            for number in range(1, calendar.monthrange(year, month)[1] + 1)
            if first <= date(year, month, number) <= last
        ]
        return {
            "show": True,
            "back": {"link": link({f"{field}__year": year}), "title": str(year)},
            "choices": [
                {
                    "link": link(
                        {f"{field}__year": year, f"{field}__month": month, f"{field}__day": d.day}
                    ),
                    "title": title(d, "MONTH_DAY_FORMAT"),
                }
                for d in days
            ],
        }
    if year:
        year = int(year)
        months = [
            date(year, number, 1)
            for number in range(1, 13)
            if (first.year, first.month) <= (year, number) <= (last.year, last.month)
        ]
        return {
            "show": True,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {
                    "link": link({f"{field}__year": year, f"{field}__month": m.month}),
                    "title": title(m, "YEAR_MONTH_FORMAT"),
                }
                for m in months
            ],
        }
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({f"{field}__year": number}), "title": str(number)}
            for number in range(first.year, last.year + 1)
        ],
    }


@register.tag(name="ledger_date_hierarchy")
def ledger_date_hierarchy_tag(parser, token):
    return InclusionAdminNode(
        parser,
        token,
        func=ledger_date_hierarchy,
        template_name="date_hierarchy.html",
        takes_context=False,
    )
