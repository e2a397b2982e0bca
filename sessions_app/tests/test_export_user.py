"""`export_user`: the answer to a subject access (or portability) request, everything Pantheon
holds about one user as one JSON document, and nothing of anyone else's. There was no way to
answer one but by hand, table by table."""

import json
import os
import stat
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.commands import READER_GONE
from pantheon.testing.admin import admin_url, client_for, opened
from pantheon.testing.processes import ROOT
from pantheon.testing.servers import postgres_url
from rooms.models import Room, RoomAgent
from rooms.services import room_delete
from sessions_app.models import Message, Session, Turn, TurnContextAudit
from sessions_app.services import session_delete
from usage.models import BillingProfile, LlmCallEvent, MonthlyUsage

pytestmark = pytest.mark.django_db


def export(*args) -> tuple[dict, str, str]:
    """The document (from stdout, or from `--output`'s file), its text, and what was said."""
    out, err = StringIO(), StringIO()
    call_command("export_user", *args, stdout=out, stderr=err)
    if "--output" in args:
        text = Path(args[args.index("--output") + 1]).read_text(encoding="utf-8")
        return json.loads(text), text, out.getvalue() + err.getvalue()
    return json.loads(out.getvalue()), out.getvalue(), err.getvalue()


def chat(user, make_agent, make_room, make_session, *, key: str, prompt: str, said: list[str]):
    """`user`'s agent `key` (its role prompt `prompt`), seated in a room, and a turn for each of
    `said`: the first in a room session, the others in a direct one. Returns the API client and
    the user's token."""
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    agent = make_agent(user, key, role_prompt=prompt)
    room = make_room(user, [agent], name=f"{key} room")
    sessions = [make_session(user, room=room, title=f"{key} talk")] + [
        make_session(user, agent=agent) for _ in said[1:]
    ]
    for session, message in zip(sessions, said, strict=True):
        if session.room_id:
            message = f"@{key} {message}"
        answer = client.post(
            f"/api/v1/sessions/{session.id}/turns", {"message": message}, format="json"
        )
        assert answer.status_code == 201, answer.content
    return client, token


@pytest.fixture
def alice(django_user_model, make_agent, make_room, make_session, fake_gateway):
    user = django_user_model.objects.create_user(
        "alice", email="alice@example.com", password="alice-pass-123", first_name="Alice"
    )
    user.groups.add(Group.objects.get_or_create(name="Analyst")[0])
    BillingProfile.objects.create(user=user, monthly_credit_cap=Decimal("250"))
    _, token = chat(
        user,
        make_agent,
        make_room,
        make_session,
        key="ada",
        prompt="Ada knows Alice's medical history.",
        said=["my diagnosis", "my address"],
    )
    return user, token


@pytest.fixture
def bob(django_user_model, make_agent, make_room, make_session, fake_gateway):
    """Another user, with the same kinds of rows: none of them is Alice's to export."""
    user = django_user_model.objects.create_user(
        "bob", email="bob@example.net", password="bob-pass-123", first_name="Robert"
    )
    chat(
        user,
        make_agent,
        make_room,
        make_session,
        key="bobsbot",
        prompt="Bob's secret prompt.",
        said=["bob's own words"],
    )
    return user


