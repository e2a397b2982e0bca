"""Building blocks of the operator console shared by the apps' admins.

- Records (turns, messages, summaries, context audits, the ledger) are what happened: nobody
  adds, changes or deletes them in the admin, superusers included (403).
- Rooms and sessions are deleted the way the API deletes them: softly, through their service.
- Filters that stay one query however many users there are (a username box, not a list).
- Figures and moments read the same on record pages as in the lists (and amounts as
  `pantheon.figures` writes them): credits to 4 decimals, dollars to 6, prices as written,
  timestamps as 2026-11-25 13:14:05 UTC; a moment typed in is UTC too, and its inputs say so.
"""

import json
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import datetime
from decimal import Decimal
from functools import cache, cached_property
from urllib.parse import urlencode
from uuid import UUID

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.options import IS_POPUP_VAR, TO_FIELD_VAR, IncorrectLookupParameters
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import (
    ALL_VAR,
    ERROR_FLAG,
    IS_FACETS_VAR,
    ORDER_VAR,
    PAGE_VAR,
    ChangeList,
)
from django.contrib.admin.widgets import AdminSplitDateTime
from django.contrib.auth import get_user_model
from django.core.exceptions import (
    EmptyResultSet,
    FullResultSet,
    PermissionDenied,
    ValidationError,
)
from django.core.paginator import Paginator
from django.db import connections, models, router, transaction
from django.db.models import Model, Q, QuerySet
from django.forms.boundfield import BoundField
from django.forms.models import BaseInlineFormSet, InlineForeignKeyField
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone, translation
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import get_text_list
from django.utils.translation import gettext, gettext_lazy

from pantheon.figures import (
    AMOUNT_EXPECTED,
    CREDITS_PLACES,
    USD_PLACES,
    credits_text,
    places_shown,
    plain_amount,
    rounded,
    typed_amount,
    usd_text,
)

# The start of an id as the pages print it ("ce868eaa…"): eight or more hex digits.
_ID_START = re.compile(r"[0-9a-f]{8,31}", re.IGNORECASE)


def by_id_or_text(queryset, term: str, *, ids: list[str], text: Q):
    """Search a UUID by equality on the indexed columns in `ids`, the start of one as the pages
    print it ("ce868eaa…") by the range of ids it opens (the index again, never ORed with a
    text search that would scan), anything else with `text` (icontains on a UUID would cast and
    scan every row)."""
    term = term.strip()
    if not term:
        return queryset
    try:
        value = UUID(term)
    except ValueError:
        start = term.rstrip("…. ").replace("-", "")
        if not _ID_START.fullmatch(start):
            return queryset.filter(text)
        low, high = UUID(start.ljust(32, "0")), UUID(start.ljust(32, "f"))
        return queryset.filter(
            _any_of(ids, lambda column: {f"{column}__gte": low, f"{column}__lte": high})
        )
    return queryset.filter(_any_of(ids, lambda column: {column: value}))


def _any_of(columns: list[str], lookup: Callable[[str], dict]) -> Q:
    match = Q()
    for column in columns:
        match |= Q(**lookup(column))
    return match


class RecordValue:
    """A field of a record page shown as the lists show it (`shown`), in place of Django's
    own display (`0.1661700000`, `Dec. 3, 2026, 5:39 a.m.`). It keeps the field's name (the
    row's CSS class, the model's help text) and its label."""

    do_not_call_in_templates = True  # the inline's header reads it as a name

    def __init__(self, field: models.Field):
        self.field = field
        self.__name__ = field.name
        self.short_description = field.verbose_name

    def __call__(self, obj) -> str:
        value = getattr(obj, self.field.attname)
        return "-" if value is None else shown(value, self.field)

    def __str__(self) -> str:
        return self.field.name


def shown(value, field: models.Field) -> str:
    """A value of `field` as the lists show it; a rounded figure keeps its exact value in a
    tooltip."""
    if isinstance(field, models.DateTimeField):
        return f"{moment(value)} UTC"
    if isinstance(field, models.DateField):
        return value.isoformat()
    if isinstance(field, models.IntegerField):
        # A count thousands separated, as the lists write it (15,501 tokens); an index or a
        # sequence number is a label, as in the lists (turn 1024, message 2048).
        return str(value) if field.name.endswith(("index", "sequence")) else f"{value:,}"
    places, figure = _figure(Decimal(value), field)
    if value == rounded(Decimal(value), places):
        return figure
    return format_html('<span title="{}">{}</span>', plain_amount(value), figure)


def _figure(value: Decimal, field: models.Field) -> tuple[int, str]:
    """The decimals `value` is shown to, and how it reads, by the quantity `field` holds (its
    name says: `pantheon.figures`)."""
    name = field.name
    if name.endswith("_usd"):
        return places_shown(value, USD_PLACES), usd_text(value)
    if name.endswith(("_per_mtok", "multiplier")):  # prices: as written
        return field.decimal_places, plain_amount(value)
    if "credit" in name:
        return places_shown(value, CREDITS_PLACES), credits_text(value)
    places = min(field.decimal_places, CREDITS_PLACES)  # output-equivalent tokens
    return places, f"{rounded(value, places):,f}"


@cache
def record_values(model: type[Model]) -> dict[str, RecordValue]:
    """The fields of `model` a record page shows as the lists do, by name (one object per
    field: the form's exclusions match them by identity)."""
    kinds = (models.DateTimeField, models.DateField, models.DecimalField, models.IntegerField)
    return {
        field.name: RecordValue(field)
        for field in model._meta.concrete_fields
        if isinstance(field, kinds) and not field.primary_key and not field.choices
    }


def _as_shown(values: dict[str, RecordValue], names) -> list:
    """`names` (fields of a form or a page) with those in `values` replaced by their shown
    value, each once."""
    listed = []
    for name in names:
        item = values.get(name, name) if isinstance(name, str) else name
        if item not in listed:
            listed.append(item)
    return listed


