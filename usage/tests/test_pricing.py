"""Credits follow the model: each alias's multiplier in the price list in force (else the list's
default, floored at 0.5), USD from the alias's price; the seeded list prices the demo's aliases;
`set_model_price` edits price lists."""

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from orchestration.types import LlmResult
from usage.models import LlmCallEvent, ModelAlias, ModelPrice, PricingVersion
from usage.selectors import UNPRICED_CALLS, active_pricing_version, alias_pricing
from usage.services import model_prices_copy
from usage.tests.factories import usage_record_call

pytestmark = pytest.mark.django_db

SEEDED = "2026-11 list"
ALIASES = ["deepseek", "llama", "qwen", "gpt_oss", "premium"]


def result(*, fresh=1234, cached=567, output=89, cost: Decimal | None = None) -> LlmResult:
    return LlmResult(
        status="success",
        text="an answer",
        input_tokens_fresh=fresh,
        input_tokens_cached=cached,
        output_tokens=output,
        latency_ms=12,
        attempts=1,
        provider="openrouter",
        provider_model="some/model",
        provider_cost_usd=cost,
    )


def metered(user, alias: str, llm_result: LlmResult) -> LlmCallEvent:
    event = usage_record_call(
        user=user,
        result=llm_result,
        pricing=alias_pricing(aliases=[alias]).get(alias),
        model_alias=alias,
        purpose="agent",
    )
    event.refresh_from_db()
    return event


def price(version, alias, fresh, cached, output, multiplier=None) -> ModelPrice:
    return ModelPrice.objects.create(
        pricing_version=version,
        model_alias=ModelAlias.objects.get(alias=alias),
        input_usd_per_mtok=Decimal(fresh),
        cached_input_usd_per_mtok=None if cached is None else Decimal(cached),
        output_usd_per_mtok=Decimal(output),
        credit_multiplier=None if multiplier is None else Decimal(multiplier),
    )


@pytest.fixture
def price_list():
    """A list newer than the seeded one: default x1.5; deepseek x2.5, qwen x0.2 (floored),
    llama on the default; gpt_oss has no price in it."""
    version = PricingVersion.objects.create(
        name="test list",
        default_multiplier=Decimal("1.5"),
        effective_from=timezone.now() - timedelta(hours=1),
    )
    price(version, "deepseek", "0.28", "0.028", "0.42", multiplier="2.5")
    price(version, "llama", "0.23", None, "0.40")
    price(version, "qwen", "0.36", "0.036", "0.40", multiplier="0.2")
    return version


# --- the formula, by hand -----------------------------------------------------------------------
# 1234 fresh, 567 cached, 89 output: oe = 431.9 + 56.7 + 89 = 577.6 → 0.05776 credits at x1.


def test_an_alias_with_its_own_multiplier_and_cached_price(owner, price_list):
    event = metered(owner, "deepseek", result())

    assert event.oe_tokens == Decimal("577.60")
    assert event.credits == Decimal("0.1444000000")  # 0.05776 × 2.5
    # (1234 × 0.28 + 567 × 0.028 + 89 × 0.42) / 10^6 = (345.52 + 15.876 + 37.38) / 10^6
    assert event.provider_cost_usd == Decimal("0.0003987760")
    assert event.priced is True
    assert event.pricing_version_id == price_list.id


def test_an_alias_without_its_own_multiplier_takes_the_lists_default(owner, price_list):
    event = metered(owner, "llama", result())

    assert event.credits == Decimal("0.0866400000")  # 0.05776 × 1.5
    # No cached price: cached input is charged as fresh. (1234 + 567) × 0.23 + 89 × 0.40
    assert event.provider_cost_usd == Decimal("0.0004498300")
    assert event.priced is True


def test_the_half_floor_applies_to_an_alias_multiplier(owner, price_list):
    event = metered(owner, "qwen", result())

    assert event.credits == Decimal("0.0288800000")  # 0.05776 × max(0.2, 0.5)
    # 1234 × 0.36 + 567 × 0.036 + 89 × 0.40 = 444.24 + 20.412 + 35.6
    assert event.provider_cost_usd == Decimal("0.0005002520")


def test_an_uncached_call(owner, price_list):
    event = metered(owner, "deepseek", result(fresh=1000, cached=0, output=50))

    assert event.oe_tokens == Decimal("400.00")  # 350 + 50
    assert event.credits == Decimal("0.1000000000")  # 0.04 × 2.5
    assert event.provider_cost_usd == Decimal("0.0003010000")  # (280 + 21) / 10^6


