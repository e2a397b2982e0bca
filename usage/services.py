"""Usage writes: model aliases, prices, the metered ledger and the monthly counters."""

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

from django import forms
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from orchestration.metering import compute_credits, compute_oe, compute_price_usd, round_money
from orchestration.types import LlmResult
from pantheon.compiled import Chain, CompiledInsert, CompiledUpdate
from usage.models import (
    API_BASE_FORM_OPTIONS,
    CANCELLED_AFTER_WORDS,
    BillingProfile,
    CallStatus,
    LlmCallEvent,
    ModelAlias,
    ModelPrice,
    MonthlyUsage,
    PricingVersion,
    validate_credit_cap,
)
from usage.price_rules import cached_input_refusal
from usage.selectors import (
    AliasPricing,
    active_pricing_version,
    database_now,
    model_alias_named,
    month_of,
)


def model_alias_set(
    *,
    alias: str,
    litellm_model: str | None = None,
    api_base: str | None = None,
    api_key_env: str | None = None,
    context_window: int | None = None,
    max_output_tokens: int | None = None,
    enabled: bool | None = None,
) -> tuple[ModelAlias, bool]:
    """Create or update an alias; only the fields given change. Returns (alias, created).

    Its texts are taken as the console takes them: trimmed, the name and the model required
    (`' '` made an enabled alias whose every call failed, and that the console could then not
    save; `'llama '` was refused by the naming rule)."""
    alias = _as_the_console_takes(ModelAlias, {"alias": alias})["alias"]
    texts = {"litellm_model": litellm_model, "api_base": api_base, "api_key_env": api_key_env}
    changes: dict[str, object] = {}
    changes |= _as_the_console_takes(
        ModelAlias, {field: text for field, text in texts.items() if text is not None}
    )
    figures = {
        "context_window": context_window,
        "max_output_tokens": max_output_tokens,
        "enabled": enabled,
    }
    changes |= {field: value for field, value in figures.items() if value is not None}
    # By its exact name: a name that is another alias's in another case is refused as its twin
    # (`ModelAlias.clean`), not taken for it (an operator creating `DeepSeek` with its own model
    # would have changed deepseek's).
    existing = ModelAlias.objects.filter(alias=alias).first()
    created = existing is None
    if existing is None:
        # Its twin's refusal first: "does not exist yet: --model is required" sent an operator
        # who had typed `DeepSeek` for deepseek to add a model, only to be refused then.
        ModelAlias(alias=alias)._clean_name()
    if existing is None and not changes.get("litellm_model"):
        raise ValidationError(
            {"litellm_model": f"Alias {alias!r} does not exist yet: --model is required."}
        )
    row = existing or ModelAlias(alias=alias)
    for field, value in changes.items():
        setattr(row, field, value)
    row.full_clean()
    row.save()
    return row, created


# The console's form for a field, where its admin sets more than the model field says
# (ModelAliasAdmin.formfield_overrides).
_CONSOLE_FORM_FIELD_OPTIONS: dict[str, dict[str, Any]] = {"api_base": API_BASE_FORM_OPTIONS}


def _as_the_console_takes(model: type[models.Model], texts: dict[str, str]) -> dict[str, str]:
    """Texts given to a command, as the console's form fields for the same model fields take
    them: trimmed (so only spaces is blank), refused blank where the field is required, within
    its length. The model's own checks (`full_clean`) come after, for both."""
    taken, problems = {}, {}
    for name, text in texts.items():
        field = cast(models.Field, model._meta.get_field(name))
        form_field = cast(forms.Field, field.formfield(**_CONSOLE_FORM_FIELD_OPTIONS.get(name, {})))
        try:
            taken[name] = form_field.clean(text)
        except ValidationError as exc:
            problems[name] = exc.messages
    if problems:
        raise ValidationError(problems)
    return taken


