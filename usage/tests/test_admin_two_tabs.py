"""Aliases, price lists, prices and billing profiles open in two tabs (or while a command or
an action changes them): a save writes only what the operator changed on that page and keeps
what was changed elsewhere since it was opened; a field changed on both sides is refused,
nothing saved, the page saying what it is now. Saved whole, the stale tab put back what it
showed: a suspension lifted by a cap's change, a disabled alias enabled again."""

from decimal import Decimal

import pytest
from django.utils import timezone

from pantheon.testing.admin import (
    admin_url,
    client_for,
    elsewhere,
    history,
    opened,
    post_and_updates,
    posted_back,
    refusals,
    two_tabs,
)
from usage.models import BillingProfile, ModelAlias, ModelPrice, PricingVersion

pytestmark = pytest.mark.django_db


# --- model aliases ------------------------------------------------------------------------------


@pytest.fixture
def qwen():
    return ModelAlias.objects.get(alias="qwen")


def test_a_stale_alias_tab_keeps_the_disable_another_tab_saved(qwen, staff):
    page = admin_url(ModelAlias, "change", qwen.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "modelalias_form")
    del shown_a["enabled"]  # unticked

    disabled = tab_a.post(page, shown_a)
    resized = tab_b.post(page, shown_b | {"context_window": "65536"})

    assert (disabled.status_code, resized.status_code) == (302, 302)
    qwen.refresh_from_db()
    assert (qwen.enabled, qwen.context_window) == (False, 65536)
    assert history(qwen)[-1] == "Changed Context window: 32768 → 65536."


def test_an_answer_size_changed_in_both_alias_tabs_is_refused(qwen, staff):
    page = admin_url(ModelAlias, "change", qwen.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "modelalias_form")
    tab_a.post(page, shown_a | {"max_output_tokens": "1024"})

    refused = tab_b.post(page, shown_b | {"max_output_tokens": "4096"})

    assert refused.status_code == 200
    assert refusals(refused) == [elsewhere("Max output tokens", "“1024”")]
    qwen.refresh_from_db()
    assert qwen.max_output_tokens == 1024


def test_an_alias_page_saved_as_it_is_writes_nothing(qwen, staff):
    page = admin_url(ModelAlias, "change", qwen.pk)
    console = client_for(staff)
    shown = opened(console, page, "modelalias_form")

    saved, updates = post_and_updates(console, page, shown, "usage_modelalias")

    assert saved.status_code == 302
    assert updates == []
    assert ModelAlias.objects.get(pk=qwen.pk).updated_at == qwen.updated_at


# --- billing profiles ---------------------------------------------------------------------------


@pytest.fixture
def profile(owner):
    return BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("5"))


def test_a_stale_profile_tab_keeps_the_suspension_another_tab_saved(profile, staff):
    """Saved whole, a new cap typed in the stale tab lifted the suspension."""
    page = admin_url(BillingProfile, "change", profile.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "billingprofile_form")

    tab_a.post(page, shown_a | {"is_suspended": "on"})
    capped = tab_b.post(page, shown_b | {"monthly_credit_cap": "9"})

    assert capped.status_code == 302
    profile.refresh_from_db()
    assert (profile.is_suspended, profile.monthly_credit_cap) == (True, Decimal("9"))
    assert history(profile)[0] == "Changed Is suspended: False → True."
    assert history(profile)[1].startswith("Changed Monthly credit cap: 5")
    assert "suspended" not in history(profile)[1]


def test_a_cap_changed_in_both_profile_tabs_is_refused(profile, staff):
    page = admin_url(BillingProfile, "change", profile.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "billingprofile_form")
    tab_a.post(page, shown_a | {"monthly_credit_cap": "7"})

    refused = tab_b.post(page, shown_b | {"monthly_credit_cap": "9"})

    assert refused.status_code == 200
    assert refusals(refused) == [elsewhere("Monthly credit cap", "“7”")]
    profile.refresh_from_db()
    assert profile.monthly_credit_cap == Decimal("7")
    shown_again = posted_back(refused.content.decode(), "billingprofile_form")
    assert shown_again["monthly_credit_cap"] == shown_again["initial-monthly_credit_cap"] == ["7"]


def test_a_cap_lifted_in_both_profile_tabs_is_no_conflict(profile, staff):
    page = admin_url(BillingProfile, "change", profile.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "billingprofile_form")
    lifted = shown_a | {"monthly_credit_cap": "", "no_cap": "on"}
    tab_a.post(page, lifted)

    again = tab_b.post(page, shown_b | {"monthly_credit_cap": "", "no_cap": "on"})

    assert again.status_code == 302
    profile.refresh_from_db()
    assert profile.monthly_credit_cap is None
    assert history(profile)[-1] == "No fields changed."


