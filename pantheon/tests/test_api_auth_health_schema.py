"""`POST auth/token`, `GET health`, and the OpenAPI schema and docs. (`GET models` is a usage
endpoint: usage/tests/test_api_models.py.)"""

import asyncio
import heapq
import os
from dataclasses import replace
from unittest.mock import ANY

import pytest
from django.db import OperationalError, connections
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orchestration.gateway import CallTally
from orchestration.types import AliasConfig, LlmCall, LlmResult
from pantheon import db, draining
from pantheon.capacity import PROCESS
from pantheon.db import SectionGate

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token"
HEALTH_URL = "/api/v1/health"


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


# --- auth/token -----------------------------------------------------------------------------


def test_token_for_valid_credentials_authenticates_later_requests(owner, anon_client, make_agent):
    make_agent(owner, "ada")

    response = anon_client.post(TOKEN_URL, {"username": "owner", "password": "owner-pass-123"})

    assert response.status_code == 200
    assert set(response.json()) == {"token"}
    assert response["Cache-Control"] == "no-store"  # a credential: no cache keeps it
    key = response.json()["token"]
    assert Token.objects.get(user=owner).key == key
    agents = token_client(key).get("/api/v1/agents")
    assert agents.status_code == 200
    assert [agent["agent_key"] for agent in agents.json()["results"]] == ["ada"]


def test_the_token_of_a_deactivated_account_is_refused(owner):
    """The console revokes the token of an account it deactivates; one deactivated any other
    way (a script, a bulk update) keeps its token row, which must open nothing."""
    key = Token.objects.create(user=owner).key
    type(owner).objects.filter(pk=owner.pk).update(is_active=False)

    response = token_client(key).get("/api/v1/agents")

    assert response.status_code == 401
    assert response.json()["detail"] == "User inactive or deleted."


def test_token_is_stable_across_logins(owner, anon_client):
    credentials = {"username": "owner", "password": "owner-pass-123"}

    first = anon_client.post(TOKEN_URL, credentials).json()["token"]
    second = anon_client.post(TOKEN_URL, credentials).json()["token"]

    assert first == second
    assert Token.objects.count() == 1


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "owner", "password": "wrong-password"},
        {"username": "nobody", "password": "owner-pass-123"},
    ],
)
def test_token_for_wrong_credentials_is_400(owner, anon_client, credentials):
    response = anon_client.post(TOKEN_URL, credentials)

    assert response.status_code == 400
    # DRF's key, which clients read, and the coded refusal every other refusal has.
    assert response.json() == {
        "non_field_errors": ["Unable to log in with provided credentials."],
        "detail": {
            "code": "invalid_credentials",
            "message": "Unable to log in with provided credentials.",
        },
    }
    assert not Token.objects.exists()


def test_the_login_of_an_inactive_account_is_refused_as_a_wrong_password(owner, anon_client):
    owner.is_active = False
    owner.save()

    response = anon_client.post(TOKEN_URL, {"username": "owner", "password": "owner-pass-123"})

    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "invalid_credentials"
    assert not Token.objects.exists()


@pytest.mark.parametrize(
    ("stored", "typed"),
    [
        ("owner", "\uff4f\uff57\uff4e\uff45\uff52"),  # ｏｗｎｅｒ, fullwidth
        ("zo\u00eb", "zoe\u0308"),  # ë typed as e and a combining diaeresis
    ],
)
def test_token_reads_the_username_as_the_console_login_does(
    django_user_model, anon_client, stored, typed
):
    """The console's login reads a username NFKC-normalized (Django's `UsernameField`, as
    usernames are stored), and logged these in; `auth/token` compared them as typed: a 400."""
    user = django_user_model.objects.create_user(stored, password="owner-pass-123")

    response = anon_client.post(TOKEN_URL, {"username": typed, "password": "owner-pass-123"})

    assert response.status_code == 200, response.content
    assert Token.objects.get(key=response.json()["token"]).user == user


def test_token_requires_username_and_password(anon_client):
    response = anon_client.post(TOKEN_URL, {})

    assert response.status_code == 400
    assert set(response.json()) == {"username", "password"}


@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("value", [["owner"], 123, {"name": "owner"}])
def test_token_refuses_what_is_no_string_as_the_api_does(owner, anon_client, field, value):
    credentials = {"username": "owner", "password": "owner-pass-123", field: value}

    response = anon_client.post(TOKEN_URL, credentials, format="json")

    assert response.status_code == 400
    assert response.json() == {field: ["Must be a string."]}
    assert not Token.objects.exists()


