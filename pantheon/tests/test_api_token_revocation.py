"""A password change revokes the user's API token, as it ends their console sessions: the
usual answer to a leaked password must also shut out whoever took the token with it."""

import pytest
from django.contrib.auth import get_user_model
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
