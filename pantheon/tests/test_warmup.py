"""What a worker does before its first request (`pantheon.warmup`)."""

import logging

import pytest

from pantheon import warmup
from pantheon.testing.processes import production_python
from pantheon.warmup import GC_YOUNG_THRESHOLD
from usage.models import ModelAlias


def test_the_startup_heap_is_left_out_of_garbage_collection():
    """Imported at worker start, the ASGI module loads litellm and Django, then freezes them:
    a full collection no longer walks every object they brought."""
    frozen, still_tracked, threshold = production_python(
        "import gc, json, pantheon.asgi; "
        "print(json.dumps([gc.get_freeze_count(), len(gc.get_objects()), gc.get_threshold()]))",
        PANTHEON_LLM_BACKEND="demo",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/unused",  # not reached: no pool
        DB_POOL_MAX_SIZE="0",
    )

    assert frozen > 100_000  # litellm alone brings ~300,000
    assert still_tracked < frozen / 10
    assert threshold[0] == GC_YOUNG_THRESHOLD


def test_the_gunicorn_master_imports_no_django():
    """gunicorn's master imports the worker class before it forks its workers; whatever that
    brings stays in the master's memory, next to each worker's (Django and DRF: 27 MB). So
    does the module its `on_starting` collects static files with."""
    loaded = production_python(
        "import json, sys, pantheon.workers, pantheon.collect_static; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    assert {"pantheon.workers", "pantheon.collect_static"} <= set(loaded)
    assert not [name for name in loaded if name.split(".")[0] in {"django", "rest_framework"}]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # it closes the connection
def test_a_worker_warming_up_says_which_role_names_a_missing_model_alias(settings, caplog):
    """A typo in PANTHEON_MANAGER_MODEL_ALIAS showed first as an orchestrator room's refusal,
    and one in PANTHEON_SUMMARIZER_MODEL_ALIAS as nothing at all (no summaries)."""
    settings.PANTHEON_MANAGER_MODEL_ALIAS = "deepseak"
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "llama"
    ModelAlias.objects.filter(alias="llama").update(enabled=False)

    with caplog.at_level(logging.WARNING, logger="pantheon.warmup"):
        warmup.open_the_pool()

    assert caplog.messages == [
        "PANTHEON_MANAGER_MODEL_ALIAS names the model alias 'deepseak', which does not exist: "
        "orchestrator rooms refuse turns until it is added (manage.py set_model_alias) or the "
        "setting names another",
        "PANTHEON_SUMMARIZER_MODEL_ALIAS names the model alias 'llama', which is disabled: "
        "sessions get no new summaries until it is enabled (manage.py set_model_alias) or the "
        "setting names another",
    ]
    caplog.clear()
    settings.PANTHEON_MANAGER_MODEL_ALIAS = settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "deepseek"
    with caplog.at_level(logging.WARNING, logger="pantheon.warmup"):
        warmup.warn_of_missing_role_aliases()
    assert caplog.messages == []


def test_with_the_pool_a_request_starts_without_a_trip_to_its_thread():
    """Django's `request_started` receivers have nothing to do with the pool (the request before
    gave the thread's connection back as it finished), yet each request went to its thread and
    back to run them: the production application drops them there, and keeps them (and
    `request_finished`'s) without the pool, where a connection outlives its request."""
    script = (
        "import json, django; django.setup(); "
        "from django.core.signals import request_finished, request_started; "
        "from pantheon.threads import PantheonASGIHandler; PantheonASGIHandler(); "
        "names = lambda signal: sorted(r.__name__ for r in signal._live_receivers(None)[0]); "
        "print(json.dumps([names(request_started), names(request_finished)]))"
    )
    url = "postgres://postgres@127.0.0.1:5432/unused"  # not reached: nothing is queried

    pooled = production_python(script, DATABASE_URL=url, DB_POOL_MAX_SIZE="16")
    unpooled = production_python(script, DATABASE_URL=url, DB_POOL_MAX_SIZE="0")

    assert pooled[0] == []
    assert "close_old_connections" in pooled[1]
    assert unpooled[0] == ["close_old_connections", "reset_queries"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # it closes the connection
def test_a_worker_warming_up_names_the_key_variables_its_aliases_lack(
    settings, caplog, monkeypatch
):
    """An alias whose key variable is not set sends no call: every answer on it fails
    bad_request. That was said only call by call, once users had seen their turns fail."""
    settings.PANTHEON_LLM_BACKEND = "live"
    ModelAlias.objects.filter(alias="llama").update(api_key_env="GROQ_API_KEY")
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)  # not called: not named
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.setenv("GROQ_API_KEY", "  \n")  # blank: as good as unset

    with caplog.at_level(logging.WARNING, logger="pantheon.warmup"):
        warmup.open_the_pool()

    aliases = ModelAlias.objects.filter(enabled=True, api_key_env="OPENROUTER_API_KEY")
    named = ", ".join(sorted(aliases.values_list("alias", flat=True)))
    assert caplog.messages == [
        "GROQ_API_KEY is not set in this server's environment: the calls of the model "
        "alias(es) llama are not sent, and their answers fail bad_request, until it is",
        "OPENROUTER_API_KEY is not set in this server's environment: the calls of the model "
        f"alias(es) {named} are not sent, and their answers fail bad_request, until it is",
    ]
    assert "qwen" not in named

    caplog.clear()
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-1")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-1")
    with caplog.at_level(logging.WARNING, logger="pantheon.warmup"):
        warmup.warn_of_aliases_without_their_key()
    assert caplog.messages == []
    settings.PANTHEON_LLM_BACKEND = "demo"  # the demo provider needs no key
    monkeypatch.delenv("OPENROUTER_API_KEY")
    with caplog.at_level(logging.WARNING, logger="pantheon.warmup"):
        warmup.warn_of_aliases_without_their_key()
    assert caplog.messages == []