class ReadOnlyRecords:
    """Nobody adds, changes or deletes: the page shows every field, a POST is refused (403).
    Figures and moments read as in the lists (`RecordValue`)."""

    def get_fields(self, request, obj=None):
        return _as_shown(record_values(self.model), super().get_fields(request, obj))

    def get_readonly_fields(self, request, obj=None):
        return _as_shown(record_values(self.model), super().get_readonly_fields(request, obj))

    def get_exclude(self, request, obj=None):
        # The shown values are no form fields: out of every form (or inline formset) built.
        excluded = [*(super().get_exclude(request, obj) or ()), *record_values(self.model).values()]
        return excluded or None  # as ShownMoments

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ShownMoments:
    """An editable model's read-only timestamps read on its page as on record pages
    (2026-11-25 13:14:05 UTC, not Nov. 25, 2026, 1:14 p.m.). Put first among the bases."""

    def _moments(self, request, obj) -> dict[str, RecordValue]:
        values = record_values(self.model)
        return {
            name: values[name]
            for name in super().get_readonly_fields(request, obj)  # type: ignore[misc]
            if isinstance(name, str)
            and name in values
            and isinstance(values[name].field, models.DateTimeField)
        }

    def get_readonly_fields(self, request, obj=None):
        names = super().get_readonly_fields(request, obj)  # type: ignore[misc]
        return _as_shown(self._moments(request, obj), names)

    def get_fields(self, request, obj=None):
        names = super().get_fields(request, obj)  # type: ignore[misc]
        return _as_shown(self._moments(request, obj), names)

    def get_exclude(self, request, obj=None):
        # Shown, not edited: out of the form (a nullable deleted_at would be an input).
        excluded = super().get_exclude(request, obj) or ()  # type: ignore[misc]
        # None when there is nothing to exclude: Django then honours a custom form's Meta.exclude.
        return [*excluded, *self._moments(request, obj)] or None


class ShownAmounts:
    """An editable model's amounts (prices, multipliers) on a page that is read-only (a
    reader's, or a price list the ledger is stamped with) read as in its lists and inputs:
    0.28, not Django's read-only display padded to the column's places (0.280000). A model
    admin or an inline; put first among the bases."""

    def _amounts(self, request, obj) -> dict[str, RecordValue]:
        if self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            return {}
        values = record_values(self.model)  # type: ignore[attr-defined]
        return {
            name: value
            for name, value in values.items()
            if isinstance(value.field, models.DecimalField)
        }

    def get_fields(self, request, obj=None):
        names = super().get_fields(request, obj)  # type: ignore[misc]
        return _as_shown(self._amounts(request, obj), names)

    def get_exclude(self, request, obj=None):
        # Shown, not edited: out of the form, as ShownMoments' (a form naming them fails).
        excluded = super().get_exclude(request, obj) or ()  # type: ignore[misc]
        return [*excluded, *self._amounts(request, obj).values()] or None


# A list's parameters that show its rows another way without leaving any out.
_NOT_NARROWING = {ORDER_VAR, PAGE_VAR, ALL_VAR, IS_FACETS_VAR, IS_POPUP_VAR, TO_FIELD_VAR}


class DrillDownChangeList(ChangeList):
    """Django's list, with a date the calendar cannot hold refused as any other bad filter is:
    the list again with Django's "invalid lookup" note, not a 500. Django meets some of them
    while it reads the filters (a drill-down at the calendar's end, `?created_at__year=9999`,
    whose next year it cannot compute), others only once the page's query is compiled (the
    year 0 or 99999 of any `__year`, a moment that a UTC offset carries past 0001 or 9999 on
    SQLite): the query is compiled here, inside the list's own error handling."""

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        try:
            queryset.query.get_compiler(using=queryset.db).as_sql()
        except (EmptyResultSet, FullResultSet):
            pass  # a filter that selects nothing, or everything: a query all the same
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error
        return queryset

    def get_results(self, request):
        super().get_results(request)
        # Django reads a list its count fits on one page unsliced: a count taken from elsewhere
        # (the ledger's, from its rollups) below the rows rendered every row on one page.
        if isinstance(self.result_list, QuerySet) and not self.result_list.query.is_sliced:
            shown = self.list_max_show_all if self.show_all else self.list_per_page
            self.result_list = self.result_list[:shown]

    @property
    def narrowed(self) -> bool:
        """Whether a search or a filter narrows the list: only then does its count's "Show
        all" lead elsewhere (uncounted lists linked it on every page, back to that page)."""
        return any(key not in _NOT_NARROWING for key in self.params)

    def get_ordering(self, request, queryset):
        """A sort typed into the address (`?o=3`) by a column the list does not offer to sort
        by is dropped, as an unknown column is: the big lists offer only the orders an index
        serves, and sorting a million ledger rows by a figure read them all."""
        typed = self.params.get(ORDER_VAR)
        if typed and self.sortable_by is not None:
            offered = ".".join(part for part in typed.split(".") if self._offered(part))
            if offered:
                self.params[ORDER_VAR] = offered
            else:
                del self.params[ORDER_VAR]  # the list's own order
        return super().get_ordering(request, queryset)

    def _offered(self, part: str) -> bool:
        try:
            return self.list_display[int(part.rpartition("-")[2])] in self.sortable_by
        except (IndexError, ValueError):
            return False


class EitherEndPaginator(Paginator):
    """Django's paginator, reading a page in the list's second half from its far end: the last
    of a million ledger rows was an OFFSET of a million (PostgreSQL walks every row it skips),
    2.2 s; read in the reverse order it skips none. The admin's ordering is total (it adds
    the primary key), so the reversed read holds exactly the page's rows. A queryset not ordered
    down to its primary key, or a list that is no queryset, is read as Django does.

    `count_is_exact` is false when the count shown was taken from elsewhere (the ledger's
    rollups): the far end is then counted from the rows themselves, or a count that drifted
    from them would shift the page."""

    count_is_exact = True
    count_is_estimate = False
    # Rows skipped to reach a page past which its ids are read first (`_rows_between`).
    deep = 1_000
    # A list of all of a table's rows (no filter, no search) holding at least this many, by
    # PostgreSQL's statistics, shows their number as PostgreSQL estimates it (`pg_class`,
    # kept by ANALYZE and autovacuum) rather than counting them at each page view: COUNT(*)
    # read 1.8 million messages in 0.5 s, 600,000 turns in 0.13 s, and grew with history.
    estimated_from = 100_000

    @cached_property
    def count(self):
        estimate = self._estimated_count()
        if estimate is None:
            return super().count
        self.count_is_exact = False  # the far end is counted from the rows (`page`)
        self.count_is_estimate = True  # the list says "about" (admin/pagination.html)
        return estimate

    def _estimated_count(self) -> int | None:
        rows = self.object_list
        if not isinstance(rows, QuerySet) or rows.query.where or rows.query.distinct:
            return None
        connection = connections[rows.db]
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [connection.ops.quote_name(rows.model._meta.db_table)],
            )
            found = cursor.fetchone()
        # -1: never analyzed yet; a small table is counted as Django does.
        return found[0] if found and found[0] >= self.estimated_from else None

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        rows = self.object_list
        if not isinstance(rows, QuerySet) or not _totally_ordered(rows):
            return super().page(number)
        if bottom > self.count // 2:
            total = self.count if self.count_is_exact else rows.count()
            if top == self.count:
                top = total  # the last page: to the far end, whatever the count said
                # ... but one page of it: an estimate can lag the rows by a tenth of them.
                if top - bottom > self.per_page + self.orphans:
                    bottom = top - self.per_page
            # The page's rows, counted from the far end, in the list's order again.
            far = self._rows_between(rows.reverse(), max(total - top, 0), max(total - bottom, 0))
            return self._get_page(far[::-1], number, self)
        return self._get_page(self._rows_between(rows, bottom, top), number, self)

    def _rows_between(self, rows: QuerySet, low: int, high: int) -> list:
        """`rows[low:high]`, in two reads when `low` is deep: the page's ids, the rows skipped
        to reach them read from an index on (created_at, id) alone, then its rows by id. One
        read skipped whole rows, joined to their users, sessions and rooms, only to drop
        them: 0.5-1.1 s for a page in the middle of 300,000 turns or 900,000 messages."""
        if low < self.deep:
            return list(rows[low:high])
        ids = list(rows.values_list("pk", flat=True)[low:high])
        found = {row.pk: row for row in rows.filter(pk__in=ids)}
        return [found[pk] for pk in ids if pk in found]  # one gone meanwhile: left out


