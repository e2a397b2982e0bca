"""Throttles: `auth/token` per client address and per username, turns per user. A throttled
request is a 429 with `Retry-After` and a coded body, and does nothing."""

import hashlib
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.test import Client, RequestFactory
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.testing.concurrency import all_at_once
from pantheon.testing.servers import AppServer, forget_throttle_history, postgres_url
from pantheon.throttling import TurnRateThrottle, _at_address, username_digest
from rooms.models import RoomMode
from sessions_app.idempotency import request_fingerprint
from sessions_app.models import IdempotencyKey, Turn

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_throttle_table():
    """Each test here starts and ends with no throttle history."""
    forget_throttle_history()
    yield
    forget_throttle_history()


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
            "message": f"Too many requests. Retry in {response['Retry-After']} second"
            f"{'' if response['Retry-After'] == '1' else 's'}.",
        }
    }


def test_a_wait_of_one_second_is_said_in_the_singular():
    """A client showing the message read "Retry in 1 seconds." with a Retry-After of 1."""
    from pantheon.exceptions import throttled_body

    assert throttled_body(1)["detail"]["message"] == "Too many requests. Retry in 1 second."
    assert throttled_body(2)["detail"]["message"] == "Too many requests. Retry in 2 seconds."


@pytest.fixture
def slow_logins(settings):
    settings.PANTHEON_AUTH_RATE_PER_IP = "3/min"
    settings.PANTHEON_AUTH_RATE_PER_USERNAME = "5/min"
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = "5/min"


def test_the_default_rates_are_ten_failed_logins_a_minute_and_sixty_turns(settings):
    assert settings.PANTHEON_AUTH_RATE_PER_IP == "10/min"
    assert settings.PANTHEON_AUTH_RATE_PER_USERNAME == "10/min"
    assert settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL == "100/hour"
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


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_production_server_takes_the_address_from_the_socket_not_the_header():
    """uvicorn read X-Forwarded-For from any client on 127.0.0.1 and handed the app that
    address instead: each forged header was 10 fresh tries."""
    database = postgres_url(connection.settings_dict)
    with AppServer(database_url=database, env={"PANTHEON_AUTH_RATE_PER_IP": "3/min"}) as server:
        url = server.url + TOKEN_URL
        for n in range(3):
            assert httpx.post(url, json={"username": f"g{n}", "password": "x"}).status_code == 400
        forged = httpx.post(
            url,
            json={"username": "other", "password": "x"},
            headers={"X-Forwarded-For": "198.51.100.7", "X-Real-IP": "198.51.100.7"},
        )

    assert forged.status_code == 429


def test_guessing_one_username_from_many_addresses_is_throttled(owner, slow_logins):
    codes = [login("owner", "nope", address=f"10.1.0.{n}").status_code for n in range(5)]

    response = login("OWNER", "owner-pass-123", address="10.1.0.99")  # case is folded

    assert codes == [400] * 5
    assert_throttled(response)
    assert login("outsider", "nope", address="10.1.0.100").status_code == 400


def test_white_space_around_a_username_does_not_reset_its_count(owner, slow_logins):
    """Login trims the name (" owner" and "\u200bowner" log in as owner), and the count did
    not: each spelling with spaces, a tab or a zero-width character around it was five fresh
    guesses at the same password."""
    spellings = ["owner", " owner", "owner ", "\towner", "\u200bOWNER\ufeff"]
    codes = [
        login(name, "nope", address=f"10.2.0.{n}").status_code for n, name in enumerate(spellings)
    ]

    assert codes == [400] * 5
    assert_throttled(login(" owner ", "owner-pass-123", address="10.2.0.99"))
    assert_throttled(login("owner\t", "owner-pass-123", address="10.2.0.98"))
    assert_throttled(login("\u200bowner\u2060", "owner-pass-123", address="10.2.0.97"))
    assert not Token.objects.exists()


