"""Index every session by when it was created (`session_created`): the console's session list
is newest first, and with no index on that order each page view joined every session to its
room, agent and user and sorted them all to show 100 (250 ms at 50,000 sessions, 0.9 s for the
last page; more with every session kept).

Built concurrently on PostgreSQL (`CREATE INDEX CONCURRENTLY`), as 0021's: a plain build holds a
SHARE lock on the sessions for its whole length, and every turn's insert updates its session.
"""

from django.db import migrations, models

from pantheon.migration_indexes import add_index_concurrently

CREATED_INDEX = models.Index(fields=["created_at", "id"], name="session_created")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY runs outside a transaction

    dependencies = [("sessions_app", "0023_turn_count_trigger_search_path")]

    operations = [add_index_concurrently("sessions_app", "Session", CREATED_INDEX)]