def _totally_ordered(rows: QuerySet) -> bool:
    """Whether `rows` are ordered down to their primary key, as the admin's lists are (it adds
    it): read in reverse, ties in a coarser order (a record's history by time alone) could come
    in another order, and a page's rows shift across its edges."""
    order = rows.query.order_by or rows.model._meta.ordering
    if not order or not isinstance(order[-1], str):
        return False
    return order[-1].lstrip("-") in ("pk", rows.model._meta.pk.name)


class CheckedLists:
    """A model admin whose list refuses the dates no calendar holds (`DrillDownChangeList`),
    and whose search reads what is typed in Unicode's composed form (NFC), the form names are
    stored in (`pantheon.fields`): "Cafe\u0301" finds Café; and in the decomposed form too, in
    which a name stored before may be. The console's site gives it to every
    model admin it registers, Django's and DRF's too, so a list added later cannot forget it."""

    def get_search_results(self, request, queryset, search_term):
        search = super().get_search_results  # type: ignore[misc]
        composed = unicodedata.normalize("NFC", search_term)
        found, duplicates = search(request, queryset, composed)
        decomposed = unicodedata.normalize("NFD", composed)
        if decomposed != composed:
            # A name stored before names were kept composed may be decomposed: found too.
            more, more_duplicates = search(request, queryset, decomposed)
            found, duplicates = found | more, duplicates or more_duplicates
        return found, duplicates

    def get_changelist(self, request, **kwargs):
        changelist = super().get_changelist(request, **kwargs)  # type: ignore[misc]
        return DrillDownChangeList if changelist is ChangeList else changelist

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET" and ERROR_FLAG in request.GET:
            # Where Django sends a filter it could not apply, saying nothing of it.
            messages.warning(
                request,
                "The list could not be filtered as the address asked (a value it cannot take, "
                "such as a date no calendar holds): it is shown unfiltered.",
            )
        return super().changelist_view(request, extra_context)  # type: ignore[misc]


class TitledAsSaved:
    """A change page whose save was refused is titled by its row as saved, not as typed: the
    form sets what was typed on the row before its checks refuse it (an agent key the model's
    constraint refuses, a username taken), and Django's title, heading and breadcrumbs named
    the row by it ("Error: Ada (@日本)" for Ada, @ada). The console's site gives it to every
    model admin it registers, as `CheckedLists`."""

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if change and request.method == "POST" and obj is not None and obj.pk is not None:
            saved = type(obj)._base_manager.filter(pk=obj.pk).first()
            if saved is not None:  # else deleted meanwhile: the page says so itself
                context["subtitle"], context["original"] = str(saved), saved
        return super().render_change_form(  # type: ignore[misc]
            request, context, add, change, form_url, obj
        )


class KindSaidOnce:
    """Django's message after an add or a change names the row by its kind and its name ("The
    {kind} “{name}”"): a row whose name says its kind already (`names_its_kind`) read "The
    session “Session “Roundtable demo” · e59bbb36…” was changed successfully.". Such a row is
    named as the delete message names it (`row_named`), still a link to its page: "The session
    “Roundtable demo” · e59bbb36… was changed successfully.". Django's other words are kept
    (a message in no form of Django's is left as it is). The console's site gives it to every
    model admin it registers, as `CheckedLists`."""

    def response_add(self, request, obj, post_url_continue=None):
        with self._naming(request, obj):
            return super().response_add(request, obj, post_url_continue)  # type: ignore[misc]

    def response_change(self, request, obj):
        with self._naming(request, obj):
            return super().response_change(request, obj)  # type: ignore[misc]

    def message_user(self, request, message, *args, **kwargs):
        if (obj := getattr(request, "_console_saved_row", None)) is not None:
            message = self._kind_said_once(obj, message)
        return super().message_user(request, message, *args, **kwargs)  # type: ignore[misc]

    @contextmanager
    def _naming(self, request, obj):
        if not getattr(self, "names_its_kind", False):
            yield
            return
        request._console_saved_row = obj
        try:
            yield
        finally:
            del request._console_saved_row

    def _kind_said_once(self, obj, message):
        # Django's: the kind, then the name in quotes, a link to the row's page where the user
        # may change it (escaped either way).
        said = re.compile(
            rf"{re.escape(escape(self.opts.verbose_name))} “"  # type: ignore[attr-defined]
            rf"(<a href=\"[^\"]*\">)?{re.escape(escape(str(obj)))}(</a>)?”"
        )
        if not isinstance(message, SafeString) or not said.search(message):
            return message
        named = escape(row_named(self, str(obj)))
        return mark_safe(
            said.sub(lambda found: f"{found[1] or ''}{named}{found[2] or ''}", message, count=1)
        )


class RecordAdmin(ReadOnlyRecords, admin.ModelAdmin):
    """Read-only for everyone, superusers included. No facet counts: a count per filter choice
    over a million ledger rows never finished."""

    show_facets = admin.ShowFacets.NEVER
    paginator = EitherEndPaginator