def test_a_profile_page_saved_as_it_is_writes_nothing(profile, staff):
    page = admin_url(BillingProfile, "change", profile.pk)
    console = client_for(staff)
    shown = opened(console, page, "billingprofile_form")

    saved, updates = post_and_updates(console, page, shown, "usage_billingprofile")

    assert saved.status_code == 302
    assert updates == []
    assert BillingProfile.objects.get(pk=profile.pk).updated_at == profile.updated_at


# --- price lists and prices ---------------------------------------------------------------------


def test_a_stale_price_list_tab_keeps_the_price_another_tab_saved(spare_list, staff):
    page = admin_url(PricingVersion, "change", spare_list.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "pricingversion_form")

    tab_a.post(page, shown_a | {"prices-0-output_usd_per_mtok": "3"})
    renamed = tab_b.post(page, shown_b | {"name": "spare 2"})

    assert renamed.status_code == 302
    spare_list.refresh_from_db()
    price = spare_list.prices.get()
    assert (spare_list.name, price.output_usd_per_mtok) == ("spare 2", Decimal("3"))
    assert history(spare_list)[-1] == "Changed Name: spare → spare 2."


def test_a_price_changed_in_both_price_list_tabs_is_refused_on_its_row(spare_list, staff):
    page = admin_url(PricingVersion, "change", spare_list.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "pricingversion_form")
    tab_a.post(page, shown_a | {"prices-0-input_usd_per_mtok": "3"})

    refused = tab_b.post(page, shown_b | {"prices-0-input_usd_per_mtok": "4", "name": "spare 2"})

    assert refused.status_code == 200
    [prices] = refused.context["inline_admin_formsets"]
    [row] = prices.formset.forms
    assert list(row.non_field_errors()) == [elsewhere("Input (USD / M tokens)", "“3”")]
    spare_list.refresh_from_db()
    assert (spare_list.name, spare_list.prices.get().input_usd_per_mtok) == ("spare", Decimal(3))


def test_a_stale_price_tab_keeps_what_another_tab_saved(spare_list, staff):
    price = spare_list.prices.get()
    page = admin_url(ModelPrice, "change", price.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "modelprice_form")

    tab_a.post(page, shown_a | {"input_usd_per_mtok": "3"})
    saved = tab_b.post(page, shown_b | {"credit_multiplier": "1.5"})

    assert saved.status_code == 302
    price.refresh_from_db()
    assert (price.input_usd_per_mtok, price.credit_multiplier) == (Decimal(3), Decimal("1.5"))


def test_a_start_stored_to_the_microsecond_can_be_moved(spare_list, staff):
    """The page shows a start to the second (set_model_price starts a list at the microsecond):
    what it showed is the start as it is, not a start changed elsewhere."""
    starts = timezone.now().replace(microsecond=267407) + timezone.timedelta(days=1)
    PricingVersion.objects.filter(pk=spare_list.pk).update(effective_from=starts)
    page = admin_url(PricingVersion, "change", spare_list.pk)
    console = client_for(staff)
    shown = opened(console, page, "pricingversion_form")
    later = starts + timezone.timedelta(days=1)

    saved = console.post(page, shown | {"effective_from_0": f"{later:%Y-%m-%d}"})

    assert saved.status_code == 302, refusals(saved)
    spare_list.refresh_from_db()
    assert spare_list.effective_from == later.replace(microsecond=0)


def test_a_stale_tab_of_a_list_with_several_prices_keeps_the_price_another_tab_saved(
    spare_list, staff
):
    """Each row of the list's page is compared with what it showed, as a list of one price is:
    every row after the first was refused as a duplicate of the first."""
    spare = ModelAlias.objects.create(alias="spare", litellm_model="openai/spare")
    ModelPrice.objects.create(
        pricing_version=spare_list,
        model_alias=spare,
        input_usd_per_mtok=Decimal("5"),
        output_usd_per_mtok=Decimal("6"),
    )
    page = admin_url(PricingVersion, "change", spare_list.pk)
    (tab_a, shown_a), (tab_b, shown_b) = two_tabs(staff, page, "pricingversion_form")
    row = {shown_a[f"prices-{n}-model_alias"][0]: f"prices-{n}" for n in (0, 1)}
    scratch = ModelAlias.objects.get(alias="scratch")
    scratch_row, spare_row = row[str(scratch.pk)], row[str(spare.pk)]

    first = tab_a.post(page, shown_a | {f"{spare_row}-output_usd_per_mtok": "7"})
    second = tab_b.post(page, shown_b | {f"{scratch_row}-input_usd_per_mtok": "3"})

    assert (first.status_code, second.status_code) == (302, 302)
    figures = {
        price.model_alias.alias: (price.input_usd_per_mtok, price.output_usd_per_mtok)
        for price in spare_list.prices.select_related("model_alias")
    }
    assert figures == {"scratch": (Decimal(3), Decimal(2)), "spare": (Decimal(5), Decimal(7))}
    assert history(spare_list)[-1] == (
        "Changed Input (USD / M tokens): 1 → 3 for model price “scratch @ spare · x1”."
    )
