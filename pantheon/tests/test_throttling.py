"""Throttles: `auth/token` per client address and per username, turns per user. A throttled
request is a 429 with `Retry-After` and a coded body, and does nothing."""

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from rooms.models import RoomMode
from sessions_app.models import Turn

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token"


def login(username: str, password: str, address: str = "10.0.0.1", **headers):
    return APIClient(REMOTE_ADDR=address).post(
        TOKEN_URL, {"username": username, "password": password}, format="json", **headers
    )


def assert_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json() == {
        "detail": {
            "code": "throttled",
            "message": f"Too many requests. Retry in {response['Retry-After']} seconds.",
        }
    }


@pytest.fixture
def slow_logins(settings):
    settings.PANTHEON_AUTH_RATE_PER_IP = "3/min"
    settings.PANTHEON_AUTH_RATE_PER_USERNAME = "5/min"


def test_the_default_rates_are_ten_logins_a_minute_and_sixty_turns(settings):
    assert settings.PANTHEON_AUTH_RATE_PER_IP == "10/min"
    assert settings.PANTHEON_AUTH_RATE_PER_USERNAME == "10/min"
    assert settings.PANTHEON_TURN_RATE == "60/min"


def test_logins_from_one_address_are_throttled_even_with_the_right_password(owner, slow_logins):
    wrong = [login(f"guess{n}", "nope").status_code for n in range(3)]

    response = login("owner", "owner-pass-123")

    assert wrong == [400, 400, 400]
    assert_throttled(response)
    assert not Token.objects.exists()
    assert login("owner", "owner-pass-123", address="10.0.0.2").status_code == 200


def test_a_forged_forwarded_for_header_does_not_reset_the_count(owner, slow_logins):
    for n in range(3):
        login(f"guess{n}", "nope", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")

    assert_throttled(login("other", "nope", HTTP_X_FORWARDED_FOR="198.51.100.7"))


def test_guessing_one_username_from_many_addresses_is_throttled(owner, slow_logins):
    codes = [login("owner", "nope", address=f"10.1.0.{n}").status_code for n in range(5)]

    response = login("OWNER", "owner-pass-123", address="10.1.0.99")  # case is folded

    assert codes == [400] * 5
    assert_throttled(response)
    assert login("outsider", "nope", address="10.1.0.100").status_code == 400


def test_a_login_without_a_username_still_counts_for_the_address(slow_logins):
    codes = [APIClient().post(TOKEN_URL, {}, format="json").status_code for _ in range(3)]

    assert codes == [400, 400, 400]
    assert_throttled(APIClient().post(TOKEN_URL, {}, format="json"))


# --- turns ----------------------------------------------------------------------------------


@pytest.fixture
def roundtable_session(owner, make_agent, make_room, make_session):
    room = make_room(owner, [make_agent(owner, "ada")], mode=RoomMode.ROUNDTABLE)
    return make_session(owner, room=room)


def test_turns_are_throttled_per_user_and_a_throttled_turn_spends_nothing(
    settings,
    owner,
    outsider,
    owner_client,
    outsider_client,
    roundtable_session,
    make_agent,
    make_room,
    make_session,
    fake_gateway,
    post_turn,
):
    settings.PANTHEON_TURN_RATE = "2/min"
    other_room = make_room(outsider, [make_agent(outsider, "bob")], mode=RoomMode.ROUNDTABLE)
    other_session = make_session(outsider, room=other_room)

    first = post_turn(owner_client, roundtable_session, "one")
    second = post_turn(owner_client, roundtable_session, "two")
    calls = len(fake_gateway.calls)
    third = post_turn(owner_client, roundtable_session, "three")

    assert (first.status_code, second.status_code) == (201, 201)
    assert_throttled(third)
    assert Turn.objects.filter(session=roundtable_session).count() == 2
    assert len(fake_gateway.calls) == calls
    # Another user has their own allowance; reading turns is never throttled.
    assert post_turn(outsider_client, other_session, "hi").status_code == 201
    listing = owner_client.get(f"/api/v1/sessions/{roundtable_session.id}/turns")
    assert listing.status_code == 200
    assert listing.json()["count"] == 2


def test_the_counters_live_in_the_database_cache_shared_by_every_worker(
    settings, owner, owner_client, roundtable_session, fake_gateway, post_turn
):
    """Production's cache is PostgreSQL (migration pantheon.0001 makes its table): the counter
    one worker writes is the one every other worker reads."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "pantheon_cache",
        }
    }
    settings.PANTHEON_TURN_RATE = "1/min"

    assert post_turn(owner_client, roundtable_session, "one").status_code == 201
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM pantheon_cache")
        keys = [row[0] for row in cursor.fetchall()]

    assert any(f"throttle_turns_{owner.pk}" in key for key in keys)
    assert_throttled(post_turn(owner_client, roundtable_session, "two"))
