"""A username an operator types (into the console's user boxes, or to a command) is read as a
login reads it: NFKC, the form usernames are stored in. "zoe\\u0308", a decomposed ë as some
keyboards, terminals and pastes give it, logs in as zoë, and the console's boxes and the
commands said no user had it ("No user has the username 'zoë'": the same name, to the eye)."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from pantheon.testing.admin import client_for
from usage.models import LlmCallEvent
from usage.tests.dashboard import DASHBOARD, EXPORT, LEDGER
from usage.tests.factories import ledger_event

pytestmark = pytest.mark.django_db

TYPED = "zoe\u0308"  # zoë as a decomposed e and its diaeresis


def month_totals(at) -> list[str]:
    """usage_month_totals for the month of `at`, by user. The month is read when the test
    runs: read at import, as it was, it was the month the run was collected in, and a run
    that crossed a month's end asked the month before for a call made in the new one."""
    return ["usage_month_totals", "--month", f"{at:%Y-%m}", "--user"]


@pytest.fixture
def zoe(django_user_model):
    user = django_user_model.objects.create_user(username="zo\u00eb", password="zoe-pass-123")
    ledger_event(user, at=timezone.now())
    return user


def test_the_api_login_reads_the_name_so(zoe, client):
    answer = client.post(
        "/api/v1/auth/token",
        {"username": TYPED, "password": "zoe-pass-123"},
        content_type="application/json",
    )
    assert answer.status_code == 200  # what the rest is held to


def test_the_commands_find_the_user(zoe):
    out, err = StringIO(), StringIO()
    call_command("export_user", TYPED, stdout=out, stderr=err)
    assert json.loads(out.getvalue())["account"]["id"] == zoe.pk

    called = LlmCallEvent.objects.get(user=zoe).created_at  # not now: a month may have ended
    out = StringIO()
    call_command(*month_totals(called), TYPED, "--format", "json", stdout=out)
    assert [row["user_id"] for row in json.loads(out.getvalue())["users"]] == [zoe.pk]

    out = StringIO()
    call_command("forget_user", TYPED, "--dry-run", stdout=out)
    assert f"(user {zoe.pk}," in out.getvalue()


STORED_RAW = "\ufb01le"  # with the ligature fi; NFKC reads it "file"


def test_a_name_stored_in_another_form_is_found_as_typed(django_user_model):
    """An account made by a raw insert keeps its name's form: typed as stored, it was found
    before names were read NFKC, and then said 'No user has the username 'file''."""
    raw = django_user_model.objects.create(username=STORED_RAW)

    out = StringIO()
    call_command("export_user", STORED_RAW, stdout=out, stderr=StringIO())
    assert json.loads(out.getvalue())["account"]["id"] == raw.pk
    out = StringIO()
    call_command("forget_user", STORED_RAW, "--dry-run", stdout=out)
    assert f"(user {raw.pk}," in out.getvalue()
    called = ledger_event(raw, at=timezone.now()).created_at
    out = StringIO()
    call_command(*month_totals(called), STORED_RAW, "--format", "json", stdout=out)
    assert [row["user_id"] for row in json.loads(out.getvalue())["users"]] == [raw.pk]


COMMANDS = {
    "forget_user": lambda: ["forget_user"],
    "export_user": lambda: ["export_user"],
    "usage_month_totals": lambda: month_totals(timezone.now()),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_two_accounts_the_name_may_mean_are_refused_never_guessed(django_user_model, name):
    """Typed "\ufb01le" beside a raw account of that name and a login's "file", forget_user
    forgot "file": another person's account, for good."""
    command = COMMANDS[name]()
    raw = django_user_model.objects.create(username=STORED_RAW)
    file = django_user_model.objects.create_user(username="file", password="file-pass-123")

    with pytest.raises(CommandError, match="Two users have the username") as refused:
        call_command(*command, STORED_RAW, stdout=StringIO(), stderr=StringIO())

    assert refused.value.returncode == 1
    assert f"(users {raw.pk}, {file.pk})" in str(refused.value)
    assert sorted(django_user_model.objects.values_list("username", flat=True)) == sorted(
        ["file", STORED_RAW]
    )


def test_the_consoles_user_boxes_find_the_user(zoe, staff):
    client = client_for(staff)

    listed = client.get(reverse(LEDGER), {"username": TYPED})
    assert [row.user_id for row in listed.context["cl"].result_list] == [zoe.pk]
    # Its count and sums too, read apart (from the rollups and the ledger after them).
    assert listed.context["ledger_sums"]["llm_calls"] == 1
    assert "1 result" in listed.content.decode()
    assert [str(message) for message in listed.context["messages"]] == []

    dashboard = client.get(reverse(DASHBOARD), {"user": TYPED})
    assert [row.user_id for row in dashboard.context["report"].rows] == [zoe.pk]

    export = client.get(reverse(EXPORT), {"user": TYPED, "rows": "user"})
    assert export.status_code == 200
    assert export.content.decode().splitlines()[1].startswith("zo\u00eb,1,")
