import calendar
import csv
import io
import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ORDER_VAR, PAGE_VAR
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Now
from django.http import HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.html import format_html

from pantheon.console import (
    MOMENT_INPUTS,
    AmountField,
    ChangesWithValues,
    EditedAsShownAdmin,
    EditedAsShownInline,
    KeptWhileInUse,
    RecordAdmin,
    ShownAmounts,
    badge,
    by_id_or_text,
    choices_read_once,
    figure_column,
    moment,
    moment_column,
    name_column,
    operator_may,
    username_filter,
)
from pantheon.days import day_written, month_written
from pantheon.db import database
from pantheon.figures import (
    counted,
    credit_cap_text,
    credits_text,
    fixed_point,
    plain_amount,
    usd_text,
)
from rooms.models import AGENT_KEY_PATTERN
from rooms.selectors import agents_on_alias
from sessions_app.models import Session
from sessions_app.services import turns_cancel_with_sessions
from usage.admin_views import spreadsheet_text
from usage.dashboard import LEDGER_FIGURES, usage_totals_between
from usage.models import (
    API_BASE_FORM_OPTIONS,
    BillingProfile,
    DailyUsageRollup,
    LlmCallEvent,
    ModelAlias,
    ModelPrice,
    MonthlyUsage,
    PricingVersion,
    validate_credit_cap,
)
from usage.rollups import day_start
from usage.selectors import (
    AGENTS_NAMED,
    UNMETERED_STATUSES,
    UNPRICED_CALLS,
    agents_named,
    disabled_alias_effects,
    latest_ledger_moment,
    month_of,
    next_month_start,
    price_list_superseded,
    priced_or_none,
)
from usage.services import (
    billing_profile_set_cap,
    billing_profile_set_suspended,
    model_prices_copy,
    price_lists_lock,
)

# --- configuration (Owners change it) -----------------------------------------------------------


def ledger_uses_version(version_id) -> bool:
    """Whether ledger rows are stamped with this pricing version (an indexed foreign key)."""
    return LlmCallEvent.objects.filter(pricing_version_id=version_id).exists()


def _pks(model: type[models.Model], values) -> list:
    """The values that are primary keys of `model` (as typed in a URL or posted), others left
    out: they name no row to lock, and Django answers for them as it does."""
    pks = []
    for value in values:
        try:
            pks.append(model._meta.pk.to_python(unquote(str(value))))
        except (ValidationError, ValueError):
            continue
    return pks


class LocksItsPriceLists:
    """A save or delete that writes price lists (their fields, their prices, or prices going
    with an alias) locks them as its transaction begins (`price_lists_lock`), before the page
    asks whether ledger rows are stamped with them (`kept_because`): a turn stamping a list
    for the first time holds it from its read of the prices to its commit. The save then
    either commits before that read, and prices the turn, or finds the turn's row and is
    refused as the page of a stamped list is. Without the lock, a save could pass the question
    while the turn's row was not yet committed: the ledger then said the list priced it at a
    figure the list no longer had."""

    # Whether its change and add pages write price lists (an alias's writes none: only its
    # delete takes prices with it).
    saves_price_lists = True

    def price_lists_of(self, pks: list) -> Q:
        """The price lists that these rows are, or whose prices they are or hold."""
        raise NotImplementedError

    def price_lists_posted(self, request) -> Q:
        """The price lists a posted form puts its row in."""
        return Q(pk__in=[])

    def _lock_price_lists(self, request, object_ids) -> None:
        where = self.price_lists_of(_pks(self.model, object_ids))  # type: ignore[attr-defined]
        price_lists_lock(PricingVersion.objects.filter(where | self.price_lists_posted(request)))

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method != "POST" or not self.saves_price_lists:
            return super().changeform_view(  # type: ignore[misc]
                request, object_id, form_url, extra_context
            )
        with transaction.atomic():
            self._lock_price_lists(request, [] if object_id is None else [object_id])
            return super().changeform_view(  # type: ignore[misc]
                request, object_id, form_url, extra_context
            )

    def delete_view(self, request, object_id, extra_context=None):
        if request.method != "POST":
            return super().delete_view(request, object_id, extra_context)  # type: ignore[misc]
        with transaction.atomic():
            self._lock_price_lists(request, [object_id])
            return super().delete_view(request, object_id, extra_context)  # type: ignore[misc]

    def changelist_view(self, request, extra_context=None):
        # The bulk delete, confirmed.
        deletes = "delete_selected" in request.POST.getlist("action") and "post" in request.POST
        if request.method != "POST" or not deletes:
            return super().changelist_view(request, extra_context)  # type: ignore[misc]
        with transaction.atomic():
            if request.POST.get("select_across") == "1":
                price_lists_lock(PricingVersion.objects.all())
            else:
                self._lock_price_lists(request, request.POST.getlist(ACTION_CHECKBOX_NAME))
            return super().changelist_view(request, extra_context)  # type: ignore[misc]


class ModelAliasForm(forms.ModelForm):
    """A figure the form refused is not compared with the other one: the model's check would
    read the row's old value (or the default) in its place."""

    def clean(self):
        cleaned = super().clean()
        for name in ("context_window", "max_output_tokens"):
            if name in self.errors:
                setattr(self.instance, name, None)
        return cleaned


# An alias's fields that say where its calls go and with which key: a superuser's to set.
PROVIDER_ACCESS_FIELDS = ("api_base", "api_key_env")