def test_an_unknown_token_is_401(owner):
    response = token_client("0" * 40).get("/api/v1/agents")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}


# --- health ---------------------------------------------------------------------------------


IDLE_WORKER = {
    "pid": os.getpid(),
    "requests_in_flight": 0,
    "request_limit": None,
    "turns_running": 0,
    "db_sections": {"running": 0, "waiting": 0, "limit": 4},
    "db_pool": None,  # the tests' own connection
    "llm": {
        "window_seconds": 300,
        "calls": 0,
        "failed": 0,
        "refused_key": 0,
        "mean_ms": None,
        "max_ms": None,
        "last_failure": None,
    },
}


@pytest.fixture(autouse=True)
def no_calls_yet(monkeypatch):
    """This process's tally of LLM calls, as a worker that made none has it (other tests'
    calls are in the real one)."""
    from pantheon import health

    monkeypatch.setattr(health, "CALLS", CallTally())


def staff_token_client(django_user_model, *, is_staff: bool = True) -> APIClient:
    """An API token of an operator (staff, no other permission) or of a customer."""
    user = django_user_model.objects.create_user(
        username="operator", password="operator-pass-123", is_staff=is_staff
    )
    return token_client(Token.objects.create(user=user).key)


@pytest.fixture
def operator_client(django_user_model) -> APIClient:
    return staff_token_client(django_user_model)


def test_health_needs_no_authentication(anon_client):
    """A balancer's probe: the verdict alone, not the worker's figures (its pid, load and
    failing aliases are the operators')."""
    response = anon_client.get(HEALTH_URL)

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "postgresql", "llm_backend": "demo"}


def test_health_shows_the_worker_to_staff_alone(operator_client, django_user_model, client):
    """By an operator's API token or console session; not to a customer's token nor to a token
    that is no one's (still 200: the check stays a probe)."""
    customer = APIClient()
    customer.force_authenticate(None)
    customer_user = django_user_model.objects.create_user(username="c", password="c-pass-1234")
    customer.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=customer_user)}")
    client.force_login(django_user_model.objects.get(username="operator"))

    by_token = operator_client.get(HEALTH_URL)
    by_session = client.get(HEALTH_URL)
    by_customer = customer.get(HEALTH_URL)
    by_stranger = token_client("0" * 40).get(HEALTH_URL)

    assert by_token.status_code == 200
    assert by_token.json()["worker"] == IDLE_WORKER
    assert by_session.json()["worker"] == IDLE_WORKER
    assert (by_customer.status_code, "worker" in by_customer.json()) == (200, False)
    assert (by_stranger.status_code, "worker" in by_stranger.json()) == (200, False)


def test_health_says_how_loaded_its_worker_is(operator_client, monkeypatch):
    """ "Everything is slow": is the worker full, its database work queued, its pool exhausted?
    The health check said only that the database answered a SELECT 1; the figures were in no
    answer and no line."""
    gate = SectionGate(4)
    gate.running = 4
    for arrival in (1.0, 2.0, 3.0):
        heapq.heappush(gate._waiting, (arrival, arrival, None))
    loop = asyncio.new_event_loop()
    monkeypatch.setitem(db._gates, loop, gate)
    monkeypatch.setattr(PROCESS, "in_flight", 812)
    monkeypatch.setattr(PROCESS, "limit", 1000)
    monkeypatch.setitem(draining._stoppers, "a turn", (loop, lambda: None))

    class Pool:
        def get_stats(self):
            return {
                "pool_min": 2,
                "pool_max": 16,
                "pool_size": 16,
                "pool_available": 0,
                "requests_waiting": 9,
                "requests_num": 5000,
            }

    monkeypatch.setattr(type(connections["default"]), "pool", Pool(), raising=False)
    # The provider refused a rotated key twice, after one call it answered in 900 ms.
    from pantheon import health

    now = [1000.0]
    calls = CallTally(clock=lambda: now[0])
    alias = AliasConfig(alias="deepseek", litellm_model="openai/x")
    call = LlmCall(alias=alias, messages=(), purpose="agent", agent_key="ada")
    answered = LlmResult(
        status="success",
        text="hi",
        input_tokens_fresh=1,
        input_tokens_cached=0,
        output_tokens=1,
        latency_ms=900,
        attempts=1,
        provider="openai",
        provider_model="x",
    )
    refused = replace(answered, status="error", error_kind="bad_request", latency_ms=100)
    calls.record(call, answered)
    calls.record(call, refused, 401)
    calls.record(call, refused, 401)
    now[0] += 200  # still within the five minutes
    monkeypatch.setattr(health, "CALLS", calls)
    try:
        body = operator_client.get(HEALTH_URL).json()
    finally:
        loop.close()

    assert body["worker"] == {
        "pid": os.getpid(),
        "requests_in_flight": 812,
        "request_limit": 1000,
        "turns_running": 1,
        "db_sections": {"running": 4, "waiting": 3, "limit": 4},
        "db_pool": {"size": 16, "idle": 0, "max": 16, "waiting": 9},
        "llm": {
            "window_seconds": 300,
            "calls": 3,
            "failed": 2,
            "refused_key": 2,
            "mean_ms": 367,
            "max_ms": 900,
            "last_failure": {
                "at": ANY,
                "model_alias": "deepseek",
                "error_kind": "bad_request",
                "provider_status": 401,
            },
        },
    }
    now[0] += 300  # those minutes have passed
    quiet = calls.figures()
    assert (quiet["calls"], quiet["failed"], quiet["refused_key"]) == (0, 0, 0)
    # The failure went with its minute: a monitor that alerts on it hears the alias heal.
    assert quiet["last_failure"] is None


