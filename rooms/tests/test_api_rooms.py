"""`GET, POST rooms`, `GET, PATCH, DELETE rooms/{id}`, `PUT rooms/{id}/mode` and `/agents`."""

import uuid

import pytest
from django.utils import timezone

from rooms.models import Room, RoomAgent, RoomMode

pytestmark = pytest.mark.django_db

ROOMS_URL = "/api/v1/rooms"


def room_url(room_or_id, suffix: str = "") -> str:
    room_id = getattr(room_or_id, "id", room_or_id)
    return f"{ROOMS_URL}/{room_id}{suffix}"


def ids(*agents) -> list[str]:
    return [str(agent.id) for agent in agents]


def seat_keys(body: dict) -> list[str]:
    return [seat["agent_key"] for seat in body["agents"]]


def roster_in_db(room: Room) -> list[str]:
    return list(
        RoomAgent.objects.filter(room=room)
        .order_by("position")
        .values_list("agent__agent_key", flat=True)
    )


@pytest.fixture
def trio(owner, make_agent):
    """Three agents of the owner: ada, linus, grace."""
    return [make_agent(owner, key) for key in ("ada", "linus", "grace")]


# --- create ---------------------------------------------------------------------------------


def test_create_seats_the_agents_in_the_given_order(owner, owner_client, trio):
    ada, linus, grace = trio

    response = owner_client.post(
        ROOMS_URL,
        {
            "name": "Design review",
            "goal": "Ship the design.",
            "mode": "roundtable",
            "agent_ids": ids(grace, ada, linus),
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "Design review"
    assert body["goal"] == "Ship the design."
    assert body["current_mode"] == "roundtable"
    assert body["pending_mode"] is None
    assert "mode" not in body and "agent_ids" not in body
    assert body["agents"] == [
        {
            "id": str(agent.id),
            "agent_key": agent.agent_key,
            "name": agent.name,
            "model_alias": "deepseek",
            "position": position,
        }
        for position, agent in enumerate([grace, ada, linus])
    ]
    room = Room.objects.get(pk=body["id"])
    assert room.owner == owner
    assert room.deleted_at is None
    assert roster_in_db(room) == ["grace", "ada", "linus"]


def test_create_with_only_a_name_is_an_empty_manual_room(owner_client):
    response = owner_client.post(ROOMS_URL, {"name": "Quiet"})

    assert response.status_code == 201
    body = response.json()
    assert (body["goal"], body["current_mode"], body["agents"]) == ("", "manual", [])


def test_create_stores_mode_tag_as_manual(owner_client):
    response = owner_client.post(ROOMS_URL, {"name": "Tags", "mode": "tag"})

    assert response.status_code == 201
    assert response.json()["current_mode"] == "manual"
    assert Room.objects.get(pk=response.json()["id"]).current_mode == RoomMode.MANUAL


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"current_mode": "roundtable"}, "current_mode"),
        ({"mode": "orchestrator", "current_mode": "roundtable"}, "current_mode"),
        ({"pending_mode": "roundtable"}, "pending_mode"),
    ],
)
def test_create_refuses_a_mode_sent_as_the_answer_names_it(owner_client, body, field):
    """A room's body names its mode `current_mode`: sent on a create, it was ignored, and the
    room made in manual mode; it is refused, naming `mode`, as PATCH names its operation."""
    response = owner_client.post(ROOMS_URL, {"name": "Panel", **body}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {field}
    assert "`mode`" in response.json()[field][0]
    assert not Room.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"current_mode": "manual", "pending_mode": None},
        {"mode": "tag", "current_mode": "manual"},
        {"mode": "roundtable", "current_mode": "roundtable", "pending_mode": None},
    ],
)
def test_create_takes_the_modes_of_a_body_as_it_would_answer(owner_client, body):
    response = owner_client.post(ROOMS_URL, {"name": "Panel", **body}, format="json")

    assert response.status_code == 201
    assert response.json()["current_mode"] == body["current_mode"]


def test_create_refuses_seats_sent_as_the_answer_names_them(owner_client, trio):
    """A room read and posted again as a new one (a copy) carries its seats as `agents`: the
    new room was made with none, without a word. Its roster is `agent_ids`; seats sent as the
    new room will have them (or none) are no change."""
    ada, linus, _ = trio
    seats = [{"id": str(agent.id), "agent_key": agent.agent_key} for agent in (ada, linus)]

    copied = owner_client.post(ROOMS_URL, {"name": "Copy", "agents": seats}, format="json")
    with_ids = owner_client.post(
        ROOMS_URL, {"name": "Copy", "agents": seats, "agent_ids": ids(ada, linus)}, format="json"
    )
    empty = owner_client.post(ROOMS_URL, {"name": "Empty", "agents": []}, format="json")

    assert copied.status_code == 400
    assert copied.json() == {"agents": ["Seat a new room's agents with `agent_ids`."]}
    assert with_ids.status_code == 201, with_ids.json()
    assert seat_keys(with_ids.json()) == ["ada", "linus"]
    assert (empty.status_code, empty.json()["agents"]) == (201, [])
    assert Room.objects.count() == 2


