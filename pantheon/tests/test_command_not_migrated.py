"""A database that is not migrated (a new one, or code deployed before `migrate`) is exit 3 and
one line saying what to run, as a database that cannot be reached is: on PostgreSQL six
commands printed a 56-line ProgrammingError traceback and exited 1, what cron reads as the
command's own finding. A missing table of a database whose migrations are all applied is a bug,
and keeps its traceback."""

import subprocess
import sys

import pytest
from django.core.management import call_command
from django.db import ProgrammingError, connection

from pantheon.commands import DATABASE_FAILED
from pantheon.testing.processes import ROOT

from .test_migrations_and_setup import new_database

COMMANDS = {
    "rollup_usage": [],
    "recover_turns": [],
    "prune_idempotency_keys": [],
    "seed_demo": [],
    "set_model_alias": ["x", "--model", "a/b"],
    "set_model_price": ["deepseek", "--input", "1"],
    "reconcile_usage": [],
}


@pytest.fixture
def scratch_database():
    """A new, empty PostgreSQL database (dropped afterwards); yields its URL."""
    with new_database("pantheon_unmigrated_") as (url, _params):
        yield url


def manage(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "pantheon.settings",
            "DATABASE_URL": url,
            "LOG_LEVEL": "ERROR",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def test_every_command_on_a_database_never_migrated_is_exit_3_and_one_line(scratch_database):
    running = {name: manage(scratch_database, name, *args) for name, args in COMMANDS.items()}

    for name, process in running.items():
        code, stderr = finished(process)
        assert code == DATABASE_FAILED, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (name, stderr)
        assert lines[0].startswith("CommandError: "), (name, stderr)
        assert "the database is not migrated (relation " in lines[0], (name, stderr)
        assert lines[0].endswith("): run manage.py migrate"), (name, stderr)
        assert "migrations not applied, the first contenttypes.0001_initial" in lines[0]


def test_a_database_a_migration_behind_names_the_column_and_the_migration(scratch_database):
    for args in (["migrate", "-v0"], ["migrate", "sessions_app", "0010", "-v0"]):
        code, stderr = finished(manage(scratch_database, *args))
        assert code == 0, stderr

    code, stderr = finished(manage(scratch_database, "recover_turns"))

    assert code == DATABASE_FAILED, stderr
    assert stderr.strip() == (
        "CommandError: the database is not migrated (column sessions_app_turn.worker does not "
        "exist; 1 migration not applied, the first sessions_app.0011_turn_worker): run "
        "manage.py migrate"
    )


@pytest.mark.django_db
def test_a_missing_column_of_a_migrated_database_is_a_bug_not_an_outage():
    """Every migration applied, and still a column is missing: not the operator's `migrate` to
    run, and no exit 3 that a cron rule would take for an outage."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE sessions_app_turn DROP COLUMN failure_code")

    with pytest.raises(ProgrammingError, match="failure_code does not exist"):
        call_command("recover_turns")
