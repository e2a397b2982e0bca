"""A database that is not migrated (a new one, or code deployed before `migrate`) is exit 3 and
one line saying what to run, as a database that cannot be reached is: on PostgreSQL six
commands printed a 56-line ProgrammingError traceback and exited 1, what cron reads as the
command's own finding. A missing table of a database whose migrations are all applied is a bug,
and keeps its traceback."""

import contextlib
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from django.core.management import call_command
from django.db import ProgrammingError, connection

from pantheon.commands import DATABASE_FAILED
from pantheon.figures import counted
from pantheon.testing.processes import ROOT
from pantheon.testing.servers import AppServer, free_port, json_objects

from .test_config import did_not_start, gunicorn_start, run_alone
from .test_migrations_and_setup import new_database

COMMANDS = {
    "rollup_usage": [],
    "recover_turns": [],
    "prune_idempotency_keys": [],
    "purge_deleted_chats": [],
    "forget_user": ["nobody"],
    "export_user": ["nobody"],
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


# Commands that check the migrations before they start (`requires_migrated_database`): their
# queries would go through on a database a migration behind (a purge's deletes too).
CHECKED_FIRST = {
    "set_model_alias",
    "set_model_price",
    "reconcile_usage",
    "purge_deleted_chats",
    "forget_user",
    "export_user",
}


def test_every_command_on_a_database_never_migrated_is_exit_3_and_one_line(scratch_database):
    running = {name: manage(scratch_database, name, *args) for name, args in COMMANDS.items()}

    for name, process in running.items():
        code, stderr = finished(process)
        assert code == DATABASE_FAILED, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (name, stderr)
        assert lines[0].startswith("CommandError: "), (name, stderr)
        if name in CHECKED_FIRST:  # before any table is missed
            assert lines[0].startswith("CommandError: the database is not migrated ("), stderr
        else:
            assert "the database is not migrated (relation " in lines[0], (name, stderr)
        assert lines[0].endswith("): run manage.py migrate"), (name, stderr)
        assert "migrations not applied, the first contenttypes.0001_initial" in lines[0]


def test_a_database_a_migration_behind_names_the_column_and_the_migration(scratch_database):
    migrated_to(scratch_database, "sessions_app", "0010")

    code, stderr = finished(manage(scratch_database, "recover_turns"))

    assert code == DATABASE_FAILED, stderr
    assert stderr.strip() == (
        "CommandError: the database is not migrated (column sessions_app_turn.worker does not "
        f"exist; {not_applied_after('sessions_app', '0010')}): run manage.py migrate"
    )


def not_applied_after(app: str, migration: str) -> str:
    """What a database migrated to `app`'s `migration` (and every other app's newest) is said
    to miss: "2 migrations not applied, the first sessions_app.0011_turn_worker" (a migration
    added later counts too)."""
    names = sorted(path.stem for path in (ROOT / app / "migrations").glob("[0-9]*_*.py"))
    behind = [name for name in names if name[:4] > migration]
    return f"{counted(len(behind), 'migration')} not applied, the first {app}.{behind[0]}"


def migrated_to(url: str, app: str, migration: str) -> None:
    for args in (["migrate", "-v0"], ["migrate", app, migration, "-v0"]):
        code, stderr = finished(manage(url, *args))
        assert code == 0, stderr


@pytest.mark.parametrize("behind", [("sessions_app", "0010"), ("usage", "0015")])
def test_commands_whose_queries_would_go_through_say_the_database_is_not_migrated(
    scratch_database, behind
):
    """A database a migration behind that none of their queries trips over: `set_model_price`
    and `set_model_alias` wrote to it (past a missing constraint), and `reconcile_usage` said
    "Clean", where `recover_turns` and `rollup_usage` say what to run."""
    migrated_to(scratch_database, *behind)
    missing = not_applied_after(*behind)
    running = {name: manage(scratch_database, name, *COMMANDS[name]) for name in CHECKED_FIRST}

    for name, process in running.items():
        code, stderr = finished(process)
        assert (code, stderr.strip()) == (
            DATABASE_FAILED,
            f"CommandError: the database is not migrated ({missing}): run manage.py migrate",
        ), name


@pytest.mark.django_db
def test_a_missing_column_of_a_migrated_database_is_a_bug_not_an_outage():
    """Every migration applied, and still a column is missing: not the operator's `migrate` to
    run, and no exit 3 that a cron rule would take for an outage."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE sessions_app_turn DROP COLUMN failure_code")

    with pytest.raises(ProgrammingError, match="failure_code does not exist"):
        call_command("recover_turns")


# --- the production server --------------------------------------------------------------------


def test_gunicorn_does_not_start_on_a_database_a_migration_behind(scratch_database):
    """New code on a database `migrate` had not caught up with: `manage.py check` passed,
    gunicorn started, its health check answered 200, and every turn was a 500 (`column
    "worker" of relation "sessions_app_turn" does not exist`)."""
    migrated_to(scratch_database, "sessions_app", "0010")

    started = gunicorn_start(SECRET_KEY="k" * 50, DATABASE_URL=scratch_database)

    assert did_not_start(started) == (
        "Pantheon did not start: the database is not migrated "
        f"({not_applied_after('sessions_app', '0010')}): run manage.py migrate"
    )


def test_gunicorn_does_not_start_on_a_database_never_migrated(scratch_database):
    """Its health check answered 200, and `POST auth/token` a 500."""
    started = gunicorn_start(SECRET_KEY="k" * 50, DATABASE_URL=scratch_database)

    last = did_not_start(started)
    assert last.startswith("Pantheon did not start: the database is not migrated (")
    assert last.endswith(
        " migrations not applied, the first contenttypes.0001_initial): run manage.py migrate"
    )


def test_the_uvicorn_server_with_debug_off_does_not_start_on_a_database_not_migrated(
    scratch_database,
):
    """`python -m pantheon.serve` with DEBUG off, production's settings as gunicorn's, served
    such a database: health 200, every turn a 500."""
    migrated_to(scratch_database, "sessions_app", "0010")

    started = run_alone(
        [sys.executable, "-m", "pantheon.serve", "--port", str(free_port())],
        {"SECRET_KEY": "k" * 50, "DATABASE_URL": scratch_database, "ALLOWED_HOSTS": "x"},
        timeout=120,
    )

    assert started.returncode != 0, started.stderr[-2000:]
    assert "Uvicorn running" not in started.stderr
    assert started.stderr.strip().splitlines()[-1] == (
        "Pantheon did not start: the database is not migrated "
        f"({not_applied_after('sessions_app', '0010')}): run manage.py migrate"
    )


def test_gunicorn_does_not_start_on_a_database_that_does_not_exist():
    """A name mistyped in DATABASE_URL (or a database never created): the check was taken for
    an outage, gunicorn started with a warning, and every request, health included, waited
    for the pool's timeout and answered 503, for as long as it ran."""
    settings = connection.settings_dict
    url = (
        f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:"
        f"{settings['PORT'] or 5432}/{settings['NAME']}_no_such_database"
    )

    started = gunicorn_start(SECRET_KEY="k" * 50, DATABASE_URL=url)

    last = did_not_start(started)
    assert last.startswith("Pantheon did not start: the database DATABASE_URL names does not ")
    assert f'database "{settings["NAME"]}_no_such_database" does not exist' in last
    assert last.endswith("create it, or fix the name, then run manage.py migrate")


def test_gunicorn_starts_on_a_database_it_cannot_reach_and_says_so(tmp_path):
    """A database that cannot be reached as gunicorn starts is not checked: the server serves,
    its health check 503 until the database answers (a restart of both at once must not stop
    the server), and its log says the migrations were not checked."""
    with socket.socket() as refusing:  # bound, not listening: a connection is refused at once
        refusing.bind(("127.0.0.1", 0))
        url = f"postgres://postgres@127.0.0.1:{refusing.getsockname()[1]}/pantheon"
        server = AppServer(
            database_url=url,
            env={"DB_POOL_TIMEOUT": "1", "LOG_LEVEL": "WARNING"},
            log_path=tmp_path / "server.log",
        )
        process = server.launch()
        try:
            health = None
            deadline = time.monotonic() + 60
            while health is None and time.monotonic() < deadline:
                assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                with contextlib.suppress(httpx.HTTPError):
                    health = httpx.get(f"{server.url}/api/v1/health", timeout=5)
                time.sleep(0.2)
        finally:
            server.stop()
    assert health is not None and health.status_code == 503, health
    assert health.json()["status"] == "unavailable"
    warnings = [
        line
        for line in json_objects((tmp_path / "server.log").read_text().splitlines())
        if line["logger"] == "pantheon.before_serving"
    ]
    assert [line["message"][:58] for line in warnings] == [
        "the database's migrations could not be checked (connection"
    ]


def test_a_database_that_never_answers_holds_the_start_a_few_seconds_only():
    """A server that accepts the connection and never answers (a stuck pooler or proxy), with
    DB_CONNECT_TIMEOUT=0 (README: none): the check waited for it forever, and gunicorn never
    started (the second reviewer's catch). It gives up after CHECK_SECONDS (10) and starts."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nothing ever answers
        url = f"postgres://postgres@127.0.0.1:{silent.getsockname()[1]}/pantheon"
        started = time.monotonic()
        checked = subprocess.run(
            [sys.executable, "-m", "pantheon.before_serving", "--check-migrations"],
            cwd=ROOT,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "pantheon.settings",
                "DATABASE_URL": url,
                "DB_CONNECT_TIMEOUT": "0",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
    assert checked.returncode == 0, checked.stderr
    assert "the database's migrations could not be checked (no answer within 10 s)" in (
        checked.stderr
    )
    assert took < 30, took