def test_the_export_holds_the_users_data_and_none_of_anothers(alice, bob):
    user, token = alice

    document, text, said = export("alice")

    account = document["account"]
    assert (account["username"], account["email"], account["first_name"]) == (
        "alice",
        "alice@example.com",
        "Alice",
    )
    assert account["groups"] == ["Analyst"]
    assert account["billing_profile"]["monthly_credit_cap"] == "250.0000000000"
    assert account["api_token"]["exists"] is True and account["has_usable_password"] is True
    [agent] = document["agents"]
    assert (agent["agent_key"], agent["role_prompt"]) == (
        "ada",
        "Ada knows Alice's medical history.",
    )
    [room] = document["rooms"]
    assert [seat["agent_key"] for seat in room["seats"]] == ["ada"]
    assert [session["id"] for session in document["sessions"]] == [  # oldest first
        str(pk)
        for pk in Session.objects.filter(started_by=user)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)
    ]
    turns = [turn for session in document["sessions"] for turn in session["turns"]]
    assert sorted(turn["user_input"] for turn in turns) == ["@ada my diagnosis", "my address"]
    contents = [message["content"] for turn in turns for message in turn["messages"]]
    stored = Message.objects.filter(session__started_by=user)
    assert sorted(contents) == sorted(stored.values_list("content", flat=True))
    assert len(contents) == 4  # each question and its answer
    assert all(turn["status"] == "completed" for turn in turns)
    audits = TurnContextAudit.objects.filter(turn__session__started_by=user).count()
    assert sum(turn["context_audit"] is not None for turn in turns) == audits > 0
    ledger = LlmCallEvent.objects.filter(user=user)
    assert len(document["usage"]["ledger"]) == ledger.count() == 2
    assert (
        sum(Decimal(row["credits"]) for row in document["usage"]["ledger"])
        == (ledger.aggregate(total=Sum("credits"))["total"])
    )
    [month] = document["usage"]["monthly"]
    assert Decimal(month["credits"]) == MonthlyUsage.objects.get(user=user).credits
    assert said == (
        f"Exported 'alice' (user {user.pk}) to stdout: 1 agent(s), 1 room(s), 2 session(s) (2 "
        "turn(s), 4 message(s)), 2 ledger row(s), 0 history entr(y/ies).\n"
    )
    # Nothing of Bob's: his name, his address, his prompt, his words, his rows' ids.
    bobs = [
        "bob",
        "Robert",
        "example.net",
        "secret prompt",
        *(str(pk) for pk in Session.objects.filter(started_by=bob).values_list("pk", flat=True)),
        *(str(pk) for pk in LlmCallEvent.objects.filter(user=bob).values_list("pk", flat=True)),
    ]
    assert [found for found in bobs if found in text] == []
    assert document["export"]["user_id"] == account["id"] == user.pk != bob.pk
    # Never the token or the password's hash.
    assert token.key not in text
    user.refresh_from_db()
    assert user.password not in text and "pbkdf2" not in text and "md5$" not in text


def test_deleted_chats_are_exported_marked_unless_left_out(alice, make_session):
    user, _ = alice
    direct = Session.objects.get(started_by=user, room__isnull=True)
    session_delete(session=direct)
    room_delete(room=Room.objects.get(owner=user))

    document, _, said = export("alice")

    by_id = {session["id"]: session for session in document["sessions"]}
    assert len(by_id) == 2 and all(s["deleted_at"] for s in by_id.values())
    assert by_id[str(direct.pk)]["turns"][0]["user_input"] == "my address"
    assert document["rooms"][0]["deleted_at"] is not None
    assert document["export"]["includes_deleted_chats"] is True
    assert "2 session(s), 2 of them deleted (2 turn(s)" in said

    kept = make_session(user, title="still here")
    document, text, said = export("alice", "--exclude-deleted")

    assert [session["id"] for session in document["sessions"]] == [str(kept.pk)]
    assert document["rooms"] == []
    assert "my address" not in text and "my diagnosis" not in text
    assert document["export"]["includes_deleted_chats"] is False
    # What was billed is no chat: every ledger row stays in the export.
    assert len(document["usage"]["ledger"]) == 2
    assert "1 session(s) (0 turn(s), 0 message(s))" in said


def test_a_file_is_the_owners_alone_and_written_whole(alice, tmp_path):
    user, _ = alice
    path = tmp_path / "alice.json"
    path.write_text("an older export")
    path.chmod(0o644)

    document, _, said = export("alice", "--output", str(path))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert document["account"]["username"] == "alice"
    assert said.startswith(f"Exported 'alice' (user {user.pk}) to {path}: 1 agent(s)")
    assert sorted(os.listdir(tmp_path)) == ["alice.json"]  # no scratch file left


def test_a_file_that_cannot_be_written_is_exit_1_and_leaves_nothing(alice, tmp_path):
    with pytest.raises(CommandError) as refused:
        export("alice", "--output", str(tmp_path / "missing" / "alice.json"))
    assert refused.value.returncode == 1
    assert str(refused.value).startswith(f"cannot write {tmp_path / 'missing' / 'alice.json'}: ")

    (tmp_path / "taken").mkdir()
    with pytest.raises(CommandError) as refused:
        export("alice", "--output", str(tmp_path / "taken"))
    assert refused.value.returncode == 1
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # its scratch file removed


def test_an_unknown_username_is_exit_1(alice):
    with pytest.raises(CommandError) as refused:
        export("alicia")

    assert refused.value.returncode == 1
    assert str(refused.value) == "No user has the username 'alicia'."


