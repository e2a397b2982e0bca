"""A room's `updated_at` moves with every change of its seats, as a roster's change
(`PUT rooms/{id}/agents`) moves it: on the console's room page and seat pages (added, moved,
deleted), and when an agent's delete numbers the seats of its rooms again. It moved with the
roster only, and a room changed there read as untouched since. Once per change, in the
transaction that changes the seats; the rooms whose seats stay as they were keep theirs, and
a page saved as it is, room or seat, moves nothing."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pantheon.testing.admin import client_for, posted_back
from rooms import services
from rooms.models import Agent, Room, RoomAgent
from rooms.tests.test_admin_seats import room_form, seats_now

pytestmark = pytest.mark.django_db

LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def rooms(owner, make_agent, make_room) -> dict[str, Room]:
    """Research seats ada and linus, Review bo, Quiet linus; all last changed long ago."""
    ada, linus, bo = (make_agent(owner, key) for key in ("ada", "linus", "bo"))
    made = {
        "Research": make_room(owner, [ada, linus], name="Research"),
        "Review": make_room(owner, [bo], name="Review"),
        "Quiet": make_room(owner, [linus], name="Quiet"),
    }
    Room.objects.update(updated_at=LONG_AGO)
    return made


def moved(rooms: dict[str, Room]) -> set[str]:
    """The names of the rooms whose `updated_at` moved since long ago."""
    stamps = dict(
        Room.objects.filter(pk__in=[room.pk for room in rooms.values()]).values_list(
            "name", "updated_at"
        )
    )
    assert all(stamp >= LONG_AGO for stamp in stamps.values())
    return {name for name, stamp in stamps.items() if stamp > LONG_AGO}


def room_updates(queries: CaptureQueriesContext) -> int:
    return sum(query["sql"].startswith('UPDATE "rooms_room"') for query in queries)


def seat(room: Room, key: str) -> RoomAgent:
    return RoomAgent.objects.get(room=room, agent__agent_key=key)


def seat_page(view: str, *args) -> str:
    return reverse(f"admin:rooms_roomagent_{view}", args=args)


def add_cy(rooms, owner, make_agent):
    cy = make_agent(owner, "cy")
    return seat_page("add"), {"room": rooms["Research"].pk, "agent": cy.pk, "position": 0}


def move_ada_last(rooms, owner, make_agent):
    ada = seat(rooms["Research"], "ada")
    form = {"room": rooms["Research"].pk, "agent": ada.agent.pk, "position": 5}
    return seat_page("change", ada.pk), form


def move_ada_to_review(rooms, owner, make_agent):
    ada = seat(rooms["Research"], "ada")
    form = {"room": rooms["Review"].pk, "agent": ada.agent.pk, "position": 0}
    return seat_page("change", ada.pk), form


def delete_ada(rooms, owner, make_agent):
    return seat_page("delete", seat(rooms["Research"], "ada").pk), {"post": "yes"}


def delete_from_the_list(rooms, owner, make_agent):
    selected = [seat(rooms["Research"], "ada").pk, seat(rooms["Review"], "bo").pk]
    action = {"action": "delete_selected", "_selected_action": selected, "post": "yes"}
    return seat_page("changelist"), action


@pytest.mark.parametrize(
    ("change", "changed", "seated"),
    [
        (add_cy, {"Research"}, [("cy", 0), ("ada", 1), ("linus", 2)]),
        (move_ada_last, {"Research"}, [("linus", 0), ("ada", 1)]),
        (move_ada_to_review, {"Research", "Review"}, [("linus", 0)]),
        (delete_ada, {"Research"}, [("linus", 0)]),
        (delete_from_the_list, {"Research", "Review"}, [("linus", 0)]),
    ],
    ids=["added", "moved", "moved-to-another-room", "deleted", "deleted-from-the-list"],
)
def test_a_seat_changed_on_its_own_page_moves_its_rooms_updated_at(
    rooms, owner, make_agent, staff, change, changed, seated
):
    page, form = change(rooms, owner, make_agent)

    with CaptureQueriesContext(connection) as queries:
        response = client_for(staff).post(page, form)

    assert response.status_code == 302
    assert seats_now(rooms["Research"]) == seated
    assert moved(rooms) == changed
    assert room_updates(queries) == 1  # every room changed in one statement, once


def test_seats_changed_on_the_room_page_move_its_updated_at(rooms, owner, make_agent, staff):
    research = rooms["Research"]
    ada, linus = seat(research, "ada"), seat(research, "linus")
    seats = [(linus.agent, 0, linus.pk), (ada.agent, 1, ada.pk), (make_agent(owner, "cy"), 2, None)]

    with CaptureQueriesContext(connection) as queries:
        response = client_for(staff).post(
            reverse("admin:rooms_room_change", args=[research.pk]),
            room_form(research, seats, initial=2),
        )

    assert response.status_code == 302
    assert seats_now(research) == [("linus", 0), ("ada", 1), ("cy", 2)]
    assert moved(rooms) == {"Research"}
    assert room_updates(queries) == 1  # the page's save of the room


def test_a_room_page_refused_for_its_seats_leaves_updated_at(rooms, owner, make_agent, staff):
    """Refused because an agent it seats was seated meanwhile: nothing saved, nothing moved."""
    research = rooms["Research"]
    ada, linus = seat(research, "ada"), seat(research, "linus")
    cy = make_agent(owner, "cy")
    RoomAgent.objects.create(room=research, agent=cy, position=2)
    seats = [(ada.agent, 0, ada.pk), (linus.agent, 1, linus.pk), (cy, 2, None)]

    response = client_for(staff).post(
        reverse("admin:rooms_room_change", args=[research.pk]),
        room_form(research, seats, initial=2),
    )

    assert response.status_code == 200
    assert "was seated in this room since this page was opened" in response.content.decode()
    assert moved(rooms) == set()


def test_deleting_an_agent_moves_the_updated_at_of_the_rooms_it_sat_in(rooms, owner_client):
    """Its seats leave, and the seats after them are numbered again: the rooms it sat in
    changed, the API's room body says when."""
    ada = seat(rooms["Research"], "ada").agent
    before = {
        name: owner_client.get(f"/api/v1/rooms/{room.pk}").json()["updated_at"]
        for name, room in rooms.items()
    }

    response = owner_client.delete(f"/api/v1/agents/{ada.pk}")

    assert response.status_code == 204
    assert seats_now(rooms["Research"]) == [("linus", 0)]
    after = {
        name: owner_client.get(f"/api/v1/rooms/{room.pk}").json()["updated_at"]
        for name, room in rooms.items()
    }
    assert after["Research"] > before["Research"]
    assert (after["Review"], after["Quiet"]) == (before["Review"], before["Quiet"])
    assert moved(rooms) == {"Research"}