def test_a_username_is_counted_as_login_normalizes_it(django_user_model, settings):
    """Login reads a username NFKC-normalized ("ｏｗｎｅｒ" and "zoe\u0308" log in as owner
    and zoë, at both doors): each spelling counts against the account it logs in, and a login
    in one spelling makes the address known to the account in every other."""
    django_user_model.objects.create_user("zo\u00eb", password="zoe-pass-12345")
    settings.PANTHEON_AUTH_RATE_PER_USERNAME = "3/min"
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = "3/min"
    spellings = ["zo\u00eb", "zoe\u0308", "\uff5a\uff4f\uff45\u0308"]  # zoë, ｚｏｅ̈
    guesses = [
        login(name, "nope", address=f"10.3.0.{n}").status_code for n, name in enumerate(spellings)
    ]

    assert guesses == [400] * 3
    assert_throttled(login("ZOE\u0308", "zoe-pass-12345", address="10.3.0.99"))
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = ""
    assert login("zoe\u0308", "zoe-pass-12345", address="10.3.1.1").status_code == 200
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = "3/min"
    assert login("zo\u00eb", "zoe-pass-12345", address="10.3.1.1").status_code == 200  # known


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


def test_the_history_lives_in_postgresql_shared_by_every_worker(
    settings, owner, owner_client, roundtable_session, fake_gateway, post_turn
):
    """Whatever the process's cache, the history is a row of `pantheon_throttle`: what one
    worker records, every other worker reads."""
    settings.PANTHEON_TURN_RATE = "1/min"

    assert post_turn(owner_client, roundtable_session, "one").status_code == 201
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, cardinality(hits) FROM pantheon_throttle")
        rows = cursor.fetchall()

    assert rows == [(f"throttle_turns_{owner.pk}", 1)]
    assert_throttled(post_turn(owner_client, roundtable_session, "two"))


def hit(key: str, rate: str) -> tuple[bool, float | None]:
    throttle = TurnRateThrottle()
    throttle.num_requests, throttle.duration = throttle.parse_rate(rate)
    allowed = throttle._hit(key)
    return allowed, throttle.wait()


def test_the_window_slides_and_retry_after_is_when_the_oldest_request_leaves_it():
    with connection.cursor() as cursor:
        # Three requests 50, 20 and 10 seconds ago fill a 3/min window.
        cursor.execute(
            "INSERT INTO pantheon_throttle (key, hits, expires) SELECT 'k', ARRAY[now - 50, "
            "now - 20, now - 10], now + 50 FROM (SELECT extract(epoch FROM clock_timestamp())"
            "::float8 AS now) AS clock"
        )

    assert hit("k", "3/min") == (False, 10)  # the one from 50 s ago leaves in 10 s
    assert hit("k", "4/min") == (True, None)
    assert hit("k", "4/min") == (False, 10)
    assert hit("other", "1/min") == (True, None)
    # A one-second window holds only the request just recorded: the older ones are dropped.
    assert hit("k", "2/s") == (True, None)
    with connection.cursor() as cursor:
        cursor.execute("SELECT cardinality(hits) FROM pantheon_throttle WHERE key = 'k'")
        assert cursor.fetchone() == (2,)


def test_quiet_identities_are_pruned(monkeypatch):
    monkeypatch.setattr("pantheon.throttling.PRUNE_ONE_IN", 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO pantheon_throttle (key, hits, expires) VALUES ('gone', ARRAY[1.0], 61.0)"
        )

    hit("live", "5/min")

    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM pantheon_throttle ORDER BY key")
        assert cursor.fetchall() == [("live",)]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_requests_cannot_share_the_last_places():
    """Twelve workers at once against a limit of five: exactly five pass. (DRF's cache-based
    history is read and written back in Python, so racing requests all see room.)"""
    results = all_at_once(12, lambda _: hit("race", "5/min")[0])

    assert sorted(results) == [False] * 7 + [True] * 5
    with connection.cursor() as cursor:
        cursor.execute("SELECT cardinality(hits) FROM pantheon_throttle WHERE key = 'race'")
        assert cursor.fetchone() == (5,)


