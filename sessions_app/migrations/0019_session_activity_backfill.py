"""Create the trigger that keeps each session's `turn_count` and `last_turn_at` (0018's
columns), in a transaction of its own that locks the turns alone (a retry after a lock timeout
creates it again, or finds it), then fill them in from the turns inserted before it, and index
the lists' order (`session_user_activity`).

In batches of sessions, each its own transaction, while turns may still be inserted (a deploy
that rolls on): a batch first locks its sessions' rows, so a turn whose trigger counted it on
one of them has committed, and is counted again from the turns table, read after; a turn
inserted since waits for the batch to commit, and its trigger adds it to the batch's count. The
lock is a no-key one (what the batch's update takes anyway): the foreign-key checks of the
messages and ledger rows written meanwhile do not wait for it.
Going back drops the trigger and leaves the columns as they are (0018 drops them).

The index is built concurrently on PostgreSQL (`CREATE INDEX CONCURRENTLY`): a plain build holds
a SHARE lock on the sessions for its whole length, and every turn's insert updates its session
(the trigger), so every claim would wait for it. A build cut short (by the `lock_timeout` README
gives a migrate, say as a rollback is undone) leaves an invalid index of its name, which the
next build drops first (`pantheon.migration_indexes.drop_invalid_index`): every retry failed with
'relation "session_user_activity" already exists' until an operator dropped it by hand.
"""

from django.db import migrations, models, transaction
from django.db.models import Count, Max, OuterRef, Subquery
from django.db.models.functions import Coalesce

from pantheon.migration_indexes import drop_invalid_index

BATCH = 1000

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

CREATE OR REPLACE TRIGGER sessions_turn_counted
    AFTER INSERT ON sessions_app_turn
    FOR EACH ROW EXECUTE FUNCTION sessions_turn_counted();
"""

POSTGRESQL_DROP = """
DROP TRIGGER IF EXISTS sessions_turn_counted ON sessions_app_turn;
DROP FUNCTION IF EXISTS sessions_turn_counted();
"""

SQLITE = """
CREATE TRIGGER IF NOT EXISTS sessions_turn_counted
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


def _by_vendor(statements: dict[str, list[str]], doc: str):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in statements:
            raise NotImplementedError(f"no trigger keeps a session's turn count on {vendor}")
        for sql in statements[vendor]:
            # No parameters: a % sign would be the SQL's, not a placeholder.
            schema_editor.execute(sql, params=None)

    run.__doc__ = doc  # what `migrate --plan` says the operation does
    return run


def backfill(apps, schema_editor):
    """Count each session's turns so far."""
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
            ids = list(batch.select_for_update(no_key=True).values_list("pk", flat=True)[:BATCH])
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
    drop_invalid_index(schema_editor, ACTIVITY_INDEX.name)
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
        # Its own transaction: the turns' lock only (0018 altered the sessions in another).
        migrations.RunPython(
            _by_vendor(TRIGGER, "Count each new turn in its session."),
            _by_vendor(DROP, "Stop counting: counts go stale."),
            atomic=True,
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="session", index=ACTIVITY_INDEX)],
            database_operations=[migrations.RunPython(add_index, remove_index)],
        ),
    ]
