"""The ledger list's CSV export: the rows of the list as filtered, streamed, for whoever may read
the ledger. Auditors had no export of ledger rows and went to SQL for them."""

import csv
import io
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client
from django.urls import reverse

from usage import admin as ledger_admin
from usage.models import LlmCallEvent
from usage.tests.dashboard import LEDGER, at

pytestmark = pytest.mark.django_db

EXPORT = "admin:usage_llmcallevent_export"


def export(user, query: dict | None = None) -> tuple[int, str, list[dict]]:
    """(status, content type, rows) of the export as `user` asks it, served as the ASGI
    server serves it (its rows an async stream)."""
    logged_in = Client()
    logged_in.force_login(user)

    async def fetch():
        client = AsyncClient()
        client.cookies = logged_in.cookies
        response = await client.get(reverse(EXPORT), query or {})
        if not response.streaming:
            return response.status_code, response["Content-Type"], response.content.decode()
        body = b"".join([chunk async for chunk in response.streaming_content])
        return response.status_code, response["Content-Type"], body.decode()

    status, content_type, body = async_to_sync(fetch)()
    rows = list(csv.DictReader(io.StringIO(body))) if status == 200 else []
    return status, content_type, rows


@pytest.fixture
def ledger(owner, outsider, ledger_row):
    rows = [
        ledger_row(owner, at=at(3), credits=Decimal("0.0047")),
        ledger_row(owner, at=at(2), status="error", agent_key="ada"),
        ledger_row(outsider, at=at(1), alias="premium", provider_cost_usd=Decimal("0.000129")),
        ledger_row(owner, at=at(1, 13), status="error", agent_key="grace"),
    ]
    return rows


@pytest.mark.parametrize("role", ["Analyst", "Owner"])
def test_the_ledger_list_as_filtered_is_exported_oldest_first(make_operator, ledger, role):
    reader = make_operator(role, "reader")

    status, content_type, rows = export(reader, {"status__exact": "error", "o": "1", "p": "2"})

    assert status == 200
    assert content_type == "text/csv; charset=utf-8"
    assert [row["id"] for row in rows] == [str(ledger[1].pk), str(ledger[3].pk)]
    first = rows[0]
    assert first["username"] == "owner" and first["agent_key"] == "ada"
    # The user's id, last: a username can change, or be given to someone else after a delete.
    assert first["user_id"] == str(ledger[0].user_id)
    assert first["status"] == "error" and first["priced"] == "true"
    assert first["created_at"] == ledger[1].created_at.isoformat()
    assert first["credits"] == "0.0047000000"


def test_the_export_follows_the_lists_search(make_operator, ledger):
    status, _, rows = export(make_operator("Analyst", "reader"), {"q": "GRACE"})

    assert status == 200
    assert [row["id"] for row in rows] == [str(ledger[3].pk)]


def test_a_name_a_spreadsheet_would_read_as_a_formula_is_exported_as_text(
    make_operator, django_user_model, ledger_row
):
    """As the billing export's cells: a user made in code or SQL may be named `=cmd|…`."""
    sly = django_user_model.objects.create_user("=HYPERLINK(1)")
    ledger_row(sly, at=at(1), provider="@evil", agent_key="")

    _, _, rows = export(make_operator("Analyst", "reader"))

    assert rows[0]["username"] == "'=HYPERLINK(1)"
    assert rows[0]["provider"] == "'@evil"


def test_a_call_with_no_usage_to_price_is_neither_priced_nor_unpriced(
    make_operator, owner, ledger_row
):
    ledger_row(owner, at=at(2), status="lost", priced=False)
    ledger_row(owner, at=at(1), priced=False)

    _, _, rows = export(make_operator("Analyst", "reader"))

    assert [(row["status"], row["priced"]) for row in rows] == [("lost", ""), ("success", "false")]


def test_rows_are_streamed_in_batches_none_twice_none_left_out(
    make_operator, owner, ledger_row, monkeypatch
):
    """Batches read after the last row's (created_at, id): rows of one moment across a batch's
    edge are each exported once."""
    same_moment = at(2)
    made = [ledger_row(owner, at=same_moment) for _ in range(5)] + [
        ledger_row(owner, at=at(1)) for _ in range(2)
    ]
    monkeypatch.setattr(ledger_admin, "LEDGER_CSV_BATCH", 2)

    _, _, rows = export(make_operator("Analyst", "reader"))

    expected = sorted(made[:5], key=lambda row: str(row.pk)) + sorted(
        made[5:], key=lambda row: str(row.pk)
    )
    assert [row["id"] for row in rows] == [str(row.pk) for row in expected]


def test_who_may_not_read_the_ledger_gets_no_export(django_user_model, ledger):
    staff_without_a_role = django_user_model.objects.create_user("temp", is_staff=True)

    status, _, _ = export(staff_without_a_role)

    assert status == 403


def test_the_ledger_list_links_its_export_with_its_filters(make_operator, ledger):
    client = Client()
    client.force_login(make_operator("Analyst", "reader"))

    page = client.get(reverse(LEDGER), {"status__exact": "error", "o": "1", "p": "1"})

    assert page.context["export_url"] == reverse(EXPORT) + "?status__exact=error"
    assert f'<a href="{reverse(EXPORT)}?status__exact=error" download>Export CSV</a>' in (
        page.content.decode()
    )
    assert LlmCallEvent.objects.count() == 4
