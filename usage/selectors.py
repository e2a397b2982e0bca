import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, connections
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    F,
    Max,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from pantheon.figures import plain_amount
from rooms.selectors import agents_on_alias
from usage.models import (
    USAGE_TOTAL_FIELDS,
    BillingProfile,
    CallStatus,
    LlmCallEvent,
    ModelAlias,
    ModelPrice,
    MonthlyUsage,
    PricingVersion,
)

AGENTS_NAMED = 5  # an alias's warnings and delete refusal name this many of its agents

# Calls that never got the provider's usage: in flight (pending) or cut short by a dying worker
# (lost). There was nothing to price, so their `priced` (false until the call completes) says
# nothing about prices.
UNMETERED_STATUSES = (CallStatus.PENDING, CallStatus.LOST)
# Unpriced: the call has provider usage to price and no price was known, so its cost reads $0.
UNPRICED_CALLS = Q(priced=False) & ~Q(status__in=UNMETERED_STATUSES)


def priced_or_none(event: LlmCallEvent) -> bool | None:
    """Whether a call was priced; None for a pending or lost one, which had no usage to price."""
    return None if event.status in UNMETERED_STATUSES else event.priced


def database_now() -> datetime:
    """The database's clock, the one every host's turns stamp their calls by (`TurnState.now`):
    one query, for the commands and pages that have no turn's clock to hand. SQLite's clock is
    its host's."""
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


def model_aliases_enabled() -> QuerySet[ModelAlias]:
    return ModelAlias.objects.filter(enabled=True).order_by("alias")


def model_alias_enabled(alias: str) -> bool:
    return ModelAlias.objects.filter(alias=alias, enabled=True).exists()


def model_alias_named(name: str) -> ModelAlias | None:
    """The alias `name` names, whatever its case: aliases differ by more than case
    (`ModelAlias.clean`), so `STUBFAST` is `stubfast`, and a client that typed it otherwise
    was refused `unknown_model_alias`. Among twins saved before that rule, its exact spelling
    wins, else the first enabled one in code-point order (a disabled twin that sorted first
    was taken, and refused)."""
    # Sorted here, not by the database, whose collation (en_US on a server) is not code points.
    rows = sorted(
        ModelAlias.objects.filter(alias__iexact=name), key=lambda row: (not row.enabled, row.alias)
    )
    return next((row for row in rows if row.alias == name), rows[0] if rows else None)


@dataclass(frozen=True)
class AliasPricing:
    """An alias with everything a metered call needs: config, multiplier and prices.

    `multiplier` is the alias's credit multiplier in the active version, else the version's
    default, else None (no active version: x1).
    """

    alias: ModelAlias
    pricing_version_id: UUID | None
    multiplier: Decimal | None
    input_usd_per_mtok: Decimal | None
    cached_input_usd_per_mtok: Decimal | None
    output_usd_per_mtok: Decimal | None
    # Ledger rows were stamped with the list when it was read: it can no longer change (its
    # editors refuse), so these are its prices for good. Otherwise they may change until its
    # first row is stamped, and the transaction that stamps it reads them again, held
    # (`alias_prices_held`).
    prices_final: bool

    @property
    def has_price(self) -> bool:
        return self.input_usd_per_mtok is not None and self.output_usd_per_mtok is not None


