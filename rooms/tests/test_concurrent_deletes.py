"""A change racing a DELETE of the same object: the change answers 404 and writes nothing; the
deleted object stays deleted (schemathesis found the PATCH half of this as a 500).

The interleaving is replayed in order: the change's request has read the object, then the
DELETE commits, then the change's service runs. And a roster set while one of its agents is
deleted, for real on PostgreSQL: neither deadlocks with the other."""

import threading
import time

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from pantheon.exceptions import Gone
from rooms import services
from rooms.models import Agent, Room

NOT_FOUND = {"detail": "Not found.", "code": "not_found"}

pytestmark = pytest.mark.django_db


@pytest.fixture
def stale_room(owner, make_agent, make_room) -> Room:
    room = make_room(owner, [make_agent(owner, "ada")], name="Before")
    read_by_the_change = Room.objects.get(pk=room.pk)
    services.room_delete(room=Room.objects.get(pk=room.pk))
    return read_by_the_change


@pytest.mark.parametrize(
    "change",
    [
        lambda room: services.room_update(room=room, name="After"),
        lambda room: services.room_set_mode(room=room, mode="roundtable"),
        lambda room: services.room_set_agents(room=room, agent_ids=[]),
    ],
    ids=["update", "set_mode", "set_agents"],
)
def test_changing_a_room_deleted_meanwhile_is_gone_and_writes_nothing(stale_room, change):
    with pytest.raises(Gone):
        change(stale_room)

    row = Room.objects.get(pk=stale_room.pk)
    assert (row.name, row.pending_mode, row.seats.count()) == ("Before", None, 1)
    assert row.deleted_at is not None


def test_updating_an_agent_deleted_meanwhile_does_not_bring_it_back(owner, make_agent):
    agent = make_agent(owner, "ada")
    Agent.objects.filter(pk=agent.pk).delete()

    with pytest.raises(Gone):
        services.agent_update(agent=agent, name="Back")

    assert not Agent.objects.filter(pk=agent.pk).exists()


def test_the_api_answers_such_a_race_with_a_plain_404(owner, stale_room, monkeypatch):
    client = APIClient()
    client.force_authenticate(owner)
    # The view's read happens before the DELETE commits: hand it the stale row.
    monkeypatch.setattr("rooms.api.RoomViewSet.get_object", lambda self: stale_room)

    response = client.patch(f"/api/v1/rooms/{stale_room.pk}", {"name": "After"}, format="json")

    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def _in_thread(work, outcome: list) -> threading.Thread:
    def run() -> None:
        try:
            work()
            outcome.append("ok")
        except Exception as error:  # the deadlock's loser, PostgreSQL's error
            outcome.append(repr(error))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_roster_set_while_one_of_its_agents_is_deleted_never_deadlocks(
    owner, make_agent, make_room
):
    """A roster's change took its agents' rows, then the room's; an agent's delete takes its
    rooms', then the agent's. Interleaved (the test holds the agent a moment, so that each
    takes its first lock), each waited for the other: PostgreSQL's deadlock error, a 500 on
    one side. Both take the room first now: the delete waits for the roster, then runs."""
    ada, linus = make_agent(owner, "ada"), make_agent(owner, "linus")
    room = make_room(owner, [ada, linus], name="Research")
    roster, delete = [], []
    with transaction.atomic():
        Agent.objects.select_for_update().get(pk=ada.pk)
        setting = _in_thread(
            lambda: services.room_set_agents(room=room, agent_ids=[linus.pk, ada.pk]), roster
        )
        time.sleep(0.5)  # the roster's change waits for ada, holding what it took first
        deleting = _in_thread(lambda: services.agent_delete(agent=ada), delete)
        time.sleep(0.5)  # the delete waits too
    setting.join(30)
    deleting.join(30)

    assert (roster, delete) == (["ok"], ["ok"])
    assert list(room.seats.values_list("agent__agent_key", "position")) == [("linus", 0)]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_agent_seated_in_another_room_while_it_is_deleted_leaves_no_gap_there(
    owner, make_agent, make_room, monkeypatch
):
    """The delete read the agent's rooms, then locked them: a roster that seated the agent in
    another room in between lost its seat with the agent, and that room was neither numbered
    again nor stamped (positions linus 1, marie 2). Replayed in that order on PostgreSQL."""
    ada, linus, marie = (make_agent(owner, key) for key in ("ada", "linus", "marie"))
    make_room(owner, [ada], name="First")
    other = make_room(owner, [linus, marie], name="Other")
    stamped = other.updated_at
    locking = services.rooms_lock
    seating: list = []

    def seated_meanwhile(room_ids, **kwargs):
        if not seating:  # the delete's first lock: another request seats ada in front
            _in_thread(
                lambda: services.room_set_agents(
                    room=Room.objects.get(pk=other.pk), agent_ids=[ada.pk, linus.pk, marie.pk]
                ),
                seating,
            ).join(30)
        return locking(room_ids, **kwargs)

    monkeypatch.setattr(services, "rooms_lock", seated_meanwhile)

    services.agent_delete(agent=ada)

    assert seating == ["ok"]
    other.refresh_from_db()
    seats = other.seats.order_by("position").values_list("agent__agent_key", "position")
    assert list(seats) == [("linus", 0), ("marie", 1)]
    assert other.updated_at > stamped
