"""Monthly caps that hold under races: 20 concurrent turns at the edge of a cap (a live server,
real threads, PostgreSQL). The check and the claim run under a lock on the user's billing row,
and a running turn holds its worst case until it ends."""

import threading
from decimal import Decimal

import httpx
import pytest
from django.db.models import Sum
from rest_framework.authtoken.models import Token

from sessions_app.models import Turn
from usage.models import BillingProfile, LlmCallEvent
from usage.selectors import month_credits

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _post_all(base: str, token: str, sessions, message: str) -> list[httpx.Response]:
    barrier = threading.Barrier(len(sessions))
    answers: list[httpx.Response] = []

    def post(session):
        barrier.wait()
        answers.append(
            httpx.post(
                f"{base}/api/v1/sessions/{session.pk}/turns",
                json={"message": message},
                headers={"Authorization": f"Token {token}"},
                timeout=60,
            )
        )

    threads = [threading.Thread(target=post, args=(session,)) for session in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_twenty_concurrent_turns_at_the_edge_of_a_cap_overshoot_by_at_most_one_turn(
    live_server, owner, make_agent, make_session, fake_gateway
):
    fake_gateway.delay = 0.3  # every admitted turn is still running when the others claim
    agent = make_agent(owner, "ada")
    sessions = [make_session(owner, agent=agent) for _ in range(21)]
    token = Token.objects.create(user=owner).key

    # One turn to learn what a turn costs here.
    first = _post_all(live_server.url, token, sessions[:1], "price check")[0]
    assert first.status_code == 201
    turn_cost = Decimal(first.json()["usage"]["credits"])
    used = month_credits(user=owner)
    cap = used + turn_cost * Decimal("1.5")  # room for one and a half turns
    BillingProfile.objects.create(user=owner, monthly_credit_cap=cap)
    calls_before = len(fake_gateway.calls)

    answers = _post_all(live_server.url, token, sessions[1:], "at the edge")

    statuses = sorted(answer.status_code for answer in answers)
    admitted = statuses.count(201)
    assert admitted >= 1
    assert statuses == [201] * admitted + [402] * (20 - admitted)
    refused = [answer for answer in answers if answer.status_code == 402]
    assert all(r.json()["detail"]["code"] == "credit_cap_exceeded" for r in refused)
    # Refused turns wrote nothing and called nobody.
    assert len(fake_gateway.calls) - calls_before == admitted
    assert Turn.objects.count() == 1 + admitted
    # The cap holds: at most one turn's cost beyond it (today: 5.5x the cap).
    spent = month_credits(user=owner)
    assert spent <= cap + turn_cost
    # The counter equals the ledger, and no reservation is left behind.
    assert spent == LlmCallEvent.objects.filter(user=owner).aggregate(total=Sum("credits"))["total"]
    assert not Turn.objects.filter(status="running").exists()


def test_a_reservation_is_released_when_its_turn_ends(
    live_server, owner, make_agent, make_session, fake_gateway
):
    """A turn holds its worst case while it runs, and its hold goes when it ends: the next
    turns are counted against what the month used alone. With less room left under the cap
    than one finished turn held, they are still admitted (a hold left behind refused them)."""
    agent = make_agent(owner, "ada")
    sessions = [make_session(owner, agent=agent) for _ in range(3)]
    token = Token.objects.create(user=owner).key
    profile = BillingProfile.objects.create(user=owner, monthly_credit_cap=Decimal("5"))

    first = _post_all(live_server.url, token, sessions[:1], "one at a time")[0]
    assert first.status_code == 201, first.text
    assert first.json()["balance"]["credit_cap"] == "5.0000000000"
    held = Turn.objects.get(session=sessions[0]).reserved_credits
    assert held > 0  # it held its worst case while it ran ...
    assert month_credits(user=owner) < held  # ... far more than it spent
    # Room for half of what the ended turn held, and more than a turn spends.
    profile.monthly_credit_cap = month_credits(user=owner) + held / 2
    profile.save()

    for session in sessions[1:]:
        answer = _post_all(live_server.url, token, [session], "one at a time")[0]
        assert answer.status_code == 201, answer.text
        assert Decimal(answer.json()["balance"]["credit_cap"]) == profile.monthly_credit_cap


def test_parallel_turns_whose_worst_cases_fit_the_cap_are_all_admitted(
    live_server, owner, make_agent, make_session, fake_gateway
):
    """Each turn held a summary call at the summarizer's whole budget (about 2 credits on
    deepseek) though a first turn has nothing to summarize: with 0.5 credits left, the second
    of two turns at once got 402 "… are held by turns in progress", for a turn whose every
    call fits in 0.21."""
    agent = make_agent(owner, "ada")
    sessions = [make_session(owner, agent=agent) for _ in range(3)]
    token = Token.objects.create(user=owner).key
    assert _post_all(live_server.url, token, sessions[:1], "some usage first")[0].status_code == 201
    BillingProfile.objects.create(
        user=owner, monthly_credit_cap=month_credits(user=owner) + Decimal("0.5")
    )
    fake_gateway.delay = 0.5  # both run at once

    answers = _post_all(live_server.url, token, sessions[1:], "at once")

    assert [answer.status_code for answer in answers] == [201, 201], [a.text for a in answers]
    # What each held: its one call (deepseek: up to 2048 tokens of answer), no summary.
    holds = [Turn.objects.get(session=session).reserved_credits for session in sessions[1:]]
    assert all(Decimal("0.2") < held < Decimal("0.25") for held in holds), holds
