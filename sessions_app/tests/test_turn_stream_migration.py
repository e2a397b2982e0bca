"""`sqlmigrate` of sessions_app 0020, the preview a release engineer reads before rolling the
release back (`--backwards`) or forward, prints the migration's SQL and runs none of it. Its
statements on the old stream table ran through a cursor of their own, which the preview's
collecting schema editor never sees: the preview of the rollback deleted the rows left by purged
turns and put the table's foreign key back on the live database (the release still serving,
whose purges that key then held up), and printed "(no-op)"."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = pytest.mark.django_db

# The name Django gave the old table's foreign key when it made the table (0005).
FOREIGN_KEY = "sessions_app_turnstr_turn_id_b2b52c79_fk_sessions_"
FOREIGN_KEYS = (
    "SELECT count(*) FROM pg_constraint "
    "WHERE conrelid = 'sessions_app_turnstream'::regclass AND contype = 'f'"
)


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite drops the old table with 0020")


def one(sql: str):
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def sqlmigrate(*, backwards: bool) -> str:
    out = StringIO()
    call_command("sqlmigrate", "sessions_app", "0020", backwards=backwards, stdout=out)
    return out.getvalue()


def test_the_preview_of_its_rollback_prints_the_sql_and_changes_nothing():
    with connection.cursor() as cursor:
        # What the release before 0020 left of a turn purged since: its streamed words.
        cursor.execute(
            "INSERT INTO sessions_app_turnstream (turn_id, sequence, text, updated_at) "
            "VALUES (gen_random_uuid(), 1, 'a purged turn''s words', now())"
        )

    sql = sqlmigrate(backwards=True)

    assert one("SELECT count(*) FROM sessions_app_turnstream") == 1
    assert one(FOREIGN_KEYS) == 0
    assert "DELETE FROM sessions_app_turnstream WHERE turn_id NOT IN" in sql
    assert f'ADD CONSTRAINT "{FOREIGN_KEY}" FOREIGN KEY ("turn_id")' in sql


def test_the_preview_of_it_on_the_release_befores_database_changes_nothing():
    with connection.cursor() as cursor:  # the old table as the release before 0020 has it
        cursor.execute(
            f"ALTER TABLE sessions_app_turnstream ADD CONSTRAINT {FOREIGN_KEY} FOREIGN KEY "
            "(turn_id) REFERENCES sessions_app_turn (id) DEFERRABLE INITIALLY DEFERRED"
        )

    sql = sqlmigrate(backwards=False)

    assert one(FOREIGN_KEYS) == 1
    assert f'DROP CONSTRAINT "{FOREIGN_KEY}"' in sql