def usage_call_open(
    *,
    user,
    model_alias: str,
    pricing: AliasPricing | None,
    purpose: str,
    estimated_input_tokens: int = 0,
    room_id=None,
    session_id=None,
    turn_id=None,
    agent_key: str = "",
    at: datetime | None = None,
) -> LlmCallEvent:
    """The ledger row of a call about to start, as `pending`, with its input estimate.

    Commit it before the call: should the worker die during the call, the row stays behind,
    pending, for `recover_turns` to mark lost (the provider may have billed it). `at` is when,
    by the database's clock (a turn's: `TurnState.now`), else this host's: the row's month and
    day (its month counter, the cap checks, the rollups) go by it, and every host's rows are
    ordered by it.
    """
    event = LlmCallEvent(
        created_at=at or timezone.now(),
        user=user,
        room_id=room_id,
        session_id=session_id,
        turn_id=turn_id,
        agent_key=agent_key or "",
        purpose=purpose,
        model_alias=model_alias,
        provider_model=pricing.alias.litellm_model if pricing else "",
        input_tokens_fresh=estimated_input_tokens,
        total_tokens=estimated_input_tokens,
        status=CallStatus.PENDING,
        attempts=0,
        pricing_version_id=pricing.pricing_version_id if pricing else None,
    )
    _LEDGER_ROW.insert(event)
    return event


# A turn opens a ledger row for each call and completes it once answered: both compiled once
# per process (`pantheon.compiled`), not built by the ORM each time.
_LEDGER_ROW = CompiledInsert(LlmCallEvent)


def usage_call_meter(
    *, event: LlmCallEvent, result: LlmResult, pricing: AliasPricing | None
) -> None:
    """Fill a pending row, in memory, with the finished call's usage, OE, credits and cost.
    `usage_call_complete` saves them."""
    fresh, cached, output = (
        result.input_tokens_fresh,
        result.input_tokens_cached,
        result.output_tokens,
    )
    oe = compute_oe(fresh=fresh, cached=cached, output=output)
    cost, priced = _provider_cost(result=result, pricing=pricing)
    event.provider = result.provider
    event.provider_model = result.provider_model
    event.input_tokens_fresh = fresh
    event.input_tokens_cached = cached
    event.output_tokens = output
    event.total_tokens = fresh + cached + output
    event.oe_tokens = oe
    event.provider_cost_usd = cost
    event.priced = priced
    event.credits = compute_credits(oe=oe, multiplier=pricing.multiplier if pricing else None)
    event.latency_ms = result.latency_ms
    event.status = result.status
    event.error_type = result.error_kind or ""
    event.attempts = result.attempts
    event.request_id = result.request_id


# What completing a call changes on its row (the triggers of the ledger allow only these).
OUTCOME_FIELDS = (
    "provider",
    "provider_model",
    "input_tokens_fresh",
    "input_tokens_cached",
    "output_tokens",
    "total_tokens",
    "oe_tokens",
    "provider_cost_usd",
    "priced",
    "credits",
    "latency_ms",
    "status",
    "error_type",
    "attempts",
    # Set once, from none, as the row completes (usage/0024): the provider's name for the call.
    "request_id",
)


def _pending_call(event_id: UUID) -> models.QuerySet[LlmCallEvent]:
    return LlmCallEvent.objects.filter(pk=event_id, status=CallStatus.PENDING)


_PENDING_COMPLETED = CompiledUpdate(_pending_call, OUTCOME_FIELDS, event_id=UUID)


def usage_call_complete(*, event: LlmCallEvent) -> Decimal | None:
    """Save a metered row (`usage_call_meter`) that is still pending.

    Run it in the transaction that stores what the call produced (its message, its summary),
    so the ledger and the transcript never disagree, after taking the turn's row lock: a
    recovery that marks a dead worker's calls lost takes that lock first, so a running turn's
    pending row cannot turn lost under us. Returns the user's credits this month after it, or
    None (nothing written) if the row is not pending.
    """
    if connection.vendor != "postgresql":
        outcome = {name: getattr(event, name) for name in OUTCOME_FIELDS}
        if not _PENDING_COMPLETED.update(outcome, event_id=event.pk):
            return None
        return usage_month_add(user_id=event.user_id, at=event.created_at, credits=event.credits)
    # On PostgreSQL in one statement, the row completed first: one trip to the database less
    # for each step of a turn.
    sql, params = _completion(event)
    chain = Chain("completed", sql, params)
    completed = usage_call_complete_chained(event=event, chain=chain, first=True)
    return completed(*chain.run(["completed"], ["moved"]))


