"""Three actors for every endpoint test (owner, outsider, staff) and small factories."""

import threading
import time
from decimal import Decimal

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from orchestration.types import LlmCall, LlmResult
from rooms.models import Agent, Room, RoomAgent, RoomMode
from sessions_app.models import Session


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters live in the cache: no test inherits another's requests."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user(username="owner", password="owner-pass-123")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user(username="outsider", password="outsider-pass-123")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="staff-pass-123", is_staff=True, is_superuser=True
    )


def _client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def owner_client(owner) -> APIClient:
    return _client_for(owner)


@pytest.fixture
def outsider_client(outsider) -> APIClient:
    return _client_for(outsider)


@pytest.fixture
def make_agent():
    def make(owner, key: str = "ada", **fields) -> Agent:
        defaults = {
            "name": key.title(),
            "model_alias": "deepseek",
            "role_prompt": f"{key.title()} helps with research.",
        }
        defaults.update(fields)
        return Agent.objects.create(owner=owner, agent_key=key, **defaults)

    return make


@pytest.fixture
def make_room():
    def make(owner, agents=(), mode: str = RoomMode.MANUAL, **fields) -> Room:
        room = Room.objects.create(
            owner=owner, name=fields.pop("name", "Room"), current_mode=mode, **fields
        )
        RoomAgent.objects.bulk_create(
            RoomAgent(room=room, agent=agent, position=index) for index, agent in enumerate(agents)
        )
        return room

    return make


@pytest.fixture
def make_session():
    def make(owner, room=None, agent=None, **fields) -> Session:
        return Session.objects.create(started_by=owner, room=room, agent=agent, **fields)

    return make


class FakeGateway:
    """A scripted LLM gateway: records every call, answers instantly (or after `delay`).

    `fail` maps agent keys to an error kind; `routing_reply`/`summary_reply` are the raw texts
    the manager and the summarizer answer with.
    """

    backend = "fake"

    def __init__(self, *, delay: float = 0.0):
        self.delay = delay
        self.calls: list[LlmCall] = []
        self.fail: dict[str, str] = {}
        self.fail_purposes: dict[str, str] = {}
        self.routing_reply = '{"selected_agent_keys": []}'
        self.summary_reply = (
            '{"summary": "They talked.", "key_facts": ["a fact"], "decisions": ["a decision"],'
            ' "open_questions": ["a question?"], "action_items": ["an action"]}'
        )
        self.usage = (100, 20, 10)  # fresh, cached, output
        self.cost: Decimal | None = None  # litellm's cost estimate, None when unknown
        self.during_call = None  # a callable(call) run while the "provider" works
        self._lock = threading.Lock()

    def reply_for(self, call: LlmCall) -> str:
        if call.purpose == "routing":
            return self.routing_reply
        if call.purpose == "summary":
            return self.summary_reply
        return f"{call.agent_key} answers via {call.alias.alias} (call {len(self.calls)})"

    def complete(self, call: LlmCall) -> LlmResult:
        with self._lock:
            self.calls.append(call)
        if self.delay:
            time.sleep(self.delay)
        if self.during_call is not None:
            self.during_call(call)
        error_kind = self.fail_purposes.get(call.purpose) or self.fail.get(call.agent_key or "")
        if error_kind:
            status = error_kind if error_kind in ("timeout", "rate_limited") else "error"
            return LlmResult(
                status=status,
                text="",
                input_tokens_fresh=0,
                input_tokens_cached=0,
                output_tokens=0,
                latency_ms=5,
                attempts=3 if error_kind == "rate_limited" else 1,
                provider="fake",
                provider_model=call.alias.litellm_model,
                error_kind=error_kind,
            )
        fresh, cached, output = self.usage
        return LlmResult(
            status="success",
            text=self.reply_for(call),
            input_tokens_fresh=fresh,
            input_tokens_cached=cached,
            output_tokens=output,
            latency_ms=5,
            attempts=1,
            provider="fake",
            provider_model=call.alias.litellm_model,
            provider_cost_usd=self.cost,
        )

    def calls_for(self, purpose: str) -> list[LlmCall]:
        return [call for call in self.calls if call.purpose == purpose]


@pytest.fixture
def fake_gateway(monkeypatch) -> FakeGateway:
    """Route every turn's LLM calls to a FakeGateway."""
    gateway = FakeGateway()
    monkeypatch.setattr("sessions_app.turns.get_gateway", lambda: gateway)
    return gateway


@pytest.fixture
def post_turn():
    def post(client: APIClient, session, message: str, **extra):
        return client.post(
            f"/api/v1/sessions/{session.id}/turns", {"message": message, **extra}, format="json"
        )

    return post