# Hot path (every turn): one plain statement instead of an ORM query with five correlated
# subqueries, which cost several milliseconds to build. Portable to SQLite and PostgreSQL.
# The multiplier is the alias's own in the active version, else that version's default; with no
# active version at all it is NULL (x1). The alias's columns are named, not `alias.*`: a
# connection's prepared statement keeps its result's shape when a migration adds a column.
# `stamped`: the ledger's newest row (one step down the created_at index, however long the
# ledger) is stamped with the version, so its prices are final. False right after a new list
# takes effect, until a turn stamps it: those turns read their prices again as they stamp it.
# (Asking for any row of the version instead is a plan PostgreSQL may answer by reading the
# ledger from its oldest rows: the active version's rows are the newest.)
_ALIAS_FIELDS = tuple(ModelAlias._meta.concrete_fields)
_ALIAS_ATTNAMES = [field.attname for field in _ALIAS_FIELDS]
_ALIAS_COLUMNS = ", ".join(f'alias."{field.column}"' for field in _ALIAS_FIELDS)
_ALIAS_PRICING_SQL = """
    WITH active AS (
        SELECT id, default_multiplier,
               id = (SELECT pricing_version_id FROM usage_llmcallevent
                     ORDER BY created_at DESC LIMIT 1) AS stamped
        FROM usage_pricingversion
        WHERE effective_from <= {now} ORDER BY effective_from DESC LIMIT 1
    )
    SELECT {columns}, active.id AS active_version_id, active.stamped AS active_stamped,
           COALESCE(price.credit_multiplier, active.default_multiplier) AS active_multiplier,
           price.input_usd_per_mtok AS price_input,
           price.cached_input_usd_per_mtok AS price_cached,
           price.output_usd_per_mtok AS price_output
    FROM usage_modelalias alias
    LEFT JOIN active ON 1 = 1
    LEFT JOIN usage_modelprice price
        ON price.model_alias_id = alias.id AND price.pricing_version_id = active.id
    WHERE alias.alias IN ({placeholders})
"""


def alias_pricing(*, aliases: Iterable[str], at: datetime | None = None) -> dict[str, AliasPricing]:
    """The named aliases with their multiplier and prices in the pricing version in force at
    `at`: a turn's clock (`TurnState.now`, the database's, read with its session), else the
    database's clock now. By a host's own clock, a host minutes ahead priced its turns by a
    list scheduled to start minutes later, and one behind went on with the list it replaced."""
    names = sorted(set(aliases))
    if not names:
        return {}
    params: list[Any] = []
    if at is not None or connection.vendor != "postgresql":
        # SQLite's clock is its host's.
        now, params = "%s", [at or timezone.now()]
    else:
        now = "STATEMENT_TIMESTAMP()"
    with connection.cursor() as cursor:
        cursor.execute(_alias_pricing_sql(now, len(names)), [*params, *names])
        rows = cursor.fetchall()
    # The alias's columns made a ModelAlias as its queryset makes one (its fields' converters
    # applied), without `Manager.raw`'s machinery: it worked out again, for every turn, which
    # column is which field (a third of this read's CPU).
    converters = _alias_converters(connection.alias, connection.vendor)
    width = len(_ALIAS_FIELDS)
    pricing = {}
    for row in rows:
        values = list(row[:width])
        for index, column, field_converters in converters:
            for converter in field_converters:
                values[index] = converter(values[index], column, connection)
        alias = ModelAlias.from_db(connection.alias, _ALIAS_ATTNAMES, values)
        version_id, stamped, multiplier, price_input, price_cached, price_output = row[width:]
        pricing[alias.alias] = AliasPricing(
            alias=alias,
            pricing_version_id=_as_uuid(version_id),
            multiplier=_as_decimal(multiplier),
            input_usd_per_mtok=_as_decimal(price_input),
            cached_input_usd_per_mtok=_as_decimal(price_cached),
            output_usd_per_mtok=_as_decimal(price_output),
            prices_final=bool(stamped),
        )
    return pricing


@functools.cache
def _alias_pricing_sql(now: str, count: int) -> str:
    """`_ALIAS_PRICING_SQL` for `count` aliases at `now` (SQL: a placeholder, or the clock)."""
    return _ALIAS_PRICING_SQL.format(
        now=now, columns=_ALIAS_COLUMNS, placeholders=", ".join(["%s"] * count)
    )


@functools.cache
def _alias_converters(using: str, vendor: str) -> tuple[tuple[int, Any, list], ...]:
    """The (column index, column, converters) of the alias's fields that have converters on the
    database `using` (as the ORM applies them to a row it reads): worked out once per process
    (`vendor` keys it too), as `pantheon.compiled` does for its reads. Every turn worked them
    out again, about a sixth of its read of the aliases' prices."""
    connection = connections[using]
    found = []
    for index, field in enumerate(_ALIAS_FIELDS):
        column = field.get_col(ModelAlias._meta.db_table)
        converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if converters:
            found.append((index, column, converters))
    return tuple(found)