def test_health_ignores_a_bad_token():
    response = token_client("not-a-token").get(HEALTH_URL)

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_health_is_503_when_the_database_is_unreachable(anon_client, operator_client, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError("connection refused")

    # Patched on the class so that undoing the patch leaves no attribute on the connection.
    monkeypatch.setattr(type(connections["default"]), "cursor", unreachable)

    response = anon_client.get(HEALTH_URL)
    # An operator's token cannot be read either: the verdict, without the figures.
    by_operator = operator_client.get(HEALTH_URL)

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "postgresql",
        "llm_backend": "demo",
    }
    assert (by_operator.status_code, by_operator.json()) == (503, response.json())
    # When to look again, as a request that lost its database connection is told.
    assert response["Retry-After"] == "2"


# --- OpenAPI --------------------------------------------------------------------------------


def test_schema_is_served_without_authentication(anon_client):
    response = anon_client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Pantheon API"
    assert {
        "/api/v1/auth/token",
        "/api/v1/health",
        "/api/v1/models",
        "/api/v1/agents",
        "/api/v1/agents/{id}",
        "/api/v1/agents/{agent_id}/sessions",
        "/api/v1/rooms",
        "/api/v1/rooms/{id}",
        "/api/v1/rooms/{id}/mode",
        "/api/v1/rooms/{id}/agents",
        "/api/v1/rooms/{room_id}/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/sessions/{session_id}/messages",
    } <= set(schema["paths"])
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_schema_does_not_advertise_put_on_a_room(anon_client):
    """`PUT rooms/{id}` answers 405 (only PATCH edits a room), so the schema must not offer it."""
    schema = anon_client.get("/api/schema/", {"format": "json"}).json()

    room_operations = schema["paths"]["/api/v1/rooms/{id}"]
    assert {"get", "patch", "delete"} <= set(room_operations)
    assert "put" not in room_operations


def test_schema_defaults_to_yaml(anon_client):
    response = anon_client.get("/api/schema/")

    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


@pytest.mark.parametrize(
    "query, accept, status",
    [("?format=xml", "*/*", 404), ("", "text/html", 406), ("?format=", "*/*", 404)],
)
def test_the_schemas_errors_are_json_like_every_answer_under_api(
    anon_client, query, accept, status
):
    """They were rendered as YAML, `detail: {string: ..., code: ...}`."""
    response = anon_client.get(f"/api/schema/{query}", HTTP_ACCEPT=accept)

    assert response.status_code == status
    assert response["content-type"] == "application/json"
    assert isinstance(response.json()["detail"], str)


def test_docs_page_renders(anon_client):
    response = anon_client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger-ui" in response.content
    assert b"/api/schema/" in response.content


def test_health_whose_figures_fail_still_answers_for_the_database(operator_client, monkeypatch):
    from pantheon import health

    def broken():
        raise AttributeError("a module the gunicorn master imported before a reload")

    monkeypatch.setattr(health, "sections_now", broken)

    response = operator_client.get(HEALTH_URL)

    assert response.status_code == 200
    assert response.json()["worker"] is None
