"""`POST auth/password` `{current_password, new_password}`: the API had no password change (a
client could rotate its token or sign out, and had to send its user to the console to change
the password). The change revokes the account's token and ends its console sessions, as any
password change does, and answers the new token; a wrong current password is a coded 400 that
counts as a failed login under the login limits."""

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.testing.servers import forget_throttle_history

pytestmark = pytest.mark.django_db

PASSWORD_URL = "/api/v1/auth/password"
NEW = "a-new-pass-4567"


@pytest.fixture(autouse=True)
def _empty_throttle_table():
    forget_throttle_history()
    yield
    forget_throttle_history()


def token_client(key: str, address: str = "10.0.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def token(staff) -> str:
    return Token.objects.create(user=staff).key


def change(key: str, current: str, new: str = NEW, **more):
    return token_client(key, **more).post(
        PASSWORD_URL, {"current_password": current, "new_password": new}, format="json"
    )


def test_a_change_answers_a_new_token_and_ends_the_old_one_and_the_console_sessions(staff, token):
    console = Client()
    console.force_login(staff)
    assert console.get("/admin/").status_code == 200

    response = change(token, "staff-pass-123")

    assert response.status_code == 200, response.json()
    assert response["Cache-Control"] == "no-store"
    new_token = response.json()["token"]
    assert new_token != token
    staff.refresh_from_db()
    assert staff.check_password(NEW)
    assert token_client(token).get("/api/v1/agents").json()["code"] == "authentication_failed"
    assert token_client(new_token).get("/api/v1/agents").status_code == 200
    assert console.get("/admin/").status_code == 302  # signed out: to the login page
    history = list(
        LogEntry.objects.filter(object_id=str(staff.pk))
        .order_by("id")
        .values_list("change_message", flat=True)
    )
    assert history == [
        "Revoked the API token (the password changed outside the console).",
        "Changed the password through the API.",
    ]
    # The new password logs in, the old one no longer.
    login = APIClient().post("/api/v1/auth/token", {"username": "staff", "password": NEW})
    assert login.json() == {"token": new_token}


def test_a_wrong_current_password_is_a_coded_400_and_changes_nothing(staff, token):
    response = change(token, "not-the-password")

    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "wrong_current_password"
    staff.refresh_from_db()
    assert staff.check_password("staff-pass-123")
    assert token_client(token).get("/api/v1/agents").status_code == 200
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize(
    ("new", "message"),
    [
        ("short", "This password is too short. It must contain at least 8 characters."),
        ("password", "This password is too common."),
        ("83726154092", "This password is entirely numeric."),
    ],
)
def test_the_password_rules_hold_the_new_password(staff, token, new, message):
    response = change(token, "staff-pass-123", new)

    assert response.status_code == 400
    assert message in response.json()["new_password"]
    staff.refresh_from_db()
    assert staff.check_password("staff-pass-123")
    assert Token.objects.filter(key=token).exists()


def test_a_body_without_both_passwords_is_a_field_error(token):
    response = token_client(token).post(PASSWORD_URL, {"new_password": NEW}, format="json")

    assert response.status_code == 400
    assert response.json() == {"current_password": ["This field is required."]}


def test_only_a_token_authenticates_it(staff):
    console = APIClient()
    console.force_login(staff)

    anonymous = APIClient().post(PASSWORD_URL, {"current_password": "x", "new_password": NEW})
    by_cookie = console.post(
        PASSWORD_URL, {"current_password": "staff-pass-123", "new_password": NEW}
    )

    assert anonymous.status_code == by_cookie.status_code == 401
    staff.refresh_from_db()
    assert staff.check_password("staff-pass-123")


def test_wrong_current_passwords_count_as_failed_logins_of_the_account(staff, token, settings):
    """A leaked token's holder guesses the password here no faster than at the login: the
    failures count under the account's login limits, in the login's own history."""
    settings.PANTHEON_AUTH_RATE_PER_IP = "100/min"
    settings.PANTHEON_AUTH_RATE_PER_USERNAME = "3/min"
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = "100/min"

    # A right one first: no failure, it takes no place (its new token goes on below).
    token = change(token, "staff-pass-123", NEW).json()["token"]
    answers = [change(token, f"guess-{n}").status_code for n in range(3)]
    right_but_throttled = change(token, NEW, "another-pass-890")
    login = APIClient(REMOTE_ADDR="10.0.0.1").post(
        "/api/v1/auth/token", {"username": "staff", "password": NEW}
    )

    assert answers == [400, 400, 400]
    assert right_but_throttled.status_code == 429
    assert right_but_throttled.json()["detail"]["code"] == "throttled"
    assert login.status_code == 429  # the same account's failures, at the same address
    staff.refresh_from_db()
    assert staff.check_password(NEW)


def test_the_schema_documents_it():
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/v1/auth/password"]["post"]

    assert {"200", "400", "401", "429"} <= set(operation["responses"])
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert sorted(body["required"]) == ["current_password", "new_password"]


def test_bodies_that_cannot_be_read_count_at_the_api_rate(token, settings):
    """The body was read before the rate's place was taken, so malformed bodies were 400s no
    rate counted (the reviewer's catch): a token's holder could send them at any speed."""
    settings.PANTHEON_API_RATE = "2/min"
    client = token_client(token)

    answers = [
        client.post(PASSWORD_URL, "{not json", content_type="application/json").status_code
        for _ in range(3)
    ]

    assert answers == [400, 400, 429]
