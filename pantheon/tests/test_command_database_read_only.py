"""A database that refuses writes (a hot standby after a failover) is exit 3 and one line, as a
database that cannot be reached is: the commands that write printed a psycopg traceback for
SQLSTATE 25006 (an InternalError) and exited 1, what cron reads as the command's own finding.
A statement the database refuses on its own terms (a trigger, a constraint) keeps its
traceback: a bug or a refusal, not an outage."""

import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import ProgrammingError, connection

from pantheon.commands import DATABASE_FAILED, ProjectCommand
from pantheon.testing.processes import ROOT

# Every command that writes, with arguments that get it to its first write (purge_deleted_chats
# writes only what users deleted long ago, forget_user only a user's, which the tests' database
# does not hold).
WRITERS = {
    "rollup_usage": [],
    "recover_turns": [],
    "prune_idempotency_keys": [],
    "seed_demo": [],
    "set_model_alias": ["deepseek", "--context-window", "8192"],
    "set_model_price": ["deepseek", "--input", "1"],
}


def database_url_of_the_tests() -> str:
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return (
        f"postgres://{settings['USER']}{password}@{settings['HOST']}:{settings['PORT']}/"
        f"{settings['NAME']}"
    )


@pytest.mark.django_db
def test_a_database_that_refuses_writes_is_exit_3_and_one_line():
    """Each command in a process of its own against the (migrated) test database, every
    transaction of its sessions read-only, as on a standby."""
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "DATABASE_URL": database_url_of_the_tests(),
        "PGOPTIONS": "-c default_transaction_read_only=on",
        "LOG_LEVEL": "ERROR",
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "manage.py", name, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in WRITERS.items()
    }

    for name, process in running.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == DATABASE_FAILED, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (name, stderr)
        assert lines[0].startswith("CommandError: the database failed: cannot execute "), name
        assert lines[0].endswith(" in a read-only transaction"), (name, stderr)


class RaisingCommand(ProjectCommand):
    """Runs one statement: what a command meets when PostgreSQL refuses it."""

    statement = ""

    def handle(self, *args, **options):
        with connection.cursor() as cursor:
            cursor.execute(self.statement)


@pytest.mark.django_db
def test_a_read_only_transaction_in_process_is_exit_3_too():
    with connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION READ ONLY")

    with pytest.raises(CommandError) as raised:
        call_command("prune_idempotency_keys")

    assert raised.value.returncode == DATABASE_FAILED, raised.value
    assert "read-only transaction" in str(raised.value)


@pytest.mark.django_db
def test_a_statement_refused_by_a_trigger_keeps_its_traceback():
    """RAISE EXCEPTION (SQLSTATE P0001, as the ledger's append-only triggers refuse) is the
    database refusing what the command did, not the database failing."""
    command = RaisingCommand()
    command.statement = "DO $$ BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$"

    with pytest.raises(ProgrammingError, match="refused by a trigger"):
        call_command(command)
