"""Drop the foreign keys' own indexes that another index of their table starts with (each
served by the one named beside it), concurrently: pantheon/migration_indexes.py."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from pantheon.migration_indexes import drop_foreign_key_indexes

# (index, table, column, the index that serves its reads): the first is Django's name for the
# foreign key's own index.
INDEXES = [
    (
        "sessions_app_idempotencykey_user_id_7872f515",
        "sessions_app_idempotencykey",
        "user_id",
        "idempotency_key_unique_per_user",
    ),
    (
        "sessions_app_message_session_id_a5aec9af",
        "sessions_app_message",
        "session_id",
        "message_sequence_unique",
    ),
    (
        "sessions_app_session_started_by_id_f8bf570a",
        "sessions_app_session",
        "started_by_id",
        "session_user_created",
    ),
    (
        "sessions_app_sessionsummary_session_id_27531c66",
        "sessions_app_sessionsummary",
        "session_id",
        "summary_latest",
    ),
    (
        "sessions_app_turn_session_id_21db3e6d",
        "sessions_app_turn",
        "session_id",
        "turn_index_unique",
    ),
]


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY runs outside a transaction

    dependencies = [
        ("sessions_app", "0016_turn_order_by_session_column"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="idempotencykey",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="idempotency_keys",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="session",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to="sessions_app.session",
                    ),
                ),
                migrations.AlterField(
                    model_name="session",
                    name="started_by",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chat_sessions",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="sessionsummary",
                    name="session",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="summaries",
                        to="sessions_app.session",
                    ),
                ),
                migrations.AlterField(
                    model_name="turn",
                    name="session",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="turns",
                        to="sessions_app.session",
                    ),
                ),
            ],
            database_operations=[drop_foreign_key_indexes(INDEXES)],
        )
    ]
