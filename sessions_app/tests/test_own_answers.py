"""Which earlier answers an agent's prompt shows as its own: those the same agent gave.

Who said what was decided by the agent key the answer was stored with, so an agent whose key
changed read its own answers as another agent's, and a new agent given a deleted agent's key
read the deleted agent's answers as its own."""

import json
import warnings

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from conftest import FakeGateway
from rooms.models import RoomMode
from sessions_app.models import Message

pytestmark = pytest.mark.django_db

OLD_ANSWER = "I (old Kim) think this will FAIL."


@pytest.fixture
def kim(owner_client):
    response = owner_client.post(
        "/api/v1/agents",
        {"agent_key": "kim", "name": "Kim", "model_alias": "deepseek"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def kim_room(owner, kim, make_room, make_session):
    """A roundtable where Kim answered the first turn with OLD_ANSWER."""
    from rooms.models import Agent

    room = make_room(owner, [Agent.objects.get(pk=kim["id"])], mode=RoomMode.ROUNDTABLE)
    return room, make_session(owner, room=room)


@pytest.fixture
def answered(owner_client, kim_room, fake_gateway: FakeGateway, post_turn):
    replies = {"kim": OLD_ANSWER}
    fake_gateway.reply_for = lambda call: replies.pop(call.agent_key, "Noted.")  # type: ignore[method-assign]
    _, session = kim_room
    response = post_turn(owner_client, session, "Will the launch work?")
    assert response.status_code == 201, response.json()
    return session


def history_of(call) -> list[tuple[str, str]]:
    """The prompt's messages after the system prompt and before the user's input."""
    return [(message.role, message.content) for message in call.messages[1:-1]]


def test_an_agent_whose_key_changed_reads_its_answers_as_its_own(
    owner_client, kim, answered, fake_gateway, post_turn
):
    """After `PATCH agents/{kim}` to the key kimmy, Kim's next prompt showed its own answer
    as another agent's: `[Kim @kim]: I (old Kim) think this will FAIL.`"""
    renamed = owner_client.patch(f"/api/v1/agents/{kim['id']}", {"agent_key": "kimmy"})
    assert renamed.status_code == 200, renamed.json()

    response = post_turn(owner_client, answered, "And now?")

    assert response.status_code == 201, response.json()
    latest = fake_gateway.calls_for("agent")[-1]
    assert latest.agent_key == "kimmy"
    assert history_of(latest) == [
        ("user", "Will the launch work?"),
        ("assistant", OLD_ANSWER),
    ]


def test_a_new_agent_given_a_deleted_agents_key_reads_its_answers_as_anothers(
    owner_client, kim, kim_room, answered, fake_gateway, post_turn
):
    """Kim deleted and Kim Two created with the key kim and seated: Kim Two's prompt showed
    Kim's answer as its own, with no prefix. It is Kim's, named by its name alone: the key it
    was given with is Kim Two's now."""
    created = _kim_replaced_by_kim_two(owner_client, kim)
    room, _ = kim_room
    seated = owner_client.put(
        f"/api/v1/rooms/{room.pk}/agents", {"agent_ids": [created.json()["id"]]}, format="json"
    )
    assert seated.status_code == 200, seated.json()

    response = post_turn(owner_client, answered, "And now?")

    assert response.status_code == 201, response.json()
    latest = fake_gateway.calls_for("agent")[-1]
    assert latest.messages[0].content.startswith("You are Kim Two (@kim)")
    assert history_of(latest) == [
        ("user", "Will the launch work?"),
        ("assistant", f"[Kim]: {OLD_ANSWER}"),
    ]


def test_answers_stored_before_agents_ids_were_kept_go_by_their_key(
    owner_client, kim, answered, fake_gateway, post_turn
):
    """An answer stored without the agent's id (before the column existed) is the agent's
    own when it has the agent's key, as before."""
    Message.objects.filter(role="assistant").update(agent_id=None)

    response = post_turn(owner_client, answered, "And now?")

    assert response.status_code == 201, response.json()
    assert history_of(fake_gateway.calls_for("agent")[-1]) == [
        ("user", "Will the launch work?"),
        ("assistant", OLD_ANSWER),
    ]


@pytest.fixture
def kim_and_ada_room(owner, owner_client, kim, make_agent, make_room, make_session):
    """A roundtable of Kim and Ada (the owner's ada), where Kim answered the first turn with
    OLD_ANSWER."""
    from rooms.models import Agent

    ada = make_agent(owner, "ada", name="Ada")
    room = make_room(owner, [Agent.objects.get(pk=kim["id"]), ada], mode=RoomMode.ROUNDTABLE)
    return room, make_session(owner, room=room), ada


def test_another_agent_reads_an_answer_by_who_gave_it_not_by_a_key_given_to_another(
    owner_client, kim, kim_and_ada_room, fake_gateway, post_turn
):
    """Kim deleted and Kim Two seated with the key kim: Ada's prompt showed Kim's answer as
    `[Kim @kim]: …` beside a roster whose @kim is Kim Two, so Ada read Kim's words as Kim Two's
    (the manager's prompt names such an answer by its name alone)."""
    room, session, ada = kim_and_ada_room
    replies = {"kim": OLD_ANSWER}
    fake_gateway.reply_for = lambda call: replies.pop(call.agent_key, "Noted.")  # type: ignore[method-assign]
    assert post_turn(owner_client, session, "Will the launch work?").status_code == 201
    created = _kim_replaced_by_kim_two(owner_client, kim)
    seated = owner_client.put(
        f"/api/v1/rooms/{room.pk}/agents",
        {"agent_ids": [created.json()["id"], str(ada.pk)]},
        format="json",
    )
    assert seated.status_code == 200, seated.json()

    response = post_turn(owner_client, session, "And now?")

    assert response.status_code == 201, response.json()
    prompts = {call.agent_key: call for call in fake_gateway.calls_for("agent")[-2:]}
    assert "- Kim Two (@kim)" in prompts["ada"].messages[0].content
    assert history_of(prompts["ada"])[:2] == [
        ("user", "Will the launch work?"),
        ("assistant", f"[Kim]: {OLD_ANSWER}"),
    ]
    assert history_of(prompts["kim"])[:2] == [
        ("user", "Will the launch work?"),
        ("assistant", f"[Kim]: {OLD_ANSWER}"),
    ]


def test_another_agent_reads_an_answer_by_the_key_its_agent_has_now(
    owner_client, kim, kim_and_ada_room, fake_gateway, post_turn
):
    """Kim's key changed to kimmy: Ada's prompt still named Kim's answer `[Kim @kim]`, a key no
    agent of the room has, beside a roster that lists `Kim (@kimmy)`."""
    _, session, _ = kim_and_ada_room
    replies = {"kim": OLD_ANSWER}
    fake_gateway.reply_for = lambda call: replies.pop(call.agent_key, "Noted.")  # type: ignore[method-assign]
    assert post_turn(owner_client, session, "Will the launch work?").status_code == 201
    renamed = owner_client.patch(
        f"/api/v1/agents/{kim['id']}", {"agent_key": "kimmy", "name": "Kimberly"}, format="json"
    )
    assert renamed.status_code == 200, renamed.json()

    response = post_turn(owner_client, session, "And now?")

    assert response.status_code == 201, response.json()
    ada_prompt = fake_gateway.calls_for("agent")[-1]
    assert ada_prompt.agent_key == "ada"
    assert history_of(ada_prompt)[:2] == [
        ("user", "Will the launch work?"),
        ("assistant", f"[Kimberly @kimmy]: {OLD_ANSWER}"),
    ]


def test_a_client_tells_which_agent_gave_an_answer_by_its_id(
    owner_client, kim, kim_room, answered, fake_gateway, post_turn
):
    """Kim deleted and Kim Two given the key kim: both answers read `agent_key` "kim" and a
    client had nothing else to tell them apart (Kim's old answer shown with Kim Two's avatar).
    Each message now carries the id of the agent that gave it, in the turn body and the
    timeline alike, null for the user's."""
    assert owner_client.delete(f"/api/v1/agents/{kim['id']}").status_code == 204
    created = owner_client.post(
        "/api/v1/agents",
        {"agent_key": "kim", "name": "Kim Two", "model_alias": "deepseek"},
        format="json",
    )
    kim_two = created.json()["id"]
    room, _ = kim_room
    seated = owner_client.put(
        f"/api/v1/rooms/{room.pk}/agents", {"agent_ids": [kim_two]}, format="json"
    )
    assert seated.status_code == 200, seated.json()

    response = post_turn(owner_client, answered, "And now?")

    assert response.status_code == 201, response.json()
    assert [(m["agent_key"], m["agent_id"]) for m in response.json()["messages"]] == [
        ("", None),
        ("kim", kim_two),
    ]
    timeline = owner_client.get(f"/api/v1/sessions/{answered.pk}/messages")
    assert timeline.status_code == 200
    assert [(m["agent_key"], m["agent_id"]) for m in timeline.json()["results"]] == [
        ("", None),
        ("kim", kim["id"]),
        ("", None),
        ("kim", kim_two),
    ]


def _kim_replaced_by_kim_two(owner_client, kim):
    """Kim deleted, and a new agent, Kim Two, given Kim's key: its create response."""
    assert owner_client.delete(f"/api/v1/agents/{kim['id']}").status_code == 204
    created = owner_client.post(
        "/api/v1/agents",
        {"agent_key": "kim", "name": "Kim Two", "model_alias": "deepseek"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    return created


def _step_started_agents(body: bytes) -> list[tuple[str, str | None]]:
    """(agent_key, agent_id) of each `step_started` of an event stream's body."""
    found = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") == "step_started":
            data = json.loads(fields["data"])
            found.append((data["agent_key"], data["agent_id"]))
    return found


def test_a_step_started_says_which_agent_answers_by_its_id(
    owner, owner_client, kim, kim_room, answered, fake_gateway
):
    """A streaming client shows an answer's avatar from its `step_started`, before its message
    (which carries `agent_id`) completes: Kim's old answer and Kim Two's, both of key kim, could
    not be told apart there. The live stream and a replay say the same."""
    kim_two = _kim_replaced_by_kim_two(owner_client, kim).json()["id"]
    room, _ = kim_room
    seated = owner_client.put(
        f"/api/v1/rooms/{room.pk}/agents", {"agent_ids": [kim_two]}, format="json"
    )
    assert seated.status_code == 200, seated.json()

    token = Token.objects.get_or_create(user=owner)[0].key

    async def stream() -> tuple[str, bytes]:
        response = await AsyncClient().post(
            f"/api/v1/sessions/{answered.pk}/turns",
            {"message": "And now?"},
            content_type="application/json",
            headers={"Authorization": f"Token {token}", "Accept": "text/event-stream"},
        )
        assert response.status_code == 201
        body = b"".join([chunk async for chunk in response.streaming_content])
        return response["Location"].rstrip("/").rsplit("/", 1)[-1], body

    second_turn, body = async_to_sync(stream)()
    first_turn = answered.turns.get(turn_index=1).pk
    with warnings.catch_warnings():  # the test client reads the async stream synchronously
        warnings.simplefilter("ignore")
        replays = [
            _step_started_agents(b"".join(owner_client.get(f"/api/v1/turns/{turn}/events")))
            for turn in (first_turn, second_turn)
        ]

    assert _step_started_agents(body) == [("kim", kim_two)]
    assert replays == [[("kim", kim["id"])], [("kim", kim_two)]]