def usage_call_complete_chained(
    *, event: LlmCallEvent, chain: Chain, first: bool = False
) -> Callable[[int, Any], Decimal | None]:
    """`usage_call_complete`'s writes on PostgreSQL, added to `chain` (a statement of the
    caller's writes, in which the row is completed once the writes before it are done, and the
    month's counter moved last): the row completed (as `completed`, unless `first`: the chain
    begins with it), then the counter moved (`moved`). Returns what `usage_call_complete`
    returns, made of what the chain's run read: the rows `completed` wrote, and the credits
    `moved` returned."""
    if not first:
        sql, params = _completion(event)
        chain.add("completed", f"{sql} AND {chain.after} RETURNING 1", params)
    month = month_of(event.created_at)
    chain.add(
        "moved",
        f"{_MONTH_MOVED.format(table=_month_table())} AND {chain.after} RETURNING credits",
        _month_params(event.user_id, month, event.credits, 1),
    )
    return functools.partial(_completed, event, month)


def _completion(event: LlmCallEvent) -> tuple[str, list[Any]]:
    """The UPDATE that completes the pending row, and its parameters."""
    outcome = {name: getattr(event, name) for name in OUTCOME_FIELDS}
    return _PENDING_COMPLETED.statement(outcome, event_id=event.pk)


def _completed(event: LlmCallEvent, month, count: int, moved: Any) -> Decimal | None:
    if not count:
        return None
    if moved is not None:
        return round_money(Decimal(str(moved)))
    return _month_first(event.user_id, month, event.credits, 1)  # the month's first call


def usage_calls_mark_lost(*, turn_ids: Iterable, heard: Iterable[LlmCallEvent] = ()) -> int:
    """Mark the still-pending calls of these turns `lost`: started, never completed, in doubt
    (the provider may have billed them). They keep their input estimate and cost no credits,
    and record one attempt: a call is opened just before its first request is sent, and how
    many more its retries sent is not known. Nothing was heard from their provider (no
    `provider` is recorded) until it answers after all (`usage_call_heard_after_loss`).

    `heard`: calls metered in memory (`usage_call_meter`) whose step could not be stored (its
    commit failed with the database): the provider answered and billed them, and the user never
    got the answer. Their rows are `lost` too, at no credit, with the usage and cost the
    provider reported instead of the estimate, so the ledger's tokens and cost are the
    provider's."""
    turn_ids = list(turn_ids)
    pending = LlmCallEvent.objects.filter(turn_id__in=turn_ids, status=CallStatus.PENDING)
    marked = 0
    for event in heard:
        marked += pending.filter(pk=event.pk).update(**_heard_but_lost(event))
    return marked + pending.update(status=CallStatus.LOST, error_type="lost", attempts=1)


def usage_call_heard_after_loss(*, event: LlmCallEvent) -> bool:
    """A call marked lost while it ran (its turn was ended from outside: `recover_turns`, or a
    stale takeover) that its provider answered after all, metered in memory
    (`usage_call_meter`): its row gets the usage and cost the provider reported, still `lost`
    and at no credit (the answer was never stored, nor given), as `usage_calls_mark_lost` writes
    a call heard before its loss. Once: only a row that was never heard (no provider recorded)
    is filled, which the ledger's triggers enforce too. A call never sent (no attempt) has
    nothing to tell. Returns whether the row was filled; the caller holds the transaction and
    the turn's row lock (its totals follow the row)."""
    if event.attempts == 0 or not event.provider:
        return False
    return bool(
        LlmCallEvent.objects.filter(pk=event.pk, status=CallStatus.LOST, provider="").update(
            **_heard_but_lost(event)
        )
    )


