"""Operator setup: migrations from zero, no missing migrations, `check --deploy`, `seed_demo`,
`set_model_alias`."""

import secrets
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from psycopg import sql
from rest_framework.test import APIClient

from pantheon.testing.processes import run_production
from rooms.models import Agent, Room, RoomAgent
from sessions_app.models import Session
from usage.models import ModelAlias

SEEDED_ALIASES = ["deepseek", "gpt_oss", "llama", "premium", "qwen"]
OPERATED_APPS = {"rooms", "sessions_app", "usage"}


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py ARGS` in a fresh process, with production settings unless `env` says otherwise."""
    return run_production(["manage.py", *args], **env)


def server_params() -> dict:
    """How to reach the PostgreSQL server the tests run on."""
    db = settings.DATABASES["default"]
    return {
        "host": db.get("HOST") or "127.0.0.1",
        "port": db.get("PORT") or 5432,
        "user": db.get("USER") or "postgres",
        "password": db.get("PASSWORD") or None,
    }


def query(url_params: dict, statement: str) -> list[tuple]:
    with psycopg.connect(**url_params) as conn:
        return conn.execute(statement).fetchall()


# --- migrations -----------------------------------------------------------------------------


@contextmanager
def new_database(prefix: str) -> Iterator[tuple[str, dict]]:
    """A brand-new, empty PostgreSQL database named `prefix` and a random suffix, dropped
    afterwards: (its url, its connection params)."""
    params = server_params()
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    password = f":{params['password']}" if params["password"] else ""
    url = f"postgres://{params['user']}{password}@{params['host']}:{params['port']}/{name}"
    try:
        yield url, {**params, "dbname": name}
    finally:
        with psycopg.connect(**params, dbname="postgres", autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def empty_database():
    """A brand-new, empty PostgreSQL database (dropped afterwards); yields (url, params)."""
    with new_database("pantheon_from_zero_") as created:
        yield created


def seeded_state(params: dict) -> tuple[list[str], dict[str, set[tuple[str, str]]]]:
    """(enabled aliases, {group name: {(app_label, codename)}}) as a fresh database holds them."""
    aliases = [row[0] for row in query(params, "SELECT alias FROM usage_modelalias ORDER BY 1")]
    rows = query(
        params,
        """
        SELECT g.name, ct.app_label, p.codename
        FROM auth_group g
        LEFT JOIN auth_group_permissions gp ON gp.group_id = g.id
        LEFT JOIN auth_permission p ON p.id = gp.permission_id
        LEFT JOIN django_content_type ct ON ct.id = p.content_type_id
        """,
    )
    groups: dict[str, set[tuple[str, str]]] = {}
    for group, app_label, codename in rows:
        groups.setdefault(group, set())
        if codename:
            groups[group].add((app_label, codename))
    return aliases, groups


def assert_seeded(params: dict) -> None:
    aliases, groups = seeded_state(params)
    assert aliases == SEEDED_ALIASES
    assert set(groups) == {"Owner", "Analyst"}
    owner, analyst = groups["Owner"], groups["Analyst"]
    assert {app for app, _ in owner} == OPERATED_APPS | {"auth"}
    assert {
        ("rooms", "change_room"),
        ("rooms", "change_agent"),
        ("usage", "change_modelalias"),
        ("usage", "change_modelprice"),
        ("usage", "change_billingprofile"),
        ("sessions_app", "delete_session"),
    } <= owner
    # Owners change configuration, never records.
    for record in ("turn", "message", "sessionsummary", "turncontextaudit", "llmcallevent"):
        assert not {codename for _, codename in owner if codename.endswith(f"_{record}")} - {
            f"view_{record}"
        }
    assert analyst == {(app, codename) for app, codename in owner if codename.startswith("view_")}
    assert {
        ("usage", "view_llmcallevent"),
        ("usage", "view_monthlyusage"),
        ("rooms", "view_room"),
        ("auth", "view_user"),
    } <= analyst


def test_migrations_run_from_zero_on_an_empty_database_and_seed_it(empty_database):
    url, params = empty_database

    result = run_manage("migrate", "--noinput", DATABASE_URL=url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_seeded(params)


def test_migrations_reverse_to_zero_and_apply_again(empty_database):
    url, params = empty_database
    assert run_manage("migrate", "--noinput", DATABASE_URL=url).returncode == 0

    back = run_manage("migrate", "rooms", "zero", "--noinput", DATABASE_URL=url)

    assert back.returncode == 0, back.stdout + back.stderr
    tables = {row[0] for row in query(params, "SELECT tablename FROM pg_tables")}
    assert not {
        table for table in tables if table.startswith(("rooms_", "sessions_app_", "usage_"))
    }
    again = run_manage("migrate", "--noinput", DATABASE_URL=url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_seeded(params)


def test_migrating_to_zero_removes_the_roles_the_migrations_created(empty_database):
    """`migrate usage zero` left the `Owner` and `Analyst` groups behind, holding permissions
    of tables no longer there. A group of the same name that holds a permission the migrations
    never give (here an operator's extension of Analyst) is an operator's, and stays."""
    url, params = empty_database
    assert run_manage("migrate", "--noinput", DATABASE_URL=url).returncode == 0
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO auth_group_permissions (group_id, permission_id)
            SELECT g.id, p.id FROM auth_group g, auth_permission p
            WHERE g.name = 'Analyst' AND p.codename = 'add_user'
            """
        )

    back = run_manage("migrate", "usage", "zero", "--noinput", DATABASE_URL=url)

    assert back.returncode == 0, back.stdout + back.stderr
    assert query(params, "SELECT name FROM auth_group ORDER BY 1") == [("Analyst",)]


@pytest.mark.django_db
def test_the_models_have_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO(), stderr=StringIO())


# --- check --deploy -------------------------------------------------------------------------


def test_check_deploy_passes_with_production_settings():
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(45),  # 60 characters
        ALLOWED_HOSTS="pantheon.example.com",
        SECURE_SSL_REDIRECT="true",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
    )

    assert result.returncode == 0, result.stdout + result.stderr


# --- seed_demo ------------------------------------------------------------------------------


def seed_demo(*args: str, debug: bool = True) -> str:
    """`seed_demo` as `make run` runs it (DEBUG=true), or with DEBUG off, a server's setting."""
    out = StringIO()
    with override_settings(DEBUG=debug):
        call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def demo_counts() -> tuple[int, int, int, int]:
    return (
        get_user_model().objects.filter(username="demo").count(),
        Agent.objects.count(),
        Room.objects.count(),
        Session.objects.count(),
    )


@pytest.mark.django_db
def test_seed_demo_creates_a_user_agents_and_one_room_per_mode():
    output = seed_demo()

    assert "Created demo user" in output
    demo = get_user_model().objects.get(username="demo")
    assert demo.is_staff and demo.is_superuser
    assert list(demo.groups.values_list("name", flat=True)) == ["Owner"]
    assert list(Agent.objects.filter(owner=demo).values_list("agent_key", "model_alias")) == [
        ("ada", "deepseek"),
        ("linus", "llama"),
        ("grace", "qwen"),
        ("marie", "gpt_oss"),
    ]
    rooms = Room.objects.filter(owner=demo).order_by("created_at")
    assert [room.current_mode for room in rooms] == ["manual", "roundtable", "orchestrator"]
    for room in rooms:
        seats = RoomAgent.objects.filter(room=room).order_by("position")
        assert [seat.agent.agent_key for seat in seats] == ["ada", "linus", "grace", "marie"]
        assert Session.objects.filter(room=room, started_by=demo, deleted_at=None).count() == 1


@pytest.mark.django_db
def test_seed_demo_is_idempotent():
    seed_demo()
    first = demo_counts()

    output = seed_demo()

    assert first == (1, 4, 3, 3)
    assert demo_counts() == first
    assert "its password was left alone" in output


@pytest.mark.django_db
def test_seed_demo_at_verbosity_0_says_only_that_it_created_the_demo_superuser():
    """It printed its two lines whatever the verbosity; the operations tester's catch."""
    first = seed_demo("-v", "0")
    again = seed_demo("-v", "0")

    assert first == (
        "Created demo user: username demo, password pantheon-demo (superuser: for a local "
        "demo only)\n"
    )
    assert again == ""
    assert demo_counts() == (1, 4, 3, 3)


@pytest.mark.django_db
def test_seed_demo_says_the_demo_user_is_closed():
    """An operator who closed the demo account (Active unticked) ran make run again: it said
    "Demo data ready" and printed demo / pantheon-demo, which then failed to log in."""
    seed_demo()
    get_user_model().objects.filter(username="demo").update(is_active=False)
    err = StringIO()

    with override_settings(DEBUG=True):
        call_command("seed_demo", "-v", "0", stdout=StringIO(), stderr=err)

    assert err.getvalue() == (
        "Warning: the demo user demo is closed (Active unticked in the console): it cannot log "
        "in until Active is ticked again on its page.\n"
    )
    assert not get_user_model().objects.get(username="demo").is_active  # left as it was


@pytest.mark.django_db
def test_seed_demo_replaces_a_deleted_demo_session():
    seed_demo()
    Session.objects.filter(room__name="Roundtable").update(deleted_at=timezone.now())

    seed_demo()

    assert Session.objects.filter(room__name="Roundtable", deleted_at=None).count() == 1
    assert Session.objects.count() == 4


@pytest.mark.django_db
def test_the_demo_user_can_log_in_to_the_api():
    seed_demo()

    response = APIClient().post(
        "/api/v1/auth/token", {"username": "demo", "password": "pantheon-demo"}
    )

    assert response.status_code == 200
    rooms = APIClient(HTTP_AUTHORIZATION=f"Token {response.json()['token']}").get("/api/v1/rooms")
    assert rooms.json()["count"] == 3


@pytest.mark.django_db
def test_seed_demo_refuses_the_published_password_superuser_with_debug_off():
    with pytest.raises(CommandError, match="DEBUG is off.*--allow-published-password"):
        seed_demo(debug=False)

    assert demo_counts() == (0, 0, 0, 0)
    response = APIClient().post(
        "/api/v1/auth/token", {"username": "demo", "password": "pantheon-demo"}
    )
    assert response.status_code == 400


@pytest.mark.django_db
def test_seed_demo_with_debug_off_creates_the_user_when_told_to():
    output = seed_demo("--allow-published-password", debug=False)

    assert "Created demo user" in output
    assert demo_counts() == (1, 4, 3, 3)


@pytest.mark.django_db
def test_seed_demo_with_debug_off_tops_up_an_existing_demo_user():
    demo = get_user_model().objects.create_user("demo", password="another-one-42")
    Agent.objects.create(owner=demo, agent_key="ada", name="Ada", model_alias="deepseek")

    output = seed_demo(debug=False)

    assert "its password was left alone" in output
    assert demo_counts() == (1, 4, 3, 3)
    assert get_user_model().objects.get(username="demo").check_password("another-one-42")


def test_seed_demo_on_the_command_line_refuses_with_debug_off_and_seeds_with_it_on(
    empty_database,
):
    url, params = empty_database
    assert run_manage("migrate", "--noinput", DATABASE_URL=url).returncode == 0

    refused = run_manage("seed_demo", DATABASE_URL=url, DEBUG="false")
    seeded = run_manage("seed_demo", DATABASE_URL=url, DEBUG="true")

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.strip().startswith("CommandError: refused: DEBUG is off")
    assert "Traceback" not in refused.stderr
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert "Created demo user" in seeded.stdout
    assert query(params, "SELECT username, is_superuser FROM auth_user") == [("demo", True)]


# --- set_model_alias ------------------------------------------------------------------------


def set_model_alias(*args: str) -> str:
    out = StringIO()
    call_command("set_model_alias", *args, stdout=out)
    return out.getvalue()


def enabled_aliases() -> list[str]:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user(username="reader"))
    response = client.get("/api/v1/models")
    assert response.status_code == 200
    return [model["alias"] for model in response.json()]


@pytest.mark.django_db
def test_set_model_alias_creates_an_alias():
    output = set_model_alias(
        "mistral",
        "--model",
        "openrouter/mistralai/mistral-large",
        "--api-base",
        "https://llm.example.com/v1",
        "--api-key-env",
        "MISTRAL_API_KEY",
        "--context-window",
        "32000",
    )

    assert output.startswith("Created alias mistral: openrouter/mistralai/mistral-large")
    row = ModelAlias.objects.get(alias="mistral")
    assert (row.litellm_model, row.api_base, row.api_key_env, row.context_window) == (
        "openrouter/mistralai/mistral-large",
        "https://llm.example.com/v1",
        "MISTRAL_API_KEY",
        32000,
    )
    assert row.enabled
    assert "mistral" in enabled_aliases()


@pytest.mark.django_db
def test_set_model_alias_updates_only_the_given_fields():
    before = ModelAlias.objects.get(alias="llama")

    output = set_model_alias("llama", "--api-base", "https://llm.example.com/v1")

    assert output.startswith("Updated alias llama")
    after = ModelAlias.objects.get(alias="llama")
    assert after.api_base == "https://llm.example.com/v1"
    assert (after.litellm_model, after.api_key_env, after.context_window, after.enabled) == (
        before.litellm_model,
        before.api_key_env,
        before.context_window,
        before.enabled,
    )


@pytest.mark.django_db
def test_set_model_alias_disable_and_enable_toggle_the_models_list():
    set_model_alias("qwen", "--disable")

    assert not ModelAlias.objects.get(alias="qwen").enabled
    assert enabled_aliases() == ["deepseek", "gpt_oss", "llama", "premium"]

    set_model_alias("qwen", "--enable")

    assert ModelAlias.objects.get(alias="qwen").enabled


@pytest.mark.django_db
def test_set_model_alias_needs_a_model_for_a_new_alias():
    with pytest.raises(CommandError, match="--model is required"):
        set_model_alias("brand_new", "--context-window", "32000")

    assert not ModelAlias.objects.filter(alias="brand_new").exists()


@pytest.mark.django_db
def test_set_model_alias_refuses_an_invalid_value():
    with pytest.raises(CommandError, match="context_window"):
        set_model_alias("llama", "--context-window", "10")

    assert ModelAlias.objects.get(alias="llama").context_window == 131_072


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, refusal",
    [
        # The minimum window (1024) left a prompt budget of 0: every turn was refused.
        (["--context-window", "1024"], "max_output_tokens: Must be less than the context"),
        (["--context-window", "1500", "--max-output-tokens", "100"], "Leaves the prompt"),
        (["--context-window", "2048", "--max-output-tokens", "4096"], "Must be less than"),
    ],
)
def test_set_model_alias_refuses_a_window_that_leaves_no_room_for_the_prompt(args, refusal):
    with pytest.raises(CommandError, match=refusal):
        set_model_alias("tiny", "--model", "openai/tiny", *args)

    assert not ModelAlias.objects.filter(alias="tiny").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "window, longest, refusal",
    [
        # Accepted: "Created alias wide … (context 2500, answers up to 2000, …)".
        (
            "2500",
            "2000",
            "context_window: Leaves the prompt 0 tokens once the answer (2,000) and the overhead "
            "(1,024) are kept: at least 512 are needed; answers of 2,000 tokens need a window "
            "of 3,536 or more.",
        ),
        # Refused, but for "the answer (220)": a fifth of the window, not the 1,099 asked for.
        (
            "1100",
            "1099",
            "context_window: Leaves the prompt 0 tokens once the answer (1,099) and the overhead "
            "(1,024) are kept: at least 512 are needed; answers of 1,099 tokens need a window "
            "of 2,635 or more.",
        ),
        # Accepted on PostgreSQL, whose integer columns hold no more than 2,147,483,647.
        (
            "2147483647",
            "2147483646",
            "context_window: Leaves the prompt 0 tokens once the answer (2,147,483,646) and the "
            "overhead (107,374,183) are kept: at least 512 are needed; answers of 2,147,483,646 "
            "tokens need a window of 2,260,509,640 or more.",
        ),
    ],
)
def test_set_model_alias_keeps_the_whole_answer_beside_the_prompt(window, longest, refusal):
    """Only a fifth of the window was kept for the answer, though every call asks the provider
    for the whole max_output_tokens: a full prompt and the answer overran the window."""
    with pytest.raises(CommandError) as refused:
        set_model_alias(
            "wide",
            "--model",
            "openai/gpt-4o",
            "--context-window",
            window,
            "--max-output-tokens",
            longest,
        )

    assert refused.value.returncode == 1
    assert str(refused.value) == refusal
    assert not ModelAlias.objects.filter(alias="wide").exists()


@pytest.mark.django_db
def test_set_model_alias_takes_the_smallest_window_it_names():
    args = ("wide", "--model", "openai/gpt-4o", "--max-output-tokens", "2000")
    with pytest.raises(CommandError, match="need a window of 3,536 or more"):
        set_model_alias(*args, "--context-window", "3535")

    output = set_model_alias(*args, "--context-window", "3536")

    assert "(context 3536, answers up to 2000, enabled" in output


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name, refusal",
    [
        ("bad alias!", "Use letters, digits"),
        ("_under", "Use letters, digits"),
        ("DeepSeek", "deepseek exists already: aliases differ by more than case."),
    ],
)
def test_set_model_alias_refuses_a_name_clients_cannot_type_or_tell_apart(name, refusal):
    """Both were accepted: an alias with spaces and punctuation, and a case twin."""
    with pytest.raises(CommandError, match=refusal):
        set_model_alias(name, "--model", "openai/x")

    assert not ModelAlias.objects.filter(alias=name).exists()
    set_model_alias("deepseek", "--context-window", "65536")  # itself is no twin


@pytest.mark.django_db
def test_set_model_alias_sets_how_long_an_answer_may_be():
    output = set_model_alias(
        "tiny", "--model", "openai/tiny", "--context-window", "2048", "--max-output-tokens", "256"
    )

    assert "(context 2048, answers up to 256, enabled" in output
    row = ModelAlias.objects.get(alias="tiny")
    assert (row.context_window, row.max_output_tokens) == (2048, 256)


@pytest.mark.django_db
def test_set_model_alias_warns_when_it_disables_the_managers_alias(settings):
    settings.PANTHEON_MANAGER_MODEL_ALIAS = "llama"
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "deepseek"
    err = StringIO()

    call_command("set_model_alias", "llama", "--disable", stdout=StringIO(), stderr=err)

    assert err.getvalue().startswith(
        "Warning: While llama is disabled, orchestrated rooms refuse turns"
    )
    assert "summaries" not in err.getvalue()


@pytest.mark.django_db
def test_set_model_alias_refuses_enable_and_disable_together():
    with pytest.raises(CommandError):
        set_model_alias("llama", "--enable", "--disable")

    assert ModelAlias.objects.get(alias="llama").enabled


@pytest.mark.django_db
@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL", "lower_api_key"])
def test_set_model_alias_refuses_a_key_variable_that_is_not_a_provider_key(variable):
    with pytest.raises(CommandError, match="_API_KEY"):
        call_command("set_model_alias", "deepseek", "--api-key-env", variable)

    assert ModelAlias.objects.get(alias="deepseek").api_key_env == "OPENROUTER_API_KEY"