@admin.register(ModelAlias)
class ModelAliasAdmin(
    LocksItsPriceLists, ChangesWithValues, KeptWhileInUse, EditedAsShownAdmin, admin.ModelAdmin
):
    formfield_overrides = {models.URLField: API_BASE_FORM_OPTIONS}
    list_display = [
        "alias",
        "litellm_model",
        "api_base",
        "api_key_env",
        "context_window",
        "max_output_tokens",
        "enabled",
    ]
    list_filter = ["enabled"]
    search_fields = ["alias", "litellm_model"]
    form = ModelAliasForm
    saves_price_lists = False

    def price_lists_of(self, pks: list) -> Q:
        # A deleted alias takes its prices in every list with it.
        return Q(pk__in=ModelPrice.objects.filter(model_alias__in=pks).values("pricing_version"))

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        # The figures' own least values: a number box's "≥ 0" named a minimum they do not have.
        least = [v.limit_value for v in db_field.validators if isinstance(v, MinValueValidator)]
        if isinstance(db_field, models.PositiveIntegerField) and least:
            kwargs.setdefault("min_value", max(least))
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        effects = None if obj.enabled else disabled_alias_effects(obj.alias)
        if effects:
            self.message_user(request, effects, messages.WARNING)

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["help_texts"] = {
            "enabled": "Turns refuse a disabled alias. Disable an alias to retire it: one the "
            "usage ledger names or agents use cannot be deleted."
        }
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        fields = [*super().get_readonly_fields(request, obj)]
        # Where the alias's calls go and which key they carry: an Owner who set them sent a
        # provider's key (any variable ending in _API_KEY), and every user's prompts on the
        # alias, to a listener of theirs, or had the server POST to an internal address. Only
        # a superuser sets them here (or `manage.py set_model_alias`, from a shell).
        if not request.user.is_superuser:
            fields += [name for name in PROVIDER_ACCESS_FIELDS if name not in fields]
        # The ledger and agents name an alias by its name: renamed, they would name nothing.
        if obj is not None and self.kept_because(request, obj) is not None:
            fields.append("alias")
        return fields

    def get_fields(self, request, obj=None):
        # In the model's order, editable or not (Django puts read-only fields last).
        fields = super().get_fields(request, obj)
        order = [field.name for field in ModelAlias._meta.fields]
        return sorted(fields, key=lambda name: order.index(name) if name in order else len(order))

    def why_kept(self, alias: ModelAlias) -> str | None:
        # Its ledger rows, filtered by it on the billing dashboard, or its prices in a price
        # list that ledger rows are stamped with (the delete would cascade to them).
        versions = ModelPrice.objects.filter(model_alias=alias).values("pricing_version")
        if (
            LlmCallEvent.objects.filter(model_alias=alias.alias).exists()
            or LlmCallEvent.objects.filter(pricing_version__in=versions).exists()
        ):
            return "ledger rows name it or were priced with its prices; disable it to retire it."
        # Agents name their alias too: deleted, their turns would be refused as unknown.
        count, named = agents_on_alias(alias.alias, named=AGENTS_NAMED)
        if not count:
            return None
        agents_text = "an agent uses" if count == 1 else f"{count:,} agents use"
        return (
            f"{agents_text} it ({agents_named(count, named)}); move them to another alias first, "
            "or disable it to retire it."
        )


# Prices and multipliers read in their inputs as in the lists (0.28, not the column's 0.280000).
AMOUNT_INPUTS = {models.DecimalField: {"form_class": AmountField}}


class ModelPriceInline(ShownAmounts, EditedAsShownInline, admin.TabularInline):
    model = ModelPrice
    extra = 0
    formfield_overrides = AMOUNT_INPUTS
    fields = [
        "model_alias",
        "credit_multiplier",
        "input_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "output_usd_per_mtok",
    ]

    def get_queryset(self, request):
        # Each row's caption names its alias and list: read with the prices, not per row.
        return super().get_queryset(request).select_related("model_alias", "pricing_version")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        return choices_read_once(field) if db_field.name == "model_alias" else field

    # `obj` is the price list: the prices of one that ledger rows are stamped with stay as
    # they are (no change, no delete, no new price).

    def has_delete_permission(self, request, obj=None):
        return not self._frozen(request, obj) and super().has_delete_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return not self._frozen(request, obj) and super().has_change_permission(request, obj)

    def has_add_permission(self, request, obj=None):
        return not self._frozen(request, obj) and super().has_add_permission(request, obj)

    def _frozen(self, request, version) -> bool:
        # The page's own answer (PricingVersionAdmin.kept_because), asked once per request.
        if version is None:
            return False
        pricing = self.admin_site.get_model_admin(PricingVersion)
        return pricing.kept_because(request, version) is not None


class PricingVersionForm(forms.ModelForm):
    """A price list starts after the ledger's latest call: one starting before it would claim to
    have priced calls that the lists then in force priced (and are stamped with)."""

    class Meta:
        model = PricingVersion
        fields = ["name", "default_multiplier", "effective_from"]

    def clean_effective_from(self):
        starts = self.cleaned_data["effective_from"]
        current = None if self.instance._state.adding else self.instance.effective_from
        # The page shows the start to the second: posted back as shown, it stays as it was, to
        # the microsecond (set_model_price starts a list at the moment it runs). An old start
        # may stay.
        if current is not None and starts in (current, current.replace(microsecond=0)):
            return current
        if starts is None:
            return starts
        other = PricingVersion.objects.filter(effective_from=starts).exclude(pk=self.instance.pk)
        if (tied := other.first()) is not None:
            raise forms.ValidationError(
                "%(other)s starts at this moment too: one list is in force at a time, so give "
                "each its own start.",
                code="start_taken",
                params={"other": tied.name},
            )
        latest = latest_ledger_moment()
        if latest is not None and starts <= latest:
            raise forms.ValidationError(
                "Must be after the ledger's latest call (%(latest)s UTC): the calls until then "
                "were priced by the lists in force then.",
                code="before_ledger",
                params={"latest": moment(latest)},
            )
        return starts


class PriceListPagesAdmin(
    LocksItsPriceLists,
    ShownAmounts,
    ChangesWithValues,
    KeptWhileInUse,
    EditedAsShownAdmin,
    admin.ModelAdmin,
):
    """What the pages of price lists and their prices share: the lists they write locked first,
    amounts shown as entered, changes logged with their values, kept while the ledger uses them."""


