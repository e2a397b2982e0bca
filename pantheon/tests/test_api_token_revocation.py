"""A password change revokes the user's API token, as it ends their console sessions: the
usual answer to a leaked password must also shut out whoever took the token with it."""

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.testing.admin import client_for

pytestmark = pytest.mark.django_db

User = get_user_model()
TOKEN_URL = "/api/v1/auth/token"


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_password_change_revokes_the_api_token(owner, anon_client):
    stolen = Token.objects.create(user=owner).key

    owner.set_password("a-new-pass-456")
    owner.save()

    assert token_client(stolen).get("/api/v1/agents").status_code == 401
    fresh = anon_client.post(TOKEN_URL, {"username": "owner", "password": "a-new-pass-456"})
    assert fresh.status_code == 200 and fresh.json()["token"] != stolen
    assert token_client(fresh.json()["token"]).get("/api/v1/agents").status_code == 200


def test_a_password_set_in_the_console_revokes_the_api_token(staff, owner):
    stolen = Token.objects.create(user=owner).key

    response = client_for(staff).post(
        f"/admin/auth/user/{owner.pk}/password/",
        {"password1": "a-new-pass-456", "password2": "a-new-pass-456", "usable_password": "true"},
    )

    assert response.status_code == 302
    assert token_client(stolen).get("/api/v1/agents").status_code == 401


def test_other_changes_and_logins_keep_the_api_token(owner, anon_client):
    token = Token.objects.create(user=owner).key

    owner.first_name = "Ada"
    owner.save()
    logged_in = anon_client.post(TOKEN_URL, {"username": "owner", "password": "owner-pass-123"})

    assert logged_in.json()["token"] == token
    assert token_client(token).get("/api/v1/agents").status_code == 200


def test_a_password_set_but_left_out_of_the_save_keeps_the_api_token(owner, anon_client):
    """Django tells the hook of every save after `set_password`, those whose `update_fields`
    leave the password out included: the token went, and the old password, still the one
    stored, handed out a new one."""
    token = Token.objects.create(user=owner).key

    owner.set_password("a-new-pass-456")
    owner.first_name = "Ada"
    owner.save(update_fields=["first_name"])

    assert token_client(token).get("/api/v1/agents").status_code == 200
    logged_in = anon_client.post(TOKEN_URL, {"username": "owner", "password": "owner-pass-123"})
    assert logged_in.status_code == 200 and logged_in.json()["token"] == token


def test_a_save_that_names_the_password_revokes_the_api_token(owner):
    stolen = Token.objects.create(user=owner).key

    owner.set_password("a-new-pass-456")
    owner.save(update_fields=["password"])

    assert token_client(stolen).get("/api/v1/agents").status_code == 401


def test_a_password_left_out_of_one_save_revokes_the_api_token_at_the_save_that_stores_it(
    owner, anon_client
):
    """Django tells the hook once, at the save that left the password out: the one that stores
    it later is a password change all the same."""
    stolen = Token.objects.create(user=owner).key
    owner.set_password("a-new-pass-456")
    owner.save(update_fields=["first_name"])
    owner.last_name = "Lovelace"
    owner.save(update_fields=["last_name"])
    assert token_client(stolen).get("/api/v1/agents").status_code == 200

    owner.save()

    assert token_client(stolen).get("/api/v1/agents").status_code == 401
    fresh = anon_client.post(TOKEN_URL, {"username": "owner", "password": "a-new-pass-456"})
    assert fresh.status_code == 200 and fresh.json()["token"] != stolen


def test_a_password_left_unsaved_then_reloaded_keeps_the_api_token(owner):
    token = Token.objects.create(user=owner).key
    owner.set_password("a-new-pass-456")
    owner.save(update_fields=["first_name"])

    owner.refresh_from_db()  # the new password is dropped
    owner.save()

    assert owner.check_password("owner-pass-123")
    assert token_client(token).get("/api/v1/agents").status_code == 200