# The list's row is held (FOR SHARE) until the transaction ends: its editors lock it (FOR NO
# KEY UPDATE, `price_lists_lock`) before they ask whether ledger rows are stamped with it, so
# none changes it before the commit, and one under way is waited for. On SQLite every
# transaction takes the write lock as it begins (settings: IMMEDIATE): nothing to add.
_HELD_LIST_SQL = "SELECT default_multiplier FROM usage_pricingversion WHERE id = %s"


def alias_prices_held(pricing: Mapping[str, AliasPricing]) -> Mapping[str, AliasPricing]:
    """`pricing` (`alias_pricing`) with its list's prices as they stand, held so until the
    transaction ends: call it in the transaction that stamps the list's first ledger rows, for
    them to be priced at what the list says from then on. Prices that were final when read
    (`prices_final`) are kept, with no query: the common case. Otherwise the list's row is
    held and its prices read again (two statements): an edit committed since the first read
    prices the turn; one under way is waited for. A list deleted meanwhile is left to the
    stamp's own foreign key, as before. The aliases' settings stay as first read."""
    version_id = next(iter(pricing.values())).pricing_version_id if pricing else None
    if version_id is None or all(read.prices_final for read in pricing.values()):
        return pricing
    lock = " FOR SHARE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            _HELD_LIST_SQL + lock,
            [PricingVersion._meta.pk.get_db_prep_value(version_id, connection)],
        )
        held = cursor.fetchone()
    if held is None:
        return pricing
    default = _as_decimal(held[0])
    prices = {
        price["model_alias__alias"]: price
        for price in ModelPrice.objects.filter(
            pricing_version_id=version_id, model_alias__alias__in=list(pricing)
        ).values(
            "model_alias__alias",
            "credit_multiplier",
            "input_usd_per_mtok",
            "cached_input_usd_per_mtok",
            "output_usd_per_mtok",
        )
    }
    return {name: _priced_as(read, prices.get(name), default) for name, read in pricing.items()}


def _priced_as(
    read: AliasPricing, price: Mapping[str, Any] | None, default: Decimal | None
) -> AliasPricing:
    """`read` with a price row's figures (None: the list has no price for the alias)."""
    price = price or {}
    multiplier = price.get("credit_multiplier")
    return replace(
        read,
        multiplier=default if multiplier is None else multiplier,
        input_usd_per_mtok=price.get("input_usd_per_mtok"),
        cached_input_usd_per_mtok=price.get("cached_input_usd_per_mtok"),
        output_usd_per_mtok=price.get("output_usd_per_mtok"),
        prices_final=True,
    )


def _as_decimal(value) -> Decimal | None:
    # SQLite hands raw numeric columns back as float or str; PostgreSQL as Decimal.
    return None if value is None else Decimal(str(value))


def _as_uuid(value) -> UUID | None:
    if value is None or isinstance(value, UUID):
        return value
    return UUID(str(value))


def active_pricing_version(at: datetime | None = None) -> PricingVersion | None:
    """The price list in force at `at` (default now, by the database's clock, which the turns
    price their calls by: `alias_pricing`): the newest already in effect."""
    return (
        PricingVersion.objects.filter(effective_from__lte=at or Now())
        .order_by("-effective_from")
        .first()
    )


def price_list_successor(version: PricingVersion) -> PricingVersion | None:
    """The list that takes over from `version`: the first to start after it (None: `version`
    is the latest, and prices every call from its start on), with `scheduled`: whether its
    start is still to come by the database's clock."""
    return (
        PricingVersion.objects.filter(effective_from__gt=version.effective_from)
        .annotate(
            scheduled=ExpressionWrapper(Q(effective_from__gt=Now()), output_field=BooleanField())
        )
        .order_by("effective_from")
        .first()
    )


# A price's figures as the warnings name them.
_PRICE_FIGURES = {
    "input_usd_per_mtok": "input ${}/M",
    "cached_input_usd_per_mtok": "cached input ${}/M",
    "output_usd_per_mtok": "output ${}/M",
    "credit_multiplier": "credits x{}",
}


@dataclass(frozen=True)
class Supersession:
    """A list that starts after a price list (`successor`), and so takes over from it: at a
    start still to come (`scheduled`), or already (the list prices no new calls)."""

    successor: PricingVersion
    starts: str  # its start as the pages write it, UTC
    scheduled: bool
    text: str  # said in full, the edited price compared with the successor's


