"""`GET, POST agents` and `GET, PATCH, DELETE agents/{id}`."""

import uuid

import pytest

from rooms.models import Agent, RoomAgent
from usage.models import ModelAlias

pytestmark = pytest.mark.django_db

AGENTS_URL = "/api/v1/agents"


def agent_url(agent_or_id) -> str:
    return f"{AGENTS_URL}/{getattr(agent_or_id, 'id', agent_or_id)}"


def agent_body(**overrides) -> dict:
    body = {
        "agent_key": "ada",
        "name": "Ada",
        "model_alias": "deepseek",
        "role_prompt": "Research analyst.",
        "tool_permissions": ["web_search"],
    }
    body.update(overrides)
    return body


def keys_of(response) -> list[str]:
    return [agent["agent_key"] for agent in response.json()["results"]]


# --- create ---------------------------------------------------------------------------------


def test_create_returns_the_agent_and_stores_it_for_the_caller(owner, owner_client):
    response = owner_client.post(AGENTS_URL, agent_body())

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "agent_key",
        "name",
        "model_alias",
        "role_prompt",
        "tool_permissions",
        "created_at",
        "updated_at",
    }
    agent = Agent.objects.get(pk=body["id"])
    assert agent.owner == owner
    assert (agent.agent_key, agent.name, agent.model_alias) == ("ada", "Ada", "deepseek")
    assert agent.role_prompt == "Research analyst."
    assert agent.tool_permissions == ["web_search"]
    assert body["tool_permissions"] == ["web_search"]


def test_create_defaults_optional_fields(owner_client):
    response = owner_client.post(
        AGENTS_URL, {"agent_key": "bob_2", "name": "Bob", "model_alias": "qwen"}
    )

    assert response.status_code == 201
    assert response.json()["role_prompt"] == ""
    assert response.json()["tool_permissions"] == []


def test_create_ignores_a_client_chosen_id(owner_client):
    chosen = str(uuid.uuid4())

    response = owner_client.post(AGENTS_URL, agent_body(id=chosen))

    assert response.status_code == 201
    assert response.json()["id"] != chosen


@pytest.mark.parametrize("bad_key", ["Bad Key", "UPPER", "dash-key", "", "k" * 33, "@ada"])
def test_create_rejects_a_badly_formed_agent_key(owner_client, bad_key):
    response = owner_client.post(AGENTS_URL, agent_body(agent_key=bad_key))

    assert response.status_code == 400
    assert "agent_key" in response.json()
    assert not Agent.objects.exists()


def test_create_rejects_an_agent_key_the_owner_already_uses(owner, owner_client, make_agent):
    make_agent(owner, "ada")

    response = owner_client.post(AGENTS_URL, agent_body(agent_key="ada"))

    assert response.status_code == 400
    assert response.json() == {"agent_key": ["You already have an agent with this key."]}
    assert Agent.objects.filter(owner=owner).count() == 1


def test_two_owners_may_use_the_same_agent_key(owner, outsider, owner_client, outsider_client):
    assert owner_client.post(AGENTS_URL, agent_body()).status_code == 201
    assert outsider_client.post(AGENTS_URL, agent_body()).status_code == 201

    assert Agent.objects.filter(agent_key="ada").count() == 2


def test_create_rejects_an_unknown_model_alias(owner_client):
    response = owner_client.post(AGENTS_URL, agent_body(model_alias="gpt_17"))

    assert response.status_code == 400
    assert response.json() == {"model_alias": ["Unknown or disabled model alias: gpt_17"]}
    assert not Agent.objects.exists()


def test_create_rejects_a_disabled_model_alias(owner_client):
    ModelAlias.objects.filter(alias="premium").update(enabled=False)

    response = owner_client.post(AGENTS_URL, agent_body(model_alias="premium"))

    assert response.status_code == 400
    assert response.json() == {"model_alias": ["Unknown or disabled model alias: premium"]}


def test_create_requires_key_name_and_model_alias(owner_client):
    response = owner_client.post(AGENTS_URL, {})

    assert response.status_code == 400
    assert set(response.json()) == {"agent_key", "name", "model_alias"}


def test_create_rejects_tool_permissions_that_are_not_a_list(owner_client):
    response = owner_client.post(AGENTS_URL, agent_body(tool_permissions="web_search"))

    assert response.status_code == 400
    assert response.json() == {
        "tool_permissions": ['Expected a list of tool names, such as ["web_search"].']
    }


@pytest.mark.parametrize("tools", [["web", "web"], ["web", "code", " web "]])
def test_create_refuses_a_tool_listed_twice(owner_client, tools):
    response = owner_client.post(AGENTS_URL, agent_body(tool_permissions=tools))

    assert response.status_code == 400
    assert response.json() == {"tool_permissions": ["'web' is listed twice."]}
    assert not Agent.objects.exists()


