"""Bounds on what one account owns (`PANTHEON_MAX_AGENTS_PER_USER`, `..._ROOMS_...`,
`..._SESSIONS_...`): the create past one is a 409 with a code and the bound, on every path that
creates (agents, rooms, room sessions, direct sessions), and a delete makes room again. Two
creates at the bound racing on PostgreSQL cannot both pass."""

import pytest
from rest_framework.test import APIClient

from pantheon.testing.concurrency import all_at_once
from pantheon.testing.servers import forget_throttle_history
from rooms.models import Agent, Room
from sessions_app.models import Session

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_rates(settings):
    settings.PANTHEON_CREATE_RATE = ""
    settings.PANTHEON_API_RATE = ""


def new_agent(client, key: str):
    return client.post(
        "/api/v1/agents", {"agent_key": key, "name": key, "model_alias": "deepseek"}, format="json"
    )


def new_room(client, name: str = "Room"):
    return client.post("/api/v1/rooms", {"name": name, "agent_ids": []}, format="json")


def assert_refused(response, kind: str, limit: int) -> None:
    assert response.status_code == 409, response.content
    assert "Retry-After" not in response
    detail = response.json()["detail"]
    assert detail["code"] == f"{kind}_limit_reached"
    assert detail["limit"] == limit
    assert detail["message"].startswith(f"You already have {limit} {kind}s, the most one")


def test_the_default_bounds(settings):
    assert settings.PANTHEON_MAX_AGENTS_PER_USER == 200
    assert settings.PANTHEON_MAX_ROOMS_PER_USER == 200
    assert settings.PANTHEON_MAX_SESSIONS_PER_USER == 10_000


def test_agents_past_the_bound_are_refused_and_a_delete_makes_room(
    settings, owner, owner_client, outsider_client
):
    settings.PANTHEON_MAX_AGENTS_PER_USER = 2
    made = [new_agent(owner_client, key) for key in ("ada", "bob")]
    refused = new_agent(owner_client, "cyd")

    assert [response.status_code for response in made] == [201, 201]
    assert_refused(refused, "agent", 2)
    assert Agent.objects.filter(owner=owner).count() == 2
    assert new_agent(outsider_client, "cyd").status_code == 201  # each account its own
    assert owner_client.delete(f"/api/v1/agents/{made[0].json()['id']}").status_code == 204
    assert new_agent(owner_client, "cyd").status_code == 201


def test_rooms_past_the_bound_are_refused_and_a_deleted_room_makes_room(
    settings, owner, owner_client
):
    settings.PANTHEON_MAX_ROOMS_PER_USER = 2
    made = [new_room(owner_client, name) for name in ("one", "two")]

    assert [response.status_code for response in made] == [201, 201]
    assert_refused(new_room(owner_client, "three"), "room", 2)
    assert Room.objects.filter(owner=owner).count() == 2
    assert owner_client.delete(f"/api/v1/rooms/{made[0].json()['id']}").status_code == 204
    assert new_room(owner_client, "three").status_code == 201


def test_sessions_are_bounded_on_both_paths_and_deletes_make_room(
    settings, owner, owner_client, make_agent, make_room
):
    settings.PANTHEON_MAX_SESSIONS_PER_USER = 3
    agent = make_agent(owner, "ada")
    room = make_room(owner, [agent])
    in_room = f"/api/v1/rooms/{room.id}/sessions"
    direct = f"/api/v1/agents/{agent.id}/sessions"

    made = [owner_client.post(url, {}, format="json") for url in (in_room, in_room, direct)]

    assert [response.status_code for response in made] == [201, 201, 201]
    assert_refused(owner_client.post(in_room, {}, format="json"), "session", 3)
    assert_refused(owner_client.post(direct, {}, format="json"), "session", 3)
    assert Session.objects.filter(started_by=owner).count() == 3
    # A deleted session makes room; so does a deleted room, for the sessions in it.
    direct_id = made[2].json()["id"]
    assert owner_client.delete(f"/api/v1/sessions/{direct_id}").status_code == 204
    assert owner_client.post(direct, {}, format="json").status_code == 201
    assert_refused(owner_client.post(direct, {}, format="json"), "session", 3)
    assert owner_client.delete(f"/api/v1/rooms/{room.id}").status_code == 204
    assert owner_client.post(direct, {}, format="json").status_code == 201
    assert owner_client.post(direct, {}, format="json").status_code == 201


