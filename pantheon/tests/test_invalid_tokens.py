"""Requests with an invalid API token, per client address (`PANTHEON_INVALID_TOKEN_RATE`): past
the rate a 429 `too_many_invalid_tokens` with `Retry-After`, answered before any token lookup;
the count is shared by every worker (PostgreSQL's `pantheon_rate`)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.testing.servers import forget_throttle_history
from pantheon.throttling import InvalidTokenThrottle

pytestmark = pytest.mark.django_db

SESSIONS = "/api/v1/sessions"
BAD = "Token " + "0" * 40


@pytest.fixture(autouse=True)
def _fresh_counts():
    forget_throttle_history()
    yield
    forget_throttle_history()


def get(authorization: str, address: str = "203.0.113.7", **headers):
    return APIClient().get(
        SESSIONS, HTTP_AUTHORIZATION=authorization, REMOTE_ADDR=address, **headers
    )


def assert_refused(response) -> int:
    assert response.status_code == 429, response.content
    seconds = int(response["Retry-After"])
    assert response.json()["detail"]["code"] == "too_many_invalid_tokens"
    assert f"Retry in {seconds} second" in response.json()["detail"]["message"]
    return seconds


def token_lookups(queries) -> list[str]:
    return [query["sql"] for query in queries if "authtoken_token" in query["sql"]]


def test_the_default_rate_is_sixty_invalid_tokens_a_minute(settings):
    assert settings.PANTHEON_INVALID_TOKEN_RATE == "60/min"


def test_an_address_past_the_rate_is_refused_before_any_token_lookup(settings):
    settings.PANTHEON_INVALID_TOKEN_RATE = "3/min"

    answers = [get(f"Token {index:040x}").status_code for index in range(3)]
    with CaptureQueriesContext(connection) as queries:
        refused = get(BAD)
        again = get(BAD)

    assert answers == [401, 401, 401]
    assert 19 <= assert_refused(refused) <= 20  # a place every 20 s
    assert_refused(again)
    assert token_lookups(queries) == []
    # Another address is counted apart.
    assert get(BAD, address="198.51.100.1").status_code == 401


def test_valid_tokens_from_an_address_that_is_refused_are_refused_too(settings, owner):
    """Telling a valid token from a made-up one is the lookup the refusal saves: while an
    address's bucket is spent, every token from it waits (README). Other addresses do not."""
    settings.PANTHEON_INVALID_TOKEN_RATE = "2/min"
    valid = f"Token {Token.objects.create(user=owner).key}"
    assert get(valid).status_code == 200  # a valid token takes no place
    assert [get(BAD).status_code for _ in range(2)] == [401, 401]

    assert_refused(get(valid))
    assert get(valid, address="198.51.100.1").status_code == 200
    # Once a place frees up, the valid token passes again.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pantheon_rate SET tat = tat - 30")
    assert get(valid).status_code == 200


def test_a_worker_that_saw_no_failure_counts_the_shared_bucket(settings):
    """The count is PostgreSQL's, not a worker's: a fresh worker (no failures seen) looks the
    token up once, finds the address's bucket spent, and refuses from then on unread."""
    settings.PANTHEON_INVALID_TOKEN_RATE = "2/min"
    assert [get(BAD).status_code for _ in range(2)] == [401, 401]
    InvalidTokenThrottle.forget_failing()  # another worker

    assert_refused(get(BAD))
    with CaptureQueriesContext(connection) as queries:
        assert_refused(get(BAD))
    assert token_lookups(queries) == []


def test_addresses_behind_proxies_are_the_forwarded_clients(settings):
    settings.PANTHEON_INVALID_TOKEN_RATE = "1/min"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    from rest_framework.settings import api_settings

    api_settings.reload()
    try:
        proxy = "10.0.0.2"
        assert get(BAD, proxy, HTTP_X_FORWARDED_FOR="192.0.2.1").status_code == 401
        assert_refused(get(BAD, proxy, HTTP_X_FORWARDED_FOR="192.0.2.1"))
        assert get(BAD, proxy, HTTP_X_FORWARDED_FOR="192.0.2.2").status_code == 401
    finally:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
        api_settings.reload()


def test_an_inactive_users_token_counts_as_invalid(settings, owner):
    settings.PANTHEON_INVALID_TOKEN_RATE = "1/min"
    valid = f"Token {Token.objects.create(user=owner).key}"
    owner.is_active = False
    owner.save(update_fields=["is_active"])

    assert get(valid).status_code == 401
    assert_refused(get(valid))


def test_an_empty_rate_counts_nothing(settings):
    settings.PANTHEON_INVALID_TOKEN_RATE = None
    assert [get(BAD).status_code for _ in range(5)] == [401] * 5
