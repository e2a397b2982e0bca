"""psycopg converts each statement's placeholders (%s to $1) once and keeps the result in its
cache, for every statement a turn runs (`pantheon.db.cache_statement_conversions`): the turn's
last step, one statement of 60 parameters, was converted afresh on every turn."""

from enum import Enum
from importlib.metadata import version

import pytest
from psycopg import _queries
from psycopg.adapt import AdaptersMap

from pantheon import db
from rooms.models import RoomMode
from sessions_app.models import Turn, TurnFailure, TurnStatus
from usage.models import LlmCallEvent


def test_psycopg_is_the_one_its_statement_cache_limits_were_read_against():
    assert version("psycopg") == db.PSYCOPG_READ_AGAINST
    # The limits a statement is cached within, read by `PostgresQuery.convert` on each call.
    assert _queries.MAX_CACHED_STATEMENT_LENGTH == 4096
    assert _queries.MAX_CACHED_STATEMENT_PARAMS == db.CACHED_STATEMENT_PARAMS


@pytest.fixture
def converted_afresh(monkeypatch) -> list[bytes]:
    """The statements psycopg converts without its cache from now on (the cache keeps the
    function it wraps: a statement it caches, even on its first run, is never seen here)."""
    seen: list[bytes] = []
    convert = _queries._query2pg_nocache

    def spy(query: bytes, encoding: str):
        seen.append(query)
        return convert(query, encoding)

    monkeypatch.setattr(_queries, "_query2pg_nocache", spy)
    return seen


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (RoomMode.MANUAL, "@ada hello"),
        (RoomMode.MANUAL, "@ada @grace hello"),
        (RoomMode.ROUNDTABLE, "hello"),
        (RoomMode.ORCHESTRATOR, "hello"),
    ],
)
def test_every_statement_of_a_turn_is_converted_through_psycopgs_cache(
    owner,
    owner_client,
    make_agent,
    make_room,
    make_session,
    fake_gateway,
    post_turn,
    converted_afresh,
    mode,
    message,
):
    room = make_room(owner, [make_agent(owner, "ada"), make_agent(owner, "grace")], mode=mode)
    session = make_session(owner, room=room)

    first = post_turn(owner_client, session, message)
    second = post_turn(owner_client, session, message)

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json()["turn_index"] == 2
    assert [query[:80] for query in converted_afresh] == []


@pytest.fixture
def enums_dumped(monkeypatch) -> list[str]:
    """The enum classes psycopg looks up a writer for from now on (through their MRO)."""
    seen: list[str] = []
    get_dumper = AdaptersMap.get_dumper

    def spy(self, cls, format):
        if issubclass(cls, Enum):
            seen.append(cls.__qualname__)
        return get_dumper(self, cls, format)

    monkeypatch.setattr(AdaptersMap, "get_dumper", spy)
    return seen


@pytest.mark.django_db
def test_a_turns_statements_give_psycopg_their_choices_as_plain_text(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn, enums_dumped
):
    session = make_session(owner, agent=make_agent(owner, "ada"))

    assert post_turn(owner_client, session, "hello").status_code == 201

    assert enums_dumped == []
    turn = Turn.objects.get(session=session)
    assert (turn.status, turn.failure_code) == (TurnStatus.COMPLETED, TurnFailure.NONE)
    assert sorted(turn.messages.values_list("role", "status")) == [
        ("assistant", "ok"),
        ("user", "ok"),
    ]
    (call,) = LlmCallEvent.objects.filter(turn=turn)
    assert (call.purpose, call.status) == ("agent", "success")
