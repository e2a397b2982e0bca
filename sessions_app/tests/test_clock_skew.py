"""Hosts whose clocks disagree (NTP broken on one): a turn's times are written and compared by
the database's clock, never a host's. This process plays the host with the wrong clock; the
database's (and the test's own reads of it) is the right one. The same with two real servers,
one of them under libfaketime: `test_clock_skew_live`."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.db.models.functions import Now
from django.utils import timezone

from pantheon.exceptions import TurnConflict
from sessions_app import events
from sessions_app.idempotency import request_fingerprint
from sessions_app.models import (
    IdempotencyKey,
    Session,
    Turn,
    TurnFailure,
    TurnStatus,
    TurnStreamChunk,
)
from sessions_app.selectors import session_for_turn
from sessions_app.tests.conftest import direct_turn, direct_turn_in_flight
from sessions_app.turns import TurnRunner, turn_prepare
from usage.models import LlmCallEvent, MonthlyUsage, PricingVersion
from usage.selectors import active_pricing_version, alias_pricing, month_start, next_month_start

pytestmark = pytest.mark.django_db


def _skew(monkeypatch, settings, sign: int) -> None:
    """This host's clock a minute past the stale limit ahead (1) or behind (-1)."""
    _host_clock_off(
        monkeypatch, sign * timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 60)
    )


def _host_clock_off(monkeypatch, off: timedelta) -> None:
    """This host's clock `off` from the database's, as libfaketime puts it: `timezone.now`, and
    every field default that is that function itself (taken when its model was defined)."""
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + off)
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if field.default is real:
                monkeypatch.setattr(field, "_get_default", timezone.now)


def _database_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


@pytest.fixture
def live_turn(owner, ada, make_session) -> Turn:
    """A turn another host runs, whose progress it wrote a moment ago."""
    turn = direct_turn_in_flight(owner, ada, make_session(owner, agent=ada))
    Turn.objects.filter(pk=turn.pk).update(progress_at=Now())
    return turn


def test_a_claim_on_a_host_ahead_answers_409_for_another_hosts_live_turn(
    owner, live_turn, fake_gateway, settings, monkeypatch
):
    """It took the live turn for stale, interrupted it and ran its own: the first user's
    answer was lost (their request then answered 409 `turn_conflict`)."""
    _skew(monkeypatch, settings, +1)
    session = session_for_turn(user=owner, session_id=live_turn.session_id)
    runner = TurnRunner(turn_prepare(session=session, user=owner, user_input="again"), fake_gateway)

    with pytest.raises(TurnConflict) as conflict:
        runner.claim()

    assert conflict.value.as_body()["code"] == "turn_in_progress"
    live_turn.refresh_from_db()
    assert live_turn.status == TurnStatus.RUNNING
    assert Turn.objects.count() == 1


def test_recover_turns_on_a_host_ahead_leaves_a_live_turn_running(live_turn, settings, monkeypatch):
    _skew(monkeypatch, settings, +1)

    call_command("recover_turns", verbosity=0)

    live_turn.refresh_from_db()
    assert live_turn.status == TurnStatus.RUNNING


def test_a_host_behind_writes_its_turns_times_by_the_database_clock(
    owner, ada, make_session, fake_gateway, settings, monkeypatch
):
    """A host behind wrote its turns' progress as long past: every other host took its live
    turns for stale (`test_clock_skew_live`), and its turns said they ended minutes ago."""
    _skew(monkeypatch, settings, -1)
    before = _database_now()

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), fake_gateway)

    turn = Turn.objects.get(pk=outcome.turn.pk)
    assert turn.status == TurnStatus.COMPLETED
    after = _database_now()
    for stamp in (turn.created_at, turn.progress_at, turn.completed_at):
        assert before <= stamp <= after


def test_a_host_ahead_bills_a_call_in_the_database_clocks_month(
    owner, ada, make_session, fake_gateway, monkeypatch
):
    """At a month's end, a host whose clock already read the next month stamped its calls
    there: the month's counter, which the cap checks read by the database's clock, missed
    them, and the next month started with them spent."""
    this_month = month_start(_database_now())
    real = timezone.now
    ahead = next_month_start(this_month) - real() + timedelta(seconds=30)
    monkeypatch.setattr(timezone, "now", lambda: real() + ahead)

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), fake_gateway)

    call = LlmCallEvent.objects.get(turn=outcome.turn)
    assert call.credits > 0
    assert month_start(call.created_at) == this_month
    assert list(MonthlyUsage.objects.values_list("month", "credits")) == [
        (this_month.date(), call.credits)
    ]