def test_a_forgotten_user_exports_what_is_left(alice, staff):
    user, _ = alice
    call_command("forget_user", "alice", stdout=StringIO())

    document, text, _ = export(f"forgotten-{user.pk}")

    account = document["account"]
    assert (account["username"], account["email"], account["first_name"]) == (
        f"forgotten-{user.pk}",
        "",
        "",
    )
    assert account["groups"] == [] and account["api_token"]["exists"] is False
    assert account["has_usable_password"] is False
    assert document["agents"] == []  # deleted with their role prompts at once
    # Their chats, deleted, until purge_deleted_chats erases them; the ledger, kept.
    assert len(document["sessions"]) == 2 and all(s["deleted_at"] for s in document["sessions"])
    assert len(document["usage"]["ledger"]) == 2
    # The console's history: the revoked token, by them, and the account's name is the new one.
    [entry] = [e for e in document["console_history"] if e["object_type"] == "user"]
    assert entry["object_repr"] == f"forgotten-{user.pk}" and entry["by"] == "you"
    assert "alice@example.com" not in text and '"alice"' not in text

    # Purged a day later: only the account and what it was billed are left.
    long_ago = timezone.now() - timedelta(days=2)
    Session.objects.filter(started_by=user).update(deleted_at=long_ago)
    Room.objects.filter(owner=user).update(deleted_at=long_ago)
    call_command("purge_deleted_chats", "--older-than", "1", stdout=StringIO())

    document, text, _ = export(f"forgotten-{user.pk}")

    assert document["sessions"] == document["rooms"] == []
    assert len(document["usage"]["ledger"]) == 2
    assert "medical history" not in text and "diagnosis" not in text


def test_the_console_history_says_an_operator_not_who(alice, staff):
    user, _ = alice
    LogEntry.objects.create(
        user=staff,
        content_type=ContentType.objects.get_for_model(Room),
        object_id=str(Room.objects.get(owner=user).pk),
        object_repr="ada room",
        action_flag=CHANGE,
        change_message='[{"changed": {"fields": ["Name"]}}]',
    )
    LogEntry.objects.create(
        user=user,
        content_type=ContentType.objects.get_for_model(Room),
        object_id="someone-elses-room",
        object_repr="Carol's room",
        action_flag=CHANGE,
        change_message="Carol's words",
    )

    document, text, _ = export("alice")

    about, done = document["console_history"]
    assert (about["object_repr"], about["change"], about["by"]) == (
        "ada room",
        "Changed Name.",
        "an operator",
    )
    assert done == {
        "action_time": done["action_time"],
        "action": "changed",
        "object_type": "room",
        "object_id": "someone-elses-room",
        "by": "you",
    }
    assert '"staff"' not in text and "Carol" not in text


def test_its_queries_do_not_grow_with_the_chats(alice, make_session):
    """Read row by row, by cursors whose number does not depend on the data: 30 sessions of
    turns take the statements 3 do."""
    user, _ = alice

    def grow(count: int) -> None:
        for index in range(count):
            session = make_session(user, title=f"grown {index}")
            turn = Turn.objects.create(
                session=session, turn_index=1, mode="direct", status="completed", user_input="x"
            )
            Message.objects.create(session=session, turn=turn, sequence=1, role="user")

    # The process's caches filled first (the content types of the console's history, read once
    # per process): the first export in a process read them, six statements more, and the
    # counts differed when no test before this one in its worker had exported.
    export("alice")
    counts = []
    for count in (3, 27):
        grow(count)
        with CaptureQueriesContext(connection) as queries:
            export("alice")
        counts.append(len(queries))

    assert counts[0] == counts[1]


def test_left_out_deleted_chats_are_left_out_of_the_console_history_too(alice, staff):
    """`--exclude-deleted` left the rooms and sessions out, but the console's history of them
    still said what they were called (the reviewer's catch)."""
    user, _ = alice
    room = Room.objects.get(owner=user)
    LogEntry.objects.create(
        user=staff,
        content_type=ContentType.objects.get_for_model(Room),
        object_id=str(room.pk),
        object_repr="the clinic room",
        action_flag=CHANGE,
        change_message='[{"changed": {"fields": ["Name"]}}]',
    )
    room_delete(room=room)

    kept, _, _ = export("alice")
    left_out, text, _ = export("alice", "--exclude-deleted")

    assert [entry["object_repr"] for entry in kept["console_history"]] == ["the clinic room"]
    assert left_out["console_history"] == []
    assert "the clinic room" not in text


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_reader_that_stops_reading_ends_it_quietly(django_user_model, make_agent):
    """`export_user alice | head` ended in a BrokenPipeError traceback on stderr, exit 1. The
    command now ends as a Unix tool on a closed pipe does: nothing on stderr, exit 141."""
    user = django_user_model.objects.create_user("alice", password="pw-alice-123")
    for n in range(40):  # a document far longer than a pipe holds
        make_agent(user, f"agent{n}", role_prompt="Reads every paper twice. " * 200)
    url = postgres_url(connection.settings_dict)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "export_user", "alice"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "pantheon.settings"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout.read(100).startswith(b"{")
    process.stdout.close()  # what `head -c 100` does once it has its bytes
    _, stderr = process.communicate(timeout=120)
    assert stderr.decode() == ""
    assert process.returncode == READER_GONE == 141


