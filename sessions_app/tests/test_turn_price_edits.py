"""A price list no ledger row is stamped with yet may be edited while turns start: every row
stamped with it is priced at its prices as they stand once it is stamped. An edit that commits
before a turn's first row prices that turn; one that comes after is refused, as every edit of a
stamped list is (real PostgreSQL connections, the interleavings forced)."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from orchestration.metering import compute_credits, compute_oe, compute_price_usd
from pantheon.testing.admin import admin_url, client_for
from pantheon.testing.concurrency import finished, in_thread, someone_waits_on_a_lock
from pantheon.testing.processes import production_python
from sessions_app import api_turns
from sessions_app.turns import TurnRunner
from usage.models import LlmCallEvent, ModelAlias, ModelPrice, PricingVersion
from usage.services import model_price_set

# Real connections: each thread its own, committing as production does.
transactional = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def fresh_list():
    """A list in force since a moment ago, that no ledger row is stamped with yet: a price for
    the turns' alias, and one for an alias nothing else names."""
    version = PricingVersion.objects.create(
        name="fresh", effective_from=timezone.now() - timedelta(seconds=1)
    )
    scratch = ModelAlias.objects.create(alias="scratch", litellm_model="openai/scratch")
    for alias in (ModelAlias.objects.get(alias="deepseek"), scratch):
        ModelPrice.objects.create(
            pricing_version=version,
            model_alias=alias,
            input_usd_per_mtok=Decimal("1"),
            output_usd_per_mtok=Decimal("2"),
        )
    return version


def as_it_stands(version: PricingVersion) -> tuple:
    """A price list's fields and prices."""
    version.refresh_from_db()
    prices = ModelPrice.objects.filter(pricing_version=version).order_by("model_alias__alias")
    return (
        version.name,
        version.default_multiplier,
        version.effective_from,
        list(prices.values_list("model_alias__alias", "input_usd_per_mtok", "output_usd_per_mtok")),
    )


@pytest.fixture
def session(owner, make_agent, make_session, fake_gateway):
    return make_session(owner, agent=make_agent(owner, "ada"))


def after_prepare(monkeypatch, hook) -> None:
    """`hook` runs once the API's turn has read its prices, before its claim."""
    prepare = api_turns.turn_prepare

    def prepared(**kwargs):
        plan = prepare(**kwargs)
        hook()
        return plan

    monkeypatch.setattr(api_turns, "turn_prepare", prepared)


def in_the_claim(monkeypatch, hook) -> None:
    """`hook` runs in the claim's transaction, once the turn's first ledger row is inserted."""
    open_call = TurnRunner._open

    def opened(self, call):
        open_call(self, call)
        if len(self.events) == 1:
            hook()

    monkeypatch.setattr(TurnRunner, "_open", opened)


def assert_priced_by_its_list_as_it_stands(event: LlmCallEvent, version: PricingVersion):
    """The row's cost and credits are what its list's prices, as they stand, make of its
    tokens (the fake provider's 100 fresh, 20 cached, 10 output)."""
    assert event.pricing_version_id == version.pk
    version.refresh_from_db()
    price = ModelPrice.objects.get(pricing_version=version, model_alias__alias="deepseek")
    fresh, cached, output = 100, 20, 10
    assert (event.input_tokens_fresh, event.input_tokens_cached) == (fresh, cached)
    assert event.provider_cost_usd == compute_price_usd(
        fresh=fresh,
        cached=cached,
        output=output,
        input_per_mtok=price.input_usd_per_mtok,
        cached_input_per_mtok=price.cached_input_usd_per_mtok,
        output_per_mtok=price.output_usd_per_mtok,
    )
    multiplier = price.credit_multiplier or version.default_multiplier
    oe = compute_oe(fresh=fresh, cached=cached, output=output)
    assert event.credits == compute_credits(oe=oe, multiplier=multiplier)


def edit_the_price():
    return model_price_set(
        alias="deepseek",
        input_usd_per_mtok=Decimal("5"),
        output_usd_per_mtok=Decimal("6"),
        version_name="fresh",
    )