def test_a_follower_on_a_host_behind_ends_a_cancelled_turn_after_its_settling_time(
    owner, ada, make_session, settings, monkeypatch
):
    """A cancelled turn whose worker went before billing its streamed words leaves them
    behind; a follower waits for that bill for `SETTLE_SECONDS` after the ending. It counted
    them on its own host's clock against the ending the database stamped: a follower's stream
    on a host eleven minutes behind stayed silent eleven minutes more."""
    turn = direct_turn_in_flight(owner, ada, make_session(owner, agent=ada))
    TurnStreamChunk.objects.create(turn=turn, sequence=2, start=0, text="Hello")
    long_ago = _database_now() - timedelta(seconds=events.SETTLE_SECONDS + 1)
    Turn.objects.filter(pk=turn.pk).end(
        TurnStatus.INTERRUPTED, failure=TurnFailure.CANCELLED, now=long_ago
    )
    _skew(monkeypatch, settings, -1)

    news, finished = events.TurnFollower(turn).poll()

    assert finished and news[-1].name == "turn_failed"


def test_a_host_behind_stamps_its_answers_after_their_question(
    owner, ada, make_session, fake_gateway, settings, monkeypatch
):
    """The question is stamped with its turn, by the database's clock; the answer was stamped
    by the host's: shown as written eleven minutes before the question it answers."""
    _skew(monkeypatch, settings, -1)

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), fake_gateway)

    question, answer = outcome.turn.messages.order_by("sequence")
    assert answer.role == "assistant"
    assert question.created_at <= answer.created_at <= _database_now()


