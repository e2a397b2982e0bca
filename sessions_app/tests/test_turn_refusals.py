"""The refusals a turn meets before any LLM spend: a suspended account (403), a monthly credit
cap used up (402); and the spend that does not count toward the cap."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from rooms.models import RoomMode
from sessions_app import turns
from sessions_app.models import Message, Turn
from usage.models import BillingProfile, LlmCallEvent
from usage.selectors import month_start
from usage.tests.factories import ledger_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(owner, make_agent, make_room, make_session):
    agents = [make_agent(owner, "ada"), make_agent(owner, "grace")]
    room = make_room(owner, agents=agents, mode=RoomMode.ROUNDTABLE)
    return make_session(owner, room=room)


def assert_nothing_written(session, fake_gateway, events_before: int) -> None:
    assert not Turn.objects.filter(session=session).exists()
    assert not Message.objects.filter(session=session).exists()
    assert LlmCallEvent.objects.count() == events_before
    assert fake_gateway.calls == []


def test_a_suspended_account_is_refused_with_403(
    owner, owner_client, session, fake_gateway, post_turn
):
    BillingProfile.objects.create(user=owner, is_suspended=True)

    response = post_turn(owner_client, session, "Hello")

    assert response.status_code == 403
    detail = response.json()["detail"]
    assert detail["code"] == "account_suspended"
    assert detail["message"]
    assert_nothing_written(session, fake_gateway, events_before=0)


def test_a_reached_monthly_cap_is_refused_with_402(
    owner, owner_client, session, fake_gateway, post_turn, this_month
):
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1"))
    ledger_event(owner, at=this_month, credits=Decimal("0.6"))
    ledger_event(owner, at=this_month, credits=Decimal("0.4"))  # exactly the cap

    response = post_turn(owner_client, session, "Hello")

    assert response.status_code == 402
    detail = response.json()["detail"]
    assert detail["code"] == "credit_cap_exceeded"
    assert detail["message"] == "1 of 1 monthly credits are used."
    assert_nothing_written(session, fake_gateway, events_before=2)


@pytest.mark.parametrize(
    ("profile", "status", "code"),
    [
        ({"is_suspended": True}, 403, "account_suspended"),
        ({"monthly_credit_cap": Decimal("0")}, 402, "credit_cap_exceeded"),
    ],
)
def test_refusals_hold_with_token_auth_which_loads_the_profile_with_the_user(
    owner, session, fake_gateway, post_turn, profile, status, code
):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    assert post_turn(client, session, "Hello").status_code == 201  # no profile yet

    BillingProfile.objects.create(user=owner, **profile)
    response = post_turn(client, session, "Hello again")

    assert response.status_code == status
    assert response.json()["detail"]["code"] == code


def test_a_cap_not_yet_reached_lets_the_turn_run(
    owner, owner_client, session, fake_gateway, post_turn, this_month
):
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1"))
    ledger_event(owner, at=this_month, credits=Decimal("0.9999"))

    response = post_turn(owner_client, session, "Hello")

    assert response.status_code == 201
    assert len(fake_gateway.calls) == 2


def test_last_months_events_do_not_count_toward_this_months_cap(
    owner, owner_client, session, fake_gateway, post_turn
):
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1"))
    ledger_event(owner, at=month_start() - timedelta(seconds=1), credits=Decimal("50"))

    response = post_turn(owner_client, session, "Hello")

    assert response.status_code == 201
    assert len(fake_gateway.calls) == 2
    assert LlmCallEvent.objects.filter(turn_id=response.json()["id"]).count() == 2


def test_another_users_spend_does_not_count_toward_the_cap(
    owner, outsider, owner_client, session, fake_gateway, post_turn, this_month
):
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1"))
    ledger_event(outsider, at=this_month, credits=Decimal("50"))

    assert post_turn(owner_client, session, "Hello").status_code == 201


def test_the_answer_says_where_the_month_stands_and_warns_near_the_cap(
    owner, owner_client, session, fake_gateway, post_turn, this_month
):
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1"))
    ledger_event(owner, at=this_month, credits=Decimal("0.95"))

    body = post_turn(owner_client, session, "Hello").json()

    spent = Decimal(body["usage"]["credits"])
    assert body["balance"] == {
        "month_credits_used": f"{Decimal('0.95') + spent:.10f}",
        "credit_cap": "1.0000000000",
        "low_balance": True,  # past 90 % of the cap
    }


def test_the_warning_starts_at_the_low_balance_share_itself(
    owner, owner_client, session, fake_gateway, post_turn, this_month
):
    """`low_balance` from PANTHEON_LOW_BALANCE_SHARE (90 %) of the cap on, that share itself
    included: a turn that leaves the month at exactly 0.9 of 1 warns."""
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("1"))
    ledger_event(owner, at=this_month, credits=Decimal("0.9"))
    fake_gateway.usage = (0, 0, 0)  # its calls cost nothing: the month stays at 0.9

    body = post_turn(owner_client, session, "Hello").json()

    assert body["balance"] == {
        "month_credits_used": "0.9000000000",
        "credit_cap": "1.0000000000",
        "low_balance": True,
    }


def test_a_stale_turn_in_another_session_holds_nothing(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn, settings
):
    """A turn whose worker died (no progress for PANTHEON_TURN_STALE_SECONDS) stays `running`
    until `recover_turns` or its own session's next turn ends it: its hold must not keep its
    user's turns in every other session under the cap until then."""
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("0.2"))
    agent = make_agent(owner, "ada")
    abandoned, other = make_session(owner, agent=agent), make_session(owner, agent=agent)
    long_ago = timezone.now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 5)
    Turn.objects.create(
        session=abandoned,
        turn_index=1,
        mode="manual",
        user_input="its worker died",
        created_at=long_ago,
        progress_at=long_ago,
        reserved_credits=Decimal("5"),
    )

    response = post_turn(owner_client, other, "Hello")

    assert response.status_code == 201, response.content
    assert len(fake_gateway.calls) == 1