def usage_call_bill_cancelled(*, event: LlmCallEvent) -> bool:
    """A call whose turn its user cancelled after its first words had reached them (a streamed
    answer), metered in memory (`usage_call_meter`: the provider's usage if it had answered
    whole, else the input estimate and an estimate of the text streamed): its row is billed as
    a stream that failed after its first words is, `error` (of type `cancelled`) with its usage,
    cost and credits, for the user got those words. The cancel marked the row lost, never heard
    (no provider recorded): only such a row is billed, once, and a row billed is never filled as
    a lost call heard after all (`usage_call_heard_after_loss`), nor the other way round, which
    the ledger's triggers enforce too (`usage/0021`). Returns whether the row was billed; the
    caller holds the transaction and the turn's row lock, and moves the month's counter with
    the row (`usage_month_add`, last)."""
    if event.attempts == 0 or not event.provider:
        return False
    outcome = {name: getattr(event, name) for name in OUTCOME_FIELDS}
    outcome.update(status=CallStatus.ERROR, error_type=CANCELLED_AFTER_WORDS)
    return bool(
        LlmCallEvent.objects.filter(pk=event.pk, status=CallStatus.LOST, provider="").update(
            **outcome
        )
    )


def _heard_but_lost(event: LlmCallEvent) -> dict[str, Any]:
    """What the row of a call the provider answered, and whose answer was not stored, says: the
    provider's usage and cost, `lost`, no credit."""
    outcome = {name: getattr(event, name) for name in OUTCOME_FIELDS}
    outcome.update(status=CallStatus.LOST, error_type="lost", credits=Decimal("0"))
    return outcome


def _provider_cost(*, result: LlmResult, pricing: AliasPricing | None) -> tuple[Decimal, bool]:
    """The alias's own price first, then litellm's cost table; unknown is recorded as unpriced.
    A call that used no tokens (it failed before the provider took it) costs exactly $0
    whatever the prices: there is nothing to price, and it is not counted as unpriced."""
    if not (result.input_tokens_fresh or result.input_tokens_cached or result.output_tokens):
        return Decimal("0"), True
    if pricing is not None:
        input_price, output_price = pricing.input_usd_per_mtok, pricing.output_usd_per_mtok
        if input_price is not None and output_price is not None:
            cost = compute_price_usd(
                fresh=result.input_tokens_fresh,
                cached=result.input_tokens_cached,
                output=result.output_tokens,
                input_per_mtok=input_price,
                cached_input_per_mtok=pricing.cached_input_usd_per_mtok,
                output_per_mtok=output_price,
            )
            return cost, True
    if result.provider_cost_usd is not None:
        # Rounded like every stored amount, so a turn's total equals the sum of its rows.
        return round_money(result.provider_cost_usd), True
    return Decimal("0"), False


class _Unset:
    """Not given (None means "clear it")."""


_UNSET = _Unset()