@transactional
def test_a_price_edited_after_a_turn_read_its_list_prices_that_turn(
    owner_client, session, fresh_list, post_turn, monkeypatch
):
    """The race found: the price changed between the turn's read of its list and the stamp
    of its first row, which was priced at the figure from before, a figure the list never had
    once stamped."""

    def edit_meanwhile():
        thread, outcome = in_thread(edit_the_price)
        finished(thread)
        assert not isinstance(outcome[0], Exception), outcome

    after_prepare(monkeypatch, edit_meanwhile)

    assert post_turn(owner_client, session, "hello").status_code == 201

    event = LlmCallEvent.objects.get()
    assert_priced_by_its_list_as_it_stands(event, fresh_list)
    assert event.provider_cost_usd == Decimal("0.0006600000")  # 120 input at $5, 10 output at $6


@transactional
def test_an_edit_while_a_turn_stamps_the_list_waits_and_is_refused(
    owner_client, session, fresh_list, post_turn, monkeypatch
):
    """The editor found no ledger row yet, as the turn's row was not committed: it changed
    the price, and the turn's row then said the list priced it at a figure it no longer had."""
    editor: list = []

    def edit_during_the_claim():
        editor.extend(in_thread(edit_the_price))
        # The editor, on the list the claim is stamping.
        editor.append(someone_waits_on_a_lock())

    in_the_claim(monkeypatch, edit_during_the_claim)

    assert post_turn(owner_client, session, "hello").status_code == 201

    thread, outcome, waited = editor
    finished(thread)
    assert_priced_by_its_list_as_it_stands(LlmCallEvent.objects.get(), fresh_list)
    assert isinstance(outcome[0], ValidationError), outcome
    assert "Ledger rows are stamped with 'fresh'" in outcome[0].messages[0]
    assert fresh_list.prices.get(model_alias__alias="deepseek").input_usd_per_mtok == 1
    assert waited


@transactional
def test_a_turn_that_starts_during_an_edit_waits_for_it_and_prices_with_it(
    owner_client, session, fresh_list, post_turn
):
    """The turn read the prices from before an edit still in progress, and stamped the list
    with them as the edit committed."""
    edited, release = threading.Event(), threading.Event()

    def edit_and_hold():
        with transaction.atomic():
            edit_the_price()
            edited.set()
            assert release.wait(timeout=30)

    editor, edit_outcome = in_thread(edit_and_hold)
    assert edited.wait(timeout=30)
    turn, turn_outcome = in_thread(lambda: post_turn(owner_client, session, "hello"))
    waited = someone_waits_on_a_lock()  # the turn, on the list being edited
    release.set()
    finished(editor)
    finished(turn)

    assert edit_outcome == [None]
    assert turn_outcome[0].status_code == 201
    assert_priced_by_its_list_as_it_stands(LlmCallEvent.objects.get(), fresh_list)
    assert LlmCallEvent.objects.get().provider_cost_usd == Decimal("0.0006600000")
    assert waited


@transactional
def test_a_consoles_edit_while_a_turn_stamps_the_list_waits_and_is_not_saved(
    owner_client, session, fresh_list, post_turn, monkeypatch, make_operator
):
    """The price list's page saved a new default multiplier and price after the turn's row
    was inserted, before it committed: the row's credits and cost were the list's old ones."""
    boss = client_for(make_operator("Owner", "boss"))
    price = fresh_list.prices.get(model_alias__alias="deepseek")
    change = admin_url(PricingVersion, "change", fresh_list.pk)
    form = {
        "name": "fresh",
        "default_multiplier": "3",
        "effective_from_0": f"{fresh_list.effective_from:%Y-%m-%d}",
        "effective_from_1": f"{fresh_list.effective_from:%H:%M:%S}",
        "prices-TOTAL_FORMS": "1",
        "prices-INITIAL_FORMS": "1",  # the page's other price left out: posted unchanged
        "prices-0-id": price.pk,
        "prices-0-pricing_version": fresh_list.pk,
        "prices-0-model_alias": price.model_alias_id,
        "prices-0-input_usd_per_mtok": "9",
        "prices-0-output_usd_per_mtok": "2",
    }
    editor: list = []

    def save_during_the_claim():
        editor.extend(in_thread(lambda: boss.post(change, form)))
        # The page's save, on the list the claim is stamping.
        editor.append(someone_waits_on_a_lock())

    in_the_claim(monkeypatch, save_during_the_claim)

    assert post_turn(owner_client, session, "hello").status_code == 201

    thread, outcome, waited = editor
    finished(thread)
    assert_priced_by_its_list_as_it_stands(LlmCallEvent.objects.get(), fresh_list)
    assert waited
    assert outcome[0].status_code == 302 and outcome[0].url == change
    messages = [str(message) for message in boss.get(change).context["messages"]]
    assert messages[0] == (
        "Your changes were not saved: it became read-only in the meantime (ledger rows are "
        "stamped with it; copy it to change prices)."
    )
    fresh_list.refresh_from_db()
    assert fresh_list.default_multiplier == 1


