"""Migrations that drop the index of a foreign key whose column leads another index already.

Django gives each foreign key an index of its own; where a unique constraint or a composite
index starts with that column, the longer index serves every read of the shorter (the cascades
and SET NULLs of a delete included), and the shorter one only costs each insert, and each
update that is not HOT (a ledger row's completion), one more index write, and the table its
space (pantheon/tests/test_redundant_indexes.py).

The index goes with `DROP INDEX CONCURRENTLY` on PostgreSQL, outside a transaction (the
migration is not atomic): a plain `DROP INDEX` takes an ACCESS EXCLUSIVE lock on the table,
which waits for every query under way on it (a CSV export of the ledger, `reconcile_usage`) while
every query after it, a turn's included, waits behind it. Going back builds it again the same
way (`CREATE INDEX CONCURRENTLY`), without holding up writes.

The names are those Django gave the indexes (`BaseDatabaseSchemaEditor._create_index_name`),
checked by the test.

A concurrent build cut short (its statement cancelled: the `lock_timeout` a migrate is run with,
a deploy's timeout, a deadlock) leaves an index of its name that PostgreSQL marks INVALID: kept
up by every write, used by no read. Every build here first drops such a leftover
(`drop_invalid_index`): a retried `IF NOT EXISTS` build took it for the index and reported the
migration done, and a plain one failed with "already exists" on every retry.
"""

from __future__ import annotations

from django.db import migrations, models

# An index of that name that PostgreSQL marks invalid: what a concurrent build cut short leaves.
INVALID = """
SELECT EXISTS (
    SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(%s) AND NOT indisvalid
)
"""


def drop_invalid_index(schema_editor, name: str) -> None:
    """Drop the index `name` where PostgreSQL marks it invalid (a concurrent build of it was cut
    short), concurrently, so that the build after it makes a whole one. Nothing elsewhere."""
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(INVALID, [schema_editor.quote_name(name)])
        invalid = cursor.fetchone()[0]
    if invalid:
        schema_editor.execute(
            f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}", params=None
        )


def drop_foreign_key_indexes(
    indexes: list[tuple[str, str, str, str]],
) -> migrations.RunPython:
    """Drop each (index, table, column, the index serving its reads) index, concurrently on
    PostgreSQL; going back builds it again. For a migration with `atomic = False`, beside the
    AlterFields that say `db_index=False` in its state."""

    def drop(apps, schema_editor):
        concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
        quote = schema_editor.quote_name
        for name, *_ in indexes:
            schema_editor.execute(f"DROP INDEX{concurrently} IF EXISTS {quote(name)}")

    def create(apps, schema_editor):
        concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
        quote = schema_editor.quote_name
        for name, table, column, _ in indexes:
            drop_invalid_index(schema_editor, name)
            schema_editor.execute(
                f"CREATE INDEX{concurrently} IF NOT EXISTS {quote(name)} "
                f"ON {quote(table)} ({quote(column)})"
            )

    return migrations.RunPython(drop, create)


def add_index_concurrently(
    app_label: str, model_name: str, index: models.Index
) -> migrations.SeparateDatabaseAndState:
    """Add `index` to the model's state, and build it with `CREATE INDEX CONCURRENTLY` on
    PostgreSQL (a plain build holds a SHARE lock on the table for its whole length, and every
    write to it waits), first dropping an invalid leftover of a build cut short; going back
    drops it the same way. For a migration with `atomic = False`."""

    def concurrently(schema_editor) -> dict:
        return {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}

    def add(apps, schema_editor):
        """Build the index concurrently."""
        model = apps.get_model(app_label, model_name)
        drop_invalid_index(schema_editor, index.name)
        schema_editor.add_index(model, index, **concurrently(schema_editor))

    def remove(apps, schema_editor):
        """Drop the index concurrently."""
        model = apps.get_model(app_label, model_name)
        schema_editor.remove_index(model, index, **concurrently(schema_editor))

    return migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AddIndex(model_name=model_name.lower(), index=index)],
        database_operations=[migrations.RunPython(add, remove)],
    )
