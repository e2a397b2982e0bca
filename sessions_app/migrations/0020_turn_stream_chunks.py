"""A streamed answer's saves append chunks (`TurnStreamChunk`) instead of rewriting its whole
text in one row (`TurnStream`): the WAL a save wrote grew with the text, so a long answer's
grew with its square. The text of a turn streaming while this runs is not carried over: its
followers on other hosts see its next words only (its step's commit stores the message).

`TurnStream` leaves the code, not PostgreSQL: the previous release, serving while this runs
and until its workers are replaced, saves its streams there, deletes its rows as its steps
commit, and would fail its turns' commits on a table gone. Its foreign key to the turn goes: a
row left by a worker killed mid-stream would keep its turn from being deleted (a purge), now
that no code knows the table, and Django's flush (the tests') could not empty the turns. A later
release drops the table. SQLite (the laptop's) is not upgraded under traffic: the table goes at
once.
"""

import django.db.models.deletion
from django.db import migrations, models

OLD_TABLE = "sessions_app_turnstream"


def _foreign_key(schema_editor) -> str | None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
            [OLD_TABLE],
        )
        row = cursor.fetchone()
    return row[0] if row else None


# The changes go through the schema editor, never a cursor of their own: `sqlmigrate` (which
# runs these functions with an editor that collects the SQL) prints them, and runs none. With a
# cursor, `sqlmigrate --backwards sessions_app 0020` deleted the old table's rows left by purged
# turns and put its foreign key back on the live database, and printed "(no-op)".


def leave_the_old_table(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.delete_model(apps.get_model("sessions_app", "TurnStream"))
        return
    name = _foreign_key(schema_editor)
    if name is not None:
        schema_editor.execute(
            f"ALTER TABLE {OLD_TABLE} DROP CONSTRAINT {schema_editor.quote_name(name)}",
            params=None,
        )


def bring_the_old_table_back(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.create_model(apps.get_model("sessions_app", "TurnStream"))
        return
    if _foreign_key(schema_editor) is not None:
        return
    schema_editor.execute(
        f"DELETE FROM {OLD_TABLE} WHERE turn_id NOT IN (SELECT id FROM sessions_app_turn)",
        params=None,
    )
    # The key Django made with the table (0005), by its name: the schema of the release before.
    model = apps.get_model("sessions_app", "TurnStream")
    field = model._meta.get_field("turn")
    schema_editor.execute(
        schema_editor._create_fk_sql(model, field, "_fk_%(to_table)s_%(to_column)s"),
        params=None,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0019_session_activity_backfill"),
    ]

    operations = [
        migrations.CreateModel(
            name="TurnStreamChunk",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "turn",
                        "sequence",
                        "start",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("sequence", models.PositiveIntegerField()),
                ("start", models.PositiveIntegerField()),
                ("text", models.TextField()),
                (
                    "turn",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="sessions_app.turn",
                    ),
                ),
            ],
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="TurnStream")],
            database_operations=[
                migrations.RunPython(leave_the_old_table, bring_the_old_table_back)
            ],
        ),
    ]