def test_turning_password_login_off_in_the_console_revokes_the_api_token(staff, owner):
    """The operator's answer to a leaked password: Django's "Password-based authentication:
    Disabled" is no password change to its hook, and the token taken with it kept working."""
    stolen = Token.objects.create(user=owner).key
    page = client_for(staff).get(f"/admin/auth/user/{owner.pk}/password/").content.decode()
    assert "or turning password login off, revokes the account&#x27;s API token" in page

    response = client_for(staff).post(
        f"/admin/auth/user/{owner.pk}/password/",
        {"usable_password": "false", "unset-password": "Disable password-based authentication"},
    )

    assert response.status_code == 302
    owner.refresh_from_db()
    assert not owner.has_usable_password()
    assert token_client(stolen).get("/api/v1/agents").status_code == 401


def test_a_login_whose_password_changed_while_it_was_checked_gets_no_token(
    owner, anon_client, monkeypatch
):
    """The check takes a while (PBKDF2): a change that revoked the tokens meanwhile must not
    be followed by a fresh token for the old password."""
    from rest_framework.authtoken import serializers as token_serializers

    checked = token_serializers.authenticate

    def change_after_the_check(**credentials):
        user = checked(**credentials)
        changed = User.objects.get(pk=user.pk)
        changed.set_password("a-new-pass-456")
        changed.save()
        return user

    monkeypatch.setattr(token_serializers, "authenticate", change_after_the_check)
    late = anon_client.post(TOKEN_URL, {"username": "owner", "password": "owner-pass-123"})
    monkeypatch.undo()
    wrong = anon_client.post(TOKEN_URL, {"username": "owner", "password": "owner-pass-123"})

    assert late.status_code == 400
    assert late.json() == wrong.json()  # as for the wrong password it now is
    assert not Token.objects.filter(user=owner).exists()


@override_settings(
    PASSWORD_HASHERS=[
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
)
def test_a_login_that_upgrades_the_stored_hash_keeps_the_api_token(owner, anon_client):
    """Django re-hashes an old hash at login (set_password, save): no change of password."""
    token = Token.objects.create(user=owner).key
    assert owner.password.startswith("md5$")

    logged_in = anon_client.post(TOKEN_URL, {"username": "owner", "password": "owner-pass-123"})

    owner.refresh_from_db()
    assert owner.password.startswith("pbkdf2_sha256$")
    assert logged_in.status_code == 200 and logged_in.json()["token"] == token
    assert token_client(token).get("/api/v1/agents").status_code == 200


def history(user) -> list[tuple[str, str]]:
    """`user`'s console history: who did what, oldest first."""
    entries = LogEntry.objects.filter(object_id=str(user.pk), action_flag=CHANGE).order_by("pk")
    return [(entry.user.get_username(), entry.get_change_message()) for entry in entries]


def test_a_revocation_by_the_console_s_password_page_is_in_the_user_s_history(staff, owner):
    """The users' list writes its revocations to the user's history; a password change left no
    trace of the one it made there."""
    Token.objects.create(user=owner)
    client = client_for(staff)

    client.post(
        f"/admin/auth/user/{owner.pk}/password/",
        {"password1": "a-new-pass-456", "password2": "a-new-pass-456", "usable_password": "true"},
    )

    assert history(owner) == [
        ("staff", "Revoked the API token (the password changed)."),
        ("staff", "Changed password."),
    ]
    page = client.get(f"/admin/auth/user/{owner.pk}/history/").content.decode()
    assert "Revoked the API token (the password changed)." in page


def test_a_revocation_by_turning_password_login_off_is_in_the_user_s_history(staff, owner):
    Token.objects.create(user=owner)

    client_for(staff).post(
        f"/admin/auth/user/{owner.pk}/password/",
        {"usable_password": "false", "unset-password": "Disable password-based authentication"},
    )

    assert ("staff", "Revoked the API token (password login turned off).") in history(owner)


def test_a_revocation_by_a_password_changed_outside_the_console_names_the_account(
    owner, monkeypatch
):
    """`changepassword` (or a script) has no console user to name: the entry names the account
    whose password it was, and says where the change came from."""
    Token.objects.create(user=owner)
    monkeypatch.setattr(
        "django.contrib.auth.management.commands.changepassword.getpass.getpass",
        lambda prompt="": "a-new-pass-456",
    )

    call_command("changepassword", "owner")

    assert history(owner) == [
        ("owner", "Revoked the API token (the password changed outside the console).")
    ]


def test_a_password_change_without_a_token_writes_no_history(staff, owner):
    owner.set_password("a-new-pass-456")
    owner.save()

    assert history(owner) == []