@transaction.atomic
def model_price_set(
    *,
    alias: str,
    input_usd_per_mtok: Decimal | None = None,
    cached_input_usd_per_mtok: Decimal | None | _Unset = _UNSET,
    output_usd_per_mtok: Decimal | None = None,
    credit_multiplier: Decimal | None | _Unset = _UNSET,
    version_name: str | None = None,
) -> tuple[ModelPrice, PricingVersion, bool]:
    """Set an alias's price in a price list: the named one, else the active one.

    A named list that does not exist yet starts now as a copy of the active list (its default
    multiplier and every price), so adding one price never leaves the other aliases unpriced.
    On an existing price only the figures given change; a new one needs input and output. The
    cached-input price and the credit multiplier may be set to None (charged as fresh input;
    the list's default). Returns (price, version, version_created).
    """
    # The name as the console's alias page takes it: `'llama '` is llama (it was unknown).
    alias = _as_the_console_takes(ModelAlias, {"alias": alias})["alias"]
    model_alias = model_alias_named(alias)
    if model_alias is None:
        raise ValidationError({"alias": f"Unknown model alias {alias!r}."})
    version, version_created = _price_list_for(version_name)
    if not version_created:
        # Asked with the list locked: a turn stamping it meanwhile is waited for.
        price_lists_lock(PricingVersion.objects.filter(pk=version.pk))
        if LlmCallEvent.objects.filter(pricing_version=version).exists():
            # As in the console: an edit would rewrite the history its ledger rows rest on.
            raise ValidationError(
                f"Ledger rows are stamped with {version.name!r}, so its prices stay as they "
                "are: give --version NEW to start a new price list from the active one."
            )
    price = ModelPrice.objects.filter(pricing_version=version, model_alias=model_alias).first()
    if price is None:
        if input_usd_per_mtok is None or output_usd_per_mtok is None:
            raise ValidationError(
                f"{alias} has no price in {version.name!r} yet: give --input and --output."
            )
        price = ModelPrice(pricing_version=version, model_alias=model_alias)
    if input_usd_per_mtok is not None:
        price.input_usd_per_mtok = input_usd_per_mtok
    if output_usd_per_mtok is not None:
        price.output_usd_per_mtok = output_usd_per_mtok
    if not isinstance(cached_input_usd_per_mtok, _Unset):
        price.cached_input_usd_per_mtok = cached_input_usd_per_mtok
    if not isinstance(credit_multiplier, _Unset):
        price.credit_multiplier = credit_multiplier
    # Before the model's own checks, which refuse the same (the console's price pages): this
    # one says what to type.
    if refusal := cached_input_refusal(
        input_usd=price.input_usd_per_mtok, cached_input_usd=price.cached_input_usd_per_mtok
    ):
        raise ValidationError(
            f"In {version.name!r}, {refusal}. Give --cached-input no higher than the input "
            f"price, or '--cached-input none' to charge cached input as fresh input."
        )
    price.full_clean()
    price.save()
    return price, version, version_created


def price_lists_lock(versions: models.QuerySet[PricingVersion]) -> None:
    """Lock these price lists' rows until the transaction ends, before asking whether ledger
    rows are stamped with them and changing them, their prices or their existence: a turn
    that stamps a list not stamped yet holds its row from before its read of the prices to
    its commit (`usage.selectors.alias_prices_held`). So an edit either commits before that
    read, and prices the turn, or finds its ledger row and is refused. FOR NO KEY UPDATE: the
    turns that stamp a list already stamped (no lock of theirs, a key share by their row's
    foreign key at the commit) do not wait for an edit that will be refused. Nothing on
    SQLite, where every transaction takes the write lock as it begins."""
    list(versions.select_for_update(no_key=True).order_by("pk").values_list("pk", flat=True))


def _price_list_for(name: str | None) -> tuple[PricingVersion, bool]:
    active = active_pricing_version()
    if name is None:
        if active is None:
            raise ValidationError("No price list is in effect: name one with --version.")
        return active, False
    # As the console takes a name: `v2 ` is the list `v2`, and a blank name is none (each made a
    # new list, in force at once). Case stays as the console keeps it: `V2` is another list.
    try:
        name = _as_the_console_takes(PricingVersion, {"name": name})["name"]
    except ValidationError as exc:
        raise ValidationError({"version": exc.messages}) from exc
    version = PricingVersion.objects.filter(name=name).first()
    if version is not None:
        return version, False
    version = PricingVersion(
        name=name,
        # In force from now by the database's clock, by which the turns pick the list in force
        # (`alias_pricing`): by this host's, a host minutes ahead started it minutes late.
        effective_from=database_now(),
        default_multiplier=active.default_multiplier if active else Decimal("1.0"),
    )
    # The name's uniqueness is the database's to decide: a list another run commits after the
    # read above is found here, whether it committed before this check would run or after.
    version.full_clean(validate_unique=False)
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction goes on
            version.save()
    except IntegrityError:
        # Another run created the list of that name meanwhile (a script pricing several
        # aliases into it at once): price into theirs, copied once.
        return PricingVersion.objects.get(name=name), False
    if active is not None:
        model_prices_copy(source=active, into=version)
    return version, True