def test_an_alias_without_a_price_is_unpriced_at_the_default_multiplier(owner, price_list):
    event = metered(owner, "gpt_oss", result())

    assert event.credits == Decimal("0.0866400000")  # the list's default x1.5 still applies
    assert (event.priced, event.provider_cost_usd) == (False, Decimal("0"))
    assert event.pricing_version_id == price_list.id


def test_a_call_that_used_no_tokens_costs_nothing_and_is_not_unpriced(owner, price_list):
    """A provider that refused the connection used nothing: the console and reconcile_usage
    counted such calls among the unpriced ones, which the README says have usage to price."""
    failed = replace(result(fresh=0, cached=0, output=0), status="error", error_kind="timeout")

    event = metered(owner, "gpt_oss", failed)  # an alias with no price

    assert (event.priced, event.provider_cost_usd, event.credits) == (True, 0, 0)
    assert not LlmCallEvent.objects.filter(UNPRICED_CALLS).exists()


def test_alias_pricing_reports_the_multiplier_that_applies(price_list):
    pricing = alias_pricing(aliases=ALIASES)

    assert pricing["deepseek"].multiplier == Decimal("2.5")
    assert pricing["qwen"].multiplier == Decimal("0.2")  # the floor is the formula's business
    assert pricing["llama"].multiplier == Decimal("1.5")
    assert pricing["gpt_oss"].multiplier == Decimal("1.5")
    assert pricing["gpt_oss"].has_price is False
    assert {p.pricing_version_id for p in pricing.values()} == {price_list.id}


def test_alias_pricing_reads_each_alias_as_the_orm_does(price_list):
    """The aliases come from the pricing read's own row: every field as a model read gives it
    (dates aware, ids UUIDs), and a row a save updates rather than inserts."""
    pricing = alias_pricing(aliases=ALIASES)

    for name in ALIASES:
        read, stored = pricing[name].alias, ModelAlias.objects.get(alias=name)
        fields = [field.attname for field in ModelAlias._meta.concrete_fields]
        assert [getattr(read, f) for f in fields] == [getattr(stored, f) for f in fields]
        assert read._state.adding is False
        read.max_output_tokens += 1
        read.save(update_fields=["max_output_tokens"])  # an UPDATE of the row that was read
    assert ModelAlias.objects.count() == len(set(ModelAlias.objects.values_list("alias")))


def test_without_any_price_list_the_multiplier_is_none_and_credits_are_x1(owner):
    PricingVersion.objects.all().delete()

    assert alias_pricing(aliases=["premium"])["premium"].multiplier is None
    event = metered(owner, "premium", result())
    assert event.credits == Decimal("0.0577600000")
    assert (event.priced, event.pricing_version_id) == (False, None)


# --- the seeded list ----------------------------------------------------------------------------


def test_the_seeded_list_is_in_force_and_prices_every_seeded_alias():
    version = active_pricing_version()

    assert version.name == SEEDED
    assert version.default_multiplier == Decimal("1.0")
    prices = {p.model_alias.alias: p for p in version.prices.select_related("model_alias")}
    assert sorted(prices) == sorted(ALIASES)
    assert all(p.input_usd_per_mtok > 0 and p.output_usd_per_mtok > 0 for p in prices.values())
    assert prices["premium"].credit_multiplier > (prices["deepseek"].credit_multiplier or 1)


def test_premium_burns_more_credits_than_a_cheap_alias_for_the_same_tokens(owner):
    cheap = metered(owner, "deepseek", result())
    premium = metered(owner, "premium", result())

    assert cheap.credits == Decimal("0.0577600000")  # x1, the list's default
    assert premium.credits == Decimal("0.2888000000")  # x5
    # deepseek: 1234 × 0.28 + 567 × 0.028 + 89 × 0.42; premium: 1234 × 3 + 567 × 0.3 + 89 × 15
    assert cheap.provider_cost_usd == Decimal("0.0003987760")
    assert premium.provider_cost_usd == Decimal("0.0052071000")
    assert cheap.priced and premium.priced


# --- set_model_price ----------------------------------------------------------------------------


# What the console's amount boxes say too (pantheon.figures.AMOUNT_EXPECTED).
PLAIN = (
    "a plain number such as 12 or 0.5 (digits 0-9 and at most one decimal point; "
    "no sign, exponent, comma or other separator)"
)
# Each read as a number by Decimal() (the command stored 1e3 as 1000, 1_000 as 1000, Arabic-Indic
# 12 as 12, -0 as 0) or a figure the operator did not mean (1,5: one and a half, or fifteen?).
NOT_PLAIN = ["1e3", "1E+3", "\u0661\u0662", "\uff11\uff12", "1,000", "1,5", "1_000", "1 000", "-0"]


