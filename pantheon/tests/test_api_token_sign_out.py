"""`DELETE auth/token` (sign out) and `POST auth/token/rotate` (a new token in place of the
caller's): an API client had no way to end or replace its own token; only a password change or
an operator could."""

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.testing.admin import client_for
from pantheon.testing.concurrency import finished, in_thread, someone_waits_on_a_lock

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token"
ROTATE_URL = "/api/v1/auth/token/rotate"


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def works(key: str) -> int:
    return token_client(key).get("/api/v1/agents").status_code


def history(user) -> list[tuple[str, str]]:
    entries = LogEntry.objects.filter(object_id=str(user.pk), action_flag=CHANGE).order_by("pk")
    return [(entry.user.get_username(), entry.get_change_message()) for entry in entries]


def test_signing_out_revokes_the_callers_token_at_once(owner, anon_client):
    key = Token.objects.create(user=owner).key

    response = token_client(key).delete(TOKEN_URL)

    assert response.status_code == 204
    assert response.content == b""
    assert works(key) == 401
    assert token_client(key).delete(TOKEN_URL).status_code == 401
    assert not Token.objects.filter(user=owner).exists()
    assert history(owner) == [("owner", "Revoked the API token (signed out through the API).")]
    # A login hands out a new token.
    again = anon_client.post(TOKEN_URL, {"username": "owner", "password": "owner-pass-123"})
    assert again.status_code == 200 and again.json()["token"] != key
    assert works(again.json()["token"]) == 200


def test_rotating_answers_a_new_token_and_the_old_one_is_dead(owner, anon_client):
    old = Token.objects.create(user=owner).key

    response = token_client(old).post(ROTATE_URL)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    new = response.json()["token"]
    assert new != old and len(new) == 40
    assert (works(old), works(new)) == (401, 200)
    assert token_client(old).post(ROTATE_URL).status_code == 401
    assert list(Token.objects.filter(user=owner).values_list("key", flat=True)) == [new]
    assert history(owner) == [
        ("owner", "Revoked the API token (replaced by a new one through the API).")
    ]
    # The login hands out the token now in force.
    login = anon_client.post(TOKEN_URL, {"username": "owner", "password": "owner-pass-123"})
    assert login.json()["token"] == new


@pytest.mark.parametrize("method, url", [("delete", TOKEN_URL), ("post", ROTATE_URL)])
def test_only_a_token_ends_or_replaces_itself(owner, staff, method, url):
    """No credentials, a wrong token or a console cookie: 401, and no token changes."""
    key = Token.objects.create(user=owner).key
    Token.objects.create(user=staff)

    for client in (APIClient(), token_client("0" * 40), client_for(staff)):
        response = getattr(client, method)(url)
        assert response.status_code == 401, response.content
        assert response.headers["WWW-Authenticate"] == "Token"
    assert Token.objects.count() == 2
    assert works(key) == 200
    assert history(owner) == []


def test_signing_out_and_rotating_take_no_place_under_the_login_limits(owner, settings):
    """They are no logins: eleven of each in a minute from one address (the login limits are
    10 a minute per address and per username) are all answered, and leave the account's
    password login as it was. (Six of each, as this test had, passed under the login limits
    too: fewer than the limit of either kind.)"""
    key = Token.objects.create(user=owner).key
    for _ in range(11):
        rotated = token_client(key).post(ROTATE_URL)
        assert rotated.status_code == 200, rotated.content
        key = rotated.json()["token"]
        assert token_client(key).delete(TOKEN_URL).status_code == 204
        key = Token.objects.create(user=owner).key

    wrong = Client().post(
        TOKEN_URL, {"username": "owner", "password": "nope"}, content_type="application/json"
    )
    assert wrong.status_code == 400


def test_the_schema_documents_both(anon_client):
    schema = anon_client.get("/api/schema/?format=json").json()
    sign_out = schema["paths"]["/api/v1/auth/token"]["delete"]
    rotate = schema["paths"]["/api/v1/auth/token/rotate"]["post"]

    assert {"204", "401"} <= set(sign_out["responses"])
    assert "429" in sign_out["responses"]  # the API rate's, not the login limits'
    assert "429" in schema["paths"]["/api/v1/auth/token"]["post"]["responses"]
    assert rotate["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AuthToken"
    }
    assert "401" in rotate["responses"]
    assert "requestBody" not in rotate


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_rotations_at_once_leave_exactly_one_token(owner):
    """Both authenticated with the token, then both rotate it: the first replaces it, the
    second finds it ended (401) and makes none. Held at the account's row until both wait
    there, on PostgreSQL."""
    old = Token.objects.create(user=owner).key
    with transaction.atomic():
        type(owner).objects.select_for_update().get(pk=owner.pk)
        first, first_answer = in_thread(lambda: token_client(old).post(ROTATE_URL))
        second, second_answer = in_thread(lambda: token_client(old).post(ROTATE_URL))
        assert someone_waits_on_a_lock(count=2)
    finished(first)
    finished(second)

    answers = sorted([*first_answer, *second_answer], key=lambda answer: answer.status_code)
    assert [answer.status_code for answer in answers] == [200, 401]
    new = answers[0].json()["token"]
    assert list(Token.objects.filter(user=owner).values_list("key", flat=True)) == [new]
    assert (works(old), works(new)) == (401, 200)
    assert len(history(owner)) == 1