def test_deleting_an_agent_seated_in_two_rooms_moves_both_once(rooms):
    linus = seat(rooms["Research"], "linus").agent

    # The service the API's DELETE calls (the API runs it on another thread's connection).
    with CaptureQueriesContext(connection) as queries:
        services.agent_delete(agent=linus)

    assert seats_now(rooms["Research"]) == [("ada", 0)]
    assert moved(rooms) == {"Research", "Quiet"}
    assert room_updates(queries) == 1


def page_saved(client, page: str, form_id: str, **typed):
    """Open the page, and save its form as a browser does, with `typed` typed over it."""
    shown = client.get(page)
    assert shown.status_code == 200
    return client.post(page, posted_back(shown.content.decode(), form_id) | typed)


@pytest.mark.parametrize("goal", ["", "Find the sources.\nCheck each one twice."])
def test_a_room_page_saved_as_it_is_leaves_updated_at(rooms, staff, goal):
    """Saved unchanged, the page wrote the room's fields and moved its `updated_at`: the API
    and the console said it changed when nothing did. A goal of several lines comes back from
    the browser with its lines ended by CR LF: the same lines."""
    research = rooms["Research"]
    Room.objects.filter(pk=research.pk).update(goal=goal)
    seated = seats_now(research)

    with CaptureQueriesContext(connection) as queries:
        response = page_saved(
            client_for(staff), reverse("admin:rooms_room_change", args=[research.pk]), "room_form"
        )

    assert response.status_code == 302
    assert moved(rooms) == set()
    assert room_updates(queries) == 0
    assert not [query for query in queries if query["sql"].startswith('INSERT INTO "rooms_')]
    assert seats_now(research) == seated
    assert Room.objects.get(pk=research.pk).goal == goal


