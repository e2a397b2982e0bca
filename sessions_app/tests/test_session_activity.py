"""A session's `turn_count` and `last_turn_at` are kept by the database (a trigger on each
turn's insert, migration 0019), and the lists read them: no join of the turns, and on
PostgreSQL a page by activity is a scan of `session_user_activity`, never a sort."""

from datetime import timedelta
from importlib import import_module
from uuid import UUID

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pantheon.testing.processes import production_python
from sessions_app.models import Session, Turn
from sessions_app.selectors import sessions_with_activity

pytestmark = pytest.mark.django_db

backfill = import_module("sessions_app.migrations.0019_session_activity_backfill").backfill


def _turn(session, index, at, **fields) -> Turn:
    return Turn(
        session=session,
        turn_index=index,
        mode="direct",
        status="completed",
        user_input="hi",
        created_at=at,
        **fields,
    )


def _columns(session) -> tuple[int, object]:
    return tuple(Session.objects.filter(pk=session.pk).values_list("turn_count", "last_turn_at")[0])


def test_a_turns_insert_counts_it_on_its_session_and_moves_its_activity(owner, make_session):
    session, other = make_session(owner), make_session(owner)
    now = timezone.now()
    assert _columns(session) == (0, None)

    _turn(session, 1, now).save()
    assert _columns(session) == (1, now)
    # An older turn (a console's import) counts, and leaves the latest moment as it is.
    Turn.objects.bulk_create([_turn(session, 2, now - timedelta(days=1)), _turn(other, 1, now)])
    Turn.objects.create(
        session=session, turn_index=3, mode="direct", status="completed", user_input="hi"
    )

    later = Turn.objects.get(session=session, turn_index=3).created_at
    assert later > now
    assert _columns(session) == (3, later)
    assert _columns(other) == (1, now)


def test_saving_a_session_keeps_the_counts_the_database_moved_since_it_was_read(
    owner, make_session
):
    """The console's edit of a title saves the whole session: with the count it read, it
    undid the turns inserted since."""
    session = make_session(owner)
    read = Session.objects.get(pk=session.pk)
    Turn.objects.create(session=session, turn_index=1, mode="direct", user_input="hi")

    read.title = "Renamed"
    read.save()

    assert Session.objects.get(pk=session.pk).title == "Renamed"
    assert _columns(session)[0] == 1


def test_the_backfill_counts_the_turns_inserted_before_the_trigger(owner, make_session):
    sessions = [make_session(owner) for _ in range(3)]
    start = timezone.now() - timedelta(days=3)
    Turn.objects.bulk_create(
        [_turn(sessions[0], index, start + timedelta(hours=index)) for index in (1, 2, 3)]
        + [_turn(sessions[1], 1, start)]
    )
    # As before 0019's trigger: every session at 0, with no moment.
    Session.objects.update(turn_count=0, last_turn_at=None)

    with connection.schema_editor() as editor:
        backfill(apps, editor)

    assert [_columns(session) for session in sessions] == [
        (3, start + timedelta(hours=3)),
        (1, start),
        (0, None),
    ]


def test_the_sessions_list_reads_no_turn(owner, owner_client, make_session):
    session = make_session(owner)
    Turn.objects.create(session=session, turn_index=1, mode="direct", user_input="hi")

    with CaptureQueriesContext(connection) as queries:
        body = owner_client.get("/api/v1/sessions").json()

    assert body["results"][0]["turn_count"] == 1
    assert not [query for query in queries if "sessions_app_turn" in query["sql"]]


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        # Any plan the planner may choose: the order must come from the index, not a sort.
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_a_page_by_activity_is_an_index_scan_with_a_limit(owner, make_session):
    for _ in range(3):
        make_session(owner)
    ordered = sessions_with_activity(user=owner).order_by("-last_activity_at", "-id")
    first = ordered[0]

    for page in (ordered[:51], ordered.filter(last_activity_at__lt=first.last_activity_at)[:51]):
        plan = _plan(page)
        assert plan.startswith("Limit"), plan
        assert "session_user_activity" in plan, plan
        assert "Sort" not in plan, plan


