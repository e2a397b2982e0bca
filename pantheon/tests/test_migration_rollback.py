"""Rolling a release back (`migrate APP NAME` to the release before's last migrations) and
forward again, as README's "To roll a release back" runs it: with a `lock_timeout`, and so with
concurrent index builds that a lock wait may cut short, and retried.

A concurrent build cut short leaves an index of its name that PostgreSQL marks INVALID. Going
back over a migration that dropped a foreign key's index (usage 0022, sessions_app 0017, rooms
0003) built it again with `IF NOT EXISTS`, so the retry took the leftover for the index and
reported the rollback done: the release before then ran on a schema other than its own, the
index there but invalid (no read uses it). Going forward over sessions_app 0019 again
failed on every retry with 'relation "session_user_activity" already exists'. Each build now
drops such a leftover first (pantheon/migration_indexes.py).

The schema is read from the catalog (columns, constraints, indexes with their validity,
triggers), which `pg_dump --schema-only` does not tell apart: it prints an invalid index as any
other.
"""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from sessions_app.models import Turn

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SCHEMA = """
SELECT 'column', table_name || '.' || column_name,
       concat_ws(' ', data_type, character_maximum_length, numeric_precision, numeric_scale,
                 is_nullable, column_default)
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index', indexrelid::regclass::text,
       pg_get_indexdef(indexrelid) || CASE WHEN indisvalid THEN '' ELSE ' INVALID' END
  FROM pg_index JOIN pg_class ON pg_class.oid = indexrelid
 WHERE relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
ORDER BY 1, 2
"""

LEDGER_SESSION_INDEX = "usage_llmcallevent_session_id_138eaf0c"  # dropped by usage 0022


def schema() -> list[tuple[str, str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(SCHEMA)
        return cursor.fetchall()


def migrate(*targets: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(list(targets) or executor.loader.graph.leaf_nodes())


def leave_an_invalid_index(name: str, table: str, column: str) -> None:
    """What a CREATE INDEX CONCURRENTLY cancelled by a lock timeout leaves: the index, marked
    invalid (made so here: a real cut needs a second connection holding a transaction open)."""
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE INDEX "{name}" ON "{table}" ("{column}")')
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", [name]
        )


@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("concurrent index builds are PostgreSQL's")
    latest = schema()
    yield
    migrate()  # whatever a test left, the database the next test expects
    assert schema() == latest


@pytest.mark.usefixtures("postgresql")
def test_a_rollback_retried_after_a_cut_short_build_leaves_the_release_befores_schema():
    migrate(("usage", "0021_ledger_cancelled_call_billed"))
    previous = schema()
    assert ("index", LEDGER_SESSION_INDEX) in {row[:2] for row in previous}
    migrate()

    # The first try at the rollback: its build of the ledger's session index cut short, the
    # migration still recorded as applied. Then the retry.
    leave_an_invalid_index(LEDGER_SESSION_INDEX, "usage_llmcallevent", "session_id")
    migrate(("usage", "0021_ledger_cancelled_call_billed"))

    assert schema() == previous


@pytest.mark.usefixtures("postgresql")
def test_rolling_forward_again_after_a_cut_short_build_of_the_activity_index():
    migrate(("sessions_app", "0018_session_activity"))

    # The roll forward's build of session_user_activity (0019) cut short; then the retry.
    leave_an_invalid_index("session_user_activity", "sessions_app_session", "started_by_id")
    migrate()  # it failed: relation "session_user_activity" already exists


@pytest.mark.usefixtures("postgresql")
def test_the_latest_release_rolled_back_and_forward_again_keeps_each_sessions_count(
    owner, make_agent, make_room, make_session
):
    """Going back over sessions_app 0019 drops the trigger that counts a session's turns; the
    release before writes turns meanwhile, and going forward counts them all again."""
    session = make_session(owner, room=make_room(owner, [make_agent(owner)]))
    turn = {"session": session, "mode": "manual", "status": "completed", "user_input": "@ada hi"}
    Turn.objects.create(turn_index=1, **turn)
    migrate(("sessions_app", "0018_session_activity"))

    late = Turn.objects.create(turn_index=2, **turn)  # no trigger counts it
    session.refresh_from_db()
    assert session.turn_count == 1
    migrate()

    session.refresh_from_db()
    assert (session.turn_count, session.last_turn_at) == (2, late.created_at)


@pytest.mark.usefixtures("postgresql")
def test_rolling_the_stream_chunks_back_leaves_the_schema_the_release_before_built():
    """Going back over sessions_app 0020 puts the old stream table's foreign key back; it was
    named otherwise than the one Django made (`sessions_app_turnstream_turn_id_fk`), so the
    rolled-back schema was not the release before's."""
    migrate(("sessions_app", "0019_session_activity_backfill"))
    rolled_back = schema()

    migrate(("sessions_app", "0004_add_idempotency_key"))  # before the old stream table
    migrate(("sessions_app", "0019_session_activity_backfill"))

    assert schema() == rolled_back
