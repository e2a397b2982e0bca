"""A session's `turn_count` and `last_turn_at` (its latest turn's created_at, null while it has
none), kept by the database: a trigger after each insert into `sessions_app_turn` counts the
turn on its session and moves the session's `last_turn_at` to the turn's `created_at` if later.
Every writer of turns keeps them true (a turn's claim, the console, a test's `bulk_create`, raw
SQL), with no statement of Django's on a turn's path. The lists read them instead of counting
and sorting every turn of the user's sessions (`sessions_with_activity`).

Turns are never deleted but with their session (`purge_deleted_chats`, a user's or a room's
delete): no trigger on delete. A turn's `session_id` and `created_at` never change.

On PostgreSQL the migration takes the turns' table first (the lock the trigger's creation takes),
then the sessions' (the columns'): a live turn's claim or step writes a turn, then checks its
session's row exists; the other way round, each would wait for the other (a deadlock, and a
failed migration or turn). Turns wait for the migration meanwhile (the columns are added
without rewriting the table: a scan of the sessions for the count's check, under the lock).

PostgreSQL (a plpgsql function) and SQLite (the laptop default: its own trigger, whose `max()`
of two non-null texts is the later moment, as Django writes them) keep them alike. 0019 fills
them in for the turns inserted before the trigger.
"""

from django.db import migrations, models

POSTGRESQL = """
CREATE OR REPLACE FUNCTION sessions_turn_counted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions_app_session
       SET turn_count = turn_count + 1,
           last_turn_at = GREATEST(last_turn_at, NEW.created_at)  -- NULL: the turn's
     WHERE id = NEW.session_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_turn_counted
    AFTER INSERT ON sessions_app_turn
    FOR EACH ROW EXECUTE FUNCTION sessions_turn_counted();
"""

POSTGRESQL_DROP = """
DROP TRIGGER IF EXISTS sessions_turn_counted ON sessions_app_turn;
DROP FUNCTION IF EXISTS sessions_turn_counted();
"""

SQLITE = """
CREATE TRIGGER sessions_turn_counted
    AFTER INSERT ON sessions_app_turn
    FOR EACH ROW
BEGIN
    UPDATE sessions_app_session
       SET turn_count = turn_count + 1,
           last_turn_at = max(coalesce(last_turn_at, NEW.created_at), NEW.created_at)
     WHERE id = NEW.session_id;
END
"""

SQLITE_DROP = "DROP TRIGGER IF EXISTS sessions_turn_counted"

TRIGGER = {"postgresql": [POSTGRESQL], "sqlite": [SQLITE]}
DROP = {"postgresql": [POSTGRESQL_DROP], "sqlite": [SQLITE_DROP]}


def _by_vendor(statements: dict[str, list[str]]):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in statements:
            raise NotImplementedError(f"no trigger keeps a session's turn count on {vendor}")
        for sql in statements[vendor]:
            # No parameters: a % sign would be the SQL's, not a placeholder.
            schema_editor.execute(sql, params=None)

    return run


def lock_turns_first(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("LOCK TABLE sessions_app_turn IN SHARE ROW EXCLUSIVE MODE")


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0017_redundant_fk_indexes")]

    operations = [
        migrations.RunPython(lock_turns_first, migrations.RunPython.noop),
        migrations.AddField(
            model_name="session",
            name="turn_count",
            field=models.PositiveIntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.AddField(
            model_name="session",
            name="last_turn_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(_by_vendor(TRIGGER), _by_vendor(DROP)),
    ]
