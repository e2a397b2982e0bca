"""`GET models`: the enabled model aliases agents may use."""

import pytest

from usage.models import ModelAlias

pytestmark = pytest.mark.django_db

MODELS_URL = "/api/v1/models"
SEEDED_ALIASES = ["deepseek", "gpt_oss", "llama", "premium", "qwen"]


def aliases_of(response) -> list[str]:
    return [model["alias"] for model in response.json()]


def test_models_lists_the_enabled_aliases(owner_client):
    response = owner_client.get(MODELS_URL)

    assert response.status_code == 200
    assert aliases_of(response) == SEEDED_ALIASES
    deepseek = response.json()[0]
    assert deepseek == {"alias": "deepseek", "context_window": 64_000, "max_output_tokens": 2048}


def test_models_hides_a_disabled_alias(owner_client):
    ModelAlias.objects.filter(alias="premium").update(enabled=False)

    response = owner_client.get(MODELS_URL)

    assert response.status_code == 200
    assert aliases_of(response) == ["deepseek", "gpt_oss", "llama", "qwen"]


def test_models_needs_authentication(anon_client):
    assert anon_client.get(MODELS_URL).status_code == 401