def price_list_superseded(
    version: PricingVersion, *, price: ModelPrice | None = None
) -> Supersession | None:
    """Why an edit of `version` (of `price` in it) may not price the calls it is meant to: a
    list that starts after it takes over from it then (None when none does). The newest list
    in effect prices every call, so a list scheduled for tomorrow (a copy made in the console,
    in effect in a day) supersedes one started today by `set_model_price`, and the prices set
    in it stop applying then. `price`: the edited price, compared with its alias's price in
    that list (none there: the alias's calls would go unpriced)."""
    successor = price_list_successor(version)
    if successor is None:
        return None
    starts = successor.effective_from.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    # By the database's clock, as the turns price by it (an annotation of the read).
    scheduled = bool(successor.scheduled)  # type: ignore[attr-defined]
    if scheduled:
        said = (
            f"{successor.name!r} is scheduled to take over from {version.name!r} at {starts} "
            f"UTC: calls from then are priced by it, not by {version.name!r}"
        )
    else:
        said = (
            f"{version.name!r} was superseded by {successor.name!r} at {starts} UTC: it "
            "prices no new calls"
        )
    return Supersession(successor, starts, scheduled, said + _compared(price, version, successor))


def _compared(price: ModelPrice | None, version: PricingVersion, successor: PricingVersion) -> str:
    """The end of the sentence: how the successor prices the edited price's alias."""
    if price is None:
        return "."
    alias = price.model_alias.alias
    theirs = ModelPrice.objects.filter(
        pricing_version=successor, model_alias_id=price.model_alias_id
    ).first()
    if theirs is None:
        return (
            f", and {successor.name!r} has no price for {alias} (its calls would be priced from "
            "litellm's cost table, or left unpriced)."
        )
    ours = _price_figures(price, version)
    differ = [
        _PRICE_FIGURES[field].format("none" if value is None else plain_amount(value))
        for field, value in _price_figures(theirs, successor).items()
        if value != ours[field]
    ]
    # Named: "…, not by 'v3', which has…" read as the edited list's prices, the ones it lost.
    return f", and {successor.name!r} has {alias} at {', '.join(differ)}." if differ else "."


def _price_figures(price: ModelPrice, version: PricingVersion) -> dict[str, Decimal | None]:
    """A price's figures as they bill: its multiplier, else its list's default."""
    figures = {field: getattr(price, field) for field in _PRICE_FIGURES}
    if figures["credit_multiplier"] is None:
        figures["credit_multiplier"] = version.default_multiplier
    return figures


def month_of(at: datetime | None = None) -> date:
    """The first day of the UTC calendar month of `at` (default now): a MonthlyUsage key."""
    return month_start(at).date()


def month_credits(*, user, at: datetime | None = None) -> Decimal:
    """The user's credits in the calendar month (UTC) of `at`, default this month.

    One indexed row read (the MonthlyUsage counter), however many calls the month holds.
    `user` is a user or a user id.
    """
    user_id = getattr(user, "pk", user)
    credits = (
        MonthlyUsage.objects.filter(user_id=user_id, month=month_of(at))
        .values_list("credits", flat=True)
        .first()
    )
    return Decimal("0") if credits is None else credits


