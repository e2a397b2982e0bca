"""Aliases, price lists and prices in the admin: what the ledger's history rests on is never
deleted (historical costs stay reproducible, the dashboard keeps filtering by the alias); an
alias is retired by disabling it."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for, history, opened
from usage.models import LlmCallEvent, ModelAlias, ModelPrice, PricingVersion
from usage.selectors import active_pricing_version

pytestmark = pytest.mark.django_db


MAX_ALIAS_PAGE_QUERIES = (
    9  # login (2), the alias, permissions (2), why it is kept (3), content type
)


def call(user, alias: str, version: PricingVersion | None) -> LlmCallEvent:
    return LlmCallEvent.objects.create(
        user=user,
        purpose="agent",
        status="success",
        model_alias=alias,
        pricing_version=version,
        credits=Decimal("0.01"),
        created_at=timezone.now(),
    )


@pytest.fixture
def boss(make_operator):
    return client_for(make_operator("Owner", "boss"))


def alias_form(alias: ModelAlias) -> dict:
    """The alias's page as posted with its values, Enabled unticked."""
    return {
        "alias": alias.alias,
        "litellm_model": alias.litellm_model,
        "api_key_env": alias.api_key_env,
        "context_window": alias.context_window,
        "max_output_tokens": alias.max_output_tokens,
    }


def bulk_delete(client, model, rows, action="delete_selected", **extra):
    return client.post(
        url(model, "changelist"),
        {"action": action, "_selected_action": [row.pk for row in rows], **extra},
    )


# --- model aliases ------------------------------------------------------------------------------


def test_an_alias_the_ledger_names_keeps_its_name(boss, owner, spare_list):
    """Ledger rows name their alias: renamed, they would name nothing (and be filtered by
    nothing on the dashboard). An alias nothing refers to yet can still be renamed."""
    scratch = ModelAlias.objects.get(alias="scratch")
    page = boss.get(url(ModelAlias, "change", scratch.pk)).content.decode()
    assert 'name="alias"' in page

    call(owner, "scratch", None)
    page = boss.get(url(ModelAlias, "change", scratch.pk)).content.decode()
    assert 'name="alias"' not in page
    assert "scratch" in page


def test_an_alias_the_ledger_names_cannot_be_deleted(boss, owner, spare_list):
    scratch = ModelAlias.objects.get(alias="scratch")
    call(owner, "scratch", None)

    assert (
        'class="deletelink"' not in boss.get(url(ModelAlias, "change", scratch.pk)).content.decode()
    )
    assert boss.get(url(ModelAlias, "delete", scratch.pk)).status_code == 403
    assert boss.post(url(ModelAlias, "delete", scratch.pk), {"post": "yes"}).status_code == 403

    assert ModelAlias.objects.filter(alias="scratch").exists()
    assert ModelPrice.objects.filter(model_alias=scratch).count() == 1


def test_an_alias_whose_prices_priced_ledger_rows_cannot_be_deleted(boss, owner, staff):
    # Only deepseek was called, but under the list that holds premium's price too.
    call(owner, "deepseek", active_pricing_version())
    premium = ModelAlias.objects.get(alias="premium")
    prices = ModelPrice.objects.filter(model_alias=premium).count()

    for client in (boss, client_for(staff)):
        response = client.post(url(ModelAlias, "delete", premium.pk), {"post": "yes"})
        assert response.status_code == 403

    assert ModelAlias.objects.filter(alias="premium").exists()
    assert ModelPrice.objects.filter(model_alias=premium).count() == prices > 0


def test_the_bulk_delete_keeps_an_alias_the_ledger_names_and_says_why(boss, owner, spare_list):
    scratch = ModelAlias.objects.get(alias="scratch")
    call(owner, "scratch", None)

    confirm = bulk_delete(boss, ModelAlias, [scratch])
    response = bulk_delete(boss, ModelAlias, [scratch], post="yes")

    page = confirm.content.decode()
    assert "scratch: ledger rows name it" in page and "disable it" in page
    assert "permission" not in page
    # Not Django's heading, which spoke of deleting "protected related objects".
    assert "Nothing is deleted: of the selected model aliases, these are kept." in page
    assert "protected related objects" not in page
    assert response.status_code == 200  # the same refusal again, nothing deleted
    assert ModelAlias.objects.filter(alias="scratch").exists()


