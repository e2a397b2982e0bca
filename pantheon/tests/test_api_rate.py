"""The per-user API rate (`PANTHEON_API_RATE`) and the rate of creates (`PANTHEON_CREATE_RATE`):
one account's flood is answered 429 (coded, with `Retry-After`) and leaves every other account's
requests alone; a turn's post is counted by the turn rate only."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pantheon.testing.concurrency import all_at_once
from pantheon.testing.servers import forget_throttle_history
from pantheon.throttling import ApiRateThrottle
from rooms.models import RoomMode

pytestmark = pytest.mark.django_db

SESSIONS = "/api/v1/sessions"


def assert_throttled(response) -> None:
    """The 429 of every throttle (pantheon.exceptions.throttled_body)."""
    assert response.status_code == 429, response.content
    seconds = int(response["Retry-After"])
    assert seconds >= 1
    assert response.json() == {
        "detail": {
            "code": "throttled",
            "message": f"Too many requests. Retry in {seconds:,} second"
            f"{'' if seconds == 1 else 's'}.",
        }
    }


@pytest.fixture(autouse=True)
def _empty_throttle_tables():
    forget_throttle_history()
    yield
    forget_throttle_history()


def test_the_default_rates_are_ten_requests_a_second_and_two_hundred_creates_an_hour(settings):
    assert settings.PANTHEON_API_RATE == "600/min"
    assert settings.PANTHEON_CREATE_RATE == "200/hour"


def test_a_user_over_the_rate_gets_429_and_another_user_is_unaffected(
    settings, owner_client, outsider_client
):
    settings.PANTHEON_API_RATE = "3/min"

    answers = [owner_client.get(SESSIONS).status_code for _ in range(3)]
    refused = owner_client.get(SESSIONS)

    assert answers == [200, 200, 200]
    assert_throttled(refused)
    # A bucket of 3 refilled at 3 a minute: the next place frees up in 20 seconds.
    assert 19 <= int(refused["Retry-After"]) <= 20
    # Writes count as reads do.
    assert_throttled(owner_client.post("/api/v1/agents", {}, format="json"))
    assert [outsider_client.get(SESSIONS).status_code for _ in range(3)] == [200, 200, 200]


def test_turns_are_not_counted_by_the_api_rate_and_are_posted_when_it_is_spent(
    settings, owner, owner_client, make_agent, make_room, make_session, fake_gateway, post_turn
):
    """A turn has its own rate (PANTHEON_TURN_RATE) and no second statement on its path."""
    settings.PANTHEON_API_RATE = "2/min"
    room = make_room(owner, [make_agent(owner, "ada")], mode=RoomMode.ROUNDTABLE)
    session = make_session(owner, room=room)

    turns = [post_turn(owner_client, session, f"turn {index}").status_code for index in range(3)]
    reads = [owner_client.get(f"{SESSIONS}/{session.id}/turns").status_code for _ in range(2)]

    assert turns == [201, 201, 201]
    assert reads == [200, 200]
    assert_throttled(owner_client.get(f"{SESSIONS}/{session.id}/turns"))
    # Spent: turns still go through, and no statement of the API rate is on their path.
    with CaptureQueriesContext(connection) as queries:
        assert post_turn(owner_client, session, "one more").status_code == 201
    assert not [query for query in queries if "pantheon_rate" in query["sql"]]


def test_creates_have_a_tighter_rate_of_their_own(settings, owner, owner_client, make_agent):
    settings.PANTHEON_CREATE_RATE = "2/hour"
    agent = make_agent(owner, "ada")

    first = owner_client.post(
        "/api/v1/agents",
        {"agent_key": "bob", "name": "Bob", "model_alias": "deepseek"},
        format="json",
    )
    second = owner_client.post("/api/v1/rooms", {"name": "R", "agent_ids": []}, format="json")
    third = owner_client.post(f"/api/v1/agents/{agent.id}/sessions", {}, format="json")

    assert (first.status_code, second.status_code) == (201, 201)
    assert_throttled(third)
    assert 1799 <= int(third["Retry-After"]) <= 1800  # one place in 3600 / 2 seconds
    assert not agent.direct_sessions.exists()
    # Reads and changes are no creates.
    assert owner_client.get("/api/v1/agents").status_code == 200
    assert owner_client.patch(f"/api/v1/agents/{agent.id}", {"name": "A"}).status_code == 200


def test_health_and_logins_are_not_counted(settings, owner):
    """A signed-in user's health checks and logins (sent with their token and their console
    cookie, as a browser or a script that holds both would) leave their API rate untouched:
    with a rate of 1 a minute, their next API request still gets its one place."""
    settings.PANTHEON_API_RATE = "1/min"
    client = APIClient()
    client.force_login(owner)  # the console's cookie
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    login = {"username": "owner", "password": "owner-pass-123"}

    health = [client.get("/api/v1/health").status_code for _ in range(3)]
    logins = [client.post("/api/v1/auth/token", login, format="json") for _ in range(3)]

    assert health == [200, 200, 200]
    assert [response.status_code for response in logins] == [200, 200, 200]
    assert client.get(SESSIONS).status_code == 200  # the bucket's one place was still there
    assert_throttled(client.get(SESSIONS))  # and the rate is in force


def test_the_rate_is_one_row_of_constant_size_per_user(settings, owner, owner_client):
    """A check rewrites one number, whatever the rate: not a history of N timestamps."""
    for _ in range(50):
        assert owner_client.get(SESSIONS).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, pg_column_size(r.*) FROM pantheon_rate AS r")
        rows = cursor.fetchall()
        cursor.execute("SELECT relpersistence FROM pg_class WHERE relname = 'pantheon_rate'")
        assert cursor.fetchone() == ("u",)  # UNLOGGED: its commits wait for no WAL flush
    assert len(rows) == 1
    assert rows[0][0] == f"throttle_api_{owner.pk}"
    assert rows[0][1] < 64


def hit(key: str, rate: str) -> tuple[bool, float | None]:
    throttle = ApiRateThrottle()
    throttle.num_requests, throttle.duration = throttle.parse_rate(rate)
    allowed = throttle._hit(key)
    return allowed, throttle.wait()


def test_a_bucket_refills_at_its_rate():
    with connection.cursor() as cursor:
        # Full again 30 seconds from now, at 3/min (a place every 20 s): 1.5 places are free.
        cursor.execute(
            "INSERT INTO pantheon_rate (key, tat) "
            "SELECT 'k', extract(epoch FROM clock_timestamp()) + 30"
        )
    assert hit("k", "3/min") == (True, None)
    assert hit("k", "3/min") == (False, 10)  # half a place left: the other half in 10 s
    assert hit("other", "3/min") == (True, None)


def test_full_buckets_are_pruned_by_one_check_in_prune_one_in(monkeypatch):
    monkeypatch.setattr("pantheon.throttling.PRUNE_ONE_IN", 1)
    with connection.cursor() as cursor:
        # Full again a minute ago: it says nothing. Full again in a minute: it counts.
        cursor.execute(
            "INSERT INTO pantheon_rate (key, tat) SELECT key, "
            "extract(epoch FROM clock_timestamp()) + shift FROM (VALUES ('full', -60), "
            "('busy', 60)) AS b (key, shift)"
        )

    assert hit("live", "3/min") == (True, None)

    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM pantheon_rate ORDER BY key")
        assert cursor.fetchall() == [("busy",), ("live",)]


def test_no_request_of_the_tests_prunes_by_a_draw(monkeypatch, owner_client):
    """Statement counts are exact in the tests: a request whose draw came up (one in 1000)
    made one more (`DELETE FROM pantheon_rate`), and a query-count test failed in CI for it."""
    monkeypatch.setattr("pantheon.throttling.random.randrange", lambda n: 0)  # every draw

    with CaptureQueriesContext(connection) as queries:
        assert owner_client.get(SESSIONS).status_code == 200

    assert not [query["sql"] for query in queries if "DELETE" in query["sql"]]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_requests_cannot_share_the_last_places():
    results = all_at_once(12, lambda _: hit("race", "5/min")[0])

    assert sorted(results) == [False] * 7 + [True] * 5


def test_the_schema_lists_the_429_of_every_authenticated_operation():
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    assert "429" in paths["/api/v1/sessions"]["get"]["responses"]
    assert "429" in paths["/api/v1/agents/{id}"]["patch"]["responses"]
    assert "429" in paths["/api/v1/sessions/{session_id}/turns"]["get"]["responses"]
    assert "429" not in paths["/api/v1/health"]["get"]["responses"]


def test_signing_out_and_rotating_a_token_are_counted_at_the_api_rates_pace(settings, owner):
    """Neither is a login (no place under the login limits), but each is a request of the
    user's: a loop of rotations filled the account's console history at any speed. The two
    share a bucket of their own (below)."""
    settings.PANTHEON_API_RATE = "2/min"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    rotated = client.post("/api/v1/auth/token/rotate")
    assert rotated.status_code == 200, rotated.content
    client.credentials(HTTP_AUTHORIZATION=f"Token {rotated.json()['token']}")
    assert client.post("/api/v1/auth/token/rotate").status_code == 200
    token = Token.objects.get(user=owner).key
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    assert_throttled(client.post("/api/v1/auth/token/rotate"))
    assert_throttled(client.delete("/api/v1/auth/token"))
    assert Token.objects.get(user=owner).key == token  # neither took effect


def test_a_flood_that_spent_the_api_rate_does_not_keep_a_token_from_being_revoked(settings, owner):
    """A runaway script (or a leaked token's holder) spending the API rate kept its owner from
    signing out or rotating the token: 429 for as long as the flood went on. The two have a
    bucket of their own, at the same pace."""
    settings.PANTHEON_API_RATE = "2/min"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    assert [client.get(SESSIONS).status_code for _ in range(2)] == [200, 200]
    assert_throttled(client.get(SESSIONS))

    rotated = client.post("/api/v1/auth/token/rotate")
    assert rotated.status_code == 200, rotated.content
    client.credentials(HTTP_AUTHORIZATION=f"Token {rotated.json()['token']}")
    assert client.delete("/api/v1/auth/token").status_code == 204
    assert not Token.objects.filter(user=owner).exists()


AGENT = {"agent_key": "bob", "name": "Bob", "model_alias": "deepseek"}


def test_a_create_refused_for_its_body_gives_its_place_back(settings, owner, owner_client):
    """A typo fixed and sent again costs no create: the refused body took a place under the
    create rate (DRF throttles before it validates), and two of them left the user's fixed one a
    429 for half an hour."""
    settings.PANTHEON_CREATE_RATE = "2/hour"
    typos = [owner_client.post("/api/v1/agents", {**AGENT, "model_alias": ""}, format="json")]
    typos += [owner_client.post("/api/v1/rooms", {"agent_ids": []}, format="json")]
    typos += [owner_client.post("/api/v1/rooms/00000000-0000-0000-0000-000000000000/sessions")]

    assert [typo.status_code for typo in typos] == [400, 400, 404]
    assert owner_client.post("/api/v1/agents", AGENT, format="json").status_code == 201
    room = owner_client.post("/api/v1/rooms", {"name": "R", "agent_ids": []}, format="json")
    assert room.status_code == 201
    assert_throttled(owner_client.post("/api/v1/rooms", {"name": "S", "agent_ids": []}))


def test_a_create_past_a_bound_gives_its_place_back(settings, owner, owner_client, make_agent):
    settings.PANTHEON_CREATE_RATE = "1/hour"
    settings.PANTHEON_MAX_AGENTS_PER_USER = 1
    agent = make_agent(owner, "ada")

    refused = [owner_client.post("/api/v1/agents", AGENT, format="json") for _ in range(3)]
    assert [answer.status_code for answer in refused] == [409, 409, 409]
    assert owner_client.delete(f"/api/v1/agents/{agent.id}").status_code == 204
    assert owner_client.post("/api/v1/agents", AGENT, format="json").status_code == 201


def test_invalid_bodies_are_still_counted_by_the_api_rate(settings, owner, owner_client):
    settings.PANTHEON_API_RATE = "3/min"
    settings.PANTHEON_CREATE_RATE = "1/hour"
    invalid = [owner_client.post("/api/v1/agents", {}, format="json") for _ in range(3)]

    assert [answer.status_code for answer in invalid] == [400, 400, 400]
    assert_throttled(owner_client.post("/api/v1/agents", {}, format="json"))
    # The create the API rate refused took no create: once the API rate refills, it passes.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pantheon_rate SET tat = 0 WHERE key LIKE 'throttle_api_%%'")
    assert owner_client.post("/api/v1/agents", AGENT, format="json").status_code == 201
