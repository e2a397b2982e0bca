"""The operator console: every model's admin pages render, the ledger is read-only, and the
Analyst group may look but not change."""

from datetime import date
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from sessions_app.models import IdempotencyKey, Message, SessionSummary, Turn, TurnContextAudit
from usage.models import (
    BillingProfile,
    DailyUsageRollup,
    LlmCallEvent,
    ModelAlias,
    ModelPrice,
    MonthlyUsage,
    PricingVersion,
)

pytestmark = pytest.mark.django_db

APP_LABELS = {"rooms", "sessions_app", "usage"}


@pytest.fixture
def populated(owner, make_agent, make_room, make_session):
    agent = make_agent(owner, "ada")
    session = make_session(owner, room=make_room(owner, [agent]))
    turn = Turn.objects.create(session=session, turn_index=1, mode="manual", user_input="@ada hi")
    Message.objects.create(session=session, turn=turn, sequence=1, role="user", content="@ada hi")
    event = LlmCallEvent.objects.create(
        user=owner,
        session=session,
        turn=turn,
        purpose="agent",
        model_alias="deepseek",
        status="success",
        credits=Decimal("0.01"),
    )
    # A row of every other model, so that every change page is rendered too.
    SessionSummary.objects.create(
        session=session, turn=turn, from_sequence=1, to_sequence=1, summary_text="Hi."
    )
    TurnContextAudit.objects.create(
        turn=turn,
        model_context_limit=8192,
        input_budget=5530,
        estimated_tokens_before=10,
        estimated_tokens_after=10,
    )
    version = PricingVersion.objects.create(name="v1", default_multiplier=Decimal("1.5"))
    ModelPrice.objects.create(
        pricing_version=version,
        model_alias=ModelAlias.objects.get(alias="deepseek"),
        input_usd_per_mtok=Decimal("0.27"),
        output_usd_per_mtok=Decimal("1.10"),
    )
    DailyUsageRollup.objects.create(day=date(2026, 11, 1), user=owner, model_alias="deepseek")
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("100"))
    IdempotencyKey.objects.create(
        user=owner, key="retry-1", fingerprint="f" * 64, state="done", turn=turn
    )
    MonthlyUsage.objects.create(user=owner, month=date(2026, 11, 1), credits=Decimal("0.01"))
    return {"turn": turn, "event": event}


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def operated_models():
    return [model for model in admin.site._registry if model._meta.app_label in APP_LABELS]


# Working state, not records: the text of an answer being streamed lives for seconds and
# becomes the message; operators read the message. How far the rollups reach is a date the
# billing page states ("Whole days to … from the daily rollups").
NOT_IN_ADMIN = {"TurnStreamChunk", "RollupCoverage"}


def test_every_model_is_registered():
    from django.apps import apps

    for label in APP_LABELS:
        for model in apps.get_app_config(label).get_models():
            if model.__name__ in NOT_IN_ADMIN:
                assert model not in admin.site._registry
                continue
            assert model in admin.site._registry, f"{model.__name__} has no admin"


def test_every_changelist_and_detail_page_renders(staff, populated):
    client = admin_client(staff)
    for model in operated_models():
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        assert client.get(changelist).status_code == 200, changelist
        row = model.objects.first()
        assert row is not None, f"no {model.__name__} row to open"
        change = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[row.pk])
        assert client.get(change).status_code == 200, change


def test_the_ledger_cannot_be_edited_or_deleted_in_the_admin(staff, populated):
    client = admin_client(staff)
    event = populated["event"]
    change = reverse("admin:usage_llmcallevent_change", args=[event.pk])
    delete = reverse("admin:usage_llmcallevent_delete", args=[event.pk])

    client.post(change, {"credits": "99"})
    assert client.get(reverse("admin:usage_llmcallevent_add")).status_code == 403
    assert client.post(delete, {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert event.credits == Decimal("0.01")


def test_analyst_views_but_cannot_change(django_user_model, populated):
    analyst = django_user_model.objects.create_user("analyst", password="x-pass-123", is_staff=True)
    analyst.groups.add(Group.objects.get(name="Analyst"))
    client = admin_client(analyst)
    turn = populated["turn"]

    assert client.get(reverse("admin:sessions_app_turn_changelist")).status_code == 200
    assert client.get(reverse("admin:usage_llmcallevent_changelist")).status_code == 200
    assert client.get(reverse("admin:rooms_agent_add")).status_code == 403
    response = client.post(
        reverse("admin:sessions_app_turn_change", args=[turn.pk]), {"status": "failed"}
    )
    assert response.status_code == 403
    turn.refresh_from_db()
    assert turn.status == "running"
