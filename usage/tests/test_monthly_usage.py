"""The month's credits: a counter per user and UTC month, moved in SQL, never lost in a race."""

import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection, transaction

from usage.models import MonthlyUsage
from usage.selectors import month_credits
from usage.services import (
    usage_call_complete,
    usage_call_meter,
    usage_call_open,
    usage_month_add,
)
from usage.tests.factories import answered

THREADS = 20


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.django_db
def test_a_month_without_calls_has_zero_credits(owner):
    assert month_credits(user=owner) == Decimal("0")
    assert not MonthlyUsage.objects.exists()


@pytest.mark.django_db
def test_adds_go_to_the_utc_month_of_the_call(owner, outsider):
    """Each add answers the month's credits after it (a turn's `balance`), the month's first
    add too."""
    totals = [
        usage_month_add(
            user_id=owner.pk, at=utc(2026, 11, 30, 23, 59, 59), credits=Decimal("0.25")
        ),
        usage_month_add(user_id=owner.pk, at=utc(2026, 11, 2), credits=Decimal("0.0000000001")),
        usage_month_add(user_id=owner.pk, at=utc(2026, 12, 1), credits=Decimal("1"), calls=3),
        # 20:00 on 30 November in New York is already December in UTC.
        usage_month_add(
            user_id=owner.pk,
            at=datetime(2026, 11, 30, 20, tzinfo=timezone(timedelta(hours=-5))),
            credits=Decimal("2"),
        ),
        usage_month_add(user_id=outsider.pk, at=utc(2026, 11, 5), credits=Decimal("7")),
    ]

    assert totals == [
        Decimal("0.25"),
        Decimal("0.2500000001"),
        Decimal("1"),
        Decimal("3"),
        Decimal("7"),
    ]
    assert month_credits(user=owner, at=utc(2026, 11, 15)) == Decimal("0.2500000001")
    assert month_credits(user=owner, at=utc(2026, 12, 31, 23)) == Decimal("3")
    assert month_credits(user=owner.pk, at=utc(2027, 1, 1)) == Decimal("0")
    assert month_credits(user=outsider, at=utc(2026, 11, 1)) == Decimal("7")
    december = MonthlyUsage.objects.get(user=owner, month=utc(2026, 12, 1).date())
    assert december.llm_calls == 4
    assert MonthlyUsage.objects.filter(user=owner).count() == 2


@pytest.mark.django_db
def test_the_lookup_is_one_query_whatever_the_month_holds(owner, django_assert_num_queries):
    for day in range(1, 29):
        usage_month_add(user_id=owner.pk, at=utc(2026, 11, day), credits=Decimal("0.5"))

    with django_assert_num_queries(1):
        assert month_credits(user=owner, at=utc(2026, 11, 3)) == Decimal("14")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_twenty_threads_adding_at_once_lose_nothing(owner):
    """The first add of a month races on the insert; the rest on the update. Each thread adds in
    its own transaction, as a turn does with its ledger row."""
    at = utc(2026, 11, 20, 12)
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []
    adds_per_thread = 5

    def add(index: int) -> None:
        try:
            barrier.wait()
            for round_ in range(adds_per_thread):
                with transaction.atomic():
                    usage_month_add(
                        user_id=owner.pk,
                        at=at,
                        credits=Decimal(index + 1) / Decimal(1000) + Decimal(round_),
                    )
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=add, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    expected = sum(
        (
            Decimal(index + 1) / Decimal(1000) + Decimal(round_)
            for index in range(THREADS)
            for round_ in range(adds_per_thread)
        ),
        Decimal("0"),
    )
    counter = MonthlyUsage.objects.get(user=owner)
    assert counter.credits == expected == Decimal("201.050")
    assert counter.llm_calls == THREADS * adds_per_thread
    assert month_credits(user=owner, at=at) == expected


@pytest.mark.django_db
def test_a_completed_call_moves_its_month_once_and_a_pending_one_only(
    owner, django_assert_num_queries
):
    """A call's completion moves its month's counter in the same statement on PostgreSQL
    (the month's first call inserts the row); a row no longer pending moves nothing."""
    result = answered(provider="stub", provider_model="stub")
    at = utc(2026, 11, 20, 12)
    events = []
    for _ in range(2):
        event = usage_call_open(
            user=owner, model_alias="deepseek", pricing=None, purpose="agent", at=at
        )
        usage_call_meter(event=event, result=result, pricing=None)
        events.append(event)
    first = usage_call_complete(event=events[0])  # the month's row inserted
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2):
        second = usage_call_complete(event=events[1])
    assert first == events[0].credits > 0 and second == 2 * first
    assert usage_call_complete(event=events[1]) is None  # completed already: no move
    month = MonthlyUsage.objects.get(user=owner)
    assert (month.credits, month.llm_calls) == (2 * first, 2)
