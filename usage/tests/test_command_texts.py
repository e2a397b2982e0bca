"""`set_model_price --version`, the texts of `set_model_alias` and the alias both name are taken as
the console takes them: trimmed, and refused blank where the console requires them (exit 1, one
line). A trailing space made a new price list, in force at once; a model of one space an enabled
alias whose every call failed; an alias name `'llama '` was refused, or unknown."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from pantheon.testing.admin import admin_url, client_for
from usage.models import ModelAlias, ModelPrice, PricingVersion
from usage.selectors import active_pricing_version

pytestmark = pytest.mark.django_db


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def refusal_of(command: str, *args: str) -> tuple[int, str]:
    """The exit status and the one line a refusal prints (`CommandError: …` on stderr)."""
    with pytest.raises(CommandError) as refused:
        run(command, *args)
    return refused.value.returncode, str(refused.value)


# --- set_model_price --version ------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["v2 ", " v2", "\tv2\n"])
def test_a_version_name_with_spaces_around_it_is_the_list_of_that_name(typed):
    run("set_model_price", "llama", "--input", "1", "--version", "v2")
    lists = PricingVersion.objects.count()

    out = run("set_model_price", "llama", "--input", "7", "--version", typed)

    assert out.startswith("llama in 'v2': input $7/M")
    assert "new price list" not in out
    assert PricingVersion.objects.count() == lists
    assert active_pricing_version().name == "v2"
    price = ModelPrice.objects.get(pricing_version__name="v2", model_alias__alias="llama")
    assert price.input_usd_per_mtok == 7


@pytest.mark.parametrize("typed", ["", " ", "\t", " \n "])
def test_a_blank_version_name_is_refused_exit_1_and_prices_nothing(typed):
    active = active_pricing_version()
    lists = PricingVersion.objects.count()

    status, line = refusal_of("set_model_price", "llama", "--input", "1", "--version", typed)

    assert (status, line) == (1, "version: This field is required.")
    assert PricingVersion.objects.count() == lists
    assert active_pricing_version() == active


def test_a_version_name_differing_only_in_case_is_another_list_as_in_the_console(staff):
    """The console keeps `V2` beside `v2` (names are unique as written), so the command does
    too; it says so: a new list, in force from now."""
    run("set_model_price", "llama", "--input", "1", "--version", "v2")

    out = run("set_model_price", "llama", "--input", "2", "--version", "V2")

    assert "llama in 'V2' (new price list, in force from now)" in out
    added = client_for(staff).post(
        admin_url(PricingVersion, "add"),
        {
            "name": "v3",
            "default_multiplier": "1",
            "effective_from_0": "2099-01-01",
            "effective_from_1": "00:00:00",
            "prices-TOTAL_FORMS": "0",
            "prices-INITIAL_FORMS": "0",
        },
    )
    assert added.status_code == 302
    run("set_model_price", "llama", "--input", "3", "--output", "1", "--version", "V3")
    assert set(PricingVersion.objects.filter(name__iexact="v3").values_list("name", flat=True)) == {
        "v3",
        "V3",
    }


# --- set_model_alias ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", [" ", "\t", ""])
def test_a_blank_model_is_refused_for_a_new_alias_exit_1(model):
    status, line = refusal_of("set_model_alias", "mistral", "--model", model)

    assert status == 1
    assert line == "litellm_model: This field is required."
    assert not ModelAlias.objects.filter(alias="mistral").exists()


def test_a_blank_model_is_refused_for_an_alias_as_in_the_console(staff):
    before = ModelAlias.objects.get(alias="llama").litellm_model

    status, line = refusal_of("set_model_alias", "llama", "--model", "  ")

    assert (status, line) == (1, "litellm_model: This field is required.")
    assert ModelAlias.objects.get(alias="llama").litellm_model == before
    # The console says the same of the same value.
    llama = ModelAlias.objects.get(alias="llama")
    page = client_for(staff).post(
        admin_url(ModelAlias, "change", llama.pk),
        {
            "alias": "llama",
            "litellm_model": "  ",
            "api_base": "",
            "api_key_env": llama.api_key_env,
            "context_window": llama.context_window,
            "max_output_tokens": llama.max_output_tokens,
            "enabled": "on",
        },
    )
    assert page.status_code == 200
    assert page.context["adminform"].form.errors["litellm_model"] == ["This field is required."]


def test_every_text_of_an_alias_is_trimmed_as_in_the_console():
    out = run(
        "set_model_alias",
        "mistral",
        "--model",
        " mistral/mistral-small\t",
        "--api-base",
        " llm.example.com/v1 ",
        "--api-key-env",
        " MISTRAL_API_KEY ",
    )

    row = ModelAlias.objects.get(alias="mistral")
    assert (row.litellm_model, row.api_base, row.api_key_env) == (
        "mistral/mistral-small",
        "https://llm.example.com/v1",  # the console's form reads a URL without a scheme so
        "MISTRAL_API_KEY",
    )
    assert out.startswith("Created alias mistral: mistral/mistral-small (")
    assert row.enabled


def test_an_endpoint_or_key_variable_of_spaces_clears_it_as_in_the_console():
    run("set_model_alias", "llama", "--api-base", "https://llm.example.com/v1")

    run("set_model_alias", "llama", "--api-base", "  ", "--api-key-env", " ")

    row = ModelAlias.objects.get(alias="llama")
    assert (row.api_base, row.api_key_env) == ("", "")


def test_a_key_variable_with_spaces_inside_is_still_refused():
    with pytest.raises(CommandError, match="api_key_env: Name an environment variable"):
        run("set_model_alias", "llama", "--api-key-env", "GROQ API_KEY")


# --- the alias named, in set_model_alias and set_model_price ------------------------------------


@pytest.mark.parametrize("typed", ["llama ", " llama", "\tllama\n"])
def test_an_alias_name_with_spaces_around_it_is_the_alias_of_that_name(typed):
    """`'llama '` was refused by the naming rule ("Use letters, digits…"), though the console
    trims the name as it trims every text."""
    aliases = ModelAlias.objects.count()

    out = run("set_model_alias", typed, "--context-window", "65536")

    assert out.startswith("Updated alias llama: ")
    assert ModelAlias.objects.count() == aliases
    assert ModelAlias.objects.get(alias="llama").context_window == 65536


def test_a_new_alias_name_with_spaces_around_it_is_created_trimmed():
    out = run("set_model_alias", " mistral ", "--model", "mistral/mistral-small")

    assert out.startswith("Created alias mistral: mistral/mistral-small (")
    assert ModelAlias.objects.filter(alias="mistral").exists()


@pytest.mark.parametrize("typed", ["llama ", " llama", "\tllama\n"])
def test_a_price_for_an_alias_name_with_spaces_around_it_is_that_alias_price(typed):
    """`'llama '` was an unknown model alias."""
    out = run("set_model_price", typed, "--input", "7")

    assert out.startswith("llama in ")
    price = ModelPrice.objects.get(
        pricing_version=active_pricing_version(), model_alias__alias="llama"
    )
    assert price.input_usd_per_mtok == 7


@pytest.mark.parametrize("command", ["set_model_alias", "set_model_price"])
@pytest.mark.parametrize("typed", ["", " ", "\t"])
def test_a_blank_alias_name_is_refused_exit_1(command, typed):
    aliases = list(ModelAlias.objects.values_list("alias", "updated_at"))
    figures = ("--model", "x/y") if command == "set_model_alias" else ("--input", "1")

    status, line = refusal_of(command, typed, *figures)

    assert (status, line) == (1, "alias: This field is required.")
    assert list(ModelAlias.objects.values_list("alias", "updated_at")) == aliases


def test_set_model_price_takes_an_alias_in_any_case_as_the_api_does():
    """`set_model_price DEEPSEEK` said "Unknown model alias". (`set_model_alias DeepSeek` is
    still refused as deepseek's twin: it may be meant as a new alias with a model of its own.)"""
    out = run("set_model_price", "DEEPSEEK", "--input", "0.25", "--output", "0.5")

    assert out.startswith("deepseek in ")
    assert ModelPrice.objects.get(
        pricing_version=active_pricing_version(), model_alias__alias="deepseek"
    ).input_usd_per_mtok == Decimal("0.25")


@pytest.mark.parametrize(
    "change",
    [("--context-window", "32768"), ("--model", "openai/other", "--context-window", "32768")],
)
def test_set_model_alias_refuses_another_alias_case_twin_whatever_it_changes(change):
    """`set_model_alias DeepSeek --context-window 32768` said "Alias 'DeepSeek' does not exist
    yet: --model is required", with deepseek there; given a model, it was refused as deepseek's
    twin. Both are refused as the twin, and deepseek is left as it was."""
    before = list(ModelAlias.objects.filter(alias__iexact="deepseek").values())

    status, line = refusal_of("set_model_alias", "DeepSeek", *change)

    assert (status, line) == (
        1,
        "alias: deepseek exists already: aliases differ by more than case.",
    )
    assert list(ModelAlias.objects.filter(alias__iexact="deepseek").values()) == before