def month_start(at: datetime | None = None) -> datetime:
    at = (at or timezone.now()).astimezone(UTC)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(at: datetime | None = None) -> datetime:
    start = month_start(at)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def credits_used(*, user, since: datetime, until: datetime | None = None) -> Decimal:
    events = LlmCallEvent.objects.filter(user=user, created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    total = events.aggregate(total=Sum("credits"))["total"]
    return total or Decimal("0")


def disabled_alias_effects(alias: str) -> str | None:
    """What a disabled `alias` stops: the turns of the agents that use it (naming a few), and
    its role when settings give it one (the orchestrator's manager, the summarizer); or None."""
    effects, remedies = [], ["enable it again"]
    if alias == settings.PANTHEON_MANAGER_MODEL_ALIAS:
        effects.append("orchestrated rooms refuse turns (PANTHEON_MANAGER_MODEL_ALIAS)")
    if alias == settings.PANTHEON_SUMMARIZER_MODEL_ALIAS:
        effects.append("sessions get no new summaries (PANTHEON_SUMMARIZER_MODEL_ALIAS)")
    if effects:
        remedies.append("have the setting name another alias")
    count, named = agents_on_alias(alias, named=AGENTS_NAMED)
    if count:
        who = "the agent that uses it" if count == 1 else f"the {count:,} agents that use it"
        effects.append(
            f"{who} ({agents_named(count, named)}) {'answers' if count == 1 else 'answer'} no "
            "turns: direct sessions with them and the rooms seating them refuse turns "
            "(model_alias_disabled), orchestrated rooms leave them out"
        )
        remedies.append("move them to another alias")
    if not effects:
        return None
    todo = remedies[0] if len(remedies) == 1 else f"{', '.join(remedies[:-1])} or {remedies[-1]}"
    return f"While {alias} is disabled, {'; '.join(effects)}. {todo.capitalize()}."


def agents_named(count: int, named: list[str]) -> str:
    """`@ada of sam, @bo of kim and 3 more`: the agents named, and how many were not."""
    more = f" and {count - len(named):,} more" if count > len(named) else ""
    return f"{', '.join(named)}{more}"


def latest_ledger_moment() -> datetime | None:
    """When the ledger's latest call was recorded (an indexed column), None when it is empty."""
    return LlmCallEvent.objects.aggregate(latest=Max("created_at"))["latest"]


def ledger_names_user(user_id) -> bool:
    """Whether ledger rows name this user (an indexed foreign key): the account stays."""
    return LlmCallEvent.objects.filter(user_id=user_id).exists()


def billing_profile_for(*, user) -> BillingProfile | None:
    if getattr(user, "billing_profile_loaded", False):
        # Loaded with the user by pantheon.authentication; a missing one raises AttributeError.
        return getattr(user, "billing_profile", None)
    return BillingProfile.objects.filter(user=user).first()


def ledger_total_sums() -> dict[str, tuple[Any, Any]]:
    """How each usage total (USAGE_TOTAL_FIELDS) sums ledger rows, with its value for none."""
    zero = Decimal("0")
    return {
        "llm_calls": (Count("id"), 0),
        "input_tokens": (Sum(F("input_tokens_fresh") + F("input_tokens_cached")), 0),
        "output_tokens": (Sum("output_tokens"), 0),
        "credits": (Sum("credits"), zero),
        "provider_cost_usd": (Sum("provider_cost_usd"), zero),
    }


def _usage_sums() -> dict:
    """SQL sums of ledger rows for an aggregate or annotate (prefixed: the ledger has fields of
    some of the same names)."""
    return {
        f"sum_{name}": Coalesce(sum_, zero) for name, (sum_, zero) in ledger_total_sums().items()
    }


def _usage_of(row: dict) -> dict:
    return {name: row[f"sum_{name}"] for name in USAGE_TOTAL_FIELDS}


def usage_by_model(*, user, since: datetime, until: datetime) -> list[dict]:
    rows = (
        LlmCallEvent.objects.filter(user=user, created_at__gte=since, created_at__lt=until)
        .values("model_alias")
        .annotate(**_usage_sums())
        .order_by("model_alias")
    )
    return [{"model_alias": row["model_alias"], **_usage_of(row)} for row in rows]


def usage_totals_of_turn(turn_ref: Any) -> dict[str, Any]:
    """SQL expressions for the usage totals of a turn (`turn_ref`: its id or an OuterRef) from
    its stored ledger rows, named as on Turn: an UPDATE can set the totals in one statement."""
    rows = LlmCallEvent.objects.filter(turn_id=turn_ref).order_by().values("turn_id")
    return {
        name: Coalesce(Subquery(rows.annotate(total=sum_).values("total")), zero)
        for name, (sum_, zero) in ledger_total_sums().items()
    }


def usage_totals(events: Iterable[LlmCallEvent]) -> dict:
    """The same totals of rows in memory."""
    events = list(events)
    return {
        "llm_calls": len(events),
        "input_tokens": sum(e.input_tokens_fresh + e.input_tokens_cached for e in events),
        "output_tokens": sum(e.output_tokens for e in events),
        "credits": sum((e.credits for e in events), Decimal("0")),
        "provider_cost_usd": sum((e.provider_cost_usd for e in events), Decimal("0")),
    }