def run(*args) -> str:
    out = StringIO()
    call_command("set_model_price", *args, stdout=out)
    return out.getvalue()


def test_the_command_changes_a_price_in_the_active_list(owner):
    out = run("llama", "--input", "0.5", "--output", "0.9", "--credit-multiplier", "2")

    price = ModelPrice.objects.get(pricing_version__name=SEEDED, model_alias__alias="llama")
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok) == (Decimal("0.5"), Decimal("0.9"))
    assert price.credit_multiplier == Decimal("2")
    assert price.cached_input_usd_per_mtok is None  # not given: unchanged
    assert "llama in '2026-11 list'" in out
    assert metered(owner, "llama", result()).credits == Decimal("0.1155200000")  # x2


def test_a_list_the_ledger_is_stamped_with_keeps_its_prices(owner):
    """As in the console: changing its prices would rewrite the history its rows rest on."""
    metered(owner, "llama", result())  # a ledger row stamped with the active list
    before = ModelPrice.objects.get(pricing_version__name=SEEDED, model_alias__alias="llama")

    with pytest.raises(CommandError, match="give --version NEW"):
        run("llama", "--input", "0.5")
    out = run("llama", "--input", "0.5", "--version", "2026-12 list")

    after = ModelPrice.objects.get(pricing_version__name=SEEDED, model_alias__alias="llama")
    assert after.input_usd_per_mtok == before.input_usd_per_mtok
    moved = ModelPrice.objects.get(pricing_version__name="2026-12 list", model_alias__alias="llama")
    assert moved.input_usd_per_mtok == Decimal("0.5")
    assert "2026-12 list" in out


def test_a_multiplier_below_the_floor_is_said_to_bill_at_the_floor(owner):
    """It printed "credits x0.2", and the next call was billed at x0.5."""
    out = run("qwen", "--credit-multiplier", "0.2")

    assert "credits x0.2, billed at the floor x0.5" in out
    assert "floor" not in run("qwen", "--credit-multiplier", "0.5")


def test_the_summary_shows_figures_as_plain_numbers(owner):
    """'--input 1e3' was echoed as 'input $1E+3/M' next to copied figures like '$0.200000/M'
    and 'x1.0000': the operator checks what is stored, written the way a price is written."""
    out = run("llama", "--input", "1000.00", "--output", "0.90")

    assert "input $1000/M" in out
    assert "output $0.9/M" in out
    assert "1000.00" not in out and "0.90" not in out
    out = run("llama", "--credit-multiplier", "none")
    assert "credits x1 (list default)" in out


def test_figures_left_out_keep_their_value_and_none_clears(owner):
    run("deepseek", "--cached-input", "none", "--credit-multiplier", "3")
    run("deepseek", "--credit-multiplier", "none")

    price = ModelPrice.objects.get(pricing_version__name=SEEDED, model_alias__alias="deepseek")
    assert price.input_usd_per_mtok == Decimal("0.28")
    assert price.cached_input_usd_per_mtok is None
    assert price.credit_multiplier is None


def test_a_new_named_list_starts_now_as_a_copy_of_the_active_one(owner):
    out = run("premium", "--input", "2.5", "--output", "12", "--version", "2026-12 list")

    version = PricingVersion.objects.get(name="2026-12 list")
    assert active_pricing_version() == version
    assert "new price list" in out
    assert version.prices.count() == len(ALIASES)  # the others were copied, not dropped
    premium = version.prices.get(model_alias__alias="premium")
    assert (premium.input_usd_per_mtok, premium.credit_multiplier) == (
        Decimal("2.5"),
        Decimal("5.0"),
    )
    assert metered(owner, "qwen", result()).priced is True
    # The old list keeps its figures: history stays reproducible.
    old = ModelPrice.objects.get(pricing_version__name=SEEDED, model_alias__alias="premium")
    assert old.input_usd_per_mtok == Decimal("3.00")


def scheduled_copy(days: int = 1) -> PricingVersion:
    """The console's *copy as a new price list* of the seeded list: in effect a day from now."""
    seeded = PricingVersion.objects.get(name=SEEDED)
    copy = PricingVersion.objects.create(
        name=f"{SEEDED} (copy)",
        effective_from=(timezone.now() + timedelta(days=days)).replace(microsecond=0),
        default_multiplier=seeded.default_multiplier,
    )
    model_prices_copy(source=seeded, into=copy)
    return copy


