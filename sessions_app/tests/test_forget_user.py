"""`forget_user`: a user who asked to be forgotten loses what names them and their chats go (for
`purge_deleted_chats` to erase); what they were billed stays, under their account's id."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for, opened
from rooms.models import Agent, Room, RoomAgent
from sessions_app.models import Message, Session, Turn
from usage.models import BillingProfile, LlmCallEvent

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("forget_user", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def alice(django_user_model, make_agent, make_room, make_session, fake_gateway):
    """A user with an agent, a room, a finished chat in each and a turn still running."""
    user = django_user_model.objects.create_user(
        "alice", email="alice@example.com", password="alice-pass-123", first_name="Alice"
    )
    user.groups.add(Group.objects.get_or_create(name="Analyst")[0])
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    ada = make_agent(user, "ada", role_prompt="Ada knows Alice's medical history.")
    room = make_room(user, [ada])
    for session, message in (
        (make_session(user, room=room), "@ada my diagnosis"),
        (make_session(user, agent=ada), "my address"),
    ):
        answer = client.post(
            f"/api/v1/sessions/{session.id}/turns", {"message": message}, format="json"
        )
        assert answer.status_code == 201, answer.content
    running = Turn.objects.create(
        session=make_session(user, agent=ada),
        turn_index=1,
        mode="direct",
        status="running",
        user_input="still going",
    )
    return user, client, running


def test_a_forgotten_user_loses_what_names_them_and_keeps_what_they_were_billed(alice, owner):
    user, client, running = alice
    credits = LlmCallEvent.objects.filter(user=user).aggregate(total=Sum("credits"))["total"]
    rows = LlmCallEvent.objects.filter(user=user).count()
    others = Session.objects.create(started_by=owner)

    said = run("alice")

    assert said == (
        f"Forgot 'alice' (user {user.pk}, now 'forgotten-{user.pk}'): deleted 3 session(s), 1 "
        "room(s) and 1 agent(s), and ended 1 running turn(s). purge_deleted_chats --older-than "
        "1 erases their conversations from tomorrow.\n"
    )
    user.refresh_from_db()
    assert user.username == f"forgotten-{user.pk}"
    assert (user.email, user.first_name, user.last_name) == ("", "", "")
    assert not user.is_active and not user.has_usable_password()
    assert not user.groups.exists()
    assert not Token.objects.filter(user=user).exists()
    assert client.get("/api/v1/sessions").status_code == 401
    assert not Agent.objects.filter(owner=user).exists()
    assert not Session.objects.filter(started_by=user, deleted_at__isnull=True).exists()
    assert not Room.objects.filter(owner=user, deleted_at__isnull=True).exists()
    running.refresh_from_db()
    assert (running.status, running.failure_code) == ("interrupted", "turn_cancelled")
    assert Session.objects.get(pk=others.pk).deleted_at is None  # another user's
    # Billed is billed: the ledger's rows, under the account's id.
    assert LlmCallEvent.objects.filter(user=user).count() == rows > 0
    assert (
        LlmCallEvent.objects.filter(user=user).aggregate(total=Sum("credits"))["total"] == credits
    )
    # The console's history says so, naming the account by its new name.
    revoked = LogEntry.objects.get(object_id=str(user.pk), action_flag=CHANGE)
    assert revoked.object_repr == f"forgotten-{user.pk}"
    assert "the account was forgotten" in revoked.get_change_message()


def test_a_purge_a_day_later_erases_their_words(alice):
    user, _, _ = alice
    run("alice")
    Session.objects.filter(started_by=user).update(deleted_at=timezone.now() - timedelta(days=2))
    Room.objects.filter(owner=user).update(deleted_at=timezone.now() - timedelta(days=2))

    call_command("purge_deleted_chats", "--older-than", "1", stdout=StringIO())

    assert not Session.objects.filter(started_by=user).exists()
    assert not Message.objects.filter(content__contains="diagnosis").exists()
    assert not Turn.objects.filter(roster__icontains="medical").exists()
    assert LlmCallEvent.objects.filter(user=user).exists()


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(alice):
    user, client, _ = alice

    said = run("alice", "--dry-run")

    assert said == (
        f"Would forget 'alice' (user {user.pk}, as 'forgotten-{user.pk}'): would delete 3 "
        "session(s), 1 room(s) and 1 agent(s), and end 1 running turn(s).\n"
    )
    user.refresh_from_db()
    assert user.username == "alice" and user.is_active
    assert client.get("/api/v1/sessions").status_code == 200


def test_an_unknown_username_is_exit_1_and_changes_nothing(alice):
    with pytest.raises(CommandError) as refused:
        run("alicia")

    assert refused.value.returncode == 1
    assert str(refused.value) == "No user has the username 'alicia'."


def test_the_console_history_keeps_who_did_what_and_none_of_the_values(alice, staff):
    """The console writes the values a change went from and to: an account's email, an agent's
    role prompt. Forgotten, its entries stay (who, when, what kind), their values go (the
    reviewer's catch)."""
    user, _, _ = alice
    console = client_for(staff)
    page = url(get_user_model(), "change", user.pk)
    form = opened(console, page, "user_form")
    form["email"] = ["alice.private@example.com"]
    assert console.post(page, form).status_code == 302
    agent = Agent.objects.get(owner=user)
    page = url(Agent, "change", agent.pk)
    form = opened(console, page, "agent_form")
    form["role_prompt"] = ["Knows about my diagnosis."]
    assert console.post(page, form).status_code == 302
    said_before = " ".join(entry.change_message for entry in LogEntry.objects.all())
    assert "alice.private@example.com" in said_before and "diagnosis" in said_before

    run("alice")

    entries = LogEntry.objects.all()
    said = " ".join(f"{entry.object_repr} {entry.change_message}" for entry in entries)
    for private in ("alice", "Alice", "example.com", "diagnosis", "Ada"):
        assert private not in said
    assert {(entry.user_id, entry.get_change_message()) for entry in entries} == {
        (staff.pk, "Changed (what it said is erased: the account was forgotten)."),
        (user.pk, "Revoked the API token (the account was forgotten outside the console)."),
    }


def test_a_username_taken_already_gets_a_suffix(alice, django_user_model):
    user, _, _ = alice
    django_user_model.objects.create_user(f"Forgotten-{user.pk}")

    said = run("alice")

    user.refresh_from_db()
    assert user.username.startswith(f"forgotten-{user.pk}-")
    assert f"now '{user.username}'" in said


def test_the_console_history_of_their_billing_profile_and_seats_names_them_no_more(
    alice, staff, make_agent
):
    """An operator's cap on the account ("Billing profile of alice", "Added with User: alice")
    and a seat added on its own page ("Bea (@bea) at seat 1 of Alice's clinic") kept the name
    and the room's and agent's after the account was forgotten."""
    user, _, _ = alice
    room = Room.objects.get(owner=user)
    Room.objects.filter(pk=room.pk).update(name="Alice's clinic")
    bea = make_agent(user, "bea", name="Bea")
    console = client_for(staff)
    added = console.post(
        url(BillingProfile, "add"),
        {"user": user.pk, "monthly_credit_cap": "50", "_save": "Save"},
    )
    assert added.status_code == 302, added.content
    seated = console.post(
        url(RoomAgent, "add"),
        {"room": room.pk, "agent": bea.pk, "position": "1", "_save": "Save"},
    )
    assert seated.status_code == 302, seated.content
    said_before = " ".join(f"{e.object_repr} {e.change_message}" for e in LogEntry.objects.all())
    assert "alice" in said_before and "Alice's clinic" in said_before

    run("alice")

    entries = LogEntry.objects.exclude(action_flag=CHANGE, user=user)  # the token's revoke
    said = " ".join(f"{entry.object_repr} {entry.change_message}" for entry in entries)
    for private in ("alice", "Alice", "clinic", "Bea"):
        assert private not in said
    # Who did what, and when, stays: the profile under the account's new name.
    assert sorted(entry.object_repr for entry in entries) == [
        "(the account was forgotten)",
        f"Billing profile of forgotten-{user.pk}",
    ]
    assert all(entry.user_id == staff.pk for entry in entries)


def test_the_console_history_of_other_users_seats_and_profiles_is_left_alone(
    alice, staff, make_agent, make_room, django_user_model
):
    """Only the forgotten account's seats and billing profile lose what their history said:
    another user's seat ("Ben (@ben) at seat 0 of Bob's lab") and cap keep theirs."""
    bob = django_user_model.objects.create_user(username="bob", password="bob-pass-123")
    ben = make_agent(bob, "ben", name="Ben")
    lab = make_room(bob, name="Bob's lab")
    console = client_for(staff)
    for model, fields in (
        (RoomAgent, {"room": lab.pk, "agent": ben.pk, "position": "5"}),
        (BillingProfile, {"user": bob.pk, "monthly_credit_cap": "50"}),
    ):
        added = console.post(url(model, "add"), {**fields, "_save": "Save"})
        assert added.status_code == 302, added.content
    bobs = LogEntry.objects.filter(user=staff).values_list("object_repr", "change_message")
    before = sorted(bobs)
    assert [said for said, _ in before] == [
        "Ben (@ben) at seat 0 of Bob's lab",
        "Billing profile of bob",
    ]

    run("alice")

    assert sorted(bobs.all()) == before  # read again