def test_the_turn_throttle_is_checked_without_a_hop_back_to_the_event_loop(
    settings, monkeypatch, owner_client, roundtable_session, fake_gateway, post_turn
):
    """adrf checks asynchronous throttles through async_to_sync even when there are none: the
    turn's first database section would block on the event loop while holding its place."""

    def no_hop(*args, **kwargs):
        raise AssertionError("the throttle check hopped to the event loop")

    monkeypatch.setattr("adrf.views.async_to_sync", no_hop)
    settings.PANTHEON_TURN_RATE = "1/min"

    assert post_turn(owner_client, roundtable_session, "one").status_code == 201
    assert_throttled(post_turn(owner_client, roundtable_session, "two"))


CONSOLE_LOGIN = "/admin/login/"


def console_login(username: str, password: str, address: str = "10.0.0.1"):
    return Client(REMOTE_ADDR=address).post(
        CONSOLE_LOGIN, {"username": username, "password": password, "next": "/admin/"}
    )


def assert_console_refused(response) -> None:
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "Too many login attempts for this account or from this address. Try again in " in (
        response.text
    )
    assert "_auth_user_id" not in response.wsgi_request.session


def test_the_console_login_is_throttled_per_address_even_with_the_right_password(
    make_operator, slow_logins
):
    """The console took any number of guesses at an operator's password (the security
    reviewer's catch: 39 wrong ones then the right one, all answered)."""
    make_operator("Owner", "boss")
    assert console_login("boss", "operator-pass-123").status_code == 302  # counts for none
    wrong = [console_login(f"guess{n}", "nope").status_code for n in range(3)]

    refused = console_login("boss", "operator-pass-123")

    assert wrong == [200, 200, 200]
    assert_console_refused(refused)
    assert console_login("boss", "operator-pass-123", address="10.0.0.2").status_code == 302


def test_guesses_at_one_account_count_alike_at_the_console_and_the_api(make_operator, slow_logins):
    make_operator("Owner", "boss")
    api = [login("boss", "nope", address=f"10.0.1.{n}").status_code for n in range(3)]
    console = [console_login(" boss", "nope", address=f"10.0.2.{n}").status_code for n in range(2)]

    assert (api, console) == ([400, 400, 400], [200, 200])
    assert_console_refused(console_login("boss", "operator-pass-123", address="10.0.3.1"))
    assert_throttled(login("boss", "operator-pass-123", address="10.0.3.2"))
    assert not Token.objects.exists()


def test_opening_the_console_login_page_counts_nothing(make_operator, slow_logins):
    make_operator("Owner", "boss")
    pages = [Client(REMOTE_ADDR="10.0.0.1").get(CONSOLE_LOGIN).status_code for _ in range(5)]
    assert pages == [200] * 5
    assert console_login("boss", "operator-pass-123").status_code == 302


# --- a stranger cannot lock an account out --------------------------------------------------


def test_a_strangers_wrong_guesses_do_not_lock_the_owner_out_of_either_door(owner, make_operator):
    """The security tester's catch: ten wrong guesses at alice from one address, and alice's
    right password from hers was a 429 at both doors (the per-username limit counted every
    attempt from anywhere, before the password was checked)."""
    make_operator("Owner", "boss")
    api = [login("owner", "wrong", address="10.9.0.2").status_code for _ in range(10)]
    console = [console_login("boss", "wrong", address="10.9.0.4").status_code for _ in range(10)]

    assert (api, console) == ([400] * 10, [200] * 10)
    assert_throttled(login("owner", "owner-pass-123", address="10.9.0.2"))  # the guesser's
    assert login("owner", "owner-pass-123", address="10.9.0.3").status_code == 200
    assert console_login("boss", "operator-pass-123", address="10.9.0.5").status_code == 302


def test_successful_logins_count_against_no_limit():
    """Eleven logins a minute from one address (an office behind one NAT, a script fetching its
    token) were a 429 at the eleventh: successes counted as guesses."""
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user(username="ada", password="ada-pass-12345")
    get_user_model().objects.create_user(username="boss", password="boss-pass-12345", is_staff=True)

    api = [login("ada", "ada-pass-12345").status_code for _ in range(12)]
    console = [console_login("boss", "boss-pass-12345").status_code for _ in range(12)]

    assert (api, console) == ([200] * 12, [302] * 12)
    # The failures are still counted: ten of them fill the address's minute.
    assert [login("ada", "nope").status_code for _ in range(10)] == [400] * 10
    assert_throttled(login("ada", "ada-pass-12345"))


