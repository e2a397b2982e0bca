"""Where an alias's calls go and which key they carry (`api_base`, `api_key_env`) are set by
superusers only: an Owner who could point an alias at their own listener and name
OPENROUTER_API_KEY received that key, and every prompt sent on the alias, with each user's
turn (or had the server POST to 169.254.169.254). `manage.py set_model_alias` (shell access)
still sets them."""

from io import StringIO

import pytest
from django.core.management import call_command

from pantheon.testing.admin import admin_url, client_for, posted_back
from usage.models import ModelAlias

pytestmark = pytest.mark.django_db

STOLEN = {"api_base": "http://127.0.0.1:8811/v1", "api_key_env": "OPENROUTER_API_KEY"}


def new_alias(**fields) -> dict:
    return {
        "alias": "mine",
        "litellm_model": "openai/gpt-4o-mini",
        "api_base": "",
        "api_key_env": "",
        "context_window": "8192",
        "max_output_tokens": "1024",
        "enabled": "on",
        "_save": "Save",
        **fields,
    }


def test_an_owner_cannot_point_a_new_alias_at_a_listener_with_a_providers_key(make_operator):
    console = client_for(make_operator("Owner"))

    page = console.get(admin_url(ModelAlias, "add")).text
    response = console.post(admin_url(ModelAlias, "add"), new_alias(**STOLEN))

    assert 'name="api_base"' not in page and 'name="api_key_env"' not in page
    assert response.status_code == 302, response.text
    saved = ModelAlias.objects.get(alias="mine")
    assert (saved.api_base, saved.api_key_env) == ("", "")


def test_an_owner_cannot_repoint_an_aliass_calls_or_key(make_operator):
    qwen = ModelAlias.objects.get(alias="qwen")
    before = (qwen.api_base, qwen.api_key_env)
    console = client_for(make_operator("Owner"))
    page = admin_url(ModelAlias, "change", qwen.pk)

    shown = console.get(page).text
    data = posted_back(shown, "modelalias_form")
    data.update(
        {**STOLEN, "api_base": "http://169.254.169.254/latest/", "max_output_tokens": "2048"}
    )
    response = console.post(page, data)

    assert 'name="api_base"' not in shown and 'name="api_key_env"' not in shown
    assert response.status_code == 302, response.text
    qwen.refresh_from_db()
    assert (qwen.api_base, qwen.api_key_env) == before
    assert qwen.max_output_tokens == 2048  # what an Owner may change is saved


def test_a_superuser_sets_where_an_aliases_calls_go(staff):
    console = client_for(staff)

    response = console.post(admin_url(ModelAlias, "add"), new_alias(**STOLEN))

    assert response.status_code == 302, response.text
    saved = ModelAlias.objects.get(alias="mine")
    assert (saved.api_base, saved.api_key_env) == (STOLEN["api_base"], "OPENROUTER_API_KEY")


def test_the_command_still_sets_them():
    call_command(
        "set_model_alias",
        "mine",
        "--model=openai/x",
        "--api-base=https://llm.example/v1",
        "--api-key-env=EXAMPLE_API_KEY",
        stdout=StringIO(),
    )

    saved = ModelAlias.objects.get(alias="mine")
    assert (saved.api_base, saved.api_key_env) == ("https://llm.example/v1", "EXAMPLE_API_KEY")
