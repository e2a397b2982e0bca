"""Fill in each session's `turn_count` and `last_turn_at` from the turns inserted before 0018's
trigger, then index the lists' order (`session_user_activity`).

In batches of sessions, each its own transaction, while turns may still be inserted (a deploy
that rolls on): a batch first locks its sessions' rows, so a turn whose trigger counted it on
one of them has committed, and is counted again from the turns table, read after; a turn
inserted since waits for the batch to commit, and its trigger adds it to the batch's count.
Going back leaves the columns as they are (0018 drops them).

The index is built concurrently on PostgreSQL (`CREATE INDEX CONCURRENTLY`): a plain build holds
a SHARE lock on the sessions for its whole length, and every turn's insert updates its session
(0018's trigger), so every claim would wait for it.
"""

from django.db import migrations, models, transaction
from django.db.models import Count, Max, OuterRef, Subquery
from django.db.models.functions import Coalesce

BATCH = 1000


def backfill(apps, schema_editor):
    Session = apps.get_model("sessions_app", "Session")
    Turn = apps.get_model("sessions_app", "Turn")
    using = schema_editor.connection.alias
    sessions = Session.objects.using(using).order_by("pk")
    turns = Turn.objects.using(using).filter(session=OuterRef("pk")).order_by().values("session")
    count = Subquery(turns.annotate(n=Count("pk")).values("n"))
    latest = Subquery(turns.annotate(latest=Max("created_at")).values("latest"))
    after = None
    while True:
        with transaction.atomic(using=using):
            batch = sessions if after is None else sessions.filter(pk__gt=after)
            ids = list(batch.select_for_update().values_list("pk", flat=True)[:BATCH])
            if not ids:
                return
            Session.objects.using(using).filter(pk__in=ids).update(
                turn_count=Coalesce(count, 0), last_turn_at=latest
            )
        after = ids[-1]


ACTIVITY_INDEX = models.Index(
    models.F("started_by"),
    models.OrderBy(Coalesce("last_turn_at", "created_at"), descending=True),
    models.OrderBy(models.F("id"), descending=True),
    name="session_user_activity",
)


def _concurrently(schema_editor) -> dict:
    return {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}


def add_index(apps, schema_editor):
    model = apps.get_model("sessions_app", "Session")
    schema_editor.add_index(model, ACTIVITY_INDEX, **_concurrently(schema_editor))


def remove_index(apps, schema_editor):
    model = apps.get_model("sessions_app", "Session")
    schema_editor.remove_index(model, ACTIVITY_INDEX, **_concurrently(schema_editor))


class Migration(migrations.Migration):
    atomic = False  # a transaction per batch: turns inserted meanwhile wait for one batch only

    dependencies = [
        ("sessions_app", "0018_session_activity"),
        ("rooms", "0003_redundant_fk_indexes"),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="session", index=ACTIVITY_INDEX)],
            database_operations=[migrations.RunPython(add_index, remove_index)],
        ),
    ]