def _post_with_key(client, session):
    return client.post(
        f"/api/v1/sessions/{session.id}/turns",
        {"message": "hello"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="key-1",
    )


def test_a_retry_on_a_host_ahead_leaves_another_hosts_live_key_in_use(
    owner, owner_client, ada, make_session, fake_gateway, settings, monkeypatch
):
    """A request another host runs claimed its key a moment ago (by the database's clock). A
    retry on a host past the stale limit ahead took the key for abandoned, took it over and
    ran the turn a second time (201, a second provider call)."""
    session = make_session(owner, agent=ada)
    IdempotencyKey.objects.create(
        user=owner,
        key="key-1",
        fingerprint=request_fingerprint(
            method="POST", path=f"/api/v1/sessions/{session.id}/turns", body={"message": "hello"}
        ),
        updated_at=_database_now(),
    )
    _skew(monkeypatch, settings, +1)

    response = _post_with_key(owner_client, session)

    assert response.status_code == 409
    assert response.json()["detail"]["code"] == "idempotency_key_in_use"
    assert fake_gateway.calls == []
    assert Turn.objects.count() == 0


def test_a_host_behind_stamps_its_idempotency_key_by_the_database_clock(
    owner, owner_client, ada, make_session, fake_gateway, settings, monkeypatch
):
    """A host behind stamped the key of a request it ran minutes in the past: any retry on
    another host took it for abandoned while its turn was still being prepared, and ran it
    again."""
    session = make_session(owner, agent=ada)
    _skew(monkeypatch, settings, -1)
    stamps = []
    fake_gateway.during_call = lambda call: stamps.append(IdempotencyKey.objects.get().updated_at)
    before = _database_now()

    response = _post_with_key(owner_client, session)

    assert response.status_code == 201
    after = _database_now()
    key = IdempotencyKey.objects.get()
    for stamp in (*stamps, key.updated_at):
        assert before <= stamp <= after


def test_a_host_behind_makes_its_idempotency_key_by_the_database_clock(
    owner, owner_client, ada, make_session, fake_gateway, settings, monkeypatch
):
    """The key's lifetime counts from its `created_at`: a host behind made its keys minutes
    in the past, and the nightly prune deleted them that much short of the hours promised."""
    session = make_session(owner, agent=ada)
    _skew(monkeypatch, settings, -1)
    before = _database_now()

    response = _post_with_key(owner_client, session)

    assert response.status_code == 201
    assert before <= IdempotencyKey.objects.get().created_at <= _database_now()


def test_a_prune_on_a_host_ahead_keeps_the_keys_for_the_hours_promised(
    owner, settings, monkeypatch
):
    """A host an hour ahead counted the keys' age by its clock: `prune_idempotency_keys`
    deleted keys made 23 h 30 min before (of 24 h promised), and a client's retry within the
    promise ran its turn a second time."""
    hours = settings.PANTHEON_IDEMPOTENCY_KEY_HOURS
    now = _database_now()
    for key, age in (("young", hours - 0.5), ("old", hours + 0.5)):
        IdempotencyKey.objects.create(
            user=owner,
            key=key,
            fingerprint="f" * 64,
            created_at=now - timedelta(hours=age),
            updated_at=now - timedelta(hours=age),
        )
    _host_clock_off(monkeypatch, timedelta(hours=1))
    out = StringIO()

    call_command("prune_idempotency_keys", stdout=out)

    assert out.getvalue() == f"Deleted 1 idempotency key(s) older than {hours:g} hours.\n"
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["young"]


def _price_list(name: str, *, starts_in: float) -> PricingVersion:
    """A list starting `starts_in` seconds from now by the database's clock (less: ago)."""
    return PricingVersion.objects.create(
        name=name,
        effective_from=_database_now() + timedelta(seconds=starts_in),
        default_multiplier=Decimal("3"),
    )


@pytest.mark.parametrize(
    ("sign", "starts_in", "in_force"),
    [(+1, 60, "2026-11 list"), (-1, -60, "next")],
    ids=["ahead, a list to start in a minute", "behind, a list started a minute ago"],
)
def test_a_host_off_prices_its_calls_by_the_list_in_force_by_the_database_clock(
    owner, ada, make_session, fake_gateway, settings, monkeypatch, sign, starts_in, in_force
):
    """A host ahead priced its calls by a list scheduled to start minutes later (its credits
    tripled before the announced start), and a host behind went on with the list it replaced
    for as long."""
    _price_list("next", starts_in=starts_in)
    _skew(monkeypatch, settings, sign)

    outcome, _ = direct_turn(owner, make_session(owner, agent=ada), fake_gateway)

    call = LlmCallEvent.objects.get(turn=outcome.turn)
    assert call.pricing_version.name == in_force


def test_a_new_price_list_set_on_a_host_ahead_is_in_force_at_once(owner, settings, monkeypatch):
    """`set_model_price --version NEW` says "new price list, in force from now": a host eleven
    minutes ahead started it eleven minutes after the command returned."""
    _skew(monkeypatch, settings, +1)
    call_command(
        "set_model_price", "deepseek", "--version", "next", "--input", "1", "--output", "2",
        stdout=StringIO(),
    )  # fmt: skip
    monkeypatch.undo()  # the other hosts, their clocks right

    assert active_pricing_version().name == "next"
    assert alias_pricing(aliases=["deepseek"])["deepseek"].output_usd_per_mtok == Decimal("2")


def test_set_model_price_on_a_host_behind_says_a_list_started_has_taken_over(
    owner, settings, monkeypatch
):
    """A list started a minute ago prices every new call; a host eleven minutes behind said it
    was scheduled to take over, ten minutes from then."""
    _price_list("next", starts_in=-60)
    _skew(monkeypatch, settings, -1)
    err = StringIO()

    call_command(
        "set_model_price", "deepseek", "--version", "2026-11 list", "--output", "9",
        stdout=StringIO(), stderr=err,
    )  # fmt: skip

    assert err.getvalue().startswith("Warning: '2026-11 list' was superseded by 'next' at "), (
        err.getvalue()
    )
    assert "prices no new calls" in err.getvalue()


def test_a_purge_on_a_host_ahead_keeps_chats_deleted_less_than_the_days_asked(
    owner, ada, make_session, monkeypatch
):
    """`purge_deleted_chats --older-than 1` (a day after a user asked to be forgotten, and the
    least: a cancelled turn's provider may still answer): a host an hour ahead purged a chat
    deleted 23 h 30 min before."""
    now = _database_now()
    deleted = {}
    for name, hours in (("recent", 23.5), ("old", 24.5)):
        session = make_session(owner, agent=ada)
        Session.objects.filter(pk=session.pk).update(deleted_at=now - timedelta(hours=hours))
        deleted[name] = session.pk
    _host_clock_off(monkeypatch, timedelta(hours=1))
    out = StringIO()

    call_command("purge_deleted_chats", "--older-than", "1", stdout=out)

    assert out.getvalue().startswith("Deleted 1 session(s)"), out.getvalue()
    assert list(Session.objects.filter(pk__in=deleted.values()).values_list("pk", flat=True)) == [
        deleted["recent"]
    ]
