"""The background work of a turn that lost its database (`api_turns._once_the_database_is_back`:
its ending, its key's answer): it tries again while the database is away, and a stopping
worker makes no more tries."""

import asyncio
from types import SimpleNamespace

import psycopg
import pytest

from pantheon import draining
from sessions_app import api_turns


@pytest.fixture
def tries(monkeypatch):
    """Each try's outcome, in order: an exception to raise, else the section's result."""
    outcomes: list = []
    made: list = []

    def database(function, **options):
        async def section(*args):
            made.append((function, options))
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return section

    monkeypatch.setattr(api_turns, "database", database)
    monkeypatch.setattr(api_turns, "ENDING_RETRY_SECONDS", (0.01,))
    return SimpleNamespace(outcomes=outcomes, made=made)


def _lost() -> Exception:
    """What Django raises for a pool that could not give a connection (no SQLSTATE)."""
    from django.db import OperationalError

    error = OperationalError("couldn't get a connection")
    error.__cause__ = psycopg.OperationalError("couldn't get a connection")
    return error


def _ending():
    """The turn's ending, as `_end_once_the_database_is_back` tries it."""
    return api_turns._once_the_database_is_back(
        lambda: None, turn_id="turn-1", doing="write its end"
    )


def test_it_tries_again_while_the_database_is_away_then_stops(tries):
    tries.outcomes.extend([_lost(), _lost(), True])

    asyncio.run(_ending())

    assert len(tries.made) == 3 and not tries.outcomes
    # Queued as new work: not before every request that came after the turn's.
    assert all(options == {"queue_as_new": True} for _, options in tries.made)


def test_an_error_that_is_no_outage_is_not_tried_again(tries):
    tries.outcomes.extend([ValueError("a bug"), True])

    asyncio.run(_ending())

    assert len(tries.made) == 1


def test_a_stopping_worker_makes_no_more_tries(tries, monkeypatch):
    monkeypatch.setattr(api_turns, "ENDING_RETRY_SECONDS", (8.0,))
    tries.outcomes.extend([_lost(), True])

    async def stop_soon():
        ending = asyncio.ensure_future(_ending())
        await asyncio.sleep(0.1)
        monkeypatch.setattr(draining, "_stopping", True)
        await asyncio.wait_for(ending, 2)  # it waited 8 s before

    asyncio.run(stop_soon())

    assert tries.made == []