def test_many_addresses_guessing_one_account_hit_its_total_cap_but_not_its_known_addresses(
    owner, settings
):
    """A guesser with many addresses is held to the account's total of failures; an address
    the account logged in from is not refused for what the others did."""
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = "6/min"
    assert login("owner", "owner-pass-123", address="10.8.0.1").status_code == 200  # home

    guesses = [login("owner", "nope", address=f"10.8.1.{n}").status_code for n in range(6)]

    assert guesses == [400] * 6
    assert_throttled(login("owner", "owner-pass-123", address="10.8.2.1"))  # a new address
    assert_console_refused(console_login("owner", "owner-pass-123", address="10.8.2.2"))
    assert login("owner", "owner-pass-123", address="10.8.0.1").status_code == 200
    assert login("outsider", "nope", address="10.8.2.3").status_code == 400  # another account


def test_a_refused_attempt_takes_no_place_under_the_other_limits(owner, settings):
    """An attempt refused by one limit never had its password checked: it is no failure, and
    the address's count is what it was."""
    settings.PANTHEON_AUTH_RATE_PER_USERNAME = "2/min"
    settings.PANTHEON_AUTH_RATE_PER_IP = "4/min"

    codes = [login("owner", "nope").status_code for _ in range(2)]
    refused = [login("owner", "nope").status_code for _ in range(3)]

    assert (codes, refused) == ([400, 400], [429, 429, 429])
    assert [login(f"other{n}", "nope").status_code for n in range(2)] == [400, 400]
    assert_throttled(login("other9", "nope"))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_thirty_racing_guesses_from_one_address_get_ten_answers(owner):
    """The place is taken before the password is checked and given back only by a success, so
    racing guesses cannot all pass the count as they would if only a failure, once known,
    were recorded."""
    codes = all_at_once(30, lambda n: login("owner", f"nope{n}", address="10.7.0.1").status_code)

    assert sorted(codes) == [400] * 10 + [429] * 20, __import__("collections").Counter(codes)


# --- only a checked password counts, and only a login makes an address known ----------------


def known_address_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pantheon_throttle WHERE key LIKE 'throttle_auth_known_%'"
        )
        return cursor.fetchone()[0]


def test_a_console_login_with_no_password_makes_no_address_known(owner, settings):
    """Django's login form checks no password when one is missing, and says nothing in its
    clean(): each empty password counted as a login, its address spared the account's total
    for 30 days (and a row kept that long, for any username sent)."""
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = "6/min"
    empty = [console_login("owner", "", address=f"10.8.1.{n}").status_code for n in range(3)]
    others = [console_login(f"user{n}", "", address="10.8.1.9").status_code for n in range(5)]

    assert (empty, others) == ([200] * 3, [200] * 5)
    assert known_address_rows() == 0
    guesses = [login("owner", "nope", address=f"10.8.3.{n}").status_code for n in range(6)]
    assert guesses == [400] * 6
    assert_throttled(login("owner", "nope", address="10.8.1.0"))  # not spared the total
    assert_throttled(login("owner", "owner-pass-123", address="10.8.1.1"))


def test_a_console_login_remembers_the_account_it_logged_in(make_operator, settings):
    """The address is remembered for the account the password was checked against."""
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = "3/min"
    make_operator("Owner", "boss")

    assert console_login(" boss ", "operator-pass-123", address="10.8.4.1").status_code == 302
    assert known_address_rows() == 1
    assert [login("boss", "nope", address=f"10.8.5.{n}").status_code for n in range(3)] == [400] * 3
    assert console_login("boss", "operator-pass-123", address="10.8.4.1").status_code == 302
    assert_console_refused(console_login("boss", "operator-pass-123", address="10.8.4.2"))


