"""A session's `turn_count` and `last_turn_at` (its latest turn's created_at, null while it has
none), kept by the database: a trigger after each insert into `sessions_app_turn` (created by
0019, in a transaction of its own) counts the turn on its session and moves the session's
`last_turn_at` to the turn's `created_at` if later.
Every writer of turns keeps them true (a turn's claim, the console, a test's `bulk_create`, raw
SQL), with no statement of Django's on a turn's path. The lists read them instead of counting
and sorting every turn of the user's sessions (`sessions_with_activity`).

Turns are never deleted but with their session (`purge_deleted_chats`, a user's or a room's
delete): no trigger on delete. A turn's `session_id` and `created_at` never change.

PostgreSQL (a plpgsql function) and SQLite (the laptop default: its own trigger, whose `max()`
of two non-null texts is the later moment, as Django writes them) keep them alike. 0019 fills
them in for the turns inserted before the trigger.

This migration alters the sessions only, and 0019 creates the trigger on the turns alone: the
two in one transaction deadlocked with a turn's claim of the release before, served meanwhile,
which inserts its turn and reads its session's row only at its commit (the foreign key is
deferred); PostgreSQL ended one of them (sessions_app/tests/test_session_activity_deploy.py).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0017_redundant_fk_indexes")]

    operations = [
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
    ]
