"""Index every session by when it was created (`session_created`): the console's session list
is newest first, and with no index on that order each page view joined every session to its
room, agent and user and sorted them all to show 100 (250 ms at 50,000 sessions, 0.9 s for the
last page; more with every session kept).

Built concurrently on PostgreSQL (`CREATE INDEX CONCURRENTLY`), as 0021's: a plain build holds a
SHARE lock on the sessions for its whole length, and every turn's insert updates its session.
"""

from django.db import migrations, models

from pantheon.migration_indexes import drop_invalid_index

CREATED_INDEX = models.Index(fields=["created_at", "id"], name="session_created")


def _concurrently(schema_editor) -> dict:
    return {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}


def add_index(apps, schema_editor):
    model = apps.get_model("sessions_app", "Session")
    # A build cut short (cancelled, a deploy's timeout) left an invalid index of this name, and
    # every migrate after it failed with "already exists": it goes, and is built again.
    drop_invalid_index(schema_editor, CREATED_INDEX.name)
    schema_editor.add_index(model, CREATED_INDEX, **_concurrently(schema_editor))


def remove_index(apps, schema_editor):
    model = apps.get_model("sessions_app", "Session")
    schema_editor.remove_index(model, CREATED_INDEX, **_concurrently(schema_editor))


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY runs outside a transaction

    dependencies = [("sessions_app", "0023_turn_count_trigger_search_path")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="session", index=CREATED_INDEX)],
            database_operations=[migrations.RunPython(add_index, remove_index)],
        ),
    ]
