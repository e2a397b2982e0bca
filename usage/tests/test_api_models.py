"""`GET models`: the enabled model aliases agents may use."""

import pytest

from usage.models import ModelAlias

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(anon_client) -> dict:
    return anon_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()


MODELS_URL = "/api/v1/models"
SEEDED_ALIASES = ["deepseek", "gpt_oss", "llama", "premium", "qwen"]


def aliases_of(response) -> list[str]:
    return [model["alias"] for model in response.json()]


def test_models_lists_the_enabled_aliases(owner_client):
    response = owner_client.get(MODELS_URL)

    assert response.status_code == 200
    assert aliases_of(response) == SEEDED_ALIASES
    deepseek = response.json()[0]
    assert deepseek == {
        "model_alias": "deepseek",
        "alias": "deepseek",
        "context_window": 64_000,
        "max_output_tokens": 2048,
    }


def test_models_names_each_alias_as_agents_take_it(owner_client, schema):
    """An agent's `model_alias` is one of these; the list named it `alias` alone, so a client
    mapped the one name to the other. `model_alias` now, `alias` kept beside it (deprecated)
    for the clients that read it."""
    models = owner_client.get(MODELS_URL).json()

    assert [model["model_alias"] for model in models] == SEEDED_ALIASES
    assert all(model["alias"] == model["model_alias"] for model in models)
    listed = schema["components"]["schemas"]["ModelAlias"]
    assert {"model_alias", "alias"} <= set(listed["required"])
    assert listed["properties"]["alias"]["deprecated"] is True
    assert "deprecated" not in listed["properties"]["model_alias"]


def test_an_agent_takes_the_model_alias_models_lists(owner_client):
    listed = owner_client.get(MODELS_URL).json()[-1]["model_alias"]

    created = owner_client.post(
        "/api/v1/agents",
        {"agent_key": "ada", "name": "Ada", "model_alias": listed},
        format="json",
    )

    assert created.status_code == 201, created.content
    assert created.json()["model_alias"] == listed


def test_models_hides_a_disabled_alias(owner_client):
    ModelAlias.objects.filter(alias="premium").update(enabled=False)

    response = owner_client.get(MODELS_URL)

    assert response.status_code == 200
    assert aliases_of(response) == ["deepseek", "gpt_oss", "llama", "qwen"]


def test_models_needs_authentication(anon_client):
    assert anon_client.get(MODELS_URL).status_code == 401
