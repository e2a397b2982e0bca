"""The billing dashboard (`/admin/billing/`) and its CSV export, inside the admin.

Staff only (the admin site wraps these views), and only for who may read the ledger
(`usage.view_llmcallevent`: Owners, Analysts, superusers).
"""

import csv
from datetime import date, timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views import View

from pantheon.days import NoSuchDay, day_written
from usage.charts import daily_bar_chart
from usage.dashboard import (
    DEFAULT_DAYS,
    FIGURES,
    billing_report,
    figure_text,
    per_user_csv,
    spreadsheet_text,
    users_billed,
)
from usage.models import ModelAlias
from usage.rollups import database_today, day_start
from usage.selectors import month_of
from usage.serializers import EARLIEST_MOMENT, LATEST_MOMENT

TABLE_ROWS = 100  # the busiest pairs on the page; the export has them all
MAX_DAYS = 366


# The days `GET usage` takes: days at the calendar's edges overflowed the window's arithmetic.
FIRST_DAY = EARLIEST_MOMENT.date()
LAST_DAY = LATEST_MOMENT.date() - timedelta(days=1)


class DayField(forms.DateField):
    """A day written as 2026-11-01, what the page's date input sends, and only that
    (`pantheon.days`, as the commands' --since): Django's English formats also took 11/01/2026
    and read it as November 1, whoever typed it. A day so written that the calendar lacks
    (2026-02-30) is said to be none, not to be badly written."""

    default_error_messages = {"no_such_day": "%(day)s is no such day."}

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if not isinstance(value, str):
            return super().to_python(value)  # a date (the form's initial data)
        written = value.strip()
        try:
            return day_written(written)
        except NoSuchDay:
            raise forms.ValidationError(
                self.error_messages["no_such_day"], code="no_such_day", params={"day": written}
            ) from None
        except ValueError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None


def _day_field(label: str) -> forms.DateField:
    # The page shows the form's errors above it: each says which day it is about.
    bounds = f"{label} must be a day from {FIRST_DAY} to {LAST_DAY}."
    return DayField(
        required=False,
        label=label,
        error_messages={
            "invalid": f"{label} must be a day written as 2026-11-01.",
            "no_such_day": f"{label}, %(day)s, is no such day.",
        },
        validators=[
            MinValueValidator(FIRST_DAY, message=bounds),
            MaxValueValidator(LAST_DAY, message=bounds),
        ],
        widget=forms.DateInput(
            attrs={"type": "date", "min": FIRST_DAY.isoformat(), "max": LAST_DAY.isoformat()}
        ),
    )


class BillingFilterForm(forms.Form):
    start = _day_field("The first day")
    end = _day_field("The last day")
    user = forms.CharField(
        required=False,
        max_length=150,
        widget=forms.TextInput(attrs={"placeholder": "any user", "type": "search"}),
    )
    alias = forms.ChoiceField(
        required=False,
        label="Model alias",
        # The page lists its errors together: each names its field, as the days' do.
        error_messages={"invalid_choice": "The model alias %(value)s is no alias of this list."},
    )
    # The export's rows: one per user and alias (the page's table), or one per user (what each
    # is invoiced for the range: the table summed over aliases, which took a spreadsheet).
    rows = forms.ChoiceField(
        required=False,
        choices=[("", "per user and alias"), ("user", "per user")],
        error_messages={"invalid_choice": "rows is 'user' (one row per user) or left out."},
    )

    def __init__(self, *args, today: date, **kwargs):
        super().__init__(*args, **kwargs)
        self.today = today  # by the database's clock, as the page read it
        aliases = ModelAlias.objects.order_by("alias").values_list("alias", flat=True)
        self.fields["alias"].choices = [("", "all aliases"), *((a, a) for a in aliases)]

    def clean(self):
        data = super().clean()
        if self.errors:  # a day out of range: nothing to compute a window from
            return data
        end = data.get("end") or self.today
        start = data.get("start") or max(end - timedelta(days=DEFAULT_DAYS - 1), FIRST_DAY)
        if start > end:
            raise forms.ValidationError("The first day must not be after the last.")
        if (end - start).days >= MAX_DAYS:
            raise forms.ValidationError(f"Pick at most {MAX_DAYS} days.")
        data["start"], data["end"] = start, end
        # Read as a login reads it (NFKC, as usernames are stored): "zoe\u0308" is zoë.
        data["user"] = get_user_model().normalize_username((data.get("user") or "").strip())
        return data


class BillingAccess(View):
    site = None  # the admin site, set by its URLconf

    def dispatch(self, request, *args, **kwargs):
        if not request.user.has_perm("usage.view_llmcallevent"):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def filters(self, request) -> BillingFilterForm:
        """The filters as sent, the range's missing days filled in as the report takes them
        (the 30 days to the last day, or to today) so the form shows what it reports: with only
        the last day given, the From box stayed empty above a report of 30 days. Today is the
        database's, which stamps the ledger (one query): by this host's, one minutes ahead
        after its midnight showed an empty today, the day's calls in the bar before it."""
        data = {key: value for key, value in request.GET.items() if value}
        form = BillingFilterForm(data, today=database_today())
        if ("start" not in data or "end" not in data) and form.is_valid():
            # Shown, not checked again: its boxes render what `data` holds.
            days = {name: form.cleaned_data[name].isoformat() for name in ("start", "end")}
            form.data = {**data, **days}
        return form


