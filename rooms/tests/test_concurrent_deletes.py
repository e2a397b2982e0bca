"""A change racing a DELETE of the same object: the change answers 404 and writes nothing; the
deleted object stays deleted (schemathesis found the PATCH half of this as a 500).

The interleaving is replayed in order: the change's request has read the object, then the
DELETE commits, then the change's service runs."""

import pytest
from rest_framework.test import APIClient

from pantheon.exceptions import Gone
from rooms import services
from rooms.models import Agent, Room

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
    assert response.json() == {"detail": "Not found."}