def test_requests_whose_password_is_never_checked_take_no_place(owner, settings):
    """A GET or OPTIONS at auth/token, a body that is not JSON (415) or is malformed JSON (400):
    each took the address's place and kept it, so three of them refused the right password."""
    settings.PANTHEON_AUTH_RATE_PER_IP = "3/min"
    client = APIClient(REMOTE_ADDR="10.6.0.1")
    form = client.post(
        TOKEN_URL, "username=owner&password=nope", content_type="application/x-www-form-urlencoded"
    )
    codes = [
        form.status_code,
        client.post(TOKEN_URL, "{not json", content_type="application/json").status_code,
        client.get(TOKEN_URL).status_code,
        client.options(TOKEN_URL).status_code,
        client.post(TOKEN_URL, {"username": "owner"}, format="json").status_code,
        client.post(TOKEN_URL, {"password": "nope"}, format="json").status_code,
        client.post(TOKEN_URL, {"username": "owner", "password": ""}, format="json").status_code,
        client.post(TOKEN_URL, {"username": "owner", "password": 7}, format="json").status_code,
    ]

    assert codes == [415, 400, 405, 200, 400, 400, 400, 400]
    assert login("owner", "owner-pass-123", address="10.6.0.1").status_code == 200
    # Failures still count: three wrong passwords fill the address's minute.
    assert [login("owner", "nope", address="10.6.0.1").status_code for _ in range(3)] == [400] * 3
    assert_throttled(login("owner", "owner-pass-123", address="10.6.0.1"))


def test_a_username_without_a_password_does_not_fill_the_accounts_total(owner, settings):
    """Three bodies naming owner with no password, from one address, filled owner's total of
    failures: the owner's right password from a new address was a 429, and the server had
    hashed nothing."""
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = "3/min"
    client = APIClient(REMOTE_ADDR="10.6.1.1")
    codes = [
        client.post(TOKEN_URL, {"username": "owner"}, format="json").status_code for _ in range(3)
    ]

    assert codes == [400] * 3
    assert login("owner", "owner-pass-123", address="10.6.1.2").status_code == 200


def test_a_login_without_a_username_counts_for_nothing(owner, slow_logins):
    """No password is checked without a username: such a body refuses no one after it."""
    codes = [APIClient().post(TOKEN_URL, {}, format="json").status_code for _ in range(4)]

    assert codes == [400] * 4
    assert login("owner", "owner-pass-123").status_code == 200


def test_a_check_that_fails_gives_back_the_places_it_took(rf):
    """A limit that raises (the database, a body that cannot be read) leaves no place taken
    under the limits checked before it."""
    from pantheon.throttling import AuthTokenPerClientThrottle, LoginAttempt

    class Failing(AuthTokenPerClientThrottle):
        def allow_request(self, request, view):
            raise RuntimeError("boom")

    request = rf.post(TOKEN_URL, REMOTE_ADDR="10.6.2.1")
    with pytest.raises(RuntimeError):
        LoginAttempt(request, throttles=[AuthTokenPerClientThrottle(), Failing()]).check()

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(cardinality(hits)), 0) FROM pantheon_throttle")
        assert cursor.fetchone() == (0,)


def test_an_ipv6_address_counts_as_its_64(owner, slow_logins):
    """A host may send from any address of its /64: counted one by one, each address was three
    fresh guesses."""
    codes = [
        login(f"guess{n}", "nope", address=f"2001:db8:0:1::{n + 1:x}").status_code for n in range(3)
    ]

    assert codes == [400] * 3
    assert_throttled(login("owner", "owner-pass-123", address="2001:db8:0:1:abcd:ef01:2:3"))
    assert_throttled(login("owner", "owner-pass-123", address="2001:db8:0:1::1"))
    assert login("owner", "owner-pass-123", address="2001:db8:0:2::1").status_code == 200
    # An IPv4-mapped address is its IPv4 address.
    assert [login("x", "nope", address="10.5.0.1").status_code for _ in range(3)] == [400] * 3
    assert_throttled(login("owner", "owner-pass-123", address="::ffff:10.5.0.1"))