class FirstRowsFormSet(BaseInlineFormSet):
    """A record page's inline rows, the first `max_rows` of them: a turn of 400 steps rendered
    800 rows (1.9 MB, 1.4 s). The rows are read-only, so no form ever posts the others back.
    The note under the rows says how many there are and links their list, which finds the
    rows of the page's record by its id (`?q=`)."""

    max_rows = 100

    def get_queryset(self):
        if not hasattr(self, "_first_rows"):
            self._first_rows = super().get_queryset()[: self.max_rows]
        return self._first_rows

    @cached_property
    def rows_total(self) -> int | None:
        """How many rows the record has when the page lists only the first ones, else None
        (and no count is asked for when fewer came)."""
        if len(self.get_queryset()) < self.max_rows:
            return None
        total = super().get_queryset().count()
        return total if total > self.max_rows else None

    def all_rows_url(self) -> str:
        opts = self.model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        return f"{changelist}?{urlencode({'q': str(self.instance.pk)})}"


class RecordTabularInline(ReadOnlyRecords, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True
    formset = FirstRowsFormSet
    template = "admin/edit_inline/first_rows_tabular.html"


class ChangesWithValues:
    """The admin log says what a change changed from and to ("Changed Enabled: True → False."),
    where Django's says only which fields ("Changed Enabled.", twice alike for a disable and
    the enable after it): the page's own fields and its inline rows' alike. An addition says
    what it was added with ("Added with Monthly credit cap: 5 and Is suspended: True."), where
    Django's says "Added." alone; so does an inline row added. Values are cut to 60
    characters."""

    def construct_change_message(self, request, form, formsets, add=False):
        message = super().construct_change_message(  # type: ignore[misc]
            request, form, formsets, add
        )
        # Django lists the inline rows added, then those changed, formset by formset, each in
        # `new_objects` and `changed_objects` order.
        added_forms = _row_forms(formsets, lambda formset: formset.new_objects)
        changed_forms = _row_forms(
            formsets, lambda formset: [r for r, _ in formset.changed_objects]
        )
        for entry in message:
            changed = entry.get("changed")
            if changed is not None:
                changed_form = next(changed_forms) if "object" in changed else form
                changed["fields"] = _with_values(changed_form, changed["fields"])
        if not any("added" in entry for entry in message):
            return message
        return _with_values_added(message, form, added_forms)


def _row_forms(formsets, rows: Callable):
    """The forms of the inline rows that `rows(formset)` lists, formset by formset."""
    return iter(
        next(row_form for row_form in formset.forms if row_form.instance is row)
        for formset in formsets or ()
        for row in rows(formset)
    )


def _with_values_added(message: list[dict], form, row_forms) -> str:
    """`message` as its text, each addition in it (the page's row, an inline's) with the values
    the row was added with: Django's entries have no place for them."""
    sentences = []
    with translation.override(None):  # stored untranslated, as Django stores its entries
        for entry in message:
            added = entry.get("added")
            if added is None:
                sentences.append(LogEntry(change_message=json.dumps([entry])).get_change_message())
                continue
            added_form, what = (
                (next(row_forms), f" {added['name']} “{added['object']}”") if added else (form, "")
            )
            values = _values_added(added_form)
            with_values = f" with {get_text_list(values, 'and')}" if values else ""
            sentences.append(f"Added{what}{with_values}.")
    return " ".join(sentences)


def _values_added(form) -> list[str]:
    """The labels of the columns `form` shows (not a hidden one: an inline row's key, its
    parent), each with the value it saved."""
    columns = {field.name for field in form.instance._meta.concrete_fields}
    return [
        f"{form[name].label}: {_logged(form, name, form.cleaned_data.get(name))}"
        for name, field in form.fields.items()
        if name in columns and not field.widget.is_hidden
    ]


def _with_values(form, labels: list[str]) -> list[str]:
    """The labels of `form`'s changed fields, each with its value before and after."""
    return [
        f"{label}: {_logged(form, name, form.initial.get(name))} → "
        f"{_logged(form, name, form.cleaned_data.get(name))}"
        for name, label in zip(form.changed_data, labels, strict=True)
    ]


def _logged(form, name: str, value) -> str:
    field = form.fields.get(name)
    if isinstance(field, forms.ModelChoiceField) and not isinstance(value, Model):
        with suppress(forms.ValidationError):  # a relation's initial value is its key: the row
            value = field.to_python(value)
    elif isinstance(field, forms.ChoiceField) and value not in (None, ""):
        # A choice by its label, as its select showed it (and a row by its name, above): a
        # room's mode read "roundtable", its column's value.
        value = _choice_labels(field).get(str(value), value)
    if isinstance(value, QuerySet | list | tuple) and all(isinstance(v, Model) for v in value):
        value = ", ".join(sorted(str(row) for row in value))  # a user's groups, say
    if value in (None, "", [], {}):
        text = "(empty)"
    elif isinstance(value, Decimal):
        # As the form showed it, and the same before as after: the column's value (0E-10,
        # 1000.0000000000) and what was typed (1E+3, -0) read 0, 1000 and 0.
        text = plain_amount(value)
    elif isinstance(value, datetime):
        text = f"{moment(value)} UTC"  # as the pages show it, not 2026-12-04 21:49:31+00:00
    else:
        text = str(value)
    return text if len(text) <= 60 else f"{text[:59]}…"


def _choice_labels(field: forms.ChoiceField) -> dict[str, str]:
    """The labels of `field`'s choices by their values, those in groups included."""
    labels = {}
    for value, label in field.choices:
        if isinstance(label, list | tuple):  # a group: (its name, its choices)
            labels.update({str(v): str(text) for v, text in label})
        else:
            labels[str(value)] = str(label)
    return labels


class TextLines(forms.CharField):
    """A text box's text. A browser sends its lines ended by CR LF, however they ended when the
    page showed them (a text written through the API ends them by LF): the same lines are no
    change, and a page saved as shown writes nothing. A changed text is kept with its lines
    ended by LF, as the API's clients send them."""

    def to_python(self, value):
        return _lines(super().to_python(value))

    def has_changed(self, initial, data):
        return super().has_changed(_lines(initial), _lines(data))


def _lines(text):
    return text.replace("\r\n", "\n") if isinstance(text, str) else text


class ShownBoundField(BoundField):
    """A field of an `EditedAsShown` form. On a page refused because the row changed elsewhere,
    it shows the row as it is now where the operator's typing gives way (`shown_as_now`), and
    its hidden value, what the next save is compared with, is the row's now."""

    def value(self):
        if self.name in self.form.shown_as_now:
            return self.field.prepare_value(self.initial)
        return super().value()

    def as_widget(self, widget=None, attrs=None, only_initial=False):
        if not (only_initial and self.form.shown_as_now):
            return super().as_widget(widget, attrs, only_initial)
        widget = widget or self.field.hidden_widget()
        attrs = self.build_widget_attrs(attrs or {}, widget)
        if self.auto_id and "id" not in widget.attrs:
            attrs.setdefault("id", self.html_initial_id)
        return widget.render(
            name=self.html_initial_name,
            value=self.field.prepare_value(self.initial),
            attrs=attrs,
            renderer=self.form.renderer,
        )


class EditedAsShown(forms.ModelForm):
    """The form of a row that others change too while its page is open: another tab, another
    operator, a turn (a room's modes), the API. Each field carries the value the page showed,
    hidden (Django's `show_hidden_initial`), so that a save writes only what the operator
    changed on the page:

    - `changed_data` compares what is posted with what the page showed, not with the row as it
      is now: a field changed elsewhere meanwhile and left alone here is no change, and it is
      kept as it is now (`cleaned_data` holds the row's value, and it is unwritten:
      `columns_changed`);
    - a field the operator changed to what it is now already is no change either;
    - a field the operator changed that was also changed elsewhere since the page was opened
      refuses the save, nothing saved, the refusal saying what it is now. The refused page
      shows it, and every field the operator left alone, as it is now, and compares the next
      save with that.

    A field whose shown value the page did not post (a page served before its form had them, a
    script) is compared with the row as it is now, as Django does. The console's admins give
    their change forms this behaviour (`EditedAsShownAdmin`, `EditedAsShownInline`)."""

    bound_field_class = ShownBoundField

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shown_as_now: set[str] = set()  # a refused page's fields shown as they are now
        self.compared_as_shown: set[str] = set()
        if self.instance._state.adding:
            return
        for name, field in self.fields.items():
            if field.disabled or isinstance(field, InlineForeignKeyField):
                continue
            shown = self.add_initial_prefix(name)
            if self.is_bound and field.hidden_widget().value_omitted_from_data(
                self.data, self.files, shown
            ):
                continue
            field.show_hidden_initial = True
            self.compared_as_shown.add(name)

    def _post_clean(self):
        changed = self.changed_data
        stale = []
        for name in list(changed):
            if name not in self.compared_as_shown:
                continue
            field, now = self.fields[name], self[name].initial
            typed = self._widget_data_value(field.widget, self[name].html_name)
            if not field.has_changed(now, typed):
                changed.remove(name)  # changed elsewhere as here: nothing left to change
            elif field.has_changed(now, self._shown(name)):
                stale.append(name)
        if stale:
            for name in stale:
                self.add_error(None, self._changed_elsewhere(name))
            self.shown_as_now = (set(self.fields) - set(changed)) | set(stale)
            return  # nothing is saved: the row's own checks have nothing to check
        columns = {field.name for field in self.instance._meta.concrete_fields}
        for name in self.compared_as_shown - set(changed):
            if name not in self.cleaned_data:
                continue
            if name in columns:
                # What the save leaves in the row: its value now, which the formset's unique
                # check compares across rows too (a price list's rows, each by its alias).
                self.cleaned_data[name] = getattr(self.instance, name)
            else:
                del self.cleaned_data[name]  # a form's own field: no column to keep
        super()._post_clean()

    def _shown(self, name: str):
        """What the page showed of field `name`, as posted (the hidden value)."""
        return self._widget_data_value(
            self.fields[name].hidden_widget(),
            self[name].html_initial_name,
        )

    def _changed_elsewhere(self, name: str) -> forms.ValidationError:
        now, field = self[name].initial, self.fields[name]
        # As the box shows it (a cap of 5, not 5.0000000000), a row by its name.
        shown_now = _logged(
            self,
            name,
            now if isinstance(field, forms.ModelChoiceField) else field.prepare_value(now),
        )
        if now not in (None, "", [], {}):
            shown_now = f"“{shown_now}”"
        return forms.ValidationError(
            "%(field)s was changed elsewhere since this page was opened: nothing was saved. It "
            "is now %(now)s, as shown below: make your change to it again if it still holds.",
            code="changed_elsewhere",
            params={"field": self[name].label, "now": shown_now},
        )

    def columns_changed(self) -> list[str]:
        """The row's columns this save writes: those the operator changed, with the moment of
        the change (`auto_now`, as `updated_at`); none when nothing changed."""
        model_fields = self.instance._meta.concrete_fields
        columns = {field.name for field in model_fields}
        changed = [name for name in self.changed_data if name in columns]
        if not changed:
            return []
        moments = [f.name for f in model_fields if getattr(f, "auto_now", False)]
        return [*changed, *(name for name in moments if name not in changed)]

    def save(self, commit=True):
        # An inline's row, which its formset saves (the page's own row is saved by the
        # admin's `save_model`): only what changed is written.
        if not commit or self.instance._state.adding:
            return super().save(commit)
        row = super().save(commit=False)
        columns = self.columns_changed()
        if columns:
            row.save(update_fields=columns)
        self._save_m2m()
        return row


def edited_as_shown(form: type[forms.ModelForm]) -> type[forms.ModelForm]:
    """`form` with `EditedAsShown` around it: its own `__init__` (choices, fields built) runs
    first, inside the mixin's."""
    return type(form.__name__, (EditedAsShown, form), {})


class EditedAsShownAdmin:
    """A model admin whose change page saves only what the operator changed on it, and refuses
    a change to a field changed elsewhere meanwhile (`EditedAsShown`), its row locked from the
    moment it is read for the save."""

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]
        return form if obj is None else edited_as_shown(form)

    def get_object(self, request, object_id, from_field=None):
        # A page saved reads its row under the row's lock, in the change view's transaction: a
        # change committing elsewhere at that moment is read and compared with what the page
        # showed, not written over once its lock is let go. Only the change page's save: a
        # delete (also a POST in a transaction) takes its locks in its own order (an agent's:
        # its rooms first, `rooms.services.agent_delete`).
        match = request.resolver_match
        saving = match is not None and (match.url_name or "").endswith("_change")
        if request.method == "POST" and saving and from_field is None:
            self._lock_row(object_id)
        return super().get_object(request, object_id, from_field)  # type: ignore[misc]

    def _lock_row(self, object_id) -> None:
        model = self.model  # type: ignore[attr-defined]
        if not transaction.get_connection(router.db_for_write(model)).in_atomic_block:
            return  # a view that reads the row before its transaction: no lock
        with suppress(ValidationError, ValueError):  # a malformed id: Django's 404 follows
            key = model._meta.pk.to_python(object_id)
            list(model._base_manager.select_for_update().filter(pk=key).values_list("pk"))

    def save_model(self, request, obj, form, change):
        if not change:
            return super().save_model(request, obj, form, change)  # type: ignore[misc]
        columns = form.columns_changed()
        if columns:  # nothing changed, nothing written: `updated_at` stays
            obj.save(update_fields=columns)
        return None


