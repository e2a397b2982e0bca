"""`purge_deleted_chats`: what users deleted goes for good after a while (their words, their
agents' answers); the ledger keeps every row and figure."""

import uuid
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for, opened
from rooms.models import Room, RoomAgent
from sessions_app.models import IdempotencyKey, Message, Session, Turn, TurnContextAudit
from usage.models import LlmCallEvent

pytestmark = pytest.mark.django_db


def purge(*args) -> str:
    out = StringIO()
    call_command("purge_deleted_chats", *args, stdout=out)
    return out.getvalue()


def chat(client, session, message: str, key: str) -> None:
    answer = client.post(
        f"/api/v1/sessions/{session.id}/turns",
        {"message": message},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )
    assert answer.status_code == 201, answer.content


@pytest.fixture
def chats(owner, owner_client, make_agent, make_room, make_session, fake_gateway):
    """Four sessions with a turn each: one deleted 40 days ago, one in a room deleted 40 days
    ago, one deleted yesterday, one alive."""
    ada = make_agent(owner, "ada")
    room = make_room(owner, [ada], name="Old room")
    sessions = {
        "old": make_session(owner, agent=ada),
        "old_room": make_session(owner, room=room),
        "recent": make_session(owner, agent=ada),
        "alive": make_session(owner, agent=ada),
    }
    for name, session in sessions.items():
        message = f"{name}: my private words" + (" @ada" if session.room else "")
        chat(owner_client, session, message, key=f"key-{name}")
    long_ago = timezone.now() - timedelta(days=40)
    Session.objects.filter(pk=sessions["old"].pk).update(deleted_at=long_ago)
    Room.objects.filter(pk=room.pk).update(deleted_at=long_ago)
    Session.objects.filter(pk=sessions["recent"].pk).update(
        deleted_at=timezone.now() - timedelta(days=1)
    )
    return sessions, room


def test_a_purge_deletes_old_deleted_chats_and_keeps_the_ledgers_figures(chats):
    sessions, room = chats
    credits_before = LlmCallEvent.objects.aggregate(total=Sum("credits"))["total"]
    rows_before = LlmCallEvent.objects.count()
    purged_ids = [sessions["old"].pk, sessions["old_room"].pk]

    said = purge("--older-than", "30")

    assert said == (
        "Deleted 2 session(s) (2 turn(s), 4 message(s)) and 1 room(s) deleted more than "
        "30 days ago.\n"
    )
    assert set(Session.objects.values_list("pk", flat=True)) == {
        sessions["recent"].pk,
        sessions["alive"].pk,
    }
    assert not Message.objects.filter(session__in=purged_ids).exists()
    assert not Message.objects.filter(content__startswith="old").exists()
    assert not Turn.objects.filter(session__in=purged_ids).exists()
    assert TurnContextAudit.objects.count() == 2
    assert not Room.objects.filter(pk=room.pk).exists()
    assert not RoomAgent.objects.filter(room_id=room.pk).exists()
    # The Idempotency-Key answers of the purged turns quoted them.
    assert set(IdempotencyKey.objects.values_list("key", flat=True)) == {"key-recent", "key-alive"}
    # The ledger: every row and figure, its references to what was purged cleared.
    assert LlmCallEvent.objects.count() == rows_before
    assert LlmCallEvent.objects.aggregate(total=Sum("credits"))["total"] == credits_before
    assert credits_before > Decimal(0)
    assert not LlmCallEvent.objects.filter(session_id__in=purged_ids).exists()
    assert LlmCallEvent.objects.filter(session_id__isnull=True, turn_id__isnull=True).count() == 2
    assert not LlmCallEvent.objects.filter(room_id=room.pk).exists()


def _ledger_rows_updated() -> int:
    """Row versions the ledger was given in this transaction (each written to all its indexes)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(n_tup_upd), 0) FROM pg_stat_xact_user_tables WHERE relname = %s",
            [LlmCallEvent._meta.db_table],
        )
        return cursor.fetchone()[0]


def test_a_purge_writes_each_ledger_row_of_a_purged_chat_once(chats):
    """The delete's SET NULLs cleared each ledger row's turn, then its session: two new versions
    of each row, with all the ledger's indexes (a purge of 2,736 chats took 149 s). The
    session's and the turn's are cleared in one write; the room's, when its room goes too."""
    sessions, room = chats
    purged = LlmCallEvent.objects.filter(session__in=[sessions["old"].pk, sessions["old_room"].pk])
    rows, in_room = purged.count(), purged.filter(room=room).count()
    assert rows and in_room
    before = _ledger_rows_updated()

    purge("--older-than", "30")

    assert _ledger_rows_updated() - before == rows + in_room


def test_a_purge_leaves_reconcile_clean(chats):
    purge("--older-than", "30")

    out = StringIO()
    call_command("reconcile_usage", stdout=out)  # exits 1 (SystemExit) on drift

    checks = [line for line in out.getvalue().splitlines() if " vs " in line]
    assert checks and all(line.split()[-1] == "ok" for line in checks), out.getvalue()


