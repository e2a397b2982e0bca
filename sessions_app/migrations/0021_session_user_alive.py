"""Index each user's sessions not deleted (`session_user_alive`): a session create counts the
user's sessions (`PANTHEON_MAX_SESSIONS_PER_USER`, `pantheon.quotas`) under the lock of the user's
row, and that count read every deleted session of the user's too (100,000 deleted, not yet
purged: 18 ms a create, with every other create of the account waiting behind it); the partial
index holds the live ones only.

Built concurrently on PostgreSQL (`CREATE INDEX CONCURRENTLY`), as 0019's: a plain build holds a
SHARE lock on the sessions for its whole length, and every turn's insert updates its session.
"""

from django.db import migrations, models

from pantheon.migration_indexes import drop_invalid_index

ALIVE_INDEX = models.Index(
    fields=["started_by"],
    condition=models.Q(deleted_at__isnull=True),
    name="session_user_alive",
)


def _concurrently(schema_editor) -> dict:
    return {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}


def add_index(apps, schema_editor):
    model = apps.get_model("sessions_app", "Session")
    # A build cut short (cancelled, a deploy's timeout) left an invalid index of this name, and
    # every migrate after it failed with "already exists": it goes, and is built again.
    drop_invalid_index(schema_editor, ALIVE_INDEX.name)
    schema_editor.add_index(model, ALIVE_INDEX, **_concurrently(schema_editor))


def remove_index(apps, schema_editor):
    model = apps.get_model("sessions_app", "Session")
    schema_editor.remove_index(model, ALIVE_INDEX, **_concurrently(schema_editor))


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY runs outside a transaction

    dependencies = [("sessions_app", "0020_turn_stream_chunks")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="session", index=ALIVE_INDEX)],
            database_operations=[migrations.RunPython(add_index, remove_index)],
        ),
    ]