def model_prices_copy(*, source: PricingVersion, into: PricingVersion) -> None:
    """Every price of `source` (figures and multipliers) into the new list `into`."""
    ModelPrice.objects.bulk_create(
        ModelPrice(
            pricing_version=into,
            model_alias_id=price.model_alias_id,
            credit_multiplier=price.credit_multiplier,
            input_usd_per_mtok=price.input_usd_per_mtok,
            cached_input_usd_per_mtok=price.cached_input_usd_per_mtok,
            output_usd_per_mtok=price.output_usd_per_mtok,
        )
        for price in source.prices.all()
    )


def usage_month_add(*, user_id, at: datetime, credits: Decimal, calls: int = 1) -> Decimal:
    """Add a ledger row's credits (and calls) to its user's counter for the month of `at`, and
    return the month's credits after it.

    Call it in the transaction that saves the ledger row(s), with `at` their created_at. The
    counter moves in SQL (`credits = credits + x`), never read-modify-write in Python, so
    concurrent turns can't lose each other's debits. The first row of a month is inserted in a
    savepoint; a concurrent insert that won the race turns ours into an IntegrityError, and the
    update then applies.
    """
    month = month_of(at)
    total = _month_add(user_id, month, credits, calls)
    if total is not None:
        return total
    return _month_first(user_id, month, credits, calls)


def _month_first(user_id, month, credits: Decimal, calls: int) -> Decimal:
    """The counter's first row of the month, inserted in a savepoint; a concurrent insert
    that won the race turns ours into an IntegrityError, and the update then applies."""
    try:
        with transaction.atomic():
            MonthlyUsage.objects.create(
                user_id=user_id, month=month, credits=credits, llm_calls=calls
            )
        return credits
    except IntegrityError:
        total = _month_add(user_id, month, credits, calls)
        assert total is not None, "the counter row that won the race is there"
        return total


def _month_add(user_id, month, credits: Decimal, calls: int) -> Decimal | None:
    """One UPDATE that moves the counter and returns the new total (None: no row yet)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"{_MONTH_MOVED.format(table=_month_table())} RETURNING credits",
            _month_params(user_id, month, credits, calls),
        )
        row = cursor.fetchone()
    return None if row is None else round_money(Decimal(str(row[0])))


_MONTH_MOVED = (
    "UPDATE {table} SET credits = credits + %s, llm_calls = llm_calls + %s, "
    "updated_at = %s WHERE user_id = %s AND month = %s"
)


def _month_table() -> str:
    return connection.ops.quote_name(MonthlyUsage._meta.db_table)


def _month_params(user_id, month, credits: Decimal, calls: int) -> list[Any]:
    return [credits, calls, timezone.now(), user_id, month]


# --- billing profiles (the admin's actions) -----------------------------------------------------


def billing_profile_set_suspended(*, profile: BillingProfile, suspended: bool) -> bool:
    """Suspend or reactivate; returns whether anything changed."""
    if profile.is_suspended == suspended:
        return False
    profile.is_suspended = suspended
    profile.save(update_fields=["is_suspended", "updated_at"])
    return True


def billing_profile_set_cap(*, profile: BillingProfile, cap: Decimal | None) -> bool:
    """Set the monthly credit cap (None: no cap); returns whether anything changed."""
    if cap is not None and cap < 0:
        raise ValidationError({"monthly_credit_cap": "A cap cannot be negative."})
    if cap is not None:
        try:
            validate_credit_cap(cap)
        except ValidationError as error:
            raise ValidationError({"monthly_credit_cap": error.messages}) from error
    if profile.monthly_credit_cap == cap:
        return False
    profile.monthly_credit_cap = cap
    profile.save(update_fields=["monthly_credit_cap", "updated_at"])
    return True