@admin.register(PricingVersion)
class PricingVersionAdmin(PriceListPagesAdmin):
    """Price lists: the newest already in effect prices every call (and is stamped on it)."""

    form = PricingVersionForm
    formfield_overrides = {**AMOUNT_INPUTS, **MOMENT_INPUTS}

    list_display = ["name", "multiplier", "effective", "state", "prices_count", "created"]
    multiplier = figure_column("default_multiplier", "default multiplier", plain_amount)
    effective = moment_column("effective_from", "effective from (UTC)")
    created = moment_column()
    ordering = ["-effective_from"]
    inlines = [ModelPriceInline]
    frozen_while_kept = True
    actions = ["copy_as_new_list"]

    def get_queryset(self, request):
        # When the list that starts next takes over from each: its state, in the same query,
        # as is the database's clock, by which the turns pick the list in force.
        successor = PricingVersion.objects.filter(effective_from__gt=OuterRef("effective_from"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                prices_count=Count("prices"),
                superseded_at=Subquery(
                    successor.order_by("effective_from").values("effective_from")[:1]
                ),
                read_at=Now(),
            )
        )

    @admin.display(description="state (UTC)")
    def state(self, version) -> str:
        """In force now, scheduled, or superseded: the newest list already in effect prices
        every call, so a list scheduled after another takes over from it at its start. Now is
        the database's clock (read with the list), by which the turns pick the list in force:
        by this host's, a host minutes ahead said a list in force minutes before it was."""
        now, ends = version.read_at, version.superseded_at
        until = "" if ends is None else f" until {moment(ends)}"
        if version.effective_from > now:
            return badge("info", f"scheduled from {moment(version.effective_from)}{until}")
        if ends is None or ends > now:
            return badge("ok", f"in force now{until}")
        return f"superseded since {moment(ends)}"

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if form.has_changed() or any(formset.has_changed() for formset in formsets):
            warn_if_superseded(self, request, form.instance)

    def price_lists_of(self, pks: list) -> Q:
        # The list and its prices (its page's inline), or the lists deleted.
        return Q(pk__in=pks)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and self.kept_because(request, obj):
            # The page is read-only: say why, and what to do instead (to whoever may do it).
            how = (
                " To change prices, select it in the list and copy it as a new one."
                if self.has_add_permission(request)
                else ""
            )
            self.message_user(
                request,
                "Ledger rows are stamped with this price list, so it and its prices are "
                f"read-only.{how}",
                messages.INFO,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.action(description="Copy as a new price list (in effect in a day)", permissions=["add"])
    def copy_as_new_list(self, request, queryset):
        """A list the ledger is stamped with is read-only: prices change through a copy, which
        takes effect a day from now so there is time to edit it (and its start) first."""
        starts = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
        copied = []
        with transaction.atomic():
            for version in queryset.order_by("effective_from"):
                # Each copy its own start, a second after any list's (one in force at a time).
                while PricingVersion.objects.filter(effective_from=starts).exists():
                    starts += timedelta(seconds=1)
                copy = PricingVersion.objects.create(
                    name=_copy_name(version.name),
                    default_multiplier=version.default_multiplier,
                    effective_from=starts,
                )
                model_prices_copy(source=version, into=copy)
                self.log_addition(request, copy, f"Copied from {version.name}.")
                copied.append(f"{copy.name}, in effect from {moment(starts)} UTC")
        self.message_user(
            request,
            f"Copied as {'; '.join(copied)}: edit "
            f"{'its' if len(copied) == 1 else 'their'} prices and start before then.",
            messages.SUCCESS,
        )

    @admin.display(description="prices", ordering="prices_count")
    def prices_count(self, version) -> int:
        return version.prices_count

    def why_kept(self, version: PricingVersion) -> str | None:
        if ledger_uses_version(version.pk):
            return "ledger rows are stamped with it; copy it to change prices."
        return None


def warn_if_superseded(
    model_admin, request, version: PricingVersion, *, price: ModelPrice | None = None
) -> None:
    """A list saved (or a price in it) that a list starting later takes over from: say which
    and when, as `set_model_price` does; the operator may believe the edit prices the calls."""
    superseded = price_list_superseded(version, price=price)
    if superseded is None:
        return
    advice = (
        f" To keep {'this price' if price else 'these prices'} from then, set "
        f"{'it' if price else 'them'} in {superseded.successor.name!r} too, or move that "
        "list's start."
        if superseded.scheduled
        else ""
    )
    model_admin.message_user(request, superseded.text + advice, messages.WARNING)


def _copy_name(name: str) -> str:
    """`name (copy)`, or `name (copy 2)` and so on while that is taken (names are unique)."""
    taken = set(
        PricingVersion.objects.filter(name__startswith=f"{name} (copy").values_list(
            "name", flat=True
        )
    )
    candidate, number = f"{name} (copy)", 1
    while candidate in taken:
        number += 1
        candidate = f"{name} (copy {number})"
    return candidate


@admin.register(ModelPrice)
class ModelPriceAdmin(PriceListPagesAdmin):
    list_display = [
        "model_alias",
        "pricing_version",
        "multiplier",
        "input_price",
        "cached_input_price",
        "output_price",
    ]
    formfield_overrides = AMOUNT_INPUTS
    multiplier = figure_column("credit_multiplier", "credit multiplier", plain_amount)
    input_price = figure_column("input_usd_per_mtok", "input (USD / M tokens)", plain_amount)
    cached_input_price = figure_column(
        "cached_input_usd_per_mtok", "cached input (USD / M tokens)", plain_amount
    )
    output_price = figure_column("output_usd_per_mtok", "output (USD / M tokens)", plain_amount)
    list_filter = ["pricing_version", "model_alias"]
    list_select_related = ["model_alias", "pricing_version"]
    frozen_while_kept = True

    def why_kept(self, price: ModelPrice) -> str | None:
        if ledger_uses_version(price.pricing_version_id):
            return "its price list prices ledger rows."
        return None

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.has_changed():
            warn_if_superseded(self, request, obj.pricing_version, price=obj)

    def price_lists_of(self, pks: list) -> Q:
        # The list a price is in (changed, moved away, deleted).
        return Q(pk__in=ModelPrice.objects.filter(pk__in=pks).values("pricing_version"))

    def price_lists_posted(self, request) -> Q:
        # The list a new or moved price goes into.
        return Q(pk__in=_pks(PricingVersion, request.POST.getlist("pricing_version")))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "pricing_version":
            # A new or moved price goes only into a list no ledger row is stamped with.
            stamped = LlmCallEvent.objects.filter(pricing_version=OuterRef("pk"))
            kwargs["queryset"] = PricingVersion.objects.exclude(Exists(stamped))
            kwargs["help_text"] = (
                "Lists that ledger rows are stamped with are read-only and not offered here: "
                "copy one to change its prices."
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


# --- billing profiles ---------------------------------------------------------------------------


def no_cap_field() -> forms.BooleanField:
    return forms.BooleanField(label="No cap", required=False, help_text="No monthly limit.")


class CapForm(forms.Form):
    """A cap, or no cap said in so many words: an empty box lifted the caps, and a browser
    empties a number box whose text is not a number (Chrome drops the letters typed in it)."""

    cap = AmountField(
        label="Monthly credit cap",
        required=False,
        min_value=0,
        max_digits=24,
        decimal_places=10,
        validators=[validate_credit_cap],  # the profile's own rule
        help_text="Credits per calendar month (UTC).",
    )
    no_cap = no_cap_field()

    def clean(self):
        data = super().clean()
        if "cap" not in self.errors:
            check_cap_choice(data.get("cap"), data.get("no_cap"))
        return data


def cap_text(cap: Decimal | None) -> str:
    """A cap as an operator types it (12, 0.5), or "no cap": the admin log's, as a change on
    the profile's page logs it."""
    return "no cap" if cap is None else plain_amount(cap)


def cap_shown(cap: Decimal | None) -> str:
    """A cap as the pages show it (`credit_cap_text`: 12.123456, 5.0000), or "no cap"."""
    return "no cap" if cap is None else credit_cap_text(cap)


def check_cap_choice(cap, no_cap) -> None:
    """A cap, or "No cap" ticked: one of the two, said in so many words."""
    if no_cap and cap is not None:
        raise forms.ValidationError("Give a cap or tick “No cap”, not both.")
    if not no_cap and cap is None:
        raise forms.ValidationError("Give a cap in credits, or tick “No cap” to lift it.")


class BillingProfileForm(forms.ModelForm):
    """The profile's page holds the set-cap action's rule: an empty cap box lifts nothing."""

    no_cap = no_cap_field()

    class Meta:
        model = BillingProfile
        fields = ["user", "monthly_credit_cap", "is_suspended"]
        help_texts = {"monthly_credit_cap": "Credits per calendar month (UTC)."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:
            self.fields["no_cap"].initial = self.instance.monthly_credit_cap is None

    def clean(self):
        data = super().clean()
        if "monthly_credit_cap" not in self.errors:
            check_cap_choice(data.get("monthly_credit_cap"), data.get("no_cap"))
        return data


BILLING_TONES = {"suspended": "bad", "over cap": "warn", "active": "ok"}


def billing_status_badge(profile: BillingProfile | None, month_credits: Decimal) -> str:
    """The profile's status (`BillingProfile.status`) as a badge; no profile is active."""
    status = "active" if profile is None else profile.status(month_credits)
    return badge(BILLING_TONES[status], status)


class BillingStatusFilter(admin.SimpleListFilter):
    title = "billing status"
    parameter_name = "is_suspended__exact"  # the plain boolean filter's: links keep working

    def lookups(self, request, model_admin):
        # "not suspended", not "active": it also lists users who have used up their cap, whose
        # rows read "over cap".
        return [("0", "not suspended"), ("1", "suspended")]

    def queryset(self, request, queryset):
        if self.value() in ("0", "1"):
            return queryset.filter(is_suspended=self.value() == "1")
        return queryset


def ended_turns_text(count: int) -> str:
    """What the console says of the running turns a change to a user's account ended."""
    return f"Ended {counted(count, 'running turn')} of theirs."


class EndsUsersRunningTurns:
    """A console page whose save can close an account (suspended, deactivated): it ends the
    user's running turns as their own cancel would (`turn_cancelled`), as an account closed
    makes no further LLM call (DESIGN: refused before any), while a roundtable under way went
    on calling every seat, billed. The page says how many after Django's own message about the
    save, which names what was changed."""

    def end_running_turns(self, request, *, users: list) -> int:
        """End the running turns of `users`: how many. A page's save (not an action, which
        says it in its own message) says so once its answer is made."""
        if not users:
            return 0
        ended = len(
            turns_cancel_with_sessions(
                sessions=Session.objects.filter(started_by__in=users)
            ).turn_ids
        )
        request._pantheon_turns_ended = getattr(request, "_pantheon_turns_ended", 0) + ended
        return ended

    def response_add(self, request, obj, *args, **kwargs):
        response = super().response_add(request, obj, *args, **kwargs)  # type: ignore[misc]
        self._say_turns_ended(request)
        return response

    def response_change(self, request, obj):
        response = super().response_change(request, obj)  # type: ignore[misc]
        self._say_turns_ended(request)
        return response

    def _say_turns_ended(self, request) -> None:
        ended = getattr(request, "_pantheon_turns_ended", 0)
        if ended:
            self.message_user(request, ended_turns_text(ended))  # type: ignore[attr-defined]


@admin.register(BillingProfile)
class BillingProfileAdmin(
    EndsUsersRunningTurns, ChangesWithValues, EditedAsShownAdmin, admin.ModelAdmin
):
    """Caps and suspensions. The actions write one admin-log entry per profile they change."""

    list_display = ["username", "month_credits", "credit_cap", "status", "updated"]
    list_filter = [BillingStatusFilter, username_filter("user")]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    actions = ["suspend", "reactivate", "set_cap"]
    form = BillingProfileForm
    # "No cap" beside the cap box it stands for.
    fields = ["user", "monthly_credit_cap", "no_cap", "is_suspended"]
    formfield_overrides = {models.DecimalField: {"form_class": AmountField}}
    names_its_kind = True  # "Billing profile of bob" (BillingProfile.__str__)

    def save_model(self, request, obj, form, change):
        """A profile saved suspended (ticked on its page, or added so) ends its user's running
        turns, as the suspend action does."""
        super().save_model(request, obj, form, change)
        if obj.is_suspended and (not change or "is_suspended" in form.changed_data):
            self.end_running_turns(request, users=[obj.user_id])

    def get_readonly_fields(self, request, obj=None):
        # A profile is its user's: moved to another user, it would hand over the cap and the
        # suspension (and leave the first user with neither).
        fields = super().get_readonly_fields(request, obj)
        return fields if obj is None else [*fields, "user", "status"]

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is None:
            return fields
        if not self.has_change_permission(request, obj):
            # Read, not edited: the cap as the list writes it ("no cap" included), not the
            # column's 10 places, and no "No cap" box, which only an edit fills in.
            fields = [
                "credit_cap" if name == "monthly_credit_cap" else name
                for name in fields
                if name != "no_cap"
            ]
        return [*fields, "status"]

    def has_delete_permission(self, request, obj=None):
        # Deleting a profile would lift its cap and suspension without saying so: the actions
        # do that, each with its admin-log entry.
        return False

    def get_queryset(self, request):
        this_month = MonthlyUsage.objects.filter(user=OuterRef("user"), month=month_of())
        return (
            super()
            .get_queryset(request)
            .annotate(
                month_credits=Coalesce(
                    Subquery(this_month.values("credits")[:1]),
                    Decimal("0"),
                    output_field=models.DecimalField(),
                )
            )
        )

    username = name_column("user", "username")
    month_credits = figure_column("month_credits", "credits this month", credits_text)
    updated = moment_column("updated_at", "updated (UTC)")

    @admin.display(description="monthly credit cap", ordering="monthly_credit_cap")
    def credit_cap(self, profile) -> str:
        return cap_shown(profile.monthly_credit_cap)

    @admin.display(description="status", ordering="is_suspended")
    def status(self, profile) -> str:
        # The month's credits come with the profile (get_queryset): no query per row.
        return billing_status_badge(profile, profile.month_credits)

    @admin.action(description="Suspend selected users", permissions=["change"])
    def suspend(self, request, queryset):
        self._set_suspended(request, queryset, suspended=True)

    @admin.action(description="Reactivate selected users", permissions=["change"])
    def reactivate(self, request, queryset):
        self._set_suspended(request, queryset, suspended=False)

    def _set_suspended(self, request, queryset, *, suspended: bool) -> None:
        changed = []
        with transaction.atomic():
            for profile in (
                queryset.select_for_update(of=("self",)).select_related("user").order_by("pk")
            ):
                if billing_profile_set_suspended(profile=profile, suspended=suspended):
                    self.log_change(request, profile, "Suspended." if suspended else "Reactivated.")
                    changed.append(profile.user_id)
            ended = self.end_running_turns(request, users=changed) if suspended else 0
        verb = "Suspended" if suspended else "Reactivated"
        if changed:
            said = f"{verb} {counted(len(changed), 'user')}."
            if ended:
                said += f" {ended_turns_text(ended)}"
            self.message_user(request, said, messages.SUCCESS)
        else:
            state = "suspended" if suspended else "active"
            self.message_user(request, f"Nothing changed: they were all {state} already.")

    @admin.action(description="Set monthly credit cap…", permissions=["change"])
    def set_cap(self, request, queryset):
        form = CapForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            cap = form.cleaned_data["cap"]
            changed = 0
            with transaction.atomic():
                for profile in (
                    queryset.select_for_update(of=("self",)).select_related("user").order_by("pk")
                ):
                    was = profile.monthly_credit_cap
                    if billing_profile_set_cap(profile=profile, cap=cap):
                        # From and to, as a change on the profile's page is logged.
                        self.log_change(
                            request,
                            profile,
                            f"Set monthly credit cap: {cap_text(was)} → {cap_text(cap)}.",
                        )
                        changed += 1
            if changed:
                done = "Lifted the cap" if cap is None else f"Set a cap of {cap_shown(cap)}"
                self.message_user(
                    request, f"{done} for {counted(changed, 'user')}.", messages.SUCCESS
                )
            else:
                self.message_user(request, "Nothing changed: they all had that cap already.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Set monthly credit cap",
            "opts": self.opts,
            "form": form,
            # Each user's cap now and this month's credits, in columns of their own: a figure
            # in brackets after a name ("bob (now: 12)") read as the credits they had used.
            "profiles": [
                (
                    profile,
                    cap_shown(profile.monthly_credit_cap),
                    credits_text(profile.month_credits),
                )
                for profile in queryset.select_related("user").order_by("user__username")
            ],
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/usage/billingprofile/set_cap.html", context)


# --- records (read-only for everyone) -----------------------------------------------------------


class AliasFilter(admin.SimpleListFilter):
    """Aliases from the alias table (a handful of rows), not a DISTINCT over the ledger."""

    title = "model alias"
    parameter_name = "model_alias"

    def lookups(self, request, model_admin):
        return [(alias, alias) for alias in ModelAlias.objects.values_list("alias", flat=True)]

    def queryset(self, request, queryset):
        return queryset.filter(model_alias=self.value()) if self.value() else queryset


class PricedFilter(admin.SimpleListFilter):
    """Priced or unpriced among the calls that had usage to price: a pending or lost call
    (no provider usage yet, or ever) is neither, whatever its `priced` flag says."""

    title = "pricing"
    parameter_name = "priced__exact"  # the plain boolean filter's: links keep working

    def lookups(self, request, model_admin):
        return [("1", "priced"), ("0", "unpriced (no price known)")]

    def queryset(self, request, queryset):
        if self.value() == "1":
            return queryset.filter(priced=True)
        if self.value() == "0":
            return queryset.filter(UNPRICED_CALLS)
        return queryset


def date_window(since: str | None, until: str | None) -> str | None:
    """The window `created_at__gte` / `__lt` cover, as an auditor reads it: whole UTC days
    as `2026-11-05 to 2026-12-04` (both included), else moments. None: no window (or one
    that does not parse: the filter reports that itself)."""
    bounds = []
    for text in (since, until):
        moment_ = None
        if text:
            moment_ = parse_datetime(text.strip())
            if moment_ is None and (day := parse_date(text.strip())) is not None:
                moment_ = day_start(day)
            if moment_ is None:
                return None
            if timezone.is_naive(moment_):
                moment_ = timezone.make_aware(moment_)
        bounds.append(moment_)
    start, end = bounds
    if start is None and end is None:
        return None
    try:
        return _window_in_utc(start, end)
    except OverflowError:
        return None  # a bound that UTC carries past the calendar: the list says it is invalid


def _window_in_utc(start: datetime | None, end: datetime | None) -> str:
    whole = all(b is None or b.astimezone(UTC).time() == time.min for b in (start, end))
    if whole:
        first = start and start.astimezone(UTC).date().isoformat()
        last = end and (end.astimezone(UTC).date() - timedelta(days=1)).isoformat()
        if first and last:
            return f"{first} (UTC)" if first == last else f"{first} to {last} (UTC)"
        return f"from {first} (UTC)" if first else f"to {last} (UTC)"
    if start and end:
        return f"from {moment(start)} to before {moment(end)} (UTC)"
    return f"from {moment(start)} (UTC)" if start else f"before {moment(end)} (UTC)"


class CreatedFilter(admin.DateFieldListFilter):
    """Django's date links, which also name a window they have no link for: the one a row of
    the billing dashboard opens the ledger with (`created_at__gte` / `__lt`)."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "created (UTC)"

    def choices(self, changelist):
        choices = list(super().choices(changelist))
        window = date_window(
            self.date_params.get(self.lookup_kwarg_since),
            self.date_params.get(self.lookup_kwarg_until),
        )
        if window and not any(choice["selected"] for choice in choices):
            choices.append(
                {"selected": True, "query_string": changelist.get_query_string(), "display": window}
            )
        return choices


# Query parameters the daily rollups can answer the ledger list's sums for (with ordering,
# paging and a facets request, which the list ignores); any other filter (purpose, status,
# priced, a search) sums the ledger itself.
ROLLUP_ANSWERABLE = {"username", "model_alias", "o", "p", "_facets"} | {
    f"created_at__{part}" for part in ("year", "month", "day")
}


def _rollup_days(params) -> tuple[date | None, date | None] | None:
    """The days a ledger-list query covers, when the rollups can answer for it, else None."""
    if not set(params) <= ROLLUP_ANSWERABLE:
        return None
    try:
        year, month, day = (
            int(params[f"created_at__{part}"]) if f"created_at__{part}" in params else None
            for part in ("year", "month", "day")
        )
        if year is None:
            return (None, None) if month is None and day is None else None
        if month is None:
            # A day without a month is Django's January that day: let the ledger answer.
            return None if day is not None else (date(year, 1, 1), date(year, 12, 31))
        if day is None:
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        return date(year, month, day), date(year, month, day)
    except ValueError:
        return None


def _request_or_key(term: str) -> Q:
    """A provider's request id (indexed: `llmcall_request_id`), or an agent key (lower case, as
    AGENT_KEY_PATTERN: "ADA" finds @ada's calls). Not both ORed: the agent key has no index,
    and a request id searched with it read the whole ledger three times (0.6 s at 700,000
    rows). A term that could be either (`abc123`) is a request id if a row has it."""
    key = term.lower()
    if key[:1] in ("@", "\uff20"):
        # @ada as the pages name an agent ("Ada (@ada)"), or ＠ada as CJK input methods type it.
        key = key[1:]
    if not re.fullmatch(AGENT_KEY_PATTERN, key):
        return Q(request_id=term)
    if LlmCallEvent.objects.filter(request_id=term).exists():
        return Q(request_id=term)
    return Q(agent_key=key)


@admin.register(LlmCallEvent)
class LlmCallEventAdmin(RecordAdmin):
    """The ledger: append-only, read by everyone who may, edited by no one."""

    list_display = [
        "created",
        "username",
        "purpose",
        "model_alias",
        "status",
        "tokens_in",
        "tokens_cached",
        "tokens_out",
        "credits_used",
        "cost",
        "priced_flag",
        "latency",
    ]
    list_display_links = ["created"]
    list_filter = [
        username_filter("user"),
        AliasFilter,
        "purpose",
        "status",
        PricedFilter,
        ("created_at", CreatedFilter),
    ]
    search_fields = ["turn__id", "session__id", "request_id", "agent_key"]
    search_help_text = (
        "A turn or session id (as in the logs), a request id or an agent key (ada or @ada)."
    )
    list_select_related = ["user"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    # Newest first is the index's order (and oldest first its reverse); sorting a million rows
    # by a figure, a status or an alias read them all (1.0-1.5 s). The billing dashboard ranks
    # users and aliases by what they spent; the filters narrow the rows to sort.
    sortable_by = ["created", "username"]
    show_full_result_count = False

    created = moment_column()
    username = name_column("user", "username")
    tokens_in = figure_column("input_tokens_fresh", "in")
    tokens_cached = figure_column("input_tokens_cached", "cached")
    tokens_out = figure_column("output_tokens", "out")
    credits_used = figure_column("credits", "credits", credits_text)
    cost = figure_column("provider_cost_usd", "cost (USD)", usd_text)
    latency = figure_column("latency_ms", "ms")

    @admin.display(description="priced", boolean=True, ordering="priced")
    def priced_flag(self, event: LlmCallEvent) -> bool | None:
        return priced_or_none(event)

    @admin.display(description="priced")
    def pricing(self, event: LlmCallEvent) -> str:
        if event.status in UNMETERED_STATUSES:
            return (
                f"not applicable: the call is {event.status}, the provider reported no usage "
                "to price (its input tokens are the estimate made before the call)"
            )
        if event.priced:
            return "yes"
        return format_html(
            "{} no price was known for the model: its cost reads $0", badge("warn", "unpriced")
        )

    def get_fields(self, request, obj=None):
        # The `priced` flag says nothing for a call that had no usage to price: say what holds.
        return [
            "pricing" if name == "priced" else name for name in super().get_fields(request, obj)
        ]

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        text = _request_or_key(term)
        return by_id_or_text(queryset, term, ids=["turn_id", "session_id"], text=text), False

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        if queryset.model is not LlmCallEvent:  # a row's history pages its admin-log entries
            return super().get_paginator(
                request, queryset, per_page, orphans, allow_empty_first_page
            )
        # The sums above the list also give the paginator its count (it would count again);
        # the view picks them up from the request. Filters the rollups can answer (user, alias,
        # dates) read them plus the ledger after them, as the dashboard does: a few thousand
        # rows instead of a million; any other filter sums the ledger rows themselves.
        days = _rollup_days(request.GET)
        read = {"source": "ledger", "ledger_too": True}
        bounds = None
        if days is None:
            # The first and last call too, for the date drill-down (`ledger_date_hierarchy`):
            # asked apart, they read the filtered rows a second time.
            sums = queryset.order_by().aggregate(
                **LEDGER_FIGURES, first_call=Min("created_at"), last_call=Max("created_at")
            )
            bounds = {"first": sums.pop("first_call"), "last": sums.pop("last_call")}
        else:
            totals, sources = usage_totals_between(
                start=days[0],
                end=days[1],
                # As the list's user box reads it (`UsernameFilter`): NFKC.
                username=get_user_model().normalize_username(
                    request.GET.get("username", "").strip()
                ),
                model_alias=request.GET.get("model_alias", ""),
            )
            sums = vars(totals)
            if sources.rollups is not None:  # else no rollup covers these days: all ledger
                read = {"source": "rollups", "ledger_too": sources.ledger is not None}
        request.ledger_sums = {name: value or 0 for name, value in sums.items()} | read
        paginator = self.paginator(queryset, per_page, orphans, allow_empty_first_page)
        paginator.count = request.ledger_sums["llm_calls"]
        # Summed over the listed rows themselves, or read from the rollups.
        paginator.count_is_exact = days is None
        paginator.date_bounds = bounds
        return paginator

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context is not None and hasattr(request, "ledger_sums"):
            context["ledger_sums"] = request.ledger_sums
            context["date_window"] = date_window(
                request.GET.get("created_at__gte"), request.GET.get("created_at__lt")
            )
            context["all_dates_url"] = context["cl"].get_query_string(remove=["created_at__"])
            query = context["cl"].get_query_string(remove=[PAGE_VAR, ORDER_VAR])
            context["export_url"] = reverse("admin:usage_llmcallevent_export") + query
        return response

    def get_urls(self):
        export = path(
            "export.csv",
            self.admin_site.admin_view(self.export_view),
            name="usage_llmcallevent_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request):
        """The ledger rows of the list as filtered (its filters and search), as CSV, oldest
        first, for whoever may read the ledger (Owners, Analysts): auditors went to SQL for
        them. Streamed a few thousand rows at a time, each batch a database section of its
        own: a year of calls never sits in memory, nor holds a connection."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            listed = self.get_changelist_instance(request).queryset
        except IncorrectLookupParameters:
            return HttpResponse(
                "The export could not be filtered as the address asked (a value it cannot "
                "take): nothing was exported.",
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        rows = listed.order_by("created_at", "pk")
        response = StreamingHttpResponse(_ledger_csv(rows), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y-%m-%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="pantheon-ledger-{stamp}.csv"'
        return response


# The export's columns: each ledger field, as stored (the user and the price list by name),
# and what each is read from.
LEDGER_CSV_COLUMNS = {
    "id": "id",
    "created_at": "created_at",
    "username": "user__username",
    "purpose": "purpose",
    "model_alias": "model_alias",
    "provider": "provider",
    "provider_model": "provider_model",
    "status": "status",
    "error_type": "error_type",
    "attempts": "attempts",
    "input_tokens_fresh": "input_tokens_fresh",
    "input_tokens_cached": "input_tokens_cached",
    "output_tokens": "output_tokens",
    "total_tokens": "total_tokens",
    "oe_tokens": "oe_tokens",
    "credits": "credits",
    "provider_cost_usd": "provider_cost_usd",
    "priced": "priced",
    "latency_ms": "latency_ms",
    "pricing_version": "pricing_version__name",
    "agent_key": "agent_key",
    "request_id": "request_id",
    "room_id": "room_id",
    "session_id": "session_id",
    "turn_id": "turn_id",
    # The user's id, last (a column added after the others: positions stay): a username can
    # change, or be given to someone else after a delete.
    "user_id": "user_id",
}
LEDGER_CSV_BATCH = 5_000
_CREATED, _STATUS, _PRICED = (
    list(LEDGER_CSV_COLUMNS).index(column) for column in ("created_at", "status", "priced")
)
# Each column's decimal places, for the figures a database returns as floats (SQLite).
_PLACES = {
    index: field.decimal_places
    for index, source in enumerate(LEDGER_CSV_COLUMNS.values())
    if isinstance(field := LlmCallEvent._meta.get_field(source.split("__")[0]), models.DecimalField)
}


async def _ledger_csv(rows):
    """The CSV's lines, a batch of rows at a time, read after the last one's (created_at, id):
    the order of the ledger's index on both, however long the ledger. Plain values, not model
    rows: a year of calls (700,000 rows, 260 MB) took 41 s as rows."""
    yield _csv_lines([list(LEDGER_CSV_COLUMNS)])
    after = None
    while batch := await database(_ledger_batch)(rows, after):
        yield _csv_lines(_ledger_csv_row(values) for values in batch)
        after = (batch[-1][_CREATED], batch[-1][0])


def _ledger_batch(rows, after) -> list[tuple]:
    if after is not None:
        moment_, pk = after
        rows = rows.filter(created_at__gte=moment_).exclude(created_at=moment_, pk__lte=pk)
    return list(rows.values_list(*LEDGER_CSV_COLUMNS.values())[:LEDGER_CSV_BATCH])


def _ledger_csv_row(values: tuple) -> list:
    row = []
    for index, value in enumerate(values):
        if index == _CREATED:
            value = value.astimezone(UTC).isoformat()
        elif index == _PRICED:
            # A pending or lost call had no usage to price: neither priced nor unpriced.
            value = "" if values[_STATUS] in UNMETERED_STATUSES else str(value).lower()
        elif index in _PLACES and value is not None:
            value = fixed_point(value, _PLACES[index])
        elif isinstance(value, str):
            value = spreadsheet_text(value)
        row.append("" if value is None else value)
    return row


def _csv_lines(rows) -> str:
    lines = io.StringIO()
    csv.writer(lines).writerows(rows)
    return lines.getvalue()


@admin.register(DailyUsageRollup)
class DailyUsageRollupAdmin(RecordAdmin):
    """Derived from the ledger by `rollup_usage`; rebuilt, never edited."""

    list_display = [
        "day_shown",
        "username",
        "model_alias",
        "calls",
        "tokens_in",
        "tokens_out",
        "credits_used",
        "cost",
        "unpriced_calls",
    ]
    # The aliases from their table, not a DISTINCT over every rollup (0.7 s at 1.3 million).
    list_filter = [username_filter("user"), AliasFilter]
    list_select_related = ["user"]
    date_hierarchy = "day"
    ordering = ["-day", "user", "model_alias"]
    show_full_result_count = False

    username = name_column("user", "username")
    calls = figure_column("llm_calls", "calls")
    tokens_in = figure_column("input_tokens", "input tokens")
    tokens_out = figure_column("output_tokens", "output tokens")
    credits_used = figure_column("credits", "credits", credits_text)
    cost = figure_column("provider_cost_usd", "cost (USD)", usd_text)

    @admin.display(description="day (UTC)", ordering="day")
    def day_shown(self, rollup: DailyUsageRollup) -> str:
        return rollup.day.isoformat()


class MonthFilter(admin.SimpleListFilter):
    """The months that have counters (one row per user and month: a small table), newest
    first, as 2026-12."""

    title = "month"
    parameter_name = "month"

    def lookups(self, request, model_admin):
        months = MonthlyUsage.objects.dates("month", "month", order="DESC")
        return [(month.isoformat(), f"{month:%Y-%m}") for month in months]

    def value(self):
        """The month asked for as its links write it (its first day, 2026-11-01), also when
        written as the page shows a month and the commands take one (2026-11)."""
        text = super().value()
        try:
            return month_written(text).isoformat()
        except (TypeError, ValueError):
            return text

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            return queryset.filter(month=day_written(self.value()))
        except ValueError as error:
            # Said as any filter the list cannot take (no rows at all read as no usage).
            raise IncorrectLookupParameters(error) from error


@admin.register(MonthlyUsage)
class MonthlyUsageAdmin(RecordAdmin):
    """The counters caps read; moved with each ledger row, rebuilt by `reconcile_usage --fix`."""

    list_display = ["month_shown", "username", "credits_used", "calls", "billing", "updated"]
    list_filter = [username_filter("user"), MonthFilter]
    list_select_related = ["user"]
    ordering = ["-month", "user"]
    show_full_result_count = False

    username = name_column("user", "username")
    credits_used = figure_column("credits", "credits", credits_text)
    # Completed: a counter counts a call once it completes, never one under way or lost, which
    # the billing dashboard and `GET usage` count among their calls (15 here read as 16 there).
    calls = figure_column("llm_calls", "completed calls")
    updated = moment_column("updated_at", "updated (UTC)")

    @admin.display(description="month (UTC)", ordering="month")
    def month_shown(self, usage: MonthlyUsage) -> str:
        return f"{usage.month:%Y-%m}"

    @admin.display(description="billing")
    def billing(self, usage: MonthlyUsage) -> str:
        """The user's month on the billing dashboard: its provider cost, its calls per alias
        (lost ones too) and their export, what the month is invoiced from."""
        if not operator_may("usage.view_llmcallevent"):  # the dashboard is a 403 to them
            return self.get_empty_value_display()
        last_day = month_of(next_month_start(day_start(usage.month))) - timedelta(days=1)
        query = {"user": usage.user.get_username(), "start": usage.month, "end": last_day}
        return format_html(
            '<a href="{}?{}">the month on the billing dashboard</a>',
            reverse("admin:billing"),
            urlencode(query),
        )