def price_page(version):
    price = version.prices.get(model_alias__alias="deepseek")
    return admin_url(ModelPrice, "change", price.pk), {
        "pricing_version": version.pk,
        "model_alias": price.model_alias_id,
        "input_usd_per_mtok": "9",
        "output_usd_per_mtok": "2",
    }


def new_price(version):
    llama = ModelAlias.objects.get(alias="llama")
    return admin_url(ModelPrice, "add"), {
        "pricing_version": version.pk,
        "model_alias": llama.pk,
        "input_usd_per_mtok": "9",
        "output_usd_per_mtok": "9",
    }


def price_delete(version):
    price = version.prices.get(model_alias__alias="deepseek")
    return admin_url(ModelPrice, "delete", price.pk), {"post": "yes"}


def prices_bulk_delete(version):
    return admin_url(ModelPrice, "changelist"), {
        "action": "delete_selected",
        "_selected_action": [price.pk for price in version.prices.all()],
        "post": "yes",
    }


def list_delete(version):
    return admin_url(PricingVersion, "delete", version.pk), {"post": "yes"}


def lists_bulk_delete(version):
    return admin_url(PricingVersion, "changelist"), {
        "action": "delete_selected",
        "_selected_action": [version.pk],
        "post": "yes",
    }


def alias_delete(version):
    """The alias's prices go with it, in every list."""
    scratch = ModelAlias.objects.get(alias="scratch")
    return admin_url(ModelAlias, "delete", scratch.pk), {"post": "yes"}


@transactional
@pytest.mark.parametrize(
    "edit, refused_with",
    [
        (price_page, 302),  # its page again, read-only, saying why
        (new_price, 200),  # the form again: the list is no longer offered
        (price_delete, 403),
        (prices_bulk_delete, 200),  # the confirmation, listing what is kept and why
        (list_delete, 403),
        (lists_bulk_delete, 200),
        (alias_delete, 403),
    ],
)
def test_every_console_edit_of_a_list_a_turn_is_stamping_waits_and_is_refused(
    owner_client, session, fresh_list, post_turn, monkeypatch, make_operator, edit, refused_with
):
    """Each went through while the turn's first row was not committed (no ledger row to see
    yet), changing or deleting the list's prices, or the list: a deleted list failed the turn
    with a 409, a changed one left the turn's row priced at figures the list no longer had."""
    boss = client_for(make_operator("Owner", "boss"))
    before = as_it_stands(fresh_list)
    page, form = edit(fresh_list)
    editor: list = []

    def edit_during_the_claim():
        editor.extend(in_thread(lambda: boss.post(page, form)))
        editor.append(someone_waits_on_a_lock())

    in_the_claim(monkeypatch, edit_during_the_claim)

    assert post_turn(owner_client, session, "hello").status_code == 201

    thread, outcome, waited = editor
    finished(thread)
    assert PricingVersion.objects.filter(pk=fresh_list.pk).exists()
    assert as_it_stands(fresh_list) == before
    assert_priced_by_its_list_as_it_stands(LlmCallEvent.objects.get(), fresh_list)
    assert outcome[0].status_code == refused_with
    assert waited


