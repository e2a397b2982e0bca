"""Where an alias's calls go and which key they carry (`api_base`, `api_key_env`) are set by
superusers only: an Owner who could point an alias at their own listener and name
OPENROUTER_API_KEY received that key, and every prompt sent on the alias, with each user's
turn (or had the server POST to 169.254.169.254). `manage.py set_model_alias` (shell access)
still sets them."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

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


@pytest.mark.parametrize(
    ("api_base", "key_env"),
    [
        ("https://llm.example/v1", "EXAMPLE_API_KEY"),
        # An ordinary query (Azure's version) is no credential.
        ("https://llm.example/openai?api-version=2024-06-01", ""),
        # Nor are the bases providers give: Azure OpenAI's resource, a local server,
        # OpenRouter's, Cloudflare's AI gateway (a 32-digit account id), Vertex's project path,
        # an Azure ML workspace's subscription id, a name that holds "sk-".
        ("https://my-resource.openai.azure.com/openai/deployments/gpt-4o", "AZURE_API_KEY"),
        ("http://127.0.0.1:8080/v1", ""),
        ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        ("https://gateway.ai.cloudflare.com/v1/0123456789abcdef0123456789abcdef/gw/openai", ""),
        ("https://us-central1-aiplatform.googleapis.com/v1/projects/my-project-123/locations", ""),
        ("https://ml.azure.com/subscriptions/6f0b5a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b/ws", ""),
        ("https://task-management-service-2024.example/v1", ""),
        # An Azure deployment's name, which its owner chooses, beginning as a key's prefix
        # does, but without the prefix's separator.
        ("https://my-resource.openai.azure.com/openai/deployments/skyline-gpt4o-prod", ""),
        ("https://my-resource.openai.azure.com/openai/deployments/hfr-summarizer-2024-v2", ""),
        ("https://my-resource.openai.azure.com/openai/deployments/ghostwriter-gpt4o-2024", ""),
    ],
)
def test_the_command_still_sets_them(api_base, key_env):
    call_command(
        "set_model_alias",
        "mine",
        "--model=openai/x",
        f"--api-base={api_base}",
        *([f"--api-key-env={key_env}"] if key_env else []),
        stdout=StringIO(),
    )

    saved = ModelAlias.objects.get(alias="mine")
    assert (saved.api_base, saved.api_key_env) == (api_base, key_env)


CREDENTIALED_BASES = [
    "https://svc:s3cr3t-pass@llm.internal.example/v1",
    "https://llm.example/v1?api-key=0123456789abcdef",
    "https://llm.example/v1beta?key=AIzaSyExample0123456789",
    # Azure Functions' key, a signed URL's, a token, a key named with an underscore.
    "https://chat.azurewebsites.net/api/complete?code=q1W2e3R4t5Y6u7I8o9P0==",
    "https://llm.example/v1?sv=2024-01-01&sig=AbCdEf0123%2B456",
    "https://llm.example/v1?token=0123456789abcdef",
    "https://llm.example/v1?api_key=0123456789abcdef",
    # A key in the path: after a segment that says so, in a provider's shape, 40 hex digits.
    "https://llm.example/key/0123456789abcdef0123456789abcdef01234567/v1",
    "https://llm.example/v1/0123456789abcdef0123456789abcdef01234567/chat",
    "https://llm.example/v1/sk-or-v1-0123456789abcdef0123/",
    "https://llm.example/api-key/q1W2e3R4t5Y6/v1",
    # Under any parameter's name, in a fragment, or a path segment's parameters.
    "https://llm.example/v1?x=sk-proj-abcdefghijklmnop1234",
    "https://llm.example/v1#access_token=0123456789abcdef",
    "https://llm.example/v1;key=0123456789abcdef",
]


@pytest.mark.parametrize("api_base", CREDENTIALED_BASES)
def test_an_api_base_holding_a_credential_is_refused(staff, make_operator, api_base):
    """A key belongs in the variable `api_key_env` names, which no page shows: one written in
    the URL was shown to every operator who may view aliases (an Analyst's list page), kept in
    the alias's console history, and quoted in the log by the errors that name the URL."""
    response = client_for(staff).post(
        admin_url(ModelAlias, "add"), new_alias(alias="keyed", api_base=api_base)
    )

    assert response.status_code == 200
    [error] = response.context["adminform"].form.errors["api_base"]
    assert error.startswith("Holds a credential")
    assert not ModelAlias.objects.filter(alias="keyed").exists()
    with pytest.raises(CommandError, match="api_base: Holds a credential"):
        call_command(
            "set_model_alias",
            "keyed",
            "--model=openai/x",
            f"--api-base={api_base}",
            stdout=StringIO(),
        )
    assert not ModelAlias.objects.filter(alias="keyed").exists()


def test_an_owner_still_edits_an_alias_saved_with_a_credential_before(make_operator):
    """The URL is a superuser's to set right; an Owner's page, which shows it read-only, saves
    what the Owner may change."""
    ModelAlias.objects.filter(alias="qwen").update(api_base=CREDENTIALED_BASES[0])
    qwen = ModelAlias.objects.get(alias="qwen")
    console = client_for(make_operator("Owner"))
    page = admin_url(ModelAlias, "change", qwen.pk)
    data = posted_back(console.get(page).text, "modelalias_form")
    data["max_output_tokens"] = "2048"

    response = console.post(page, data)

    assert response.status_code == 302, response.text
    qwen.refresh_from_db()
    assert qwen.max_output_tokens == 2048


def test_manage_py_check_names_an_alias_saved_with_a_credential_before():
    """An alias saved before such URLs were refused kept its key, with no word to anyone."""
    ModelAlias.objects.filter(alias="qwen").update(api_base=CREDENTIALED_BASES[3])
    out = StringIO()

    call_command("check", stdout=out, stderr=out)

    said = out.getvalue()
    assert "usage.W001" in said
    assert "The model alias 'qwen' holds a credential in its api_base (a key in its query)" in said
    assert "q1W2e3R4t5Y6u7I8o9P0" not in said  # named, never quoted


def test_manage_py_check_is_quiet_about_aliases_without_one():
    out = StringIO()

    call_command("check", stdout=out, stderr=out)

    assert "usage.W001" not in out.getvalue()


@pytest.mark.parametrize(
    "database_url",
    [
        # PostgreSQL not answering (a port nothing listens on), and a database not migrated.
        "postgres://postgres@127.0.0.1:9/pantheon",
        "sqlite:///{tmp}/empty.sqlite3",
    ],
)
def test_manage_py_check_runs_where_the_aliases_cannot_be_read(tmp_path, database_url):
    """`check` runs before `migrate` and while the database is away: the aliases' check is left
    out then, never a traceback."""
    env = {**os.environ, "DATABASE_URL": database_url.format(tmp=tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
