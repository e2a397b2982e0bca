"""What the console's history says of a row added on its page: the values it was added with, as a
change says what it changed from and to. Django's said "Added." alone, and a profile added with
a cap and suspended left no trace of either."""

import re
from datetime import UTC, datetime

import pytest
from django.contrib.admin.models import ADDITION, LogEntry

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for, history, opened
from rooms.models import Agent, Room
from usage.models import BillingProfile, ModelAlias, ModelPrice, PricingVersion

pytestmark = pytest.mark.django_db

STARTS = datetime(2100, 1, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def boss(make_operator):
    return client_for(make_operator("Owner", "boss"))


def test_a_billing_profile_added_capped_and_suspended_says_so_in_its_history(boss, owner):
    added = boss.post(
        url(BillingProfile, "add") + f"?user={owner.pk}",
        {"user": owner.pk, "monthly_credit_cap": "5", "is_suspended": "on"},
    )

    assert added.status_code == 302
    profile = BillingProfile.objects.get(user=owner)
    assert history(profile) == [
        "Added with User: owner, Monthly credit cap: 5 and Is suspended: True."
    ]
    page = boss.get(url(BillingProfile, "history", profile.pk)).content.decode()
    assert "Monthly credit cap: 5 and Is suspended: True." in page


def test_a_billing_profile_added_without_a_cap_says_that_too(boss, owner):
    boss.post(url(BillingProfile, "add"), {"user": owner.pk, "no_cap": "on"})

    assert history(BillingProfile.objects.get(user=owner)) == [
        "Added with User: owner, Monthly credit cap: (empty) and Is suspended: False."
    ]


def test_an_alias_and_a_price_added_say_what_they_were_added_with(boss, staff):
    # A superuser's: an Owner sets no alias's key (usage/tests/test_alias_credentials_admin.py).
    added = client_for(staff).post(
        url(ModelAlias, "add"),
        {
            "alias": "tiny",
            "litellm_model": "openai/tiny",
            "api_key_env": "TINY_API_KEY",
            "context_window": "8192",
            "max_output_tokens": "512",
            "enabled": "on",
        },
    )
    assert added.status_code == 302, added.context["adminform"].form.errors
    tiny = ModelAlias.objects.get(alias="tiny")
    spare = PricingVersion.objects.create(name="spare", effective_from=STARTS)
    boss.post(
        url(ModelPrice, "add"),
        {
            "pricing_version": spare.pk,
            "model_alias": tiny.pk,
            "credit_multiplier": "2.5",
            "input_usd_per_mtok": "0.28",
            "cached_input_usd_per_mtok": "",
            "output_usd_per_mtok": "0.420000",
        },
    )

    assert history(tiny) == [
        "Added with Alias: tiny, Litellm model: openai/tiny, Api base: (empty), Api key env: "
        "TINY_API_KEY, Context window: 8192, Max output tokens: 512 and Enabled: True."
    ]
    assert history(ModelPrice.objects.get(model_alias=tiny)) == [
        "Added with Pricing version: spare · x1, Model alias: tiny, Credit multiplier: 2.5, "
        "Input (USD / M tokens): 0.28, Cached input (USD / M tokens): (empty) and "
        "Output (USD / M tokens): 0.42."
    ]


def test_a_price_list_added_with_its_prices_says_what_each_was_added_with(boss):
    added = boss.post(
        url(PricingVersion, "add"),
        {
            "name": "2100 list",
            "default_multiplier": "1.5",
            "effective_from_0": f"{STARTS:%Y-%m-%d}",
            "effective_from_1": f"{STARTS:%H:%M:%S}",
            "prices-TOTAL_FORMS": "1",
            "prices-INITIAL_FORMS": "0",
            "prices-0-model_alias": ModelAlias.objects.get(alias="deepseek").pk,
            "prices-0-credit_multiplier": "",
            "prices-0-input_usd_per_mtok": "0.28",
            "prices-0-cached_input_usd_per_mtok": "0.028",
            "prices-0-output_usd_per_mtok": "0.42",
        },
    )

    assert added.status_code == 302
    assert history(PricingVersion.objects.get(name="2100 list")) == [
        "Added with Name: 2100 list, Default multiplier: 1.5 and Effective from: "
        "2100-01-01 09:30:00 UTC. Added model price “deepseek @ 2100 list · x1.5” with "
        "Model alias: deepseek, Credit multiplier: (empty), Input (USD / M tokens): 0.28, "
        "Cached input (USD / M tokens): 0.028 and Output (USD / M tokens): 0.42."
    ]


def test_a_price_added_to_a_lists_page_says_its_prices_beside_the_change(boss):
    spare = PricingVersion.objects.create(name="spare", effective_from=STARTS)
    page = url(PricingVersion, "change", spare.pk)
    shown = opened(boss, page, "pricingversion_form")

    saved = boss.post(
        page,
        shown
        | {
            "name": "spare 2",
            "prices-TOTAL_FORMS": "1",
            "prices-0-pricing_version": spare.pk,
            "prices-0-model_alias": ModelAlias.objects.get(alias="qwen").pk,
            "prices-0-input_usd_per_mtok": "1",
            "prices-0-output_usd_per_mtok": "2",
        },
    )

    assert saved.status_code == 302
    assert history(spare) == [
        "Changed Name: spare → spare 2. Added model price “qwen @ spare 2 · x1” with Model "
        "alias: qwen, Credit multiplier: (empty), Input (USD / M tokens): 1, Cached input "
        "(USD / M tokens): (empty) and Output (USD / M tokens): 2."
    ]


def test_an_agent_and_a_room_added_say_what_they_were_added_with(boss, owner, make_agent):
    ada = make_agent(owner, "ada")
    boss.post(
        url(Agent, "add"),
        {
            "owner": owner.pk,
            "agent_key": "kay",
            "name": "Kay",
            "model_alias": "qwen",
            "role_prompt": "Kay checks every figure twice.",
            "tool_permissions": '["search"]',
        },
    )
    boss.post(
        url(Room, "add"),
        {
            "owner": owner.pk,
            "name": "Audit",
            "goal": "",
            "current_mode": "roundtable",
            "pending_mode": "",
            "seats-TOTAL_FORMS": "1",
            "seats-INITIAL_FORMS": "0",
            "seats-0-agent": ada.pk,
            "seats-0-position": "0",
        },
    )

    assert history(Agent.objects.get(agent_key="kay")) == [
        "Added with Owner: owner, Agent key: kay, Name: Kay, Model alias: qwen, Role prompt: "
        "Kay checks every figure twice. and Tool permissions: ['search']."
    ]
    assert history(Room.objects.get(name="Audit")) == [
        "Added with Owner: owner, Name: Audit, Goal: (empty), Current mode: Roundtable and "
        "Pending mode: (empty). Added room agent “Ada (@ada) at seat 0 of Audit” with Agent: "
        "Ada (@ada) and Position: 0."
    ]
    assert set(LogEntry.objects.values_list("action_flag", flat=True)) == {ADDITION}


def test_a_rooms_seats_name_each_input_for_a_screen_reader(boss, owner, make_agent, make_room):
    """Django's tabular rows label no input: tabbing through the seats read "combo box, Ada",
    "spin button, 1" and "check box", with nothing to say of which seat (axe label and
    select-name, critical, on every room's page)."""
    room = make_room(owner, [make_agent(owner, "ada"), make_agent(owner, "bob")])

    page = boss.get(url(Room, "change", room.pk)).content.decode()

    for row, index in (("seat row 1", 0), ("seat row 2", 1)):
        for name, label in (("agent", "Agent"), ("position", "Position"), ("DELETE", "Delete")):
            tag = re.search(rf'<(?:select|input)[^>]*name="seats-{index}-{name}"[^>]*>', page)
            assert tag, name
            assert f'aria-label="{label} ({row})"' in tag.group(0)
    assert 'aria-label="Agent (a new seat)"' in page  # the row "Add another" copies