SQLITE_SCRIPT = r"""
import json, django
django.setup()
from datetime import timedelta
from decimal import Decimal
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from orchestration.metering import compute_credits, compute_oe, compute_price_usd
from rooms.models import Agent
from sessions_app import api_turns
from sessions_app.models import Session
from usage.models import LlmCallEvent, ModelAlias, ModelPrice, PricingVersion
from usage.services import model_price_set

call_command("migrate", verbosity=0)
user = User.objects.create_user("user", password="user-pass-123")
agent = Agent.objects.create(
    owner=user, agent_key="ada", name="Ada", model_alias="deepseek", role_prompt="Ada helps."
)
session = Session.objects.create(started_by=user, agent=agent)
fresh = PricingVersion.objects.create(
    name="fresh", effective_from=timezone.now() - timedelta(seconds=1)
)
ModelPrice.objects.create(
    pricing_version=fresh,
    model_alias=ModelAlias.objects.get(alias="deepseek"),
    input_usd_per_mtok=Decimal("1"),
    output_usd_per_mtok=Decimal("2"),
)


def edit(**figures):
    model_price_set(alias="deepseek", version_name="fresh", **figures)


prepare = api_turns.turn_prepare


def prepared(**kwargs):
    plan = prepare(**kwargs)
    edit(
        input_usd_per_mtok=Decimal("5"),
        output_usd_per_mtok=Decimal("6"),
        credit_multiplier=Decimal("2"),
    )
    return plan


api_turns.turn_prepare = prepared
api = APIClient()
api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
status = api.post(f"/api/v1/sessions/{session.id}/turns", {"message": "hi"}, format="json")
api_turns.turn_prepare = prepare
event = LlmCallEvent.objects.get()
fresh_tokens, cached, output = (
    event.input_tokens_fresh, event.input_tokens_cached, event.output_tokens
)
try:
    edit(input_usd_per_mtok=Decimal("7"))
    refused = None
except ValidationError as exc:
    refused = exc.messages[0]
price = ModelPrice.objects.get(pricing_version=fresh)
with CaptureQueriesContext(connection) as queries:  # a turn on the list, stamped now
    again = api.post(f"/api/v1/sessions/{session.id}/turns", {"message": "hi"}, format="json")
print(json.dumps({
    "next turn": again.status_code,
    "its list reads": len([q for q in queries if "usage_pricingversion" in q["sql"]]),
    "status": status.status_code,
    "stamped": event.pricing_version_id == fresh.pk,
    "figures": [str(price.input_usd_per_mtok), str(price.credit_multiplier)],
    "cost": event.provider_cost_usd == compute_price_usd(
        fresh=fresh_tokens, cached=cached, output=output, input_per_mtok=Decimal("5"),
        cached_input_per_mtok=None, output_per_mtok=Decimal("6"),
    ),
    "credits": event.credits == compute_credits(
        oe=compute_oe(fresh=fresh_tokens, cached=cached, output=output),
        multiplier=Decimal("2"),
    ),
    "refused": refused,
}))
"""


def test_on_sqlite_a_price_edited_after_a_turn_read_its_list_prices_that_turn(tmp_path):
    """The laptop's default database: the turn reads its list's prices again in its claim (no
    lock there: every SQLite transaction takes the write lock as it begins), and set_model_price
    then finds its row. Run in a subprocess, as the suite itself is bound to PostgreSQL."""
    results = production_python(
        SQLITE_SCRIPT,
        DATABASE_URL=f"sqlite:///{tmp_path / 'laptop.sqlite3'}",
        DEBUG="true",
        ALLOWED_HOSTS="testserver",
        LOG_LEVEL="ERROR",
    )

    assert results == {
        "next turn": 201,
        "its list reads": 1,  # final once stamped: read once, with the aliases
        "status": 201,
        "stamped": True,
        "figures": ["5.000000", "2.0000"],
        "cost": True,
        "credits": True,
        "refused": "Ledger rows are stamped with 'fresh', so its prices stay as they are: give "
        "--version NEW to start a new price list from the active one.",
    }