def test_an_alias_nothing_refers_to_is_deleted_with_its_prices(boss, spare_list):
    scratch = ModelAlias.objects.get(alias="scratch")

    response = boss.post(url(ModelAlias, "delete", scratch.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not ModelAlias.objects.filter(alias="scratch").exists()
    assert not ModelPrice.objects.filter(pricing_version=spare_list).exists()


def test_an_alias_agents_use_cannot_be_deleted_or_renamed(boss, owner, make_agent, spare_list):
    """Agents name their alias: deleted or renamed, their turns would be refused as unknown.
    The refusal names the agents, so the operator knows what to move first."""
    scratch = ModelAlias.objects.get(alias="scratch")
    for key in ("ada", "bo", "cy", "di", "ed", "fay", "gus"):
        make_agent(owner, key, model_alias="scratch")

    page = boss.get(url(ModelAlias, "change", scratch.pk)).content.decode()
    confirm = bulk_delete(boss, ModelAlias, [scratch]).content.decode()
    refused = boss.post(url(ModelAlias, "delete", scratch.pk), {"post": "yes"})

    assert 'name="alias"' not in page and 'class="deletelink"' not in page
    named = "@ada of owner, @bo of owner, @cy of owner, @di of owner, @ed of owner"
    assert f"scratch: 7 agents use it ({named} and 2 more)" in confirm
    assert "move them to another alias first" in confirm
    assert refused.status_code == 403
    assert ModelAlias.objects.filter(alias="scratch").exists()
    assert ModelPrice.objects.filter(model_alias=scratch).count() == 1
    # Typed in by hand, the delete page says why, in the console's frame, still as a 403.
    typed = boss.get(url(ModelAlias, "delete", scratch.pk))
    assert typed.status_code == 403
    assert f"is kept: 7 agents use it ({named} and 2 more)" in typed.content.decode()
    assert "Pantheon" in typed.content.decode()


def test_only_who_may_delete_aliases_is_told_why_one_is_kept(make_operator, owner, make_agent):
    """An Analyst (view only) typing the delete URL gets Django's bare 403, not the agents."""
    make_agent(owner, "ada", model_alias="deepseek")
    deepseek = ModelAlias.objects.get(alias="deepseek")

    refused = client_for(make_operator("Analyst")).get(url(ModelAlias, "delete", deepseek.pk))

    assert refused.status_code == 403
    assert "@ada" not in refused.content.decode() and "is kept" not in refused.content.decode()


def test_an_alias_page_asks_once_whether_it_is_kept(
    boss, owner, make_agent, django_assert_max_num_queries
):
    """The page asks in three places whether the alias is kept (3 queries each time): it ran
    15 queries before the answer was shared."""
    make_agent(owner, "ada", model_alias="deepseek")
    deepseek = ModelAlias.objects.get(alias="deepseek")

    with django_assert_max_num_queries(MAX_ALIAS_PAGE_QUERIES):
        page = boss.get(url(ModelAlias, "change", deepseek.pk))

    assert page.status_code == 200
    assert 'name="alias"' not in page.content.decode()


def test_an_alias_is_deletable_again_once_no_agent_uses_it(boss, owner, make_agent, spare_list):
    scratch = ModelAlias.objects.get(alias="scratch")
    agent = make_agent(owner, "ada", model_alias="scratch")
    confirm = bulk_delete(boss, ModelAlias, [scratch]).content.decode()
    assert "scratch: an agent uses it (@ada of owner)" in confirm

    agent.model_alias = "deepseek"
    agent.save()
    response = boss.post(url(ModelAlias, "delete", scratch.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not ModelAlias.objects.filter(alias="scratch").exists()


def test_the_alias_page_says_to_disable_rather_than_delete(boss):
    deepseek = ModelAlias.objects.get(alias="deepseek")

    page = boss.get(url(ModelAlias, "change", deepseek.pk)).content.decode()

    assert "Disable an alias to retire it" in page


# --- price lists and their prices ---------------------------------------------------------------


def test_a_price_list_the_ledger_is_stamped_with_offers_no_delete(boss, owner, staff):
    version = active_pricing_version()
    call(owner, "deepseek", version)

    for client in (boss, client_for(staff)):
        page = client.get(url(PricingVersion, "change", version.pk)).content.decode()
        assert 'class="deletelink"' not in page
        assert "prices-0-DELETE" not in page  # nor its prices, one by one
        assert client.get(url(PricingVersion, "delete", version.pk)).status_code == 403

    confirm = bulk_delete(boss, PricingVersion, [version]).content.decode()
    assert "ledger rows are stamped with it" in confirm
    assert "permission" not in confirm and "ledger event" not in confirm
    bulk_delete(boss, PricingVersion, [version], post="yes")
    assert PricingVersion.objects.filter(pk=version.pk).exists()


def test_a_price_of_a_list_the_ledger_is_stamped_with_cannot_be_deleted(boss, owner):
    version = active_pricing_version()
    call(owner, "deepseek", version)
    price = ModelPrice.objects.get(pricing_version=version, model_alias__alias="llama")

    assert boss.post(url(ModelPrice, "delete", price.pk), {"post": "yes"}).status_code == 403
    assert ModelPrice.objects.filter(pk=price.pk).exists()


def test_a_price_list_no_ledger_row_uses_is_deleted_with_its_prices(boss, spare_list):
    page = boss.get(url(PricingVersion, "change", spare_list.pk)).content.decode()
    assert 'class="deletelink"' in page

    response = boss.post(url(PricingVersion, "delete", spare_list.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not PricingVersion.objects.filter(pk=spare_list.pk).exists()
    assert ModelAlias.objects.filter(alias="scratch").exists()


def test_the_price_lists_list_writes_its_moments_as_the_records_do(boss):
    PricingVersion.objects.create(
        name="december", effective_from=datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC)
    )

    page = boss.get(url(PricingVersion, "changelist")).content.decode()

    assert ">2026-12-01 00:00:00<" in page
    assert "Dec. 1, 2026" not in page


# --- a list the ledger is stamped with is read-only; prices change through a copy ----------------


def test_a_price_list_the_ledger_is_stamped_with_and_its_prices_are_read_only(boss, owner):
    """Re-pointing a price to another alias, or changing a figure, rewrote history as much as a
    delete, and it unlocked deleting the alias whose price was moved away."""
    version = active_pricing_version()
    call(owner, "deepseek", version)
    price = ModelPrice.objects.get(pricing_version=version, model_alias__alias="premium")
    scratch = ModelAlias.objects.create(alias="scratch", litellm_model="openai/scratch")
    figures = {
        "model_alias": scratch.pk,
        "pricing_version": version.pk,
        "input_usd_per_mtok": "9",
        "output_usd_per_mtok": "9",
    }

    moved = boss.post(url(ModelPrice, "change", price.pk), figures)
    renamed = boss.post(
        url(PricingVersion, "change", version.pk),
        {"name": "rewritten", "default_multiplier": "3", "effective_from_0": "2020-01-01"},
    )
    page = boss.get(url(PricingVersion, "change", version.pk)).content.decode()

    # Refused: each page again, read-only, saying why (not Django's bare 403).
    assert moved.status_code == renamed.status_code == 302
    assert moved.url == url(ModelPrice, "change", price.pk)
    assert renamed.url == url(PricingVersion, "change", version.pk)
    price.refresh_from_db()
    version.refresh_from_db()
    assert price.model_alias.alias == "premium" and price.input_usd_per_mtok != 9
    assert version.name != "rewritten"
    assert 'name="prices-0-input_usd_per_mtok"' not in page  # the inline is read-only too
    assert "so it and its prices are read-only" in page  # and the page says why
    # Its start reads as every moment in the console does (it read "Nov. 1, 2026, midnight").
    assert f"{version.effective_from:%Y-%m-%d %H:%M:%S} UTC" in page
    assert (
        boss.post(url(ModelAlias, "delete", price.model_alias_id), {"post": "yes"}).status_code
        == 403
    )


def test_a_new_price_goes_only_into_a_list_no_ledger_row_is_stamped_with(boss, owner, spare_list):
    used = PricingVersion.objects.exclude(pk=spare_list.pk).get()
    call(owner, "deepseek", used)
    scratch = ModelAlias.objects.get(alias="scratch")
    figures = {"model_alias": scratch.pk, "input_usd_per_mtok": "1", "output_usd_per_mtok": "2"}

    refused = boss.post(url(ModelPrice, "add"), {**figures, "pricing_version": used.pk})
    offered = boss.get(url(ModelPrice, "add")).context["adminform"].form.fields["pricing_version"]

    assert refused.status_code == 200  # the form again, with the error
    assert not ModelPrice.objects.filter(pricing_version=used, model_alias=scratch).exists()
    assert list(offered.queryset) == [spare_list]


def test_copying_a_list_makes_an_editable_one_in_effect_in_a_day(boss, owner):
    used = active_pricing_version()
    call(owner, "deepseek", used)

    response = bulk_delete(boss, PricingVersion, [used], action="copy_as_new_list")

    copy = PricingVersion.objects.get(name=f"{used.name} (copy)")
    assert response.status_code == 302
    assert copy.effective_from > timezone.now()
    assert copy.effective_from.microsecond == 0  # as its page shows it
    assert active_pricing_version() == used  # nothing changes until the copy's start
    assert sorted(copy.prices.values_list("model_alias__alias", "input_usd_per_mtok")) == sorted(
        used.prices.values_list("model_alias__alias", "input_usd_per_mtok")
    )
    page = boss.get(url(PricingVersion, "change", copy.pk)).content.decode()
    assert 'name="prices-0-input_usd_per_mtok"' in page
    bulk_delete(boss, PricingVersion, [used], action="copy_as_new_list")
    assert PricingVersion.objects.filter(name=f"{used.name} (copy 2)").exists()


def test_lists_copied_together_start_a_second_apart(boss, spare_list):
    """All three copies started at one moment, and which of them priced calls was then the
    database's choice (the tester's x3 list priced every call, the x7 one none)."""
    lists = list(PricingVersion.objects.all())
    PricingVersion.objects.create(
        name="in the way", effective_from=(timezone.now() + timedelta(days=1, seconds=1))
    )

    response = boss.post(
        url(PricingVersion, "changelist"),
        {"action": "copy_as_new_list", "_selected_action": [row.pk for row in lists]},
        follow=True,
    )

    copies = PricingVersion.objects.filter(name__endswith="(copy)").order_by("effective_from")
    starts = [copy.effective_from for copy in copies]
    assert len(starts) == len(set(starts)) == 2
    assert PricingVersion.objects.values("effective_from").distinct().count() == 5
    said = " ".join(str(m) for m in response.context["messages"])
    assert said.startswith(f"Copied as {copies[0].name}, in effect from ")
    assert said.endswith(": edit their prices and start before then.")


def test_a_start_another_list_has_is_refused(boss, spare_list):
    taken = timezone.now().replace(microsecond=0) + timedelta(days=2)
    PricingVersion.objects.create(name="first", effective_from=taken)

    refused = boss.post(url(PricingVersion, "change", spare_list.pk), list_form("spare", taken))

    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["effective_from"] == [
        "first starts at this moment too: one list is in force at a time, so give each its own "
        "start."
    ]
    spare_list.refresh_from_db()
    assert spare_list.effective_from != taken
    with pytest.raises(IntegrityError), transaction.atomic():
        PricingVersion.objects.create(name="second", effective_from=taken)


def test_a_copied_lists_name_and_multiplier_read_as_one_title(boss, owner):
    """A copy read "2026-11 list (copy) (x1)": the multiplier in a second pair of brackets, as
    if it were a part of the name."""
    used = active_pricing_version()
    bulk_delete(boss, PricingVersion, [used], action="copy_as_new_list")
    copy = PricingVersion.objects.get(name=f"{used.name} (copy)")

    page = boss.get(url(PricingVersion, "change", copy.pk)).content.decode()
    prices = boss.get(url(ModelPrice, "changelist")).content.decode()

    assert f"<h2>{used.name} (copy) · x1</h2>" in page
    assert f"deepseek @ {used.name} (copy) · x1" in prices
    assert ") (x" not in page + prices


def test_a_price_lists_page_asks_once_whether_the_ledger_uses_it(boss, owner):
    """The page and its inline prices each asked (two caches for one question)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    version = active_pricing_version()
    call(owner, "deepseek", version)

    with CaptureQueriesContext(connection) as queries:
        page = boss.get(url(PricingVersion, "change", version.pk))

    asked = [q["sql"] for q in queries if 'FROM "usage_llmcallevent"' in q["sql"]]
    assert page.status_code == 200
    assert len(asked) == 1, asked


# --- a price list starts after the ledger's latest call ----------------------------------


def list_form(name: str, starts: datetime, multiplier: str = "1") -> dict:
    return {
        "name": name,
        "default_multiplier": multiplier,
        "effective_from_0": f"{starts:%Y-%m-%d}",
        "effective_from_1": f"{starts:%H:%M:%S}",
        "prices-TOTAL_FORMS": "0",
        "prices-INITIAL_FORMS": "0",
    }


def test_a_price_changed_in_its_lists_page_is_logged_from_and_to(boss, spare_list):
    """The list's own fields read "Name: A → B"; its prices read only "Changed Credit
    multiplier for model price …"."""
    price = spare_list.prices.get()
    form = {
        **list_form("spare", spare_list.effective_from),
        "name": "spare 2",
        "prices-TOTAL_FORMS": "1",
        "prices-INITIAL_FORMS": "1",
        "prices-0-id": price.pk,
        "prices-0-pricing_version": spare_list.pk,
        "prices-0-model_alias": price.model_alias_id,
        "prices-0-credit_multiplier": "1.25",
        "prices-0-input_usd_per_mtok": "2",
        "prices-0-output_usd_per_mtok": "2.000000",  # as the page showed it
    }

    saved = boss.post(url(PricingVersion, "change", spare_list.pk), form)

    assert saved.status_code == 302
    history = boss.get(url(PricingVersion, "history", spare_list.pk)).content.decode()
    logged = LogEntry.objects.get(object_id=str(spare_list.pk)).get_change_message()
    assert logged.startswith("Changed Name: spare → spare 2")
    assert logged.endswith(
        # The price as the column held it (1.000000) and as typed, written alike.
        ". Changed Credit multiplier: (empty) → 1.25 and Input (USD / M tokens): 1 → 2 "
        "for model price “scratch @ spare 2 · x1”."
    )
    assert "Credit multiplier: (empty) → 1.25" in history


def test_a_list_stamped_while_its_page_was_open_is_not_saved_and_says_why(
    boss, make_operator, owner, spare_list
):
    """A turn priced by the list between its page's opening and its save: Django answered a
    bare "403 Forbidden". Its page again, read-only, saying why; nothing saved."""
    price = spare_list.prices.get()
    change = url(PricingVersion, "change", spare_list.pk)
    assert 'name="name"' in boss.get(change).content.decode()  # editable when opened
    call(owner, "scratch", spare_list)
    price_form = {
        **list_form("renamed", spare_list.effective_from, multiplier="3"),
        "prices-TOTAL_FORMS": "1",
        "prices-INITIAL_FORMS": "1",
        "prices-0-id": price.pk,
        "prices-0-pricing_version": spare_list.pk,
        "prices-0-model_alias": price.model_alias_id,
        "prices-0-input_usd_per_mtok": "9",
        "prices-0-output_usd_per_mtok": "2",
    }

    saved = boss.post(change, price_form)

    assert saved.status_code == 302 and saved.url == change
    page = boss.get(change)
    assert [str(message) for message in page.context["messages"]] == [
        "Your changes were not saved: it became read-only in the meantime (ledger rows are "
        "stamped with it; copy it to change prices).",
        "Ledger rows are stamped with this price list, so it and its prices are read-only. To "
        "change prices, select it in the list and copy it as a new one.",
    ]
    assert 'name="name"' not in page.content.decode()
    price_saved = boss.post(
        url(ModelPrice, "change", price.pk),
        {
            "pricing_version": spare_list.pk,
            "model_alias": price.model_alias_id,
            "input_usd_per_mtok": "9",
            "output_usd_per_mtok": "2",
        },
    )
    assert price_saved.status_code == 302
    assert price_saved.url == url(ModelPrice, "change", price.pk)
    followed = boss.get(price_saved.url)
    assert [str(message) for message in followed.context["messages"]] == [
        "Your changes were not saved: it became read-only in the meantime (its price list "
        "prices ledger rows)."
    ]
    spare_list.refresh_from_db()
    price.refresh_from_db()
    assert spare_list.name == "spare" and spare_list.default_multiplier == Decimal("1")
    assert price.input_usd_per_mtok == Decimal("1")
    # Who may change no price list still gets Django's 403.
    assert client_for(make_operator("Analyst")).post(change, price_form).status_code == 403


def test_a_price_list_cannot_start_before_the_ledgers_latest_call(boss, owner, spare_list):
    """It saved: the copy of a list, backdated, claimed to have priced calls stamped with
    another list (and the next call stamped it, locking the false start in)."""
    used = PricingVersion.objects.exclude(pk=spare_list.pk).get()
    last = call(owner, "deepseek", used)
    before = last.created_at - timezone.timedelta(days=18)
    start = spare_list.effective_from

    added = boss.post(url(PricingVersion, "add"), list_form("backdated", before))
    moved = boss.post(url(PricingVersion, "change", spare_list.pk), list_form("spare", before))

    assert "Must be after the ledger&#x27;s latest call" in added.content.decode()
    assert "Must be after the ledger&#x27;s latest call" in moved.content.decode()
    assert not PricingVersion.objects.filter(name="backdated").exists()
    spare_list.refresh_from_db()
    assert spare_list.effective_from == start


def test_a_price_list_after_the_latest_call_saves_and_an_old_start_may_stay(
    boss, owner, spare_list
):
    used = PricingVersion.objects.exclude(pk=spare_list.pk).get()
    PricingVersion.objects.filter(pk=spare_list.pk).update(
        effective_from=timezone.now() - timezone.timedelta(days=40)
    )
    spare_list.refresh_from_db()
    call(owner, "deepseek", used)
    later = timezone.now() + timezone.timedelta(days=1)

    added = boss.post(url(PricingVersion, "add"), list_form("next month", later))
    renamed = boss.post(
        url(PricingVersion, "change", spare_list.pk),
        list_form("spare, renamed", spare_list.effective_from),
    )

    assert added.status_code == 302
    assert renamed.status_code == 302, renamed.context["adminform"].form.errors
    assert PricingVersion.objects.filter(name="next month").exists()
    assert PricingVersion.objects.get(pk=spare_list.pk).name == "spare, renamed"


def test_an_analyst_is_not_told_to_copy_a_list_it_cannot_copy(make_operator, boss, owner):
    version = active_pricing_version()
    call(owner, "deepseek", version)

    seen_by_analyst = client_for(make_operator("Analyst")).get(
        url(PricingVersion, "change", version.pk)
    )
    seen_by_owner = boss.get(url(PricingVersion, "change", version.pk))

    assert "so it and its prices are read-only." in seen_by_analyst.content.decode()
    assert "copy it as a new one" not in seen_by_analyst.content.decode()
    assert "copy it as a new one" in seen_by_owner.content.decode()


def test_an_alias_whose_window_leaves_no_room_for_the_prompt_is_refused(boss):
    """It saved, and every turn on it was refused as context_budget_exceeded."""
    form = {"alias": "tiny", "litellm_model": "openai/tiny", "enabled": "on"}

    longer = boss.post(
        url(ModelAlias, "add"), {**form, "context_window": "2048", "max_output_tokens": "4096"}
    )
    cramped = boss.post(
        url(ModelAlias, "add"), {**form, "context_window": "1500", "max_output_tokens": "100"}
    )
    fine = boss.post(
        url(ModelAlias, "add"), {**form, "context_window": "2048", "max_output_tokens": "256"}
    )

    assert "Must be less than the context window (2,048)." in longer.content.decode()
    assert "Leaves the prompt" in cramped.content.decode()
    assert fine.status_code == 302
    assert ModelAlias.objects.get(alias="tiny").max_output_tokens == 256


def test_an_alias_whose_answer_fills_the_window_is_refused_with_the_answer_asked_for(boss):
    """It saved: a fifth of the window (500) stood for answers of 2,000, and a full prompt and
    the answer asked for overran the window."""
    form = {"alias": "wide", "litellm_model": "openai/gpt-4o", "enabled": "on"}

    page = boss.post(
        url(ModelAlias, "add"), {**form, "context_window": "2500", "max_output_tokens": "2000"}
    )

    assert page.status_code == 200
    assert page.context["adminform"].form.errors == {
        "context_window": [
            "Leaves the prompt 0 tokens once the answer (2,000) and the overhead (1,024) are "
            "kept: at least 512 are needed; answers of 2,000 tokens need a window of 3,536 or "
            "more."
        ]
    }
    assert not ModelAlias.objects.filter(alias="wide").exists()


def test_an_alias_saved_before_the_rule_opens_and_says_what_to_change(boss):
    """A row saved when a fifth of the window stood for the answer opens as any other; saved
    unchanged it says why it cannot be, and saves once its answers fit."""
    qwen = ModelAlias.objects.get(alias="qwen")
    ModelAlias.objects.filter(pk=qwen.pk).update(context_window=2500, max_output_tokens=2000)
    qwen.refresh_from_db()
    page = url(ModelAlias, "change", qwen.pk)

    opened = boss.get(page)
    unchanged = boss.post(page, {**alias_form(qwen), "enabled": "on"})
    fixed = boss.post(page, {**alias_form(qwen), "enabled": "on", "max_output_tokens": "964"})

    assert opened.status_code == 200
    assert unchanged.status_code == 200
    assert list(unchanged.context["adminform"].form.errors) == ["context_window"]
    assert "the answer (2,000)" in unchanged.content.decode()
    assert fixed.status_code == 302
    qwen.refresh_from_db()
    assert (qwen.context_window, qwen.max_output_tokens) == (2500, 964)


@pytest.mark.parametrize("window", ["0", "500", "-5"])
def test_a_window_below_its_minimum_says_the_minimum_and_only_that(boss, window):
    """0 and 500 also read "Must be less than the context window (0)" against a fine max
    output; -5 read "greater than or equal to 0", though the least is 1,024."""
    form = {"alias": "tiny", "litellm_model": "openai/tiny", "max_output_tokens": "256"}

    page = boss.post(url(ModelAlias, "add"), {**form, "context_window": window})

    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert errors == {"context_window": ["Ensure this value is greater than or equal to 1024."]}
    assert not ModelAlias.objects.filter(alias="tiny").exists()


def test_a_too_long_answer_against_a_refused_window_is_not_held_to_the_old_window(boss):
    """The row's old window (8,192) stood in for the refused one."""
    qwen = ModelAlias.objects.get(alias="qwen")
    form = {**alias_form(qwen), "context_window": "500", "max_output_tokens": "9000"}

    errors = boss.post(url(ModelAlias, "change", qwen.pk), form).context["adminform"].form.errors

    assert list(errors) == ["context_window"]


def test_a_price_lists_page_reads_its_prices_in_one_go(boss, spare_list):
    """It ran a query per price: each row's alias select read the aliases again."""
    page = url(PricingVersion, "change", spare_list.pk)
    boss.get(page)  # the process's caches (content types) filled
    with CaptureQueriesContext(connection) as one_price:
        boss.get(page)
    for name in ("extra1", "extra2", "extra3"):
        ModelPrice.objects.create(
            pricing_version=spare_list,
            model_alias=ModelAlias.objects.create(alias=name, litellm_model=f"openai/{name}"),
            input_usd_per_mtok=Decimal("1"),
            output_usd_per_mtok=Decimal("1"),
        )
    with CaptureQueriesContext(connection) as four_prices:
        boss.get(page)

    assert len(four_prices) == len(one_price)


def test_disabling_the_managers_and_summarizers_alias_says_what_stops(boss, settings):
    """It saved without a word; the next orchestrated turn was refused."""
    settings.PANTHEON_MANAGER_MODEL_ALIAS = settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "deepseek"
    deepseek, other = (ModelAlias.objects.get(alias=name) for name in ("deepseek", "qwen"))

    disabled = boss.post(url(ModelAlias, "change", deepseek.pk), alias_form(deepseek), follow=True)
    quiet = boss.post(url(ModelAlias, "change", other.pk), alias_form(other), follow=True)

    said = [str(message) for message in disabled.context["messages"]]
    assert any(
        "While deepseek is disabled, orchestrated rooms refuse turns" in m
        and "sessions get no new summaries" in m
        for m in said
    )
    assert not ModelAlias.objects.get(alias="deepseek").enabled
    assert not any("While" in str(message) for message in quiet.context["messages"])


def test_disabling_an_alias_agents_use_says_how_many_and_names_a_few(
    boss, owner, outsider, make_agent
):
    """It said only "changed successfully"; every room seating them then refused turns."""
    for index in range(5):
        make_agent(owner, f"a{index}", model_alias="llama")
    make_agent(outsider, "a0", model_alias="llama")
    make_agent(outsider, "other")  # on deepseek
    llama = ModelAlias.objects.get(alias="llama")

    disabled = boss.post(url(ModelAlias, "change", llama.pk), alias_form(llama), follow=True)

    said = " ".join(str(message) for message in disabled.context["messages"])
    assert "While llama is disabled" in said
    assert "the 6 agents that use it (@a0 of outsider, @a0 of owner, @a1 of owner" in said
    assert "and 1 more" in said and "@other" not in said
    assert "model_alias_disabled" in said and "move them to another alias" in said
    err = StringIO()
    call_command("set_model_alias", "llama", "--disable", stdout=StringIO(), stderr=err)
    assert err.getvalue().startswith("Warning: While llama is disabled")
    assert "the 6 agents that use it (@a0 of outsider" in err.getvalue()


def test_the_history_says_what_a_change_changed_from_and_to(boss):
    """Disabling and enabling again both read "Changed Enabled.": which was which?"""
    qwen = ModelAlias.objects.get(alias="qwen")
    form = alias_form(qwen)

    boss.post(url(ModelAlias, "change", qwen.pk), form)
    boss.post(
        url(ModelAlias, "change", qwen.pk), {**form, "enabled": "on", "context_window": 65536}
    )

    said = [
        entry.get_change_message()
        for entry in LogEntry.objects.filter(object_id=str(qwen.pk)).order_by("pk")
    ]
    assert said == [
        "Changed Enabled: True → False.",
        f"Changed Context window: {qwen.context_window} → 65536 and Enabled: False → True.",
    ]


def test_a_start_with_microseconds_posted_back_as_shown_is_no_change(boss, spare_list):
    """set_model_price starts its lists at the microsecond and the page shows the second: a
    rename moved the start to the second before it."""
    starts = timezone.now().replace(microsecond=267407) + timezone.timedelta(days=1)
    PricingVersion.objects.filter(pk=spare_list.pk).update(effective_from=starts)
    page = boss.get(url(PricingVersion, "change", spare_list.pk)).content.decode()
    shown = dict(re.findall(r'name="(initial-effective_from_\d)" value="([^"]*)"', page))
    assert shown == {  # as a browser posts it back
        "initial-effective_from_0": f"{starts:%Y-%m-%d}",
        "initial-effective_from_1": f"{starts:%H:%M:%S}",
    }

    form = {**list_form("spare 2", starts), **shown}
    saved = boss.post(url(PricingVersion, "change", spare_list.pk), form)

    assert saved.status_code == 302
    spare_list.refresh_from_db()
    assert (spare_list.name, spare_list.effective_from) == ("spare 2", starts)
    logged = LogEntry.objects.get(object_id=str(spare_list.pk)).get_change_message()
    assert logged == "Changed Name: spare → spare 2."


def test_an_old_start_posted_back_to_the_microsecond_may_stay(boss, owner, spare_list):
    """Django's time box takes microseconds too: the exact start of a list older than the
    ledger's latest call is no move before it."""
    used = PricingVersion.objects.exclude(pk=spare_list.pk).get()
    starts = timezone.now().replace(microsecond=267407) - timezone.timedelta(days=3)
    PricingVersion.objects.filter(pk=spare_list.pk).update(effective_from=starts)
    call(owner, "deepseek", used)

    form = {**list_form("spare 2", starts), "effective_from_1": f"{starts:%H:%M:%S.%f}"}
    saved = boss.post(url(PricingVersion, "change", spare_list.pk), form)

    assert saved.status_code == 302, saved.context["adminform"].form.errors
    spare_list.refresh_from_db()
    assert (spare_list.name, spare_list.effective_from) == ("spare 2", starts)


# --- a price list with several prices, saved from its page --------------------------------------


def copied_list(boss, owner) -> PricingVersion:
    """The seeded list, stamped on the ledger, copied with the list's action (its prices: one
    per seeded alias)."""
    used = active_pricing_version()
    call(owner, "deepseek", used)
    bulk_delete(boss, PricingVersion, [used], action="copy_as_new_list")
    copy = PricingVersion.objects.get(name=f"{used.name} (copy)")
    assert copy.prices.count() >= 2
    return copy


def row_of(shown: dict, alias: str) -> str:
    """The inline row (`prices-N`) of the price of `alias` in a posted price list page."""
    pk = str(ModelAlias.objects.get(alias=alias).pk)
    [row] = [
        name.removesuffix("-model_alias")
        for name, value in shown.items()
        if name.endswith("-model_alias") and not name.startswith("initial-") and value == [pk]
    ]
    return row


def prices_of(version: PricingVersion) -> dict:
    return {
        price.model_alias.alias: (price.input_usd_per_mtok, price.output_usd_per_mtok)
        for price in version.prices.select_related("model_alias")
    }


def test_a_copied_list_with_several_prices_saves_as_shown_and_with_a_price_changed(boss, owner):
    """Every row after the first was refused as a duplicate ("Please correct the duplicate
    data for model_alias."): the copy's prices could not be edited, as the README says to."""
    copy = copied_list(boss, owner)
    before = prices_of(copy)
    page = url(PricingVersion, "change", copy.pk)
    shown = opened(boss, page, "pricingversion_form")

    as_shown = boss.post(page, shown)

    assert as_shown.status_code == 302, as_shown.context and as_shown.context["errors"]
    assert prices_of(copy) == before
    assert history(copy)[-1] == "No fields changed."

    shown = opened(boss, page, "pricingversion_form")
    qwen = row_of(shown, "qwen")
    changed = boss.post(page, shown | {"name": "next list", f"{qwen}-input_usd_per_mtok": "0.3"})

    assert changed.status_code == 302, changed.context and changed.context["errors"]
    copy.refresh_from_db()
    assert copy.name == "next list"
    assert prices_of(copy) == before | {"qwen": (Decimal("0.3"), before["qwen"][1])}
    assert history(copy)[-1] == (
        "Changed Name: 2026-11 list (copy) → next list. Changed Input (USD / M tokens): "
        "0.36 → 0.3 for model price “qwen @ next list · x1”."
    )


def test_two_prices_of_one_alias_in_a_list_are_still_refused(boss, owner):
    copy = copied_list(boss, owner)
    before = prices_of(copy)
    page = url(PricingVersion, "change", copy.pk)
    shown = opened(boss, page, "pricingversion_form")
    qwen = ModelAlias.objects.get(alias="qwen").pk

    refused = boss.post(page, shown | {f"{row_of(shown, 'llama')}-model_alias": str(qwen)})

    assert refused.status_code == 200
    [prices] = refused.context["inline_admin_formsets"]
    assert list(prices.formset.non_form_errors()) == [
        "Please correct the duplicate data for model_alias."
    ]
    refused_rows = [form.non_field_errors() for form in prices.formset.forms if form.errors]
    assert refused_rows == [["Please correct the duplicate values below."]]
    assert prices_of(copy) == before


# --- prices and multipliers are typed as plain numbers ------------------------------------------


def price_page_figures(price: ModelPrice) -> dict:
    """A price's page posted with input 1 and output 2 (USD / M tokens)."""
    return {
        "model_alias": price.model_alias_id,
        "pricing_version": price.pricing_version_id,
        "input_usd_per_mtok": "1",
        "output_usd_per_mtok": "2",
    }


@pytest.mark.parametrize("typed", ["1e3", "1E+3", "\u0661\u0662", "1,000", "1,5", "1_000"])
def test_a_price_or_multiplier_is_typed_as_a_plain_number(boss, spare_list, typed):
    """The price pages stored 1e3 as 1000, 1_000 as 1000, Arabic-Indic 12 as 12; 1,5 reached them
    from the browser's number box as 15."""
    rule = (
        "Enter a plain number such as 12 or 0.5 (digits 0-9 and at most one decimal point; "
        "no sign, exponent, comma or other separator)."
    )
    price = spare_list.prices.get()
    figures = price_page_figures(price)

    on_price = boss.post(
        url(ModelPrice, "change", price.pk), {**figures, "output_usd_per_mtok": typed}
    )
    on_list = boss.post(
        url(PricingVersion, "change", spare_list.pk),
        list_form("spare", spare_list.effective_from, multiplier=typed),
    )
    plain = boss.post(url(ModelPrice, "change", price.pk), {**figures, "output_usd_per_mtok": "15"})

    assert on_price.context["adminform"].form.errors == {"output_usd_per_mtok": [rule]}
    assert on_list.context["adminform"].form.errors == {"default_multiplier": [rule]}
    assert plain.status_code == 302
    price.refresh_from_db()
    spare_list.refresh_from_db()
    assert price.output_usd_per_mtok == Decimal("15")
    assert spare_list.default_multiplier == Decimal("1")


def test_a_cached_input_price_above_the_input_price_is_refused_on_the_price_pages(boss, spare_list):
    """set_model_price refuses it (the operations tester's catch); the console took it, and
    billed every cache hit above a miss."""
    price = spare_list.prices.get()
    figures = price_page_figures(price)

    refused = boss.post(
        url(ModelPrice, "change", price.pk), {**figures, "cached_input_usd_per_mtok": "5"}
    )
    taken = boss.post(
        url(ModelPrice, "change", price.pk), {**figures, "cached_input_usd_per_mtok": "0.5"}
    )

    assert refused.context["adminform"].form.errors == {
        "cached_input_usd_per_mtok": [
            "The cached-input price ($5/M) is above the input price ($1/M): a cached token "
            "costs a fraction of a fresh one."
        ]
    }
    assert taken.status_code == 302
    price.refresh_from_db()
    assert price.cached_input_usd_per_mtok == Decimal("0.5")


# --- which list is in force, and a list a later one will supersede -----------------------------


def said(response) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in response.context["messages"]]


def test_the_price_lists_list_says_which_list_is_in_force_and_which_is_scheduled(boss, owner):
    """Nothing said which list priced calls now: a copy scheduled for tomorrow read as any
    other row, and so did the lists it had superseded."""
    seeded = active_pricing_version()
    old = PricingVersion.objects.create(
        name="old", effective_from=seeded.effective_from - timedelta(days=30)
    )
    copy = copied_list(boss, owner)

    page = boss.get(url(PricingVersion, "changelist")).content.decode()

    rows = {name: re.search(rf">{re.escape(name)}</a>.*?</tr>", page, re.S)[0] for name in (
        seeded.name, old.name, copy.name
    )}  # fmt: skip
    starts = f"{copy.effective_from:%Y-%m-%d %H:%M:%S}"
    assert f">in force now until {starts}</span>" in rows[seeded.name]
    assert f">scheduled from {starts}</span>" in rows[copy.name]
    assert f"superseded since {seeded.effective_from:%Y-%m-%d %H:%M:%S}" in rows[old.name]


def test_the_price_lists_list_on_a_host_behind_says_which_list_is_in_force_by_the_database_clock(
    boss, monkeypatch
):
    """The turns pick the list in force by the database's clock: a console host eleven minutes
    behind said a list started a minute ago was still scheduled, and the one it superseded in
    force."""
    seeded = active_pricing_version()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        started = cursor.fetchone()[0] - timedelta(minutes=1)
    PricingVersion.objects.create(name="next", effective_from=started)
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() - timedelta(minutes=11))

    page = boss.get(url(PricingVersion, "changelist")).content.decode()

    rows = {name: re.search(rf">{re.escape(name)}</a>.*?</tr>", page, re.S)[0] for name in (
        seeded.name, "next"
    )}  # fmt: skip
    assert ">in force now</span>" in rows["next"]
    assert f"superseded since {started:%Y-%m-%d %H:%M:%S}" in rows[seeded.name]


def test_a_list_saved_that_a_scheduled_one_will_supersede_says_which_and_when(boss, owner):
    """The trap, in the console: a copy in effect tomorrow, and a new list started sooner with
    premium's output at $16: tomorrow the copy takes over, at $15, and nothing said so."""
    copy = copied_list(boss, owner)
    starts = timezone.now().replace(microsecond=0) + timedelta(minutes=5)
    premium = ModelAlias.objects.get(alias="premium")
    form = list_form("2027-01 list", starts) | {
        "prices-TOTAL_FORMS": "1",
        "prices-0-model_alias": premium.pk,
        "prices-0-input_usd_per_mtok": "3",
        "prices-0-output_usd_per_mtok": "16",
    }

    added = boss.post(url(PricingVersion, "add"), form, follow=True)

    copy_starts = f"{copy.effective_from:%Y-%m-%d %H:%M:%S}"
    assert (
        "warning",
        f"'{copy.name}' is scheduled to take over from '2027-01 list' at {copy_starts} UTC: "
        "calls from then are priced by it, not by '2027-01 list'. To keep these prices from "
        f"then, set them in '{copy.name}' too, or move that list's start.",
    ) in said(added)
    price = ModelPrice.objects.get(pricing_version__name="2027-01 list")

    changed = boss.post(
        url(ModelPrice, "change", price.pk),
        price_page_figures(price) | {"input_usd_per_mtok": "3", "output_usd_per_mtok": "17"},
        follow=True,
    )

    assert (
        "warning",
        f"'{copy.name}' is scheduled to take over from '2027-01 list' at {copy_starts} UTC: "
        f"calls from then are priced by it, not by '2027-01 list', and '{copy.name}' has "
        "premium at cached input $0.3/M, output $15/M, credits x5. To keep this price from "
        "then, set it in "
        f"'{copy.name}' too, or move that list's start.",
    ) in said(changed)
    # The latest list is saved with no warning.
    shown = opened(boss, url(PricingVersion, "change", copy.pk), "pricingversion_form")
    latest = boss.post(url(PricingVersion, "change", copy.pk), shown | {"name": "x"}, follow=True)
    assert [level for level, _ in said(latest)] == ["success"]
