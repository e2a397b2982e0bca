"""The trigger that counts a session's turns (0019's `sessions_turn_counted`) names the sessions'
table without its schema, so it found it only where the session's `search_path` led. pg_dump
and pg_restore run with an empty one: a restore of the turns into a database whose trigger
exists (`pg_restore --data-only`, a table restored by itself) failed on every turn with
'relation "sessions_app_session" does not exist', and left the turns out, their messages and
ledger rows with them (their foreign keys refused). The function now runs with the
`search_path` it is migrated with, whatever its caller's. A catalog change only."""

from django.db import migrations

FIXED = "ALTER FUNCTION sessions_turn_counted() SET search_path FROM CURRENT"
UNFIXED = "ALTER FUNCTION sessions_turn_counted() RESET search_path"


def _on_postgresql(sql: str, does: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":  # SQLite's trigger has no schema
            schema_editor.execute(sql)

    run.__doc__ = does  # what `migrate --plan` says of it
    return run


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0022_idempotency_key_made_by_database_clock"),
    ]

    operations = [
        migrations.RunPython(
            _on_postgresql(FIXED, "Pin the turn counter's search_path."),
            _on_postgresql(UNFIXED, "Unpin the turn counter's search_path."),
            elidable=False,
        ),
    ]