def test_a_known_ipv6_address_is_its_64(owner, settings):
    """A privacy address changes within its /64 every day or so: the account's next login from
    the same network is from a known address."""
    settings.PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = "3/min"
    assert login("owner", "owner-pass-123", address="2001:db8:0:3::1").status_code == 200

    guesses = [login("owner", "nope", address=f"10.5.1.{n}").status_code for n in range(3)]

    assert guesses == [400] * 3
    assert_throttled(login("owner", "owner-pass-123", address="2001:db8:0:4::1"))
    assert login("owner", "owner-pass-123", address="2001:db8:0:3:9f2c:11:7:2").status_code == 200


# --- the rows name accounts and their addresses only through a keyed digest ------------------


def test_login_rows_name_an_account_and_its_address_by_a_keyed_digest(settings):
    """The known-address rows are kept 30 days: a plain SHA-256 of a username (which an
    operator or a leaked dump knows) and an address gives the addresses back by trying the
    2^32 IPv4 ones. Keyed with the SECRET_KEY, the digests cannot be recomputed without it."""
    request = RequestFactory().post("/api/v1/auth/token", REMOTE_ADDR="203.0.113.7")
    plain = hashlib.sha256(b"alice").hexdigest()
    settings.SECRET_KEY = "one-key-" + "x" * 50
    first = (username_digest("alice"), _at_address(username_digest("alice"), request))
    settings.SECRET_KEY = "another-key-" + "y" * 50
    second = (username_digest("alice"), _at_address(username_digest("alice"), request))
    assert plain not in first
    assert first[0] != second[0]
    assert first[1] != second[1]
    assert hashlib.sha256(f"{plain} 203.0.113.7".encode()).hexdigest() not in first


def test_a_retry_that_replays_a_stored_answer_is_never_refused_by_the_rate(
    settings, owner_client, roundtable_session, fake_gateway
):
    """The streaming tester's flaky network: an app retried with its key, as README says, and
    got 429 for the answer it was owed (a replay calls no provider). New turns still count."""
    settings.PANTHEON_TURN_RATE = "1/min"
    url = f"/api/v1/sessions/{roundtable_session.id}/turns"

    def post(message: str, key: str):
        return owner_client.post(url, {"message": message}, format="json", HTTP_IDEMPOTENCY_KEY=key)

    first = post("one", "key-1")
    calls = len(fake_gateway.calls)
    retries = [post("one", "key-1") for _ in range(3)]
    another = post("two", "key-2")

    assert first.status_code == 201
    assert [retry.status_code for retry in retries] == [201, 201, 201]
    assert all(retry["Idempotent-Replayed"] == "true" for retry in retries)
    assert {retry.json()["id"] for retry in retries} == {first.json()["id"]}
    assert len(fake_gateway.calls) == calls
    assert_throttled(another)
    assert Turn.objects.filter(session=roundtable_session).count() == 1


def test_a_retry_whose_key_holds_no_answer_yet_is_under_the_rate(
    settings, owner, owner_client, roundtable_session, fake_gateway
):
    """Only a stored answer passes a spent turn rate. A key whose first request died before it
    answered (running, stale) is taken over by its retry, which runs the turn afresh and calls
    providers again: that retry counts, and is refused as any new turn is."""
    settings.PANTHEON_TURN_RATE = "1/min"
    url = f"/api/v1/sessions/{roundtable_session.id}/turns"
    assert (
        owner_client.post(url, {"message": "one"}, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    ).status_code == 201
    calls = len(fake_gateway.calls)
    long_ago = timezone.now() - timedelta(hours=1)
    IdempotencyKey.objects.create(
        user=owner,
        key="key-2",
        fingerprint=request_fingerprint(method="POST", path=url, body={"message": "two"}),
        created_at=long_ago,
        updated_at=long_ago,
    )

    retry = owner_client.post(url, {"message": "two"}, format="json", HTTP_IDEMPOTENCY_KEY="key-2")

    assert_throttled(retry)
    assert len(fake_gateway.calls) == calls
    assert Turn.objects.filter(session=roundtable_session).count() == 1