def test_create_rejects_an_unknown_mode(owner_client):
    response = owner_client.post(ROOMS_URL, {"name": "Chaos", "mode": "chaos"})

    assert response.status_code == 400
    assert set(response.json()) == {"mode"}
    assert not Room.objects.exists()


def test_create_requires_a_name(owner_client):
    response = owner_client.post(ROOMS_URL, {"goal": "No name"})

    assert response.status_code == 400
    assert set(response.json()) == {"name"}


def test_create_rejects_another_users_agent_and_creates_nothing(
    outsider, owner_client, trio, make_agent
):
    theirs = make_agent(outsider, "spy")

    response = owner_client.post(
        ROOMS_URL, {"name": "Mixed", "agent_ids": [*ids(trio[0]), str(theirs.id)]}
    )

    assert response.status_code == 400
    assert response.json() == {"agent_ids": [f"Unknown agent: {theirs.id}"]}
    assert not Room.objects.exists()
    assert not RoomAgent.objects.exists()


def test_create_rejects_an_unknown_agent_id(owner_client):
    missing = uuid.uuid4()

    response = owner_client.post(ROOMS_URL, {"name": "Ghost", "agent_ids": [str(missing)]})

    assert response.status_code == 400
    assert response.json() == {"agent_ids": [f"Unknown agent: {missing}"]}


@pytest.mark.parametrize("value", [1, 1.5, True, {"id": "x"}])
def test_an_agent_id_must_be_written_as_a_uuid_string(owner_client, value):
    """An integer was read as a UUID: `1` was refused as "Unknown agent: 00000000-…-0001"."""
    response = owner_client.post(ROOMS_URL, {"name": "Ints", "agent_ids": [value]}, format="json")

    assert response.status_code == 400
    assert response.json() == {"agent_ids": {"0": ["Must be a valid UUID."]}}


def test_create_rejects_an_agent_seated_twice(owner_client, trio):
    ada = trio[0]

    response = owner_client.post(ROOMS_URL, {"name": "Echo", "agent_ids": ids(ada, ada)})

    assert response.status_code == 400
    assert response.json() == {"agent_ids": ["An agent can take only one seat in a room."]}
    assert not Room.objects.exists()


def test_create_rejects_agent_ids_that_are_not_uuids(owner_client):
    response = owner_client.post(ROOMS_URL, {"name": "Bad ids", "agent_ids": ["ada"]})

    assert response.status_code == 400
    assert set(response.json()) == {"agent_ids"}


# --- read -----------------------------------------------------------------------------------


def test_list_shows_only_the_callers_live_rooms(owner, outsider, owner_client, make_room):
    first = make_room(owner, name="First")
    make_room(owner, name="Gone", deleted_at=timezone.now())
    second = make_room(owner, name="Second")
    make_room(outsider, name="Theirs")

    response = owner_client.get(ROOMS_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [room["id"] for room in body["results"]] == [str(first.id), str(second.id)]


def test_get_returns_the_room_with_its_seats(owner, owner_client, trio, make_room):
    room = make_room(owner, agents=trio, mode=RoomMode.ORCHESTRATOR, goal="Decide.")

    response = owner_client.get(room_url(room))

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(room.id)
    assert (body["goal"], body["current_mode"], body["pending_mode"]) == (
        "Decide.",
        "orchestrator",
        None,
    )
    assert seat_keys(body) == ["ada", "linus", "grace"]
    assert [seat["position"] for seat in body["agents"]] == [0, 1, 2]


@pytest.mark.parametrize("missing_id", ["5f0c9a5e-2d1b-4c8e-9a57-3e6f1b2c4d70", "not-a-uuid"])
def test_get_an_unknown_room_is_404(owner_client, missing_id):
    assert owner_client.get(room_url(missing_id)).status_code == 404


# --- update ---------------------------------------------------------------------------------


def test_patch_changes_name_and_goal(owner, owner_client, trio, make_room):
    room = make_room(owner, agents=trio, name="Old", goal="Old goal")

    response = owner_client.patch(room_url(room), {"name": "New", "goal": "New goal"})

    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["goal"]) == ("New", "New goal")
    assert seat_keys(body) == ["ada", "linus", "grace"]
    room.refresh_from_db()
    assert (room.name, room.goal) == ("New", "New goal")


