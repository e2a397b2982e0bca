"""Migration 0021 builds `session_user_alive` concurrently. A concurrent build cut short (its
statement cancelled, a deploy's timeout, a deadlock) leaves an INVALID index of that name
behind, and every `migrate` after it failed: `relation "session_user_alive" already exists`,
until an operator dropped it by hand. The build now drops such a leftover first."""

from importlib import import_module

import pytest
from django.apps import apps
from django.db import connection

migration = import_module("sessions_app.migrations.0021_session_user_alive")

VALID = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'session_user_alive'::regclass"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_build_cut_short_is_built_again():
    if connection.vendor != "postgresql":
        pytest.skip("concurrent builds are PostgreSQL's")
    with connection.cursor() as cursor:
        # What a cancelled CREATE INDEX CONCURRENTLY leaves: the index, marked invalid.
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = 'session_user_alive'::regclass"
        )

    with connection.schema_editor(atomic=False) as editor:
        migration.add_index(apps, editor)

    with connection.cursor() as cursor:
        cursor.execute(VALID)
        assert cursor.fetchone() == (True,)
