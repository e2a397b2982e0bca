"""Who may change users changes customers' accounts, not what an account may do in the
console: granting roles, staff or superuser status, and the accounts that hold them, are a
superuser's. Django's own user pages let anyone who may change users tick Superuser status on
their own account (or reset a superuser's password and log in as them)."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from rest_framework.authtoken.models import Token

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for, opened

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def support(django_user_model):
    """Staff who may view and change users, and nothing else (no conversations)."""
    user = django_user_model.objects.create_user(
        "support", password="support-pass-123", is_staff=True
    )
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="auth", codename__in=["view_user", "change_user"]
        )
    )
    return user


def _saved_with(client, user, **changes):
    page = url(User, "change", user.pk)
    form = opened(client, page, "user_form")
    form.update(changes)
    return client.post(page, form)


def test_who_may_change_users_cannot_make_themselves_a_superuser(support):
    client = client_for(support)

    response = _saved_with(client, support, is_superuser=["on"], is_staff=["on"])

    support.refresh_from_db()
    assert response.status_code == 302  # their own names and email are still theirs to edit
    assert not support.is_superuser
    assert client.get(url(User, "changelist")).status_code == 200
    messages_page = "/admin/sessions_app/message/"
    assert client.get(messages_page).status_code == 403


def test_who_may_change_users_cannot_give_a_role_or_a_permission(support, owner):
    client = client_for(support)
    owner_role = Group.objects.get(name="Owner")
    view_messages = Permission.objects.get(codename="view_message")

    page = client.get(url(User, "change", owner.pk)).content.decode()
    response = _saved_with(
        client,
        owner,
        is_staff=["on"],
        groups=[str(owner_role.pk)],
        user_permissions=[str(view_messages.pk)],
        first_name=["Olive"],
    )

    owner.refresh_from_db()
    assert response.status_code == 302
    assert owner.first_name == "Olive"  # a customer's account is still theirs to change
    assert not owner.is_staff
    assert not owner.groups.exists() and not owner.user_permissions.exists()
    assert 'name="is_superuser"' not in page and 'name="groups"' not in page


@pytest.mark.parametrize("target", ["superuser", "operator"])
def test_who_may_change_users_cannot_take_over_a_staff_account(
    support, staff, make_operator, target
):
    """A superuser's or an Owner's password reset by support would have handed support their
    console (the conversations included)."""
    account = staff if target == "superuser" else make_operator("Owner", "olivia")
    Token.objects.create(user=account)
    client = client_for(support)
    hashed = account.password

    page = client.get(url(User, "change", account.pk))
    reset = client.post(
        url(User, "password_change", account.pk),
        {"usable_password": "true", "password1": "taken-over-987", "password2": "taken-over-987"},
    )
    saved = client.post(url(User, "change", account.pk), {"username": "renamed"}, follow=True)
    revoked = client.post(
        url(User, "changelist"), {"action": "revoke_api_tokens", "_selected_action": [account.pk]}
    )

    account.refresh_from_db()
    assert page.status_code == 200  # viewed, read-only
    assert "Reset password" not in page.content.decode()
    assert client.get(url(User, "password_change", account.pk)).status_code == 403
    assert reset.status_code == 403
    assert "not saved: it is a staff account now, which only a superuser changes" in (
        saved.content.decode()
    )
    assert revoked.status_code == 302
    assert account.password == hashed and account.get_username() != "renamed"
    assert Token.objects.filter(user=account).exists()


def test_a_superuser_still_grants_roles_and_resets_staff_passwords(staff, make_operator):
    operator = make_operator("Analyst", "anna")
    client = client_for(staff)

    granted = _saved_with(client, operator, is_superuser=["on"])
    reset = client.post(
        url(User, "password_change", operator.pk),
        {"usable_password": "true", "password1": "a-new-pass-987", "password2": "a-new-pass-987"},
    )

    operator.refresh_from_db()
    assert granted.status_code == reset.status_code == 302
    assert operator.is_superuser and operator.check_password("a-new-pass-987")


def test_who_may_change_groups_cannot_give_their_group_a_permission(support):
    """A role is its group's permissions: an operator who may change groups gave their own
    group the permission to view messages, and read every conversation."""
    support.user_permissions.add(*Permission.objects.filter(codename__in=["change_group"]))
    team = Group.objects.create(name="Support")
    support.groups.add(team)
    view_messages = Permission.objects.get(codename="view_message")
    client = client_for(support)
    page = url(Group, "change", team.pk)

    shown = client.get(page).content.decode()
    saved = client.post(page, {"name": "Support desk", "permissions": [str(view_messages.pk)]})

    team.refresh_from_db()
    assert saved.status_code == 302
    assert team.name == "Support desk"  # a name is still theirs to change
    assert not team.permissions.exists()
    assert 'name="permissions"' not in shown
    assert client.get("/admin/sessions_app/message/").status_code == 403


def test_a_superuser_still_gives_groups_permissions(staff):
    team = Group.objects.create(name="Support")
    view_messages = Permission.objects.get(codename="view_message")

    saved = client_for(staff).post(
        url(Group, "change", team.pk), {"name": "Support", "permissions": [str(view_messages.pk)]}
    )

    assert saved.status_code == 302
    assert list(team.permissions.all()) == [view_messages]


def test_the_revoke_action_of_who_may_change_users_leaves_staff_tokens(support, staff, owner):
    for user in (support, staff, owner):
        Token.objects.create(user=user)
    client = client_for(support)

    response = client.post(
        url(User, "changelist"),
        {"action": "revoke_api_tokens", "select_across": "1", "_selected_action": [owner.pk]},
        follow=True,
    )

    text = response.content.decode()
    assert "Left 1 staff account as they were: only a superuser changes those." in text
    assert "Revoked the API tokens of 2 users." in text  # the customer's and their own
    assert list(Token.objects.values_list("user", flat=True)) == [staff.pk]


def test_who_may_change_users_cannot_set_a_customer_s_password(support, owner, anon_client):
    """A support operator who set a customer's password knew it, and signed in as them through
    the API (their conversations included): only the user's history said so. They may turn
    password login off (a leaked password): the token goes with it, and nobody knows a password
    that opens the account."""
    stolen = Token.objects.create(user=owner).key
    client = client_for(support)
    page = url(User, "password_change", owner.pk)
    hashed = owner.password

    user_page = client.get(url(User, "change", owner.pk)).content.decode()
    shown = client.get(page)
    typed = {"password1": "taken-over-987", "password2": "taken-over-987"}
    reset = client.post(page, {**typed, "usable_password": "true", "set-password": "Change"})
    signed_in = anon_client.post(
        "/api/v1/auth/token", {"username": "owner", "password": "taken-over-987"}
    )

    owner.refresh_from_db()
    assert "Reset password" not in user_page
    assert "Turn password login off" in user_page
    assert shown.status_code == 200
    assert 'name="password1"' not in shown.content.decode()
    assert "Only a superuser sets a password for another account" in shown.content.decode()
    assert reset.status_code == 403
    assert "Setting another account&#x27;s password is a superuser&#x27;s" in reset.content.decode()
    assert owner.password == hashed
    assert signed_in.status_code == 400
    assert Token.objects.filter(key=stolen).exists()

    off = client.post(page, {"usable_password": "false", "unset-password": "Turn it off"})

    owner.refresh_from_db()
    assert off.status_code == 302
    assert not owner.has_usable_password()
    assert not Token.objects.filter(user=owner).exists()
    assert client.get(page).status_code == 200  # says login is off; still nothing to type


def test_who_may_change_users_still_changes_their_own_password(support):
    client = client_for(support)

    changed = client.post(
        url(User, "password_change", support.pk),
        {"usable_password": "true", "password1": "my-own-pass-987", "password2": "my-own-pass-987"},
    )

    support.refresh_from_db()
    assert changed.status_code == 302
    assert support.check_password("my-own-pass-987")


def test_who_may_change_users_cannot_rewrite_when_a_customer_signed_in(support, owner):
    """The page's Important dates were inputs: a customer's last login and the day they joined
    were whatever support typed."""
    client = client_for(support)
    joined = owner.date_joined

    response = _saved_with(
        client,
        owner,
        first_name=["Olive"],
        last_login_0=["2020-01-01"],
        last_login_1=["00:00:00"],
        date_joined_0=["2020-01-01"],
        date_joined_1=["00:00:00"],
    )

    owner.refresh_from_db()
    assert response.status_code == 302
    assert owner.first_name == "Olive"
    assert owner.last_login is None and owner.date_joined == joined


def test_who_may_view_users_alone_reads_no_spending(support, owner):
    """A user's page showed the month's credits (the ledger's), the cap and the billing status
    (the billing profile's) to who may read neither."""
    client = client_for(support)
    page = client.get(url(User, "change", owner.pk)).content.decode()

    support.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_monthlyusage", "view_billingprofile"])
    )
    allowed = client_for(User.objects.get(pk=support.pk))
    shown = allowed.get(url(User, "change", owner.pk)).content.decode()

    for label in ("Credits this month", "Monthly credit cap", "Billing status"):
        assert label not in page
        assert label in shown
    assert "API token" in page  # theirs to revoke