@pytest.mark.parametrize(
    "change, field, endpoint",
    [
        ({"mode": "roundtable"}, "mode", "PUT rooms/{id}/mode"),
        ({"agent_ids": []}, "agent_ids", "PUT rooms/{id}/agents"),
        ({"current_mode": "roundtable"}, "current_mode", "PUT rooms/{id}/mode"),
        ({"pending_mode": "orchestrator"}, "pending_mode", "PUT rooms/{id}/mode"),
    ],
)
def test_patch_refuses_mode_and_roster_changes(
    owner, owner_client, trio, make_room, change, field, endpoint
):
    room = make_room(owner, agents=trio, name="Keep")

    response = owner_client.patch(room_url(room), {"name": "Changed", **change})

    assert response.status_code == 400
    assert response.json() == {field: [f"Change this with {endpoint}."]}
    room.refresh_from_db()
    assert (room.name, room.current_mode, room.pending_mode) == ("Keep", "manual", None)
    assert roster_in_db(room) == ["ada", "linus", "grace"]


def test_patch_takes_back_the_body_it_answered_with(owner, owner_client, trio, make_room):
    # A client that changes the name in the room's body and sends it all back: the modes and
    # the other read-only fields, unchanged, are no change of mode.
    room = make_room(owner, agents=trio, name="Old")
    body = owner_client.get(room_url(room)).json()

    response = owner_client.patch(room_url(room), {**body, "name": "New"}, format="json")

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["current_mode"]) == ("New", "manual")


def test_patch_rejects_a_blank_name(owner, owner_client, make_room):
    room = make_room(owner, name="Keep")

    response = owner_client.patch(room_url(room), {"name": ""})

    assert response.status_code == 400
    assert set(response.json()) == {"name"}


def test_put_on_the_room_itself_is_not_allowed(owner, owner_client, make_room):
    room = make_room(owner, name="Keep")

    response = owner_client.put(room_url(room), {"name": "Replaced", "goal": ""})

    assert response.status_code == 405
    room.refresh_from_db()
    assert room.name == "Keep"


# --- mode -----------------------------------------------------------------------------------


def test_put_mode_queues_a_pending_mode(owner, owner_client, make_room):
    room = make_room(owner, mode=RoomMode.MANUAL)

    response = owner_client.put(room_url(room, "/mode"), {"mode": "orchestrator"})

    assert response.status_code == 200
    assert response.json()["current_mode"] == "manual"
    assert response.json()["pending_mode"] == "orchestrator"
    room.refresh_from_db()
    assert (room.current_mode, room.pending_mode) == ("manual", "orchestrator")


def test_put_mode_back_to_the_current_mode_clears_the_pending_mode(owner, owner_client, make_room):
    room = make_room(owner, mode=RoomMode.MANUAL, pending_mode=RoomMode.ROUNDTABLE)

    response = owner_client.put(room_url(room, "/mode"), {"mode": "tag"})

    assert response.status_code == 200
    assert (response.json()["current_mode"], response.json()["pending_mode"]) == ("manual", None)
    room.refresh_from_db()
    assert room.pending_mode is None


def test_put_mode_tag_queues_manual(owner, owner_client, make_room):
    room = make_room(owner, mode=RoomMode.ROUNDTABLE)

    response = owner_client.put(room_url(room, "/mode"), {"mode": "tag"})

    assert response.status_code == 200
    room.refresh_from_db()
    assert (room.current_mode, room.pending_mode) == ("roundtable", "manual")


@pytest.mark.parametrize("body", [{"mode": "chaos"}, {}])
def test_put_mode_rejects_bad_input(owner, owner_client, make_room, body):
    room = make_room(owner, mode=RoomMode.MANUAL)

    response = owner_client.put(room_url(room, "/mode"), body)

    assert response.status_code == 400
    assert set(response.json()) == {"mode"}
    room.refresh_from_db()
    assert room.pending_mode is None


# --- roster ---------------------------------------------------------------------------------


def test_put_agents_replaces_the_roster_and_its_order(owner, owner_client, trio, make_room):
    ada, linus, grace = trio
    room = make_room(owner, agents=[ada, linus])

    response = owner_client.put(room_url(room, "/agents"), {"agent_ids": ids(grace, ada)})

    assert response.status_code == 200
    assert seat_keys(response.json()) == ["grace", "ada"]
    assert [seat["position"] for seat in response.json()["agents"]] == [0, 1]
    assert roster_in_db(room) == ["grace", "ada"]


