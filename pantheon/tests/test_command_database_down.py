"""What cron sees when the database is down: every project command exits 3 with one line on
stderr. They exited 1 with a psycopg traceback (only `reconcile_usage` said 3), and exit 1 is
what cron rules read as the command's own finding: drift, a refused value."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from pantheon.commands import DATABASE_FAILED
from pantheon.testing.servers import postgres_url

from .test_command_help import COMMANDS, parser_of

ROOT = Path(__file__).resolve().parents[2]
# Arguments that get each command past its parser to its first query.
ARGUMENTS = {
    "set_model_alias": ["deepseek", "--context-window", "4096"],
    "set_model_price": ["deepseek", "--input", "1"],
    "forget_user": ["nobody"],
    "export_user": ["nobody"],
    "usage_month_totals": ["--month", "2026-11"],
}


@pytest.fixture(scope="module")
def refusing_port():
    """A port bound but not listening: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize(("app", "name"), COMMANDS)
def test_a_database_that_cannot_be_reached_is_exit_3_and_one_line(app, name, refusing_port):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{refusing_port}/pantheon",
        "DB_POOL_TIMEOUT": "5",
        "LOG_LEVEL": "ERROR",
    }
    ran = subprocess.run(
        [sys.executable, "manage.py", name, *ARGUMENTS.get(name, [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == DATABASE_FAILED, ran.stderr
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert "CommandError:" in lines[0] and f"port {refusing_port} failed" in lines[0]


@pytest.mark.parametrize(("app", "name"), COMMANDS)
def test_the_help_says_what_exit_3_means(app, name):
    help_text = " ".join(parser_of(app, name).format_help().split())
    assert f"Exit {DATABASE_FAILED} when the database cannot be reached" in help_text


def run_manage(*args, database_url):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "ERROR",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command", [["migrate", "--noinput"], ["showmigrations"], ["changepassword", "demo"]]
)
def test_djangos_own_commands_on_a_database_that_cannot_be_reached_say_so_in_one_line(
    command, refusing_port
):
    """The README's first production step, `manage.py migrate`, with a wrong port in
    DATABASE_URL ended in 30 lines of traceback, exit 1: now the project's commands' line."""
    ran = run_manage(
        *command, database_url=f"postgres://postgres:hunter2hunter2@127.0.0.1:{refusing_port}/x"
    )
    assert ran.returncode == DATABASE_FAILED, ran.stderr
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("CommandError: the database cannot be reached")
    assert f"x on 127.0.0.1:{refusing_port}" in lines[0]
    assert f"port {refusing_port} failed" in lines[0]
    assert "hunter2" not in lines[0]


def test_an_sqlite_file_that_cannot_be_opened_is_named(tmp_path):
    path = tmp_path / "no-such-directory" / "db.sqlite3"
    ran = run_manage("migrate", "--noinput", database_url=f"sqlite:///{path}")
    assert ran.returncode == DATABASE_FAILED, ran.stderr
    assert "Traceback" not in ran.stderr
    assert ran.stderr.strip().splitlines()[-1] == (
        f"CommandError: the database cannot be reached (DATABASE_URL names {path}): "
        "unable to open database file"
    )


def test_traceback_still_shows_where(refusing_port):
    ran = run_manage(
        "migrate",
        "--noinput",
        "--traceback",
        database_url=f"postgres://postgres@127.0.0.1:{refusing_port}/x",
    )
    assert ran.returncode == 1
    assert "Traceback" in ran.stderr


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="a lock held by another process")
def test_a_statement_that_fails_once_connected_keeps_its_traceback():
    """Only a connection that cannot be opened is the one line: a statement's OperationalError
    (a lock timeout here, `migrate` behind a long query) is no unreachable database, and keeps
    the traceback that says where it failed."""
    with connection.cursor() as cursor:  # held until the test's transaction rolls back
        cursor.execute("LOCK TABLE django_migrations IN ACCESS EXCLUSIVE MODE")
    locking = "?options=-c%20lock_timeout%3D300"  # 300 ms
    ran = run_manage(
        "showmigrations", database_url=postgres_url(connection.settings_dict) + locking
    )

    assert ran.returncode == 1, ran.stderr
    assert "Traceback" in ran.stderr
    assert "cannot be reached" not in ran.stderr
    assert "django.db.utils.OperationalError: canceling statement due to lock timeout" in ran.stderr