def test_a_seat_page_saved_as_it_is_leaves_its_rooms_updated_at(rooms, staff):
    ada = seat(rooms["Research"], "ada")

    with CaptureQueriesContext(connection) as queries:
        response = page_saved(client_for(staff), seat_page("change", ada.pk), "roomagent_form")

    assert response.status_code == 302
    assert moved(rooms) == set()
    assert room_updates(queries) == 0
    assert seats_now(rooms["Research"]) == [("ada", 0), ("linus", 1)]


@pytest.mark.parametrize(
    ("typed", "changed", "seated"),
    [
        ({"name": "Research 2"}, {"Research 2"}, [("ada", 0), ("linus", 1)]),
        ({"goal": "Find the sources."}, {"Research"}, [("ada", 0), ("linus", 1)]),
        ({"seats-0-position": "3"}, {"Research"}, [("linus", 0), ("ada", 1)]),
        ({"seats-1-DELETE": "on"}, {"Research"}, [("ada", 0)]),
    ],
    ids=["name", "goal", "a-seat-moved", "a-seat-deleted"],
)
def test_a_room_page_with_one_change_moves_updated_at_once(rooms, staff, typed, changed, seated):
    research = rooms["Research"]

    with CaptureQueriesContext(connection) as queries:
        response = page_saved(
            client_for(staff),
            reverse("admin:rooms_room_change", args=[research.pk]),
            "room_form",
            **typed,
        )

    assert response.status_code == 302
    assert seats_now(research) == seated
    assert moved(rooms) == changed
    assert room_updates(queries) == 1


def test_a_seat_page_with_one_change_moves_its_rooms_updated_at(rooms, staff):
    ada = seat(rooms["Research"], "ada")

    response = page_saved(
        client_for(staff), seat_page("change", ada.pk), "roomagent_form", position="1"
    )

    assert response.status_code == 302
    assert seats_now(rooms["Research"]) == [("linus", 0), ("ada", 1)]
    assert moved(rooms) == {"Research"}


@pytest.mark.parametrize("body", [{}, {"name": "Research"}, {"unknown": 1}])
def test_a_patch_of_a_room_that_changes_nothing_moves_nothing(rooms, owner_client, body):
    """`PATCH rooms/{id}` with nothing to change moved `updated_at`: a client keeping a copy in
    step by it fetched a room that had not changed (the rooms tester's note)."""
    answer = owner_client.patch(f"/api/v1/rooms/{rooms['Research'].pk}", body, format="json")

    assert answer.status_code == 200, answer.content
    assert moved(rooms) == set()
    assert answer.json()["updated_at"] == "2025-01-01T00:00:00Z"


@pytest.mark.parametrize("body", [{}, {"name": "Ada"}])
def test_a_patch_of_an_agent_that_changes_nothing_moves_nothing(owner, owner_client, body):

    agent = Agent.objects.create(owner=owner, agent_key="ada", name="Ada", model_alias="deepseek")
    Agent.objects.filter(pk=agent.pk).update(updated_at=LONG_AGO)

    answer = owner_client.patch(f"/api/v1/agents/{agent.pk}", body, format="json")

    assert answer.status_code == 200, answer.content
    agent.refresh_from_db()
    assert agent.updated_at == LONG_AGO
    assert answer.json()["updated_at"] == "2025-01-01T00:00:00Z"


def test_a_patch_that_changes_a_room_moves_it(rooms, owner_client):
    answer = owner_client.patch(
        f"/api/v1/rooms/{rooms['Research'].pk}", {"name": "Research 2"}, format="json"
    )

    assert answer.status_code == 200
    assert moved(rooms) == {"Research 2"}