class EditedAsShownInline:
    """An inline whose rows are saved as `EditedAsShownAdmin` saves its page's row."""

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)  # type: ignore[misc]
        formset.form = edited_as_shown(formset.form)
        return formset


def deleted(obj: Model | None) -> bool:
    """Whether `obj` is a soft-deleted row (one with `deleted_at` set)."""
    return obj is not None and obj.deleted_at is not None


def row_named(model_admin, name: str) -> str:
    """A row named `name` (its str) in a sentence, by its kind and its name: 'room “Research”'.
    A model admin whose rows' names begin with their kind already (`names_its_kind`: a
    session's "Session “Roundtable demo” · e59bbb36…") gives the name alone, the kind in lower
    case as mid-sentence: Django's pages read "the session “Session “Roundtable demo” …”"."""
    if getattr(model_admin, "names_its_kind", False):
        return name[:1].lower() + name[1:]
    return f"{model_admin.opts.verbose_name} “{name}”"


def cannot_delete_page(model_admin, request, obj: Model, why: str) -> TemplateResponse:
    """The 403 a typed-in delete URL gets for a row that stays, saying why (after "is kept:"),
    in the console's frame with a link back to the row."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Cannot delete {obj}",
        "opts": model_admin.opts,
        "object": obj,
        "row_named": row_named(model_admin, str(obj)),
        "why": why,
    }
    return TemplateResponse(request, "admin/cannot_delete.html", context, status=403)


def read_only_since_opened(model_admin, request, object_id) -> Model | None:
    """The row a page's save was posted for, when that row is read-only now though rows of its
    kind are not to whoever saved: its page was opened before it was deleted or the ledger came
    to rest on it (in another tab, by another operator, by a turn). None for any other request
    (Django's 403 stays for who may change no such row)."""
    if request.method != "POST" or object_id is None or "_saveasnew" in request.POST:
        return None
    obj = model_admin.get_object(request, unquote(object_id))
    if obj is None or model_admin.has_change_permission(request, obj):
        return None
    return obj if model_admin.has_change_permission(request) else None


class SavedUnlessReadOnlySinceOpened:
    """A change page whose save Django refuses (403) because its row turned read-only while the
    page was open answers with the page again, read-only now, saying why (`read_only_because`);
    nothing saved. Django answered its bare "403 Forbidden", in no frame of the console. Asked
    only once Django has refused: an ordinary save reads its row once, as Django does."""

    def read_only_because(self, request, obj) -> str:
        raise NotImplementedError

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(  # type: ignore[misc]
                request, object_id, form_url, extra_context
            )
        except PermissionDenied:
            obj = read_only_since_opened(self, request, object_id)
            if obj is None:
                raise
            why = self.read_only_because(request, obj)
            self.message_user(  # type: ignore[attr-defined]
                request, f"Your changes were not saved: {why}", messages.WARNING
            )
            return HttpResponseRedirect(request.get_full_path())


class KeptWhileInUse(SavedUnlessReadOnlySinceOpened):
    """Rows that the ledger's history or live agents rest on are never deleted, so historical
    costs stay reproducible and no agent names an alias that is gone: no delete button for
    such a row (its delete page answers 403, saying why), and the bulk action lists it as
    kept, with the reason, instead of asking for a permission no account has (or collecting
    every ledger row that the database would refuse to lose, which takes seconds)."""

    def why_kept(self, obj) -> str | None:
        """Why `obj` cannot be deleted (after its name on the bulk action's page), or None."""
        raise NotImplementedError

    def kept_because(self, request, obj) -> str | None:
        """`why_kept`, asked once per row and request (a page asks from several places)."""
        asked = request.__dict__.setdefault("_kept_because", {})
        key = (self.opts.label, obj.pk)
        if key not in asked:
            asked[key] = self.why_kept(obj)
        return asked[key]

    # Also read-only while kept (prices: an edit would change history as much as a delete).
    frozen_while_kept = False
    delete_selected_confirmation_template = "admin/kept_selected_confirmation.html"

    def has_delete_permission(self, request, obj=None):
        if obj is not None and self.kept_because(request, obj) is not None:
            return False
        return super().has_delete_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        if self.frozen_while_kept and obj is not None and self.kept_because(request, obj):
            return False
        return super().has_change_permission(request, obj)

    def read_only_because(self, request, obj) -> str:
        why = self.kept_because(request, obj)
        because = f" ({why.rstrip('.')})" if why else ""
        return f"it became read-only in the meantime{because}."

    def delete_view(self, request, object_id, extra_context=None):
        # Only a typed URL leads here (the page offers no delete). Someone who may delete such
        # rows is told why this one stays, still with a 403; anyone else gets Django's 403.
        obj = self.get_object(request, unquote(object_id))
        why = None if obj is None else self.kept_because(request, obj)
        if why is None or not super().has_delete_permission(request, obj):
            return super().delete_view(request, object_id, extra_context)
        return cannot_delete_page(self, request, obj, why)

    def get_deleted_objects(self, objs, request):
        kept, deletable = [], []
        for obj in objs:
            why = self.kept_because(request, obj)
            if why is None:
                deletable.append(obj)
            else:
                kept.append(f"{obj}: {why}")
        deleted, counts, perms_needed, protected = super().get_deleted_objects(deletable, request)
        return deleted, counts, perms_needed, [*protected, *kept]


class SoftDeleteAdmin(SavedUnlessReadOnlySinceOpened, admin.ModelAdmin):
    """Deleting in the admin (one row or the bulk action) calls the same soft-delete service as
    the API: the row stays, with `deleted_at` set, and its history with it. The confirmation
    pages say so (Django's say that the row and its related items will be deleted). A deleted
    row stays as it was when deleted: read-only, and never deleted again (its first
    `deleted_at` is the one kept)."""

    delete_confirmation_template = "admin/soft_delete_confirmation.html"
    delete_selected_confirmation_template = "admin/soft_delete_selected_confirmation.html"
    actions = ["delete_selected"]
    # What deleting does to a row, after "It" (one row) or "Each" (the bulk action).
    soft_delete_effect: str

    def soft_delete(self, obj: Model) -> None:
        """Call the app's soft-delete service on `obj`."""
        raise NotImplementedError

    def has_change_permission(self, request, obj=None):
        return not deleted(obj) and super().has_change_permission(request, obj)

    # Not has_delete_permission: Django also asks it of every row that a user's or an agent's
    # delete takes with it, and a deleted room is no reason to keep those. A deleted row's own
    # page offers no delete, and its typed-in delete URL says why (delete_view).

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if deleted(obj):
            context["show_delete"] = False  # its typed-in delete URL says why
            self.message_user(
                request,
                f"Deleted on {moment(obj.deleted_at)} UTC: it stays, read-only, for its history.",
                messages.INFO,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def read_only_because(self, request, obj) -> str:
        # Deleted, or gone with what it belongs to (a session with its room).
        happened = "was deleted" if deleted(obj) else "became read-only"
        return f"it {happened} in the meantime."

    def delete_view(self, request, object_id, extra_context=None):
        # Only a typed URL leads to a deleted row's delete page (its page offers none).
        obj = self.get_object(request, unquote(object_id))
        if deleted(obj) and super().has_delete_permission(request, obj):
            why = f"it was deleted on {moment(obj.deleted_at)} UTC already."
            return cannot_delete_page(self, request, obj, why)
        context = {
            **(extra_context or {}),
            "soft_delete_effect": self.soft_delete_effect,
            "row_named": None if obj is None else row_named(self, str(obj)),
        }
        return super().delete_view(request, object_id, context)

    def response_delete(self, request, obj_display, obj_id):
        if IS_POPUP_VAR in request.POST:
            return super().response_delete(request, obj_display, obj_id)
        # Django's message, the row named as the console's pages name it (`row_named`).
        self.message_user(
            request,
            f"The {row_named(self, obj_display)} was deleted successfully.",
            messages.SUCCESS,
        )
        # Back to the list for whoever may view it: Django sent back to its list only who may
        # change rows; who may delete them and only view the list (an Owner, sessions) landed
        # on the console's home page.
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.admin_site.name))
        changelist = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )
        context = {"preserved_filters": self.get_preserved_filters(request), "opts": self.opts}
        return HttpResponseRedirect(add_preserved_filters(context, changelist))

    @admin.action(
        permissions=["delete"], description=gettext_lazy("Delete selected %(verbose_name_plural)s")
    )
    def delete_selected(self, request, queryset):
        """Django's bulk delete, of the selected rows not deleted yet: the others are neither
        counted, nor logged as deleted again."""
        live = queryset.filter(deleted_at__isnull=True)
        response = django_delete_selected(self, request, live)
        if response is not None:  # the confirmation page
            response.context_data["soft_delete_effect"] = self.soft_delete_effect
            response.context_data["deleted_already"] = queryset.count() - live.count()
        return response

    def log_deletions(self, request, queryset):
        # The entry stays readable on the row's history page, which Django's (empty) would not
        # be: a hard-deleted row has no page to show it on.
        return LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=queryset,
            action_flag=DELETION,
            change_message="Deleted: gone from the API, kept here read-only.",
            single_object=len(queryset) == 1,
        )

    def delete_model(self, request, obj):
        if obj.deleted_at is None:
            self.soft_delete(obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset.filter(deleted_at__isnull=True):
            self.soft_delete(obj)

    def get_deleted_objects(self, objs, request):
        # Nothing cascades: no related rows to list, and no permission on them is needed.
        objs = list(objs)
        return [str(obj) for obj in objs], {self.opts.verbose_name_plural: len(objs)}, set(), []


class DeletedFilter(admin.EmptyFieldListFilter):
    """`deleted_at` as the question an operator asks: deleted or not (Django's own filter says
    "By deleted at: Empty / Not empty"). The query string is Django's, so links keep working.
    A model whose rows also go with another's says so in `get_lookup_condition` (the rows not
    deleted), as sessions do with their room's."""

    # Django's choices in its order (All, Empty, Not empty), each with its new label.
    LABELS = [("All", "All"), ("Empty", "not deleted"), ("Not empty", "deleted")]

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "deleted"

    def choices(self, changelist):
        for choice, (django, ours) in zip(super().choices(changelist), self.LABELS, strict=True):
            # Django's label as it wrote it (translated), maybe with a facet count after it:
            # "Not empty (3)" becomes "deleted (3)".
            display = str(choice["display"])
            yield {**choice, "display": ours + display[len(gettext(django)) :]}


class InputFilter(admin.SimpleListFilter):
    """A text box instead of a list of choices: constant work however many values exist."""

    template = "admin/input_filter.html"
    lookup: str  # the queryset lookup the typed value filters by

    def lookups(self, request, model_admin):
        return ()

    def has_output(self) -> bool:
        return True

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        return self.filtered(request, queryset, value)

    def filtered(self, request, queryset: QuerySet, value: str) -> QuerySet:
        """The rows matching `value`, typed in the box (trimmed, not empty)."""
        return queryset.filter(**{self.lookup: value})

    def choices(self, changelist):
        # One "choice" carrying what the template needs: the other parameters (filters, search,
        # ordering; not the page) to keep when the box is submitted.
        others = [
            (key, item)
            for key, values in changelist.filter_params.items()
            if key != self.parameter_name
            for item in values
        ]
        yield {
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            "others": others,
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
        }


class UsernameFilter(InputFilter):
    """Rows of the user typed in the box, named as a login reads the name: usernames are
    case-sensitive, so `bob` and `Bob` are two users, and read NFKC, as they are stored, so
    "zoe\u0308" (a decomposed ë, as some keyboards and pastes give it) is zoë. The user's id
    is looked up first, so the list filters on its own indexed user column instead of joining
    the users table. A name nobody has is said to be so above the list, as the billing
    dashboard says it: an empty list (and the ledger's sums of 0) read as that user's."""

    title = "user"
    parameter_name = "username"
    user_path: str  # the path from the listed model to its user, e.g. `session__started_by`

    def filtered(self, request, queryset: QuerySet, value: str) -> QuerySet:
        value = get_user_model().normalize_username(value)
        users = get_user_model().objects.filter(username=value)
        ids = list(users.values_list("pk", flat=True))
        if not ids:
            # Said once, however many times the list applies its filters.
            said = request.__dict__.setdefault("_unknown_usernames", set())
            if value not in said:
                said.add(value)
                messages.warning(request, f"No user is named “{value}”: nothing below is theirs.")
        return queryset.filter(**{f"{self.user_path}__in": ids})


def username_filter(user_path: str) -> type[UsernameFilter]:
    """A UsernameFilter for the user at `user_path` (e.g. `user`, `session__started_by`)."""
    return type("UsernameFilter", (UsernameFilter,), {"user_path": user_path})


def choices_read_once(field: forms.ModelChoiceField) -> forms.ModelChoiceField:
    """`field` with its choices read now, once: an inline's forms each copy the field, and each
    copy read its queryset again (a query per row of the inline)."""
    field.choices = list(field.choices)
    return field


class AmountField(forms.DecimalField):
    """An amount input that shows what was stored without the column's trailing zeros: a cap
    of 5 reads 5, not 5.0000000000 (the credits columns keep 10 decimal places). Spaces alone
    are no amount (Django's field read them as "Enter a number.").

    Typed as a plain number (`typed_amount`): 1e3, 1,000, 1,5, 1_000 or ١٢ is refused with
    what it takes. A text box, not a number box: a browser's number box sends only what it can
    read, so the server saw 15 for 1,5 and nothing for ١٢ (then asked for a cap)."""

    widget = forms.TextInput
    default_error_messages = {"invalid": f"Enter {AMOUNT_EXPECTED}."}

    def widget_attrs(self, widget):
        return {**super().widget_attrs(widget), "inputmode": "decimal"}  # a phone's digit pad

    def to_python(self, value):
        if isinstance(value, str):
            value = value.strip()
            if value not in self.empty_values:
                try:
                    value = typed_amount(value)
                except ValueError:
                    raise ValidationError(self.error_messages["invalid"], code="invalid") from None
        return super().to_python(value)

    def prepare_value(self, value):
        return plain_amount(value) if isinstance(value, Decimal) else value


def moment(value) -> str:
    """A timestamp as a list column shows it: 2026-11-25 13:14:05 (UTC), compact and sortable
    by eye, instead of 'Nov. 25, 2026, 1:14 p.m.'."""
    return "" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


class MomentInput(AdminSplitDateTime):
    """An editable moment's date and time inputs (a price list's start, a user's dates), which
    the console reads in UTC as it shows every moment: their labels say so, as the lists'
    columns do. Django's own labels name no zone, and its note under them ("You are 13 hours
    ahead of server time") shows only to a browser away from UTC, naming none either: an
    operator in Auckland typed a price list's start for midnight on the 1st and had it take
    over 13 hours later."""

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["date_label"] = "Date (UTC):"
        context["time_label"] = "Time (UTC):"
        return context


# A model admin's `formfield_overrides` for its editable moments (with any others it has).
MOMENT_INPUTS = {models.DateTimeField: {"widget": MomentInput}}


def moment_column(field: str = "created_at", description: str = "created (UTC)"):
    """A list column showing `field` as `moment` does, sortable by it."""

    @admin.display(description=description, ordering=field)
    def column(self, obj) -> str:
        return moment(getattr(obj, field))

    return column


def name_column(field: str, name: str, description: str | None = None):
    """A list column showing the row at the relation `field` as Django's does (its name),
    sortable by that name (`name`, e.g. `username`), where Django's sorted by the row's key."""

    @admin.display(description=description or field, ordering=f"{field}__{name}")
    def column(self, obj) -> str:
        related = getattr(obj, field)
        return "-" if related is None else str(related)

    return column


def figure_column(field: str, description: str, spec: str | Callable[..., str] = ","):
    """A list column showing the number in `field` formatted by `spec`: a format spec (`,` for
    counts) or an amount's rule (`credits_text`, `usd_text`, `plain_amount` for prices),
    sortable by it."""

    @admin.display(description=description, ordering=field)
    def column(self, obj) -> str:
        value = getattr(obj, field)
        if value is None:
            return self.get_empty_value_display()
        return spec(value) if callable(spec) else format(value, spec)

    return column


def badge(tone: str, text: str) -> SafeString:
    """A small coloured label (tone: ok, warn, bad, info) for a status column."""
    return format_html('<span class="pantheon-badge {}">{}</span>', tone, text)


# The console page being served (its request and admin site), from its view through the
# rendering of its template (`PantheonAdminSite.admin_view`): what a page shows of a row it
# names depends on who reads it, and Django's read-only fields and list columns are given the
# row alone.
_serving: ContextVar[tuple | None] = ContextVar("pantheon_console_serving", default=None)


@contextmanager
def serving(request, site) -> Iterator[None]:
    """`request` is the console page being served, on `site`: `operator_may`, `may_open` and
    `related` read it."""
    bound = _serving.set((request, site))
    try:
        yield
    finally:
        _serving.reset(bound)


def operator_may(permission: str) -> bool:
    """Whether the operator of the console page being served holds `permission` (True outside
    a console page: a shell, a command)."""
    served = _serving.get()
    return served is None or served[0].user.has_perm(permission)


def may_open(model: type[Model], obj: Model | None = None) -> bool:
    """Whether the operator of the page being served may open the list of `model` (or the page
    of `obj`): a link to a page they may not open answered 403 when followed."""
    served = _serving.get()
    if served is None:
        return True
    request, site = served
    model_admin = site._registry.get(model)
    return model_admin is not None and model_admin.has_view_permission(request, obj)


def withheld_name(obj: Model) -> str | None:
    """How `obj` is named to the operator of the page being served who may not view it, when
    its name holds a user's words (a session's title, a room's name: its admin's
    `name_withheld` says which): its kind and id, the name withheld. None when it may be
    named."""
    served = _serving.get()
    if served is None:
        return None
    request, site = served
    model_admin = site._registry.get(type(obj))
    what = getattr(model_admin, "name_withheld", None)
    if what is None or model_admin.has_view_permission(request, obj):
        return None
    opts = obj._meta
    key = str(obj.pk)
    key = f"{key[:8]}…" if len(key) > 8 else key
    return (
        f"{opts.verbose_name} {key} ({what} withheld: only who may view "
        f"{opts.verbose_name_plural} reads it)"
    )


def named(obj: Model | None) -> str:
    """`obj` by its name, as a list column shows a related row, or by its kind and id for who
    may not read its name (`withheld_name`)."""
    if obj is None:
        return "-"
    return withheld_name(obj) or str(obj)


def related(obj: Model) -> str:
    """`obj` as a page shows a related row: a link to its page for who may open it, else its
    name alone (`named`), as Django's read-only fields showed it, linked to a 403."""
    if not may_open(type(obj), obj):
        return named(obj)
    opts = obj._meta
    try:
        page = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return str(obj)
    return format_html('<a href="{}">{}</a>', page, obj)


def record_links(query: dict[str, str], lists: Sequence[type[Model]]) -> str:
    """Links to the lists of `lists`' records, each filtered by `query`: the audit trail from
    a user's or a session's page to their sessions, turns, messages and ledger rows; only the
    lists the operator may open."""
    lists = [model for model in lists if may_open(model)]
    if not lists:
        return "-"
    return format_html_join(
        " · ",
        '<a href="{}">{}</a>',
        (
            (
                reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
                + "?"
                + urlencode(query),
                model._meta.verbose_name_plural,
            )
            for model in lists
        ),
    )
