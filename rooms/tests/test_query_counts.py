"""Query-count guards of the agents and rooms endpoints: the same SQL with 3 rows and with 30.

Each guard was seen failing once with what it protects removed (see the helper
`assert_constant_queries` in the root conftest.py).
"""

import pytest

pytestmark = pytest.mark.django_db

AGENTS_URL = "/api/v1/agents"
ROOMS_URL = "/api/v1/rooms"


def seat_keys(body: dict) -> list[str]:
    return [seat["agent_key"] for seat in body["agents"]]


@pytest.fixture
def trio(owner, make_agent):
    return [make_agent(owner, key) for key in ("ada", "linus", "grace")]


def test_agents_list(owner, owner_client, make_agent, assert_constant_queries):
    # The count, then the page.
    responses = assert_constant_queries(
        lambda: owner_client.get(AGENTS_URL),
        grow=lambda new: [make_agent(owner, f"agent_{index}") for index in new],
        expected=2,
    )

    assert [response.json()["count"] for response in responses] == [3, 30]


def test_agent_detail(owner, owner_client, make_agent, make_room, assert_constant_queries):
    ada = make_agent(owner, "ada")

    responses = assert_constant_queries(
        lambda: owner_client.get(f"{AGENTS_URL}/{ada.id}"),
        # The agent sits in ever more rooms.
        grow=lambda new: [make_room(owner, agents=[ada], name=f"Room {index}") for index in new],
        expected=1,
    )

    assert {response.json()["agent_key"] for response in responses} == {"ada"}


def test_rooms_list(owner, owner_client, trio, make_room, assert_constant_queries):
    # The count, the page, the seats with their agents.
    responses = assert_constant_queries(
        lambda: owner_client.get(ROOMS_URL),
        grow=lambda new: [make_room(owner, agents=trio, name=f"Room {index}") for index in new],
        expected=3,
    )

    assert [response.json()["count"] for response in responses] == [3, 30]
    for response in responses:
        assert all(
            seat_keys(room) == ["ada", "linus", "grace"] for room in response.json()["results"]
        )


def test_room_detail(owner, owner_client, make_agent, make_room, assert_constant_queries):
    room = make_room(owner, name="Crowded")

    def seat(new):
        for index in new:
            room.seats.create(agent=make_agent(owner, f"agent_{index}"), position=index)

    # The room, then its seats with their agents.
    responses = assert_constant_queries(
        lambda: owner_client.get(f"{ROOMS_URL}/{room.id}"), grow=seat, expected=2
    )

    assert [len(seat_keys(response.json())) for response in responses] == [3, 30]
    assert seat_keys(responses[-1].json()) == [f"agent_{index}" for index in range(30)]