def test_the_console_history_of_their_billing_profile_and_seats_is_exported(
    alice, staff, make_agent, make_room, django_user_model
):
    """An operator who lowered the user's cap, or seated one of their agents on the seat's own
    page, wrote the account's history under the billing profile and the seat: the export left
    both out (an access request's answer without who capped the account, and when). Another
    user's cap and seat stay out: theirs."""
    user, _ = alice
    bob = django_user_model.objects.create_user(username="bob", password="bob-pass-123")
    console = client_for(staff)
    for owner, agent_key in ((user, "bea"), (bob, "ben")):
        profile, _ = BillingProfile.objects.get_or_create(user=owner)
        room = Room.objects.filter(owner=owner).first() or make_room(owner, name="Bob's lab")
        agent = make_agent(owner, agent_key, name=agent_key.title())
        page = admin_url(BillingProfile, "change", profile.pk)
        form = opened(console, page, "billingprofile_form")
        form["monthly_credit_cap"] = ["50"]
        form.pop("no_cap", None)  # bob's has none yet
        assert console.post(page, form).status_code == 302
        seated = console.post(
            admin_url(RoomAgent, "add"),
            {"room": room.pk, "agent": agent.pk, "position": "1", "_save": "Save"},
        )
        assert seated.status_code == 302, seated.content

    document, _, _ = export("alice")

    said = {
        (entry["object_type"], entry["object_repr"], entry["by"])
        for entry in document["console_history"]
    }
    assert said == {
        ("billingprofile", "Billing profile of alice", "an operator"),
        ("roomagent", "Bea (@bea) at seat 1 of ada room", "an operator"),
    }
    [capped] = [e for e in document["console_history"] if e["object_type"] == "billingprofile"]
    assert "50" in capped["change"]


@pytest.mark.usefixtures("alice")
def test_the_document_has_the_shape_the_readme_documents():
    """README's "The export's format": the keys in their order, the header, and a session's and
    a turn's parts. A change to them is a change of `version` and of the README."""

    document, _, _ = export("alice")

    assert list(document) == [
        "export",
        "account",
        "agents",
        "rooms",
        "sessions",
        "idempotency_keys",
        "usage",
        "console_history",
    ]
    header = document["export"]
    assert list(header) == [
        "format",
        "version",
        "exported_at",
        "user_id",
        "includes_deleted_chats",
    ]
    assert (header["format"], header["version"]) == ("pantheon-user-export", 1)
    assert header["exported_at"].endswith("Z")
    assert list(document["usage"]) == ["monthly", "ledger"]
    session = document["sessions"][0]
    assert list(session)[-3:] == ["turns", "messages_outside_turns", "summaries"]
    assert "deleted_at" in session
    turn = session["turns"][0]
    assert {"messages", "context_audit"} <= set(turn)
    assert "seats" in document["rooms"][0]
    assert isinstance(document["account"]["id"], int) and isinstance(session["id"], str)


def test_left_out_deleted_chats_take_their_idempotency_keys_with_them(alice, make_session):
    """`--exclude-deleted` left a deleted chat out but listed the `Idempotency-Key` of its
    turn, with the turn's id: a key of a chat the copy says nothing of."""
    user, token = alice
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    agent = Session.objects.get(started_by=user, room__isnull=True).agent
    chats = {}
    for name in ("gone", "kept"):
        session = chats[name] = make_session(user, agent=agent)
        answer = client.post(
            f"/api/v1/sessions/{session.id}/turns",
            {"message": f"{name} words"},
            format="json",
            HTTP_IDEMPOTENCY_KEY=f"key-{name}",
        )
        assert answer.status_code == 201, answer.content
    session_delete(session=chats["gone"])

    everything, _, _ = export("alice")
    kept, _, _ = export("alice", "--exclude-deleted")

    assert {key["key"] for key in everything["idempotency_keys"]} == {"key-gone", "key-kept"}
    assert [key["key"] for key in kept["idempotency_keys"]] == ["key-kept"]
