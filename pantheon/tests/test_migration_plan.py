"""`manage.py migrate --plan APP NAME`, read before a rollback, says what each Python operation
of the migrations it would undo does (Django prints the function's docstring, its first 36
characters). The functions had none: the plan of a rollback said "Raw Python operation" for
dropping the ledger's append-only guard (usage 0011), for putting an older guard back (0015,
0018, 0021), for dropping the rate buckets' table (pantheon 0003) and the sessions' turn counter
(sessions_app 0019), as it does for an operation that does nothing."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import RunPython, SeparateDatabaseAndState

pytestmark = pytest.mark.django_db


def python_operations():
    loader = MigrationLoader(connection, ignore_no_migrations=True)
    for (app, name), migration in loader.disk_migrations.items():
        if app not in {"pantheon", "rooms", "sessions_app", "usage"}:
            continue
        for operation in migration.operations:
            # Inside a SeparateDatabaseAndState the plan names the combination, not the code.
            if isinstance(operation, RunPython) and not isinstance(
                operation, SeparateDatabaseAndState
            ):
                yield f"{app}.{name}", operation


def test_every_python_operation_says_in_the_plan_what_it_does_each_way():
    undocumented = [
        f"{migration} {code.__name__}"
        for migration, operation in python_operations()
        for code in (operation.code, operation.reverse_code)
        if code not in (None, RunPython.noop) and not (code.__doc__ or "").strip()
    ]
    assert undocumented == []


def test_the_plan_of_a_rollback_names_what_it_undoes():
    out = StringIO()
    call_command("migrate", "usage", "0010", plan=True, stdout=out)
    plan = out.getvalue()

    assert "Raw Python operation -> Back to 0018's ledger guard." in plan
    assert "Raw Python operation -> Drop the ledger's append-only guard." in plan