def test_patch_refuses_a_tool_listed_twice(owner, owner_client, make_agent):
    ada = make_agent(owner, "ada")

    response = owner_client.patch(f"{AGENTS_URL}/{ada.pk}", {"tool_permissions": ["a", "a"]})

    assert response.status_code == 400
    ada.refresh_from_db()
    assert ada.tool_permissions == []


# --- read -----------------------------------------------------------------------------------


def test_list_shows_only_the_callers_agents_oldest_first(owner, outsider, owner_client, make_agent):
    make_agent(owner, "ada")
    make_agent(owner, "linus")
    make_agent(outsider, "grace")

    response = owner_client.get(AGENTS_URL)

    assert response.status_code == 200
    assert response.json()["count"] == 2
    assert keys_of(response) == ["ada", "linus"]


def test_get_returns_the_agent(owner, owner_client, make_agent):
    agent = make_agent(owner, "ada", tool_permissions=["calculator"])

    response = owner_client.get(agent_url(agent))

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(agent.id)
    assert body["agent_key"] == "ada"
    assert body["model_alias"] == "deepseek"
    assert body["tool_permissions"] == ["calculator"]


@pytest.mark.parametrize("missing_id", ["5f0c9a5e-2d1b-4c8e-9a57-3e6f1b2c4d70", "not-a-uuid"])
def test_get_an_unknown_agent_is_404(owner_client, missing_id):
    assert owner_client.get(agent_url(missing_id)).status_code == 404


# --- update ---------------------------------------------------------------------------------


def test_patch_changes_only_the_given_fields(owner, owner_client, make_agent):
    agent = make_agent(owner, "ada", role_prompt="Old prompt.")

    response = owner_client.patch(agent_url(agent), {"name": "Ada L.", "model_alias": "llama"})

    assert response.status_code == 200
    assert response.json()["name"] == "Ada L."
    assert response.json()["model_alias"] == "llama"
    agent.refresh_from_db()
    assert (agent.agent_key, agent.name, agent.model_alias) == ("ada", "Ada L.", "llama")
    assert agent.role_prompt == "Old prompt."


def test_an_agent_on_a_disabled_alias_takes_its_own_body_back_but_no_other_disabled_alias(
    owner, owner_client, make_agent
):
    """It was refused its own alias ("Unknown or disabled model alias: premium"), so a client
    that sends back what it read with a new name could not rename it."""
    agent = make_agent(owner, model_alias="premium")
    ModelAlias.objects.filter(alias__in=["premium", "llama"]).update(enabled=False)
    read = owner_client.get(agent_url(agent)).json()

    renamed = owner_client.patch(agent_url(agent), {**read, "name": "Ada L."})
    other = owner_client.patch(agent_url(agent), {"model_alias": "llama"})

    assert renamed.status_code == 200, renamed.json()
    assert (renamed.json()["name"], renamed.json()["model_alias"]) == ("Ada L.", "premium")
    assert other.status_code == 400
    assert other.json() == {"model_alias": ["Unknown or disabled model alias: llama"]}
    agent.refresh_from_db()
    assert (agent.name, agent.model_alias) == ("Ada L.", "premium")


def test_patch_may_rename_the_agent_key(owner, owner_client, make_agent):
    agent = make_agent(owner, "ada")

    response = owner_client.patch(agent_url(agent), {"agent_key": "ada_2"})

    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.agent_key == "ada_2"


def test_patch_rejects_an_agent_key_the_owner_already_uses(owner, owner_client, make_agent):
    make_agent(owner, "ada")
    linus = make_agent(owner, "linus")

    response = owner_client.patch(agent_url(linus), {"agent_key": "ada"})

    assert response.status_code == 400
    assert response.json() == {"agent_key": ["You already have an agent with this key."]}
    linus.refresh_from_db()
    assert linus.agent_key == "linus"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"agent_key": "Bad Key"}, "agent_key"),
        ({"model_alias": "gpt_17"}, "model_alias"),
        ({"name": ""}, "name"),
    ],
)
def test_patch_rejects_bad_input(owner, owner_client, make_agent, change, field):
    agent = make_agent(owner, "ada")

    response = owner_client.patch(agent_url(agent), change)

    assert response.status_code == 400
    assert field in response.json()
    agent.refresh_from_db()
    assert (agent.agent_key, agent.name, agent.model_alias) == ("ada", "Ada", "deepseek")


def test_put_is_not_allowed(owner, owner_client, make_agent):
    agent = make_agent(owner, "ada")

    response = owner_client.put(agent_url(agent), agent_body(name="Replaced"))

    assert response.status_code == 405
    agent.refresh_from_db()
    assert agent.name == "Ada"


# --- delete ---------------------------------------------------------------------------------


def test_delete_removes_the_agent_and_its_seats(owner, owner_client, make_agent, make_room):
    ada = make_agent(owner, "ada")
    linus = make_agent(owner, "linus")
    room = make_room(owner, agents=[ada, linus])

    response = owner_client.delete(agent_url(ada))

    assert response.status_code == 204
    assert not Agent.objects.filter(pk=ada.pk).exists()
    assert list(RoomAgent.objects.filter(room=room).values_list("agent_id", flat=True)) == [
        linus.id
    ]
    assert owner_client.get(agent_url(ada)).status_code == 404