def test_a_new_list_a_scheduled_one_will_supersede_says_so_and_when():
    """The trap: a copy made in the console is in effect tomorrow; a list set_model_price
    starts now is older, so the copy takes over tomorrow and premium's output goes back to $15
    (and an alias priced only in the new list goes unpriced). It answered "new price list, in
    force from now" and nothing else."""
    copy = scheduled_copy()
    starts = copy.effective_from.strftime("%Y-%m-%d %H:%M:%S")
    out, err = StringIO(), StringIO()

    call_command(
        "set_model_price", "premium", "--output", "16", "--version", "2027-01 list",
        stdout=out, stderr=err,
    )  # fmt: skip

    assert active_pricing_version().name == "2027-01 list"  # today, yes
    assert (
        f"(new price list, in force from now until {starts} UTC, when '{SEEDED} (copy)' takes over)"
    ) in out.getvalue()
    warning = err.getvalue()
    assert warning.startswith(
        f"Warning: '{SEEDED} (copy)' is scheduled to take over from '2027-01 list' at {starts} "
        f"UTC: calls from then are priced by it, not by '2027-01 list', and '{SEEDED} (copy)' "
        "has premium at output $15/M."
    )
    assert f"--version '{SEEDED} (copy)'" in warning


def test_a_price_the_scheduled_list_lacks_is_said_to_go_unpriced():
    scheduled_copy()
    ModelAlias.objects.create(alias="mistral", litellm_model="mistral/mistral-small")
    err = StringIO()

    call_command(
        "set_model_price", "mistral", "--input", "1", "--output", "2", stdout=StringIO(),
        stderr=err,
    )  # fmt: skip

    assert f"'{SEEDED} (copy)' has no price for mistral" in err.getvalue()
    assert "left unpriced" in err.getvalue()


def test_the_latest_list_is_edited_without_a_warning():
    err = StringIO()
    call_command("set_model_price", "llama", "--input", "0.5", stdout=StringIO(), stderr=err)
    copy = scheduled_copy()
    call_command(
        "set_model_price", "llama", "--input", "0.5", "--version", copy.name,
        stdout=StringIO(), stderr=err,
    )  # fmt: skip

    assert err.getvalue() == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--input", "1", "--output", "1"], "Unknown model alias"),
        (["llama", "--input", "-1"], r"expected a plain number such as 12 or 0\.5 .*, not '-1'"),
        (["llama", "--input", "cheap"], "expected a plain number .*, not 'cheap'"),
        (["llama", "--input", "NaN"], "expected a plain number .*, not 'NaN'"),
        (["llama", "--input", "none"], "expected a plain number .*, not 'none'"),
        (["mistral", "--output", "1", "--version", "fresh"], "give --input and --output"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(args, message):
    ModelAlias.objects.create(alias="mistral", litellm_model="mistral/mistral-small")  # no price
    before = list(ModelPrice.objects.order_by("id").values())

    with pytest.raises(CommandError, match=message):
        run(*args)

    assert list(ModelPrice.objects.order_by("id").values()) == before
    assert not PricingVersion.objects.filter(name="fresh").exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--cached-input", "x"], f"argument --cached-input: expected {PLAIN} or 'none', not 'x'"),
        (["--output", "NaN"], f"argument --output: expected {PLAIN}, not 'NaN'"),
        (["--input", "none"], f"argument --input: expected {PLAIN}, not 'none'"),
    ],
)
def test_a_figure_that_is_no_number_is_a_usage_error_exit_2(args, error, capsys):
    """As a bad --context-window of set_model_alias, or a bad date of rollup_usage: the parser's
    one-line error and exit 2, the README's code for any usage error (it was exit 1, which
    scripts read as a failure of the command itself)."""
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", "set_model_price", "llama", *args]).execute()

    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"manage.py set_model_price: error: {error}"), last


@pytest.mark.parametrize("typed", NOT_PLAIN)
@pytest.mark.parametrize("option", ["--input", "--cached-input", "--credit-multiplier"])
def test_a_figure_is_typed_as_a_plain_number(option, typed, capsys):
    """The command took 1e3, 1E+3, 1_000 and Arabic-Indic digits, each stored as another
    figure than the one on screen; now each is a usage error saying what is taken."""
    from django.core.management import ManagementUtility

    before = list(ModelPrice.objects.order_by("id").values())

    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", "set_model_price", "llama", option, typed]).execute()
    for given in ({"args": [option, typed]}, {option[2:].replace("-", "_"): typed}):
        # As typed, and as a call_command keyword (a string the parser's types never saw).
        with pytest.raises(CommandError, match=r"expected a plain number such as 12 or 0\.5"):
            call_command("set_model_price", "llama", *given.pop("args", []), **given)

    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert f"argument {option}: expected {PLAIN}" in last and f"not {typed!r}" in last
    assert list(ModelPrice.objects.order_by("id").values()) == before