SQLITE_SCRIPT = r"""
import json, uuid, django
from datetime import datetime, timedelta, timezone
django.setup()
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
call_command("migrate", "sessions_app", "0017", verbosity=0)  # before the trigger
from django.contrib.auth.models import User
from sessions_app.models import Session, Turn
user = User.objects.create(username="u")
start = datetime(2026, 1, 1, tzinfo=timezone.utc)
a, b, c = (uuid.UUID(int=n) for n in (1, 2, 3))
with connection.cursor() as cursor:  # the model has columns this table does not have yet
    for session in (a, b, c):
        cursor.execute(
            "INSERT INTO sessions_app_session (id, started_by_id, title, created_at) "
            "VALUES (%s, %s, '', '2025-12-31 00:00:00')", [session.hex, user.pk])
def turn(session, index, at):
    return Turn(session_id=session, turn_index=index, mode="direct", status="completed",
                user_input="hi", created_at=at)
# Moments with and without microseconds: SQLite compares them as Django writes them, texts.
Turn.objects.bulk_create([turn(a, 1, start + timedelta(hours=1, microseconds=1)),
                          turn(a, 2, start + timedelta(hours=2)),
                          turn(b, 1, start)])
call_command("migrate", verbosity=0)  # the trigger, then the backfill
def columns():
    return [[s.turn_count, str(s.last_turn_at)] for s in Session.objects.order_by("pk")]
backfilled = columns()
turn(c, 1, start + timedelta(days=1)).save()
later = start + timedelta(hours=2, microseconds=5)
Turn.objects.bulk_create([turn(c, 2, start), turn(a, 3, later)])
from sessions_app.selectors import sessions_with_activity
by_activity = sessions_with_activity(user=user).order_by("-last_activity_at", "-id")
order = [str(s.pk) for s in by_activity]
live = columns()
call_command("migrate", "sessions_app", "0017", verbosity=0)  # and back
with connection.cursor() as cursor:
    cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    triggers = [row[0] for row in cursor.fetchall()]
print(json.dumps({"backfilled": backfilled, "live": live, "order": order, "triggers": triggers}))
"""


def test_on_sqlite_the_trigger_and_the_backfill_keep_the_same_columns(tmp_path):
    results = production_python(
        SQLITE_SCRIPT,
        DATABASE_URL=f"sqlite:///{tmp_path / 'laptop.sqlite3'}",
        LOG_LEVEL="ERROR",
    )

    assert results["backfilled"] == [
        [2, "2026-01-01 02:00:00+00:00"],
        [1, "2026-01-01 00:00:00+00:00"],
        [0, "None"],
    ]
    assert results["live"] == [
        [3, "2026-01-01 02:00:00.000005+00:00"],
        [1, "2026-01-01 00:00:00+00:00"],
        [2, "2026-01-02 00:00:00+00:00"],
    ]
    assert results["order"] == [str(UUID(int=n)) for n in (3, 1, 2)]
    assert results["triggers"] == []  # going back drops it


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has no search_path")
def test_a_turn_restored_with_an_empty_search_path_is_counted(owner, make_session):
    """pg_restore writes with `search_path` empty, every table named with its schema: the
    trigger's own statement named the sessions' table without one, and a data-only restore of
    the turns failed on each ('relation "sessions_app_session" does not exist')."""
    session = make_session(owner)
    first = Turn.objects.create(session=session, turn_index=1, mode="direct", status="completed")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE restored ON COMMIT DROP AS "
            "SELECT * FROM sessions_app_turn WHERE id = %s",
            [first.pk],
        )
        cursor.execute("UPDATE restored SET id = gen_random_uuid(), turn_index = 2")
        cursor.execute("SELECT current_schema()")
        schema = cursor.fetchone()[0]
        cursor.execute("SET LOCAL search_path = ''")  # as pg_restore's session
        try:
            cursor.execute(
                f'INSERT INTO "{schema}".sessions_app_turn SELECT * FROM pg_temp.restored'
            )
        finally:
            cursor.execute("RESET search_path")

    assert Turn.objects.filter(session=session).count() == 2
    assert _columns(session)[0] == 2
