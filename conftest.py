"""Three actors for every endpoint test (owner, outsider, staff) and small factories."""

import asyncio
import re
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pytest_django.plugin import blocking_manager_key  # internal: pytest-django is pinned
from rest_framework.test import APIClient

from orchestration.gateway import usage_or_estimate
from orchestration.types import LlmCall, LlmResult
from pantheon.testing.stub_llm import StubLLM
from pantheon.testing.tcp_proxy import TcpProxy
from pantheon.throttling import InvalidTokenThrottle
from rooms.models import Agent, Room, RoomAgent, RoomMode
from sessions_app.models import Session
from usage.selectors import month_start


def pytest_collection_modifyitems(config, items):
    """A transactional test flushes the database when it ends, and without a serialized
    rollback Django's post-migrate signal refills it (content types, permissions): the next
    test that restores its serialized copy then fails on duplicates, whichever it is in the
    order. Every transactional test here restores the serialized copy."""
    unserialized = [
        item.nodeid
        for item in items
        for marker in item.iter_markers("django_db")
        if marker.kwargs.get("transaction") and not marker.kwargs.get("serialized_rollback")
    ]
    if unserialized:
        raise pytest.UsageError(
            "transactional tests without serialized_rollback=True: " + ", ".join(unserialized)
        )


def _transactional(item) -> bool:
    """Whether `item` runs as a transactional test (pytest-django's rule): its database is
    flushed when it ends."""
    marker = item.get_closest_marker("django_db")
    fixtures = getattr(item, "fixturenames", ())
    flushed = marker and (marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences"))
    return bool(flushed) or bool({"transactional_db", "live_server"} & set(fixtures))


def _uses_db(item) -> bool:
    return item.get_closest_marker("django_db") is not None or "db" in getattr(
        item, "fixturenames", ()
    )


# Whether a transactional test in this process has flushed the database since its serialized
# rows (migrations' content types, permissions, groups, model aliases) were last put back.
_flushed = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A transactional test's flush leaves the tables empty: its serialized rows come back at
    the start of the next transactional test only. pytest-django runs every other database
    test before the transactional ones, but pytest-xdist's work stealing does not keep that
    order: a worker that has run its transactional tests takes the other worker's remaining
    tests, and each of them that needs a model alias or a content type failed (a turn's 422
    "unknown_model_alias", a console save's foreign key to a content type gone). Such a test
    gets the serialized rows back first, outside its own transaction, once."""
    global _flushed
    if _transactional(item):
        _flushed = True
    elif _flushed and _uses_db(item):
        _put_back_serialized_rows(item.config)
        _flushed = False


def _put_back_serialized_rows(config) -> None:
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections

    with config.stash[blocking_manager_key].unblock():
        for each in connections.all():
            contents = getattr(each, "_test_serialized_contents", None)
            if contents:
                each.creation.deserialize_db_from_string(contents)
    ContentType.objects.clear_cache()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """No test inherits another's cache (the dashboard's rollup sums)."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _no_pruning_draws(monkeypatch):
    """No rate check prunes its table by chance (one in `PRUNE_ONE_IN`): that draw made an
    exact statement count one more, once in a thousand requests. Tests of the pruning set 1."""
    monkeypatch.setattr("pantheon.throttling.PRUNE_ONE_IN", 0)


@pytest.fixture(autouse=True)
def _no_failing_addresses():
    """No test inherits the addresses another's invalid tokens failed from: this worker would
    look at their buckets before each token's lookup, a statement more."""
    InvalidTokenThrottle.forget_failing()
    yield
    InvalidTokenThrottle.forget_failing()


@pytest.fixture
def stub():
    """An OpenAI-compatible provider on 127.0.0.1 (`pantheon.testing.stub_llm`)."""
    server = StubLLM().start()
    yield server
    server.stop()


@pytest.fixture
def tcp_proxy():
    """A proxy in front of the test database's PostgreSQL that a test can cut or stall
    (`pantheon.testing.tcp_proxy`), for a server to reach the database through."""
    with TcpProxy.in_front_of(connection.settings_dict) as proxy:
        yield proxy


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


@pytest.fixture
def operator(django_user_model):
    """A console operator (staff) with these permissions (codenames) and no other."""

    def make(*codenames: str):
        user = django_user_model.objects.create_user(
            "narrow", password="narrow-pass-123", is_staff=True
        )
        user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
        return user

    return make


@pytest.fixture
def compilations(monkeypatch) -> list[str]:
    """The SELECTs Django compiles from here on (a read compiled once per process,
    `pantheon.compiled`, is compiled no more)."""
    from django.db.models.sql.compiler import SQLCompiler

    compiled: list[str] = []
    original = SQLCompiler.as_sql

    def as_sql(self, *args, **kwargs):
        sql, params = original(self, *args, **kwargs)
        compiled.append(sql)
        return sql, params

    monkeypatch.setattr(SQLCompiler, "as_sql", as_sql)
    return compiled


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
def assert_constant_queries():
    """A query-count guard: grow the data to each size (3 rows, then 30), fetch the endpoint, and
    check that it answers 200 with exactly `expected` SQL statements at every size, so the count
    neither grows with the data nor drifts unnoticed. `grow(new)` adds the rows numbered `new`
    (a range); the responses come back, one per size, for the test to check what they hold.
    `expected` counts the endpoint's own statements: every API request also makes the per-user
    API rate's one (`PANTHEON_API_RATE`), checked here to be there, once; a console page
    (`api=False`) makes none.
    """

    def check(fetch, *, grow, expected: int, sizes=(3, 30), api: bool = True) -> list:
        responses, counts, statements, grown = [], [], [], 0
        for size in sizes:
            grow(range(grown, size))
            grown = size
            with CaptureQueriesContext(connection) as queries:
                response = fetch()
            assert response.status_code == 200, response.content[:500]
            responses.append(response)
            statements = [query["sql"][:200] for query in queries]
            rate_checks = [sql for sql in statements if "INSERT INTO pantheon_rate" in sql]
            assert len(rate_checks) == (1 if api else 0), "\n".join(statements)
            counts.append(len(queries) - len(rate_checks))
        assert counts == [expected] * len(sizes), "\n".join(statements)
        return responses

    return check


@pytest.fixture
def this_month():
    """A moment safely inside the current UTC month, not in the future."""
    return month_start() + timedelta(seconds=1)


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
        self.word_delay = 0.0  # between the words of a streamed answer
        self._lock = threading.Lock()

    def reply_for(self, call: LlmCall) -> str:
        if call.purpose == "routing":
            return self.routing_reply
        if call.purpose == "summary":
            return self.summary_reply
        return f"{call.agent_key} answers via {call.alias.alias} (call {len(self.calls)})"

    async def stream(self, call: LlmCall, on_delta, on_reasoning=None) -> LlmResult:
        """The same answer, handed to `on_delta` word by word (`word_delay` apart); it does
        not reason first (`on_reasoning` never hears from it)."""
        result = await self.complete(call)
        for index, piece in enumerate(re.findall(r"\s*\S+", result.text)):
            if index and self.word_delay:
                await asyncio.sleep(self.word_delay)
            on_delta(piece)
        return result

    async def complete(self, call: LlmCall) -> LlmResult:
        with self._lock:
            self.calls.append(call)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.during_call is not None:
            # Hooks use the database and the test client: run them on the test's own thread.
            await sync_to_async(self.during_call)(call)
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

    def abandoned(self, call: LlmCall, text: str, *, latency_ms: int) -> LlmResult:
        """As the real gateway meters a stream its caller abandoned: an estimate."""
        prompt, cached, output = usage_or_estimate((0, 0, 0), call, text, call.alias.litellm_model)
        return LlmResult(
            status="error",
            text=text,
            input_tokens_fresh=prompt - cached,
            input_tokens_cached=cached,
            output_tokens=output,
            latency_ms=latency_ms,
            attempts=1,
            provider="fake",
            provider_model=call.alias.litellm_model,
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


@pytest.fixture
def make_operator(django_user_model):
    """A staff member in one of the operator groups (`Owner` or `Analyst`)."""
    from django.contrib.auth.models import Group

    def make(group: str, username: str | None = None):
        user = django_user_model.objects.create_user(
            username or group.lower(), password="operator-pass-123", is_staff=True
        )
        user.groups.add(Group.objects.get(name=group))
        return user

    return make
