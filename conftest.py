"""Three actors for every endpoint test (owner, outsider, staff) and small factories."""

import pytest
from rest_framework.test import APIClient

from rooms.models import Agent, Room, RoomAgent, RoomMode
from sessions_app.models import Session


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user(username="owner", password="owner-pass-123")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user(username="outsider", password="outsider-pass-123")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="staff-pass-123", is_staff=True, is_superuser=True
    )


def _client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def owner_client(owner) -> APIClient:
    return _client_for(owner)


@pytest.fixture
def outsider_client(outsider) -> APIClient:
    return _client_for(outsider)


@pytest.fixture
def make_agent():
    def make(owner, key: str = "ada", **fields) -> Agent:
        defaults = {
            "name": key.title(),
            "model_alias": "deepseek",
            "role_prompt": f"{key.title()} helps with research.",
        }
        defaults.update(fields)
        return Agent.objects.create(owner=owner, agent_key=key, **defaults)

    return make


@pytest.fixture
def make_room():
    def make(owner, agents=(), mode: str = RoomMode.MANUAL, **fields) -> Room:
        room = Room.objects.create(
            owner=owner, name=fields.pop("name", "Room"), current_mode=mode, **fields
        )
        RoomAgent.objects.bulk_create(
            RoomAgent(room=room, agent=agent, position=index) for index, agent in enumerate(agents)
        )
        return room

    return make


@pytest.fixture
def make_session():
    def make(owner, room=None, agent=None, **fields) -> Session:
        return Session.objects.create(started_by=owner, room=room, agent=agent, **fields)

    return make