def test_put_agents_with_an_empty_list_empties_the_room(owner, owner_client, trio, make_room):
    room = make_room(owner, agents=trio)

    response = owner_client.put(room_url(room, "/agents"), {"agent_ids": []})

    assert response.status_code == 200
    assert response.json()["agents"] == []
    assert roster_in_db(room) == []


@pytest.mark.parametrize("problem", ["another_users", "duplicate", "unknown", "missing_field"])
def test_put_agents_rejects_bad_input_and_keeps_the_roster(
    owner, outsider, owner_client, trio, make_room, make_agent, problem
):
    ada, linus, _ = trio
    room = make_room(owner, agents=[ada, linus])
    body = {
        "another_users": {"agent_ids": ids(make_agent(outsider, "spy"))},
        "duplicate": {"agent_ids": ids(linus, linus)},
        "unknown": {"agent_ids": [str(uuid.uuid4())]},
        "missing_field": {},
    }[problem]

    response = owner_client.put(room_url(room, "/agents"), body)

    assert response.status_code == 400
    assert set(response.json()) == {"agent_ids"}
    assert roster_in_db(room) == ["ada", "linus"]


# --- delete ---------------------------------------------------------------------------------


def test_delete_is_a_soft_delete(owner, owner_client, trio, make_room, make_session):
    room = make_room(owner, agents=trio)
    session = make_session(owner, room=room)

    response = owner_client.delete(room_url(room))

    assert response.status_code == 204
    room.refresh_from_db()
    assert room.deleted_at is not None
    assert RoomAgent.objects.filter(room=room).count() == 3
    assert owner_client.get(room_url(room)).status_code == 404
    assert owner_client.get(ROOMS_URL).json()["count"] == 0
    assert owner_client.get(f"/api/v1/sessions/{session.id}").status_code == 404
    assert owner_client.get(room_url(room, "/sessions")).status_code == 404


def test_a_deleted_room_refuses_every_change(owner, owner_client, trio, make_room):
    room = make_room(owner, agents=trio, name="Gone", deleted_at=timezone.now())

    assert owner_client.patch(room_url(room), {"name": "Back"}).status_code == 404
    assert owner_client.put(room_url(room, "/mode"), {"mode": "roundtable"}).status_code == 404
    assert owner_client.put(room_url(room, "/agents"), {"agent_ids": []}).status_code == 404
    assert owner_client.delete(room_url(room)).status_code == 404
    room.refresh_from_db()
    assert (room.name, room.pending_mode) == ("Gone", None)
    assert roster_in_db(room) == ["ada", "linus", "grace"]


# --- another user's room, anonymous ---------------------------------------------------------


@pytest.mark.parametrize(
    "method, suffix, body",
    [
        ("get", "", None),
        ("patch", "", {"name": "Mine now"}),
        ("delete", "", None),
        ("put", "/mode", {"mode": "roundtable"}),
        ("put", "/agents", {"agent_ids": []}),
    ],
)
def test_another_users_room_is_404(
    outsider, owner_client, make_agent, make_room, method, suffix, body
):
    theirs = make_room(outsider, agents=[make_agent(outsider, "ada")], name="Theirs")

    response = getattr(owner_client, method)(room_url(theirs, suffix), body)

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert (theirs.name, theirs.pending_mode, theirs.deleted_at) == ("Theirs", None, None)
    assert roster_in_db(theirs) == ["ada"]


@pytest.mark.parametrize(
    "method, suffix",
    [
        ("get", None),
        ("post", None),
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("put", "/mode"),
        ("put", "/agents"),
    ],
)
def test_anonymous_is_401(owner, anon_client, make_room, method, suffix):
    room = make_room(owner, name="Keep")
    url = ROOMS_URL if suffix is None else room_url(room, suffix)

    response = getattr(anon_client, method)(url, {"name": "Anon", "mode": "roundtable"})

    assert response.status_code == 401
    room.refresh_from_db()
    assert (room.name, room.pending_mode, room.deleted_at) == ("Keep", None, None)
    assert Room.objects.count() == 1


def test_a_mode_change_reads_the_room_under_its_lock_not_as_first_read(owner, make_room):
    """A turn promotes the pending mode between this request's read and its write: the change
    is decided against the mode in force, not lost."""
    from rooms.services import room_set_mode

    room = make_room(owner, mode=RoomMode.MANUAL, pending_mode=RoomMode.ROUNDTABLE)
    read_before = Room.objects.get(pk=room.pk)
    Room.objects.filter(pk=room.pk).update(current_mode=RoomMode.ROUNDTABLE, pending_mode=None)

    room_set_mode(room=read_before, mode=RoomMode.MANUAL)

    room.refresh_from_db()
    assert (room.current_mode, room.pending_mode) == (RoomMode.ROUNDTABLE, RoomMode.MANUAL)