def test_a_dry_run_counts_and_deletes_nothing(chats):
    said = purge("--older-than", "30", "--dry-run")

    assert said == (
        "Would delete 2 session(s) (2 turn(s), 4 message(s)) and 1 room(s) deleted more than "
        "30 days ago.\n"
    )
    assert Session.objects.count() == 4
    assert Message.objects.count() == 8


def test_under_a_day_is_refused_as_a_usage_error(chats):
    with pytest.raises(CommandError) as refused:
        purge("--older-than", "0.5")

    assert refused.value.returncode == 2
    assert "under 1 day" in str(refused.value)
    assert Session.objects.count() == 4


def test_from_cron_it_says_nothing(chats):
    assert purge("--older-than", "30", "-v", "0") == ""
    assert Session.objects.count() == 2


def test_a_session_with_a_turn_still_running_waits_for_the_next_purge(chats):
    """A turn claimed as its session's delete committed runs on; its worker dead, it stays
    running until recover_turns ends it. Purged under it, its worker's next write would find
    no turn (the reviewer's note)."""
    sessions, room = chats
    Turn.objects.filter(session=sessions["old_room"]).update(status="running")

    said = purge("--older-than", "30")

    assert said.startswith("Deleted 1 session(s) (1 turn(s), 2 message(s)) and 0 room(s)")
    assert Session.objects.filter(pk=sessions["old_room"].pk).exists()
    assert Room.objects.filter(pk=room.pk).exists()  # its session waits, so does it


def test_the_console_history_of_a_purged_chat_keeps_who_did_what_and_none_of_its_words(
    chats, staff
):
    sessions, _ = chats
    old = sessions["alive"]
    console = client_for(staff)
    page = url(Session, "change", old.pk)
    form = opened(console, page, "session_form")
    form["title"] = ["My divorce papers"]
    assert console.post(page, form).status_code == 302
    Session.objects.filter(pk=old.pk).update(deleted_at=timezone.now() - timedelta(days=31))
    entry = LogEntry.objects.get(object_id=str(old.pk))
    assert "divorce" in f"{entry.object_repr} {entry.change_message}"

    purge("--older-than", "30")

    entry = LogEntry.objects.get(object_id=str(old.pk))
    assert (entry.user_id, entry.object_repr, entry.get_change_message()) == (
        staff.pk,
        "(the chat was purged)",
        "Changed (what it said is erased: the chat was purged).",
    )


def old_stream_rows() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT turn_id, text FROM sessions_app_turnstream")
        return dict(cursor.fetchall())


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's old table is dropped")
def test_a_purge_erases_what_the_release_before_streamed_into_its_old_table(chats):
    # A worker of the release before `sessions_app` 0020 killed mid-stream during the deploy
    # leaves its answer so far in the table that migration keeps for it (and no code of this
    # release reads): a forgotten user's words stayed there after the purge.
    sessions, _ = chats
    purged = Turn.objects.get(session=sessions["old"])
    alive = Turn.objects.get(session=sessions["alive"])
    already_gone = uuid.uuid4()  # a turn an earlier purge of this release deleted
    with connection.cursor() as cursor:
        for turn_id, text in (
            (purged.pk, "old: half an answer"),
            (alive.pk, "alive: half an answer"),
            (already_gone, "gone: half an answer"),
        ):
            cursor.execute(
                "INSERT INTO sessions_app_turnstream (turn_id, sequence, text, updated_at) "
                "VALUES (%s, 2, %s, now())",
                [turn_id, text],
            )

    purge("--dry-run")
    assert len(old_stream_rows()) == 3

    purge("--older-than", "30")

    assert old_stream_rows() == {alive.pk: "alive: half an answer"}


def test_the_console_history_of_a_purged_rooms_seats_names_it_no_more(
    owner, staff, make_agent, make_room
):
    # A seat's own page writes "Ada (@ada) at seat 0 of <the room's name>": the room's entries
    # were erased by the purge, its seats' kept its name.
    room = make_room(owner, name="My divorce lawyers")
    kept = make_room(owner, name="Book club")  # not deleted: its seat's history stays
    ada = make_agent(owner, "ada")
    console = client_for(staff)
    for seated_in in (room, kept):
        seated = console.post(
            url(RoomAgent, "add"),
            {"room": seated_in.pk, "agent": ada.pk, "position": "0", "_save": "Save"},
        )
        assert seated.status_code == 302, seated.content
    entry = LogEntry.objects.get(content_type__model="roomagent", object_repr__contains="divorce")
    assert "divorce" in entry.object_repr
    Room.objects.filter(pk=room.pk).update(deleted_at=timezone.now() - timedelta(days=31))

    purge("--older-than", "30")

    entry.refresh_from_db()
    assert not Room.objects.filter(pk=room.pk).exists()
    assert (entry.user_id, entry.object_repr) == (staff.pk, "(the chat was purged)")
    assert LogEntry.objects.filter(object_repr="Ada (@ada) at seat 0 of Book club").exists()
