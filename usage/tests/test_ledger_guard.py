"""The ledger is append-only in PostgreSQL itself: proven with raw SQL, not through the ORM."""

import pytest
from django.db import DatabaseError, connection, transaction

from sessions_app.models import Session
from usage.models import LlmCallEvent
from usage.selectors import alias_pricing
from usage.services import usage_call_open
from usage.tests.factories import answered, usage_record_call

pytestmark = pytest.mark.django_db

TABLE = LlmCallEvent._meta.db_table


@pytest.fixture
def completed(owner, make_session, make_agent):
    session = make_session(owner, agent=make_agent(owner))
    pricing = alias_pricing(aliases=["deepseek"])["deepseek"]
    return usage_record_call(
        user=owner,
        result=answered(),
        pricing=pricing,
        model_alias="deepseek",
        purpose="agent",
        session_id=session.pk,
    )


@pytest.fixture
def pending(owner):
    pricing = alias_pricing(aliases=["deepseek"])["deepseek"]
    return usage_call_open(
        user=owner,
        model_alias="deepseek",
        pricing=pricing,
        purpose="agent",
        estimated_input_tokens=250,
    )


def refused(sql: str, *params) -> str:
    """Run `sql` in a savepoint; return the database's refusal message (fails if accepted)."""
    with (
        pytest.raises(DatabaseError) as caught,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, params)
    return str(caught.value)


def accepted(sql: str, *params) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def test_a_completed_row_cannot_be_updated(completed):
    message = refused(f"UPDATE {TABLE} SET credits = 0 WHERE id = %s", completed.pk)
    assert "append-only" in message
    message = refused(f"UPDATE {TABLE} SET status = 'lost' WHERE id = %s", completed.pk)
    assert "final" in message
    completed.refresh_from_db()
    assert completed.status == "success" and completed.credits > 0


def test_rows_cannot_be_deleted_or_truncated(completed, pending):
    assert "DELETE refused" in refused(f"DELETE FROM {TABLE} WHERE id = %s", completed.pk)
    assert "DELETE refused" in refused(f"DELETE FROM {TABLE}")
    # The test connection may truncate (teardown); switched off, TRUNCATE is refused too.
    with transaction.atomic():
        accepted("SET CONSTRAINTS ALL IMMEDIATE")  # settle the test's own deferred checks
        accepted("SET LOCAL pantheon.ledger_maintenance = 'off'")
        assert "TRUNCATE refused" in refused(f"TRUNCATE {TABLE}")
    assert LlmCallEvent.objects.count() == 2


def test_what_a_row_is_about_never_changes_even_while_pending(pending, completed, staff):
    assert "never changes" in refused(
        f"UPDATE {TABLE} SET user_id = %s WHERE id = %s", staff.pk, pending.pk
    )
    assert "never changes" in refused(
        f"UPDATE {TABLE} SET model_alias = 'premium' WHERE id = %s", pending.pk
    )
    # A context reference may be cleared, never pointed elsewhere.
    other_session = completed.session_id
    assert "cleared" in refused(
        f"UPDATE {TABLE} SET session_id = %s WHERE id = %s", other_session, pending.pk
    )


def test_a_pending_row_is_completed_once_or_marked_lost_once(pending, owner):
    assert accepted(
        f"UPDATE {TABLE} SET status = 'success', output_tokens = 7 WHERE id = %s", pending.pk
    )
    assert "final" in refused(f"UPDATE {TABLE} SET output_tokens = 8 WHERE id = %s", pending.pk)

    pricing = alias_pricing(aliases=["deepseek"])["deepseek"]
    in_doubt = usage_call_open(user=owner, model_alias="deepseek", pricing=pricing, purpose="agent")
    assert accepted(f"UPDATE {TABLE} SET status = 'lost' WHERE id = %s", in_doubt.pk)
    assert "final" in refused(f"UPDATE {TABLE} SET status = 'success' WHERE id = %s", in_doubt.pk)


def test_purging_a_session_clears_its_references_and_keeps_the_rows(completed):
    session_id = completed.session_id
    Session.objects.filter(pk=session_id).delete()

    completed.refresh_from_db()
    assert completed.session_id is None
    assert completed.status == "success"


def test_a_lost_call_takes_the_usage_its_provider_reported_once_at_no_credit(pending, owner):
    """A call marked lost while its worker waited (`recover_turns` on a live turn) is answered
    after all: its row takes what the provider reported, once, still lost and free. Before, a
    lost row was final and the provider's usage was dropped. A lost row records the attempt it
    sent: what it was not is heard from (no provider), and it is filled once with a provider."""
    assert accepted(
        f"UPDATE {TABLE} SET status = 'lost', error_type = 'lost', attempts = 1 WHERE id = %s",
        pending.pk,
    )
    # Never a credit, never another status, never without the provider that answered.
    assert "final" in refused(
        f"UPDATE {TABLE} SET provider = 'openai', credits = 1 WHERE id = %s", pending.pk
    )
    assert "final" in refused(
        f"UPDATE {TABLE} SET provider = 'openai', status = 'success' WHERE id = %s", pending.pk
    )
    assert "final" in refused(f"UPDATE {TABLE} SET output_tokens = 9 WHERE id = %s", pending.pk)
    assert "final" in refused(
        f"UPDATE {TABLE} SET provider = 'openai', attempts = 0 WHERE id = %s", pending.pk
    )

    assert accepted(
        f"UPDATE {TABLE} SET provider = 'openai', attempts = 2, input_tokens_fresh = 90, "
        "output_tokens = 9, provider_cost_usd = 0.0001 WHERE id = %s",
        pending.pk,
    )
    assert "final" in refused(
        f"UPDATE {TABLE} SET provider = 'groq', output_tokens = 99 WHERE id = %s", pending.pk
    )
    pending.refresh_from_db()
    assert (pending.status, pending.output_tokens, pending.credits) == ("lost", 9, 0)
    assert (pending.provider, pending.attempts) == ("openai", 2)


