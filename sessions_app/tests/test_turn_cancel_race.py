"""A cancel that races a turn's last step on PostgreSQL, over real connections: the cancel holds
the turn's row lock (uncommitted) while the step's one statement (`pantheon.compiled.Chain`)
starts and waits for that lock, then commits. The step's statement saw the turn running (its
snapshot is older than the cancel's commit); its UPDATE re-checks the row once the lock is
free, finds it ended, and the step writes nothing: no answer, no audit, no credits."""

import threading
import time

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from conftest import FakeGateway
from sessions_app import services
from sessions_app.models import Message, Turn, TurnContextAudit
from usage.models import LlmCallEvent, MonthlyUsage

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks and a chained statement: PostgreSQL"
)

# How long the cancel waits for the step's statement to queue on its lock before it gives up
# waiting (the test then fails on `waiting`, not on time).
WAIT_FOR_THE_STEP_SECONDS = 30


def _waiting_statements() -> list[str]:
    """The statements of other connections to this database that wait for a lock."""
    with connection.cursor() as cursor:
        # Read afresh: within a transaction (the cancel's) the activity read is kept.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_cancel_committed_while_the_last_step_waits_for_the_turn_leaves_nothing_written(
    live_server, owner, make_agent, make_session, monkeypatch
):
    gateway = FakeGateway()
    monkeypatch.setattr("sessions_app.turns.get_gateway", lambda: gateway)
    in_call, cancel_holds_the_turn = threading.Event(), threading.Event()
    waiting: list[str] = []

    def hold_the_call(call):
        in_call.set()
        assert cancel_holds_the_turn.wait(timeout=30)

    gateway.during_call = hold_the_call
    mark_lost = services.usage_calls_mark_lost

    def mark_lost_once_the_step_waits(**kwargs):
        # The cancel holds the turn's row lock (`turns_interrupt`: FOR UPDATE first): the step
        # may now run its statement, which queues on that lock.
        if not cancel_holds_the_turn.is_set():
            cancel_holds_the_turn.set()
            deadline = time.monotonic() + WAIT_FOR_THE_STEP_SECONDS
            while not waiting and time.monotonic() < deadline:
                waiting.extend(_waiting_statements())
                time.sleep(0.01)
        return mark_lost(**kwargs)

    monkeypatch.setattr(services, "usage_calls_mark_lost", mark_lost_once_the_step_waits)
    session = make_session(owner, agent=make_agent(owner, "ada"))
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    url = f"{live_server.url}/api/v1/sessions/{session.id}/turns"
    posted: list[httpx.Response] = []

    def post():
        posted.append(httpx.post(url, json={"message": "hi"}, headers=headers, timeout=60))

    worker = threading.Thread(target=post)
    worker.start()
    assert in_call.wait(timeout=30), posted and (posted[0].status_code, posted[0].text[:500])
    turn = Turn.objects.get()
    cancelled = httpx.post(
        f"{live_server.url}/api/v1/turns/{turn.pk}/cancel", headers=headers, timeout=60
    )
    worker.join(timeout=60)

    # The step's one statement is what queued on the cancel's lock (its turn's row first).
    assert len(waiting) == 1 and waiting[0].startswith("WITH turn AS ("), waiting
    assert cancelled.status_code == 200, cancelled.text[:500]
    assert posted[0].status_code == 409, posted[0].text[:500]
    assert posted[0].json()["detail"]["code"] == "turn_cancelled"
    turn.refresh_from_db()
    assert (turn.status, turn.failure_code) == ("interrupted", "turn_cancelled")
    assert list(Message.objects.values_list("role", flat=True)) == ["user"]
    assert not TurnContextAudit.objects.exists()
    assert list(LlmCallEvent.objects.values_list("status", "credits")) == [("lost", 0)]
    assert not MonthlyUsage.objects.filter(user=owner, credits__gt=0).exists()
    assert turn.credits == 0 and turn.llm_calls == 1