def test_delete_numbers_the_seats_of_its_rooms_again(owner, owner_client, make_agent, make_room):
    """It leaves each room as a roster without it would seat the others: 0, 1, 2... It left a
    gap (linus 0, marie 2), which the roster showed; a deleted room's seats stay as they were."""
    ada, linus, marie, bo = (make_agent(owner, key) for key in ("ada", "linus", "marie", "bo"))
    first = make_room(owner, agents=[linus, ada, marie, bo], name="First")
    second = make_room(owner, agents=[ada, bo], name="Second")
    gone = make_room(owner, agents=[linus, ada, marie], name="Gone")
    owner_client.delete(f"/api/v1/rooms/{gone.pk}")

    response = owner_client.delete(agent_url(ada))

    assert response.status_code == 204
    roster = owner_client.get(f"/api/v1/rooms/{first.pk}").json()["agents"]
    assert [(seat["agent_key"], seat["position"]) for seat in roster] == [
        ("linus", 0),
        ("marie", 1),
        ("bo", 2),
    ]
    seats = RoomAgent.objects.order_by("position")
    assert [(s.agent.agent_key, s.position) for s in seats.filter(room=second)] == [("bo", 0)]
    assert [(s.agent.agent_key, s.position) for s in seats.filter(room=gone)] == [
        ("linus", 0),
        ("marie", 2),
    ]


# --- another user's agent, anonymous --------------------------------------------------------


@pytest.mark.parametrize(
    "method, body",
    [("get", None), ("patch", {"name": "Mine now"}), ("delete", None)],
)
def test_another_users_agent_is_404(outsider, owner_client, make_agent, method, body):
    theirs = make_agent(outsider, "ada")

    response = getattr(owner_client, method)(agent_url(theirs), body)

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.name == "Ada"


@pytest.mark.parametrize(
    "method, path_kind",
    [
        ("get", "list"),
        ("post", "list"),
        ("get", "detail"),
        ("patch", "detail"),
        ("delete", "detail"),
    ],
)
def test_anonymous_is_401(owner, anon_client, make_agent, method, path_kind):
    agent = make_agent(owner, "ada")
    url = AGENTS_URL if path_kind == "list" else agent_url(agent)

    response = getattr(anon_client, method)(url, agent_body(agent_key="anon"))

    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }
    assert list(Agent.objects.values_list("agent_key", flat=True)) == ["ada"]


# --- model alias spelling -------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["DEEPSEEK", "DeepSeek"])
def test_an_alias_typed_in_another_case_is_the_alias_as_it_is_spelt(owner_client, typed):
    """Aliases differ by more than case (ModelAlias.clean), yet `"model_alias": "DEEPSEEK"`
    was a 400 `Unknown or disabled model alias: DEEPSEEK` while deepseek exists. It is
    deepseek, stored and answered as the alias is spelt."""
    created = owner_client.post(AGENTS_URL, agent_body(model_alias=typed), format="json")

    assert created.status_code == 201, created.json()
    assert created.json()["model_alias"] == "deepseek"
    patched = owner_client.patch(
        agent_url(created.json()["id"]), {"model_alias": "Qwen"}, format="json"
    )
    assert patched.status_code == 200, patched.json()
    assert patched.json()["model_alias"] == "qwen"
    assert Agent.objects.get().model_alias == "qwen"


def test_a_disabled_alias_typed_in_another_case_is_still_refused(owner_client):
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)

    response = owner_client.post(AGENTS_URL, agent_body(model_alias="QWEN"), format="json")

    assert response.status_code == 400
    assert response.json() == {"model_alias": ["Unknown or disabled model alias: qwen"]}


def test_case_twins_saved_before_the_rule_resolve_to_an_enabled_one(owner_client):
    """Twins saved before aliases had to differ by more than case (`STUB` disabled, `StuB` and
    `Stub` enabled), typed as none of them is spelt: the first in code-point order was taken,
    so `stub` was refused as the disabled `STUB` while two enabled twins existed. It is now the
    first enabled twin; the one spelt as typed still wins."""
    for alias, enabled in [("STUB", False), ("StuB", True), ("Stub", True)]:
        ModelAlias.objects.bulk_create(  # as saved before ModelAlias.clean's rule
            [ModelAlias(alias=alias, litellm_model="openai/stub", enabled=enabled)]
        )

    typed = owner_client.post(AGENTS_URL, agent_body(model_alias="stub"), format="json")
    exact = owner_client.post(
        AGENTS_URL, agent_body(agent_key="exact", name="Exact", model_alias="Stub"), format="json"
    )

    assert typed.status_code == 201, typed.json()
    assert typed.json()["model_alias"] == "StuB"
    assert exact.status_code == 201, exact.json()
    assert exact.json()["model_alias"] == "Stub"