def test_a_call_lost_before_lost_calls_recorded_their_attempt_is_still_filled_once(pending):
    """Rows marked lost with 0 attempts (before 0018) take their provider's usage as before."""
    assert accepted(
        f"UPDATE {TABLE} SET status = 'lost', error_type = 'lost' WHERE id = %s", pending.pk
    )
    assert accepted(
        f"UPDATE {TABLE} SET provider = 'openai', attempts = 1, output_tokens = 9 WHERE id = %s",
        pending.pk,
    )
    assert "final" in refused(f"UPDATE {TABLE} SET attempts = 2 WHERE id = %s", pending.pk)


def test_a_lost_call_whose_user_got_its_first_words_is_billed_for_them_once(pending, owner):
    """A cancel marks the call lost; the worker that streamed its first words to the user then
    bills them (0021): `error` of type `cancelled`, with a provider, usage and credits. Once,
    and never after the row was filled with what its provider reported at no credit, nor that
    after it was billed."""
    lose = f"UPDATE {TABLE} SET status = 'lost', error_type = 'lost', attempts = 1 WHERE id = %s"
    bill = (
        f"UPDATE {TABLE} SET status = 'error', error_type = 'cancelled', provider = 'openai', "
        "output_tokens = 30, credits = 0.02 WHERE id = %s"
    )
    assert accepted(lose, pending.pk)
    # Only as `cancelled`, and only with the provider it was sent to.
    assert "final" in refused(
        f"UPDATE {TABLE} SET status = 'error', error_type = 'provider_error', "
        "provider = 'openai', credits = 0.02 WHERE id = %s",
        pending.pk,
    )
    assert "final" in refused(
        f"UPDATE {TABLE} SET status = 'success', error_type = 'cancelled', provider = 'openai' "
        "WHERE id = %s",
        pending.pk,
    )
    assert "final" in refused(
        f"UPDATE {TABLE} SET status = 'error', error_type = 'cancelled', credits = 1 WHERE id = %s",
        pending.pk,
    )
    assert accepted(bill, pending.pk)
    # Billed: final, and never filled as a lost call heard after all.
    assert "final" in refused(bill.replace("0.02", "0.04"), pending.pk)
    assert "final" in refused(
        f"UPDATE {TABLE} SET status = 'lost', error_type = 'lost', provider = 'groq', "
        "credits = 0 WHERE id = %s",
        pending.pk,
    )
    pending.refresh_from_db()
    assert (pending.status, pending.error_type, pending.output_tokens) == ("error", "cancelled", 30)

    # A lost row its provider's late answer filled (at no credit) is never billed after it.
    heard = usage_call_open(
        user=owner, model_alias="deepseek", pricing=None, purpose="agent", estimated_input_tokens=9
    )
    assert accepted(lose, heard.pk)
    assert accepted(
        f"UPDATE {TABLE} SET provider = 'openai', attempts = 1, output_tokens = 9 WHERE id = %s",
        heard.pk,
    )
    assert "final" in refused(bill, heard.pk)


def test_a_request_id_is_set_once_as_its_call_completes(pending, owner, completed):
    """A row is inserted before its call is sent, when no provider has named it: the UPDATE
    that completes it records its provider's request id (usage/0024). Never afterwards, never
    changed once set, never while the row stays pending."""
    assert "once" in refused(
        f"UPDATE {TABLE} SET request_id = 'req_early' WHERE id = %s", pending.pk
    )
    assert accepted(
        f"UPDATE {TABLE} SET status = 'success', request_id = 'req_1' WHERE id = %s", pending.pk
    )
    assert "once" in refused(f"UPDATE {TABLE} SET request_id = 'req_2' WHERE id = %s", pending.pk)
    assert "once" in refused(f"UPDATE {TABLE} SET request_id = NULL WHERE id = %s", pending.pk)
    # A row completed without one (its provider named none) stays so.
    assert completed.request_id is None
    assert "final" in refused(
        f"UPDATE {TABLE} SET request_id = 'req_3' WHERE id = %s", completed.pk
    )
    pending.refresh_from_db()
    assert pending.request_id == "req_1"


def test_a_lost_call_heard_after_all_takes_its_request_id_with_its_usage_once(pending):
    assert accepted(
        f"UPDATE {TABLE} SET status = 'lost', error_type = 'lost', attempts = 1 WHERE id = %s",
        pending.pk,
    )
    assert "final" in refused(
        f"UPDATE {TABLE} SET request_id = 'req_late' WHERE id = %s", pending.pk
    )
    assert accepted(
        f"UPDATE {TABLE} SET provider = 'openai', output_tokens = 9, request_id = 'req_late' "
        "WHERE id = %s",
        pending.pk,
    )
    assert "once" in refused(
        f"UPDATE {TABLE} SET request_id = 'req_other' WHERE id = %s", pending.pk
    )