def unknown_user(username: str) -> bool:
    """Whether a username typed in the filters is nobody's: its figures of 0 are no user's."""
    return bool(username) and not get_user_model().objects.filter(username=username).exists()


class BillingDashboardView(BillingAccess):
    template_name = "admin/usage/billing_dashboard.html"

    def get(self, request):
        form = self.filters(request)
        context = {
            **self.site.each_context(request),
            "title": "Billing",
            "subtitle": None,
            "form": form,
        }
        if not form.is_valid():
            return TemplateResponse(request, self.template_name, context, status=400)
        data = form.cleaned_data
        today = form.today
        report = billing_report(
            start=data["start"],
            end=data["end"],
            username=data["user"],
            model_alias=data["alias"],
            today_is=today,
        )
        query = {"start": data["start"], "end": data["end"]}
        query.update({key: data[key] for key in ("user", "alias") if data[key]})
        export = reverse("admin:billing_export")
        ledger = reverse("admin:usage_llmcallevent_changelist")
        ledger_range = {
            "created_at__gte": day_start(data["start"]).isoformat(),
            "created_at__lt": day_start(data["end"] + timedelta(days=1)).isoformat(),
        }
        filtered = {"username": data["user"], "model_alias": data["alias"]}
        lost = {"status__exact": "lost"} | {key: value for key, value in filtered.items() if value}
        context.update(
            {
                "report": report,
                "lost_url": f"{ledger}?{urlencode(lost | ledger_range)}",
                "rows": [
                    {
                        "row": row,
                        "ledger_url": f"{ledger}?"
                        + urlencode(
                            {"username": row.username, "model_alias": row.model_alias}
                            | ledger_range
                        ),
                    }
                    for row in report.rows[:TABLE_ROWS]
                ],
                "hidden_rows": max(0, len(report.rows) - TABLE_ROWS),
                "chart": daily_bar_chart(report.daily_credits, highlight=today),
                "export_url": f"{export}?{urlencode(query)}",
                "export_by_user_url": f"{export}?{urlencode(query | {'rows': 'user'})}",
                "months": calendar_months(today),
                "days": (data["end"] - data["start"]).days + 1,
                "today": today,
                # Figures of 0 for a name nobody has: say so, rather than let them pass as
                # that user's (and offer no export, which refuses it).
                "unknown_user": unknown_user(data["user"]),
            }
        )
        return TemplateResponse(request, self.template_name, context)


class BillingExportView(BillingAccess):
    """The dashboard's table as CSV: one row per user × alias, no totals row. A username
    nobody has is refused, as a bad filter is (400, the reason in plain text): its file, a
    header alone, read as a user without calls."""

    def get(self, request):
        form = self.filters(request)
        if not form.is_valid():
            errors = "; ".join(error for errors in form.errors.values() for error in errors)
            return HttpResponse(errors, status=400, content_type="text/plain; charset=utf-8")
        data = form.cleaned_data
        if unknown_user(data["user"]):
            return HttpResponse(
                f"No user is named “{data['user']}”: there are no calls of theirs to export.",
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        filters = {
            "start": data["start"],
            "end": data["end"],
            "username": data["user"],
            "model_alias": data["alias"],
        }
        by_user = data["rows"] == "user"
        kind = "-per-user" if by_user else ""
        name = f"pantheon-usage{kind}-{data['start']}-to-{data['end']}.csv"
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        if by_user:
            # Shared with `usage_month_totals --format csv`: the same file from a shell.
            per_user_csv(response, users_billed(**filters, today_is=form.today).rows)
            return response
        report = billing_report(**filters, with_activity=False, today_is=form.today)
        writer = csv.writer(response)
        # The user's id last (added after the others: positions stay): a username can change,
        # or be given to someone else after a delete.
        writer.writerow(["username", "model_alias", *FIGURES, "user_id"])
        for row in sorted(report.rows, key=lambda row: (row.username, row.model_alias)):
            figures = row.figures
            writer.writerow(
                [
                    spreadsheet_text(row.username),
                    spreadsheet_text(row.model_alias),
                    *(figure_text(name, getattr(figures, name)) for name in FIGURES),
                    row.user_id,
                ]
            )
        return response


def calendar_months(today: date) -> dict[str, dict[str, str]]:
    """This calendar month (UTC) to today and the whole last one, as the page's links take
    them: the months the caps, `GET usage` and the monthly counters count."""
    this_start = today.replace(day=1)
    last_start = month_of(day_start(this_start - timedelta(days=1)))
    return {
        "this": {"start": this_start.isoformat(), "end": today.isoformat()},
        "last": {
            "start": last_start.isoformat(),
            "end": (this_start - timedelta(days=1)).isoformat(),
        },
    }