def test_a_bound_of_zero_is_no_bound(settings, owner_client):
    settings.PANTHEON_MAX_ROOMS_PER_USER = 0
    assert [new_room(owner_client).status_code for _ in range(3)] == [201] * 3


def test_the_schema_lists_the_409_of_each_create():
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    for path, code in (
        ("/api/v1/agents", "agent_limit_reached"),
        ("/api/v1/rooms", "room_limit_reached"),
        ("/api/v1/rooms/{room_id}/sessions", "session_limit_reached"),
        ("/api/v1/agents/{agent_id}/sessions", "session_limit_reached"),
    ):
        responses = paths[path]["post"]["responses"]
        assert code in responses["409"]["description"], path
        assert "201" in responses and "429" in responses, path


def racing(count: int, create) -> list[int]:
    """`count` creates let go at once, each on its own thread and connection: their statuses."""
    return sorted(all_at_once(count, lambda index: create(index).status_code))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_racing_creates_at_the_bound_cannot_all_pass(settings, owner, make_agent, make_room):
    """Twelve creates at once of each kind against a bound of 5 (each thread its own client
    and connection): exactly 5 pass. Counted, then inserted, without a lock, several saw 4."""
    settings.PANTHEON_MAX_AGENTS_PER_USER = 6  # the direct sessions' agent, then 5 more
    settings.PANTHEON_MAX_ROOMS_PER_USER = 5
    settings.PANTHEON_MAX_SESSIONS_PER_USER = 5
    forget_throttle_history()
    agent = make_agent(owner, "ada")
    room_for_sessions = make_room(owner, [agent])
    settings.PANTHEON_MAX_ROOMS_PER_USER = 6  # that room, then 5 more

    def client() -> APIClient:
        made = APIClient()
        made.force_authenticate(owner)
        return made

    agents = racing(12, lambda index: new_agent(client(), f"agent_{index}"))
    rooms = racing(12, lambda index: new_room(client(), f"room {index}"))
    sessions = racing(
        12,
        lambda index: client().post(
            f"/api/v1/rooms/{room_for_sessions.id}/sessions"
            if index % 2
            else f"/api/v1/agents/{agent.id}/sessions",
            {},
            format="json",
        ),
    )

    assert agents == [201] * 5 + [409] * 7
    assert rooms == [201] * 5 + [409] * 7
    assert sessions == [201] * 5 + [409] * 7
    assert Agent.objects.filter(owner=owner).count() == 6
    assert Room.objects.filter(owner=owner).count() == 6
    assert Session.objects.filter(started_by=owner).count() == 5


def test_a_session_create_counts_no_deleted_session(settings, owner, owner_client, make_agent):
    """The count a session create makes under the lock of the user's row read every deleted
    session of the user's too (18 ms with 100,000 deleted, not yet purged, each create of the
    account waiting behind it): it reads the live ones only (`session_user_alive`)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    settings.PANTHEON_MAX_SESSIONS_PER_USER = 10_000
    agent = make_agent(owner, "ada")
    Session.objects.bulk_create(
        Session(started_by=owner, agent=agent, deleted_at=timezone.now()) for _ in range(3000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sessions_app_session")
    with CaptureQueriesContext(connection) as queries:
        made = owner_client.post(f"/api/v1/agents/{agent.id}/sessions", {}, format="json")
    assert made.status_code == 201, made.content
    [count] = [q["sql"] for q in queries if q["sql"].startswith("SELECT COUNT(*)")]

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {count}")
        plan = cursor.fetchone()[0]

    def read_and_dropped(node) -> int:
        return node.get("Rows Removed by Filter", 0) + sum(
            read_and_dropped(child) for child in node.get("Plans", [])
        )

    assert read_and_dropped(plan[0]["Plan"]) == 0, plan