def test_a_plain_figure_spaces_around_it_aside_is_stored_as_typed(owner):
    run("llama", "--input", " 1000 ", "--output", ".5", "--cached-input", "0.25")

    price = ModelPrice.objects.get(pricing_version__name=SEEDED, model_alias__alias="llama")
    assert price.input_usd_per_mtok == Decimal("1000")
    assert price.output_usd_per_mtok == Decimal("0.5")
    assert price.cached_input_usd_per_mtok == Decimal("0.25")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["deepseek", "--version", "V2", "--input", "1", "--cached-input", "5"],
            "In 'V2', the cached-input price ($5/M) is above the input price ($1/M)",
        ),
        # The cached price kept (0.028) is above the input price given.
        (
            ["deepseek", "--input", "0.01"],
            "In '2026-11 list', the cached-input price ($0.028/M) is above the input price "
            "($0.01/M)",
        ),
    ],
)
def test_a_cached_input_price_above_the_input_price_is_refused(args, says):
    """A cached token costs a fraction of a fresh one: '--input 1 --cached-input 5' was stored,
    and billed every cache hit at five times a miss; the operations tester's catch."""
    before = list(ModelPrice.objects.order_by("id").values())

    with pytest.raises(CommandError) as refused:
        run(*args)

    assert refused.value.returncode == 1  # refused, as a value the console refuses
    assert str(refused.value) == (
        f"{says}: a cached token costs a fraction of a fresh one. Give --cached-input no "
        "higher than the input price, or '--cached-input none' to charge cached input as fresh "
        "input."
    )
    assert list(ModelPrice.objects.order_by("id").values()) == before
    assert not PricingVersion.objects.filter(name="V2").exists()


def test_a_cached_input_price_up_to_the_input_price_is_taken():
    assert "cached $1/M" in run("deepseek", "--input", "1", "--cached-input", "1")
    out = run("deepseek", "--input", "0.01", "--cached-input", "0.001")

    assert "input $0.01/M, cached $0.001/M" in out


def test_without_a_list_in_force_a_version_must_be_named():
    PricingVersion.objects.all().delete()

    with pytest.raises(CommandError, match="name one with --version"):
        run("llama", "--input", "1", "--output", "1")
    run("llama", "--input", "1", "--output", "2", "--version", "first")
    assert active_pricing_version().prices.get().output_usd_per_mtok == Decimal("2")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_runs_starting_one_new_list_at_once_both_land_in_it(monkeypatch):
    """A provisioning script pricing several aliases into a new list in parallel: both runs
    found no list of that name and created it; the second died on the unique name with an
    IntegrityError traceback, its price never set."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(2, timeout=10)
    full_clean = PricingVersion.full_clean

    def both_looked(self, *args, **kwargs):
        barrier.wait()  # each run has looked the name up and found nothing
        return full_clean(self, *args, **kwargs)

    monkeypatch.setattr(PricingVersion, "full_clean", both_looked)
    outcomes = {}

    def price(alias, figure):
        try:
            outcomes[alias] = run(alias, "--input", figure, "--version", "2026-12 list")
        except Exception as exc:  # noqa: BLE001 - the test reports whatever broke
            outcomes[alias] = exc
        finally:
            connection.close()

    threads = [
        threading.Thread(target=price, args=("premium", "9")),
        threading.Thread(target=price, args=("deepseek", "0.3")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert all(isinstance(out, str) for out in outcomes.values()), outcomes
    version = PricingVersion.objects.get(name="2026-12 list")
    prices = dict(version.prices.values_list("model_alias__alias", "input_usd_per_mtok"))
    assert (prices["premium"], prices["deepseek"]) == (Decimal("9"), Decimal("0.3"))
    assert version.prices.count() == len(ALIASES)  # copied once, not twice


def test_a_price_set_in_a_superseded_list_names_the_list_whose_price_it_quotes():
    """The price quoted is the newer list's: after "it prices no new calls, which has premium
    at output $17/M" an operator read 17 as the price of the list they had just set to 18."""
    for name, output in (("older", "16"), ("newer", "17")):
        call_command(
            "set_model_price", "premium", "--output", output, "--version", name,
            stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip
    err = StringIO()

    call_command(
        "set_model_price", "premium", "--output", "18", "--version", "older",
        stdout=StringIO(), stderr=err,
    )  # fmt: skip

    assert "UTC: it prices no new calls, and 'newer' has premium at output $17/M." in (
        err.getvalue()
    )