def test_turns_in_progress_count_against_the_cap(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn, this_month
):
    """A running turn holds its worst case: a second turn that would only fit if the first cost
    nothing is refused, and says why. (The first holds its one call, 0.2071 credits: 2048
    tokens of answer on deepseek and its prompt; a first turn holds no summary.)"""
    BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("0.2"))
    agent = make_agent(owner, "ada")
    first, second = make_session(owner, agent=agent), make_session(owner, agent=agent)
    during = {}

    def second_turn_meanwhile(call):
        fake_gateway.during_call = None
        during["response"] = post_turn(owner_client, second, "me too")

    fake_gateway.during_call = second_turn_meanwhile
    assert post_turn(owner_client, first, "Hello").status_code == 201

    refused = during["response"]
    assert refused.status_code == 402
    assert "held by turns in progress" in refused.json()["detail"]["message"]
    assert len(fake_gateway.calls) == 1


@pytest.mark.parametrize("cap", [None, Decimal("100")], ids=["uncapped", "capped"])
def test_an_account_suspended_after_its_turn_was_planned_is_refused_at_the_claim(
    owner, owner_client, session, fake_gateway, post_turn, monkeypatch, cap
):
    """The console's suspension commits between the turn's plan (which read the account
    active) and its claim: the suspension's end of the user's running turns found none (the
    turn was not yet written), so the claim refuses it under the profile's lock, capped or not.
    An uncapped account's claim took no lock and ran the turn, every call billed."""
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=cap)
    planned = turns._refuse_if_billing_blocks

    def suspended_meanwhile(user):
        read = planned(user)
        BillingProfile.objects.filter(pk=profile.pk).update(is_suspended=True)
        return read

    monkeypatch.setattr(turns, "_refuse_if_billing_blocks", suspended_meanwhile)

    response = post_turn(owner_client, session, "Hello")

    assert response.status_code == 403
    assert response.json()["detail"]["code"] == "account_suspended"
    assert_nothing_written(session, fake_gateway, events_before=0)
