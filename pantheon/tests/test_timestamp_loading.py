"""Timestamps are read by psycopg's C loader (`pantheon.db.UtcTimestamptzLoader`) as Django's
own loader reads them: the same datetimes, tzinfo UTC, whatever the connection's time zone."""

from datetime import UTC
from importlib.metadata import version

import psycopg
import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg import DataError, _cmodule, postgres
from psycopg.adapt import AdaptersMap
from psycopg.pq import Format

from pantheon import db

TIMESTAMPTZ = postgres.types["timestamptz"].oid

# As PostgreSQL writes them (text), a few edges included: no fraction, a short fraction, the
# first and last days Python can hold in any zone, a leap day.
VALUES = [
    "2026-12-06 15:10:52.857022+00",
    "2026-12-06 15:10:52+00",
    "2024-02-29 23:59:59.5+00",
    "0001-01-02 00:00:00+00",
    "9999-12-30 23:59:59.999999+00",
]


def test_django_and_psycopg_are_the_ones_the_loader_was_read_against():
    """Django's `create_cursor` copies a cursor's adapters unless the connection's timestamptz
    loader has its `timezone`; psycopg's C module has the loader this one calls. That module is
    another distribution (psycopg-binary, or psycopg-c built here), which psycopg does not hold
    to its own version: upgraded alone, it went unseen by psycopg's version."""
    assert version("django") == db.DJANGO_READ_AGAINST
    assert version("psycopg") == db.PSYCOPG_READ_AGAINST
    assert _cmodule.__version__ == db.PSYCOPG_READ_AGAINST


def djangos_loader():
    """The loader Django registers for a connection (`get_adapters_template`)."""
    adapters = AdaptersMap(psycopg.adapters)
    register_tzloader(UTC, adapters)
    return adapters.get_loader(TIMESTAMPTZ, Format.TEXT)


@pytest.mark.django_db
def test_a_connections_timestamps_are_read_by_psycopgs_c_loader_with_no_adapters_copied():
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz", ["2026-12-06 15:10:52.857022+00"])
        (value,) = cursor.fetchone()
        loader = cursor.cursor.adapters.get_loader(TIMESTAMPTZ, Format.TEXT)
        copied = cursor.cursor.adapters._own_loaders[Format.TEXT]

    assert loader is db.UtcTimestamptzLoader
    assert not copied  # Django's create_cursor registered no loader of its own on the cursor
    assert value.isoformat() == "2026-12-06T15:10:52.857022+00:00"
    assert value.tzinfo is UTC


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns"])
def test_each_value_is_the_one_djangos_own_loader_gives(zone):
    """Django always sets its connections to UTC; set to another zone, a connection still gets
    what Django's loader gives (the wall time there, labelled UTC)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('TimeZone', %s, false)", [zone])
        try:
            texts, ours = [], []
            for text in VALUES:
                cursor.execute("SELECT %s::timestamptz::text, %s::timestamptz", [text, text])
                written, value = cursor.fetchone()
                texts.append(written)
                ours.append(value)
            theirs = djangos_loader()(TIMESTAMPTZ, cursor.cursor)
            expected = [theirs.load(written.encode()) for written in texts]
        finally:
            cursor.execute("SELECT set_config('TimeZone', 'UTC', false)")

    assert ours == expected
    assert [value.tzinfo for value in ours] == [UTC] * len(VALUES)
    assert [value.isoformat() for value in ours] == [value.isoformat() for value in expected]


@pytest.mark.django_db
def test_a_timestamp_python_cannot_hold_fails_as_with_djangos_loader():
    with connection.cursor() as cursor:
        ours = db.UtcTimestamptzLoader(TIMESTAMPTZ, cursor.cursor)
        theirs = djangos_loader()(TIMESTAMPTZ, cursor.cursor)
        for text in (b"infinity", b"-infinity", b"10000-01-01 00:00:00+00"):
            with pytest.raises(DataError) as by_ours:
                ours.load(text)
            with pytest.raises(DataError) as by_theirs:
                theirs.load(text)
            assert str(by_ours.value) == str(by_theirs.value)
