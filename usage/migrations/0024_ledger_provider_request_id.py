"""A call's row records its provider's request id, set as the call completes; searched by a
plain index, not a unique one.

The row of a call is inserted (pending) before its request is sent, when no provider has named
it yet, and the guard (0011 to 0021) refused any change of `request_id` after: no row ever had
one, and the console's search by a provider's request id (what its support quotes) found
nothing. Allowed now, besides 0021's rules: `request_id` set once, from NULL, by the UPDATE
that completes a pending row (or marks it lost with what its provider said), or that fills a
lost row once (0015, 0018) or bills it (0021). A row that is not pending is final as before,
its request id with the rest: never set afterwards, never changed once set.

The partial UNIQUE index `llm_call_request_id_unique` goes: a provider's request id is not
unique across providers, and some proxies repeat it on a retried call. A completion refused for
a duplicate would leave its row pending, the call it billed lost. A plain partial index on the
ids set (`llmcall_request_id`) serves the console's exact search instead.

Both index changes run concurrently on PostgreSQL, outside a transaction (a plain build or drop
locks the ledger, and every call's insert and completion waits for it), each build first
dropping the invalid leftover of a build cut short (pantheon/migration_indexes.py). Going back
builds the unique index again: it fails, naming the id, if two rows now share one (the release
before could not hold them).
"""

import importlib

from django.db import migrations, models

from pantheon.migration_indexes import drop_invalid_index

_PREVIOUS = importlib.import_module("usage.migrations.0021_ledger_cancelled_call_billed")

# What a row is about, which never changes: no longer its request id.
_ABOUT = (
    (
        "NEW.pricing_version_id, NEW.request_id, NEW.created_at)",
        "NEW.pricing_version_id, NEW.created_at)",
    ),
    (
        "OLD.pricing_version_id, OLD.request_id, OLD.created_at)",
        "OLD.pricing_version_id, OLD.created_at)",
    ),
)
_PENDING = "    IF OLD.status = 'pending' THEN\n"
_NAMED = (
    "    IF NEW.request_id IS DISTINCT FROM OLD.request_id\n"
    "       AND (OLD.request_id IS NOT NULL OR NEW.status = 'pending') THEN\n"
    "        RAISE EXCEPTION 'the usage ledger is append-only: a request id is set once, as its "
    "call completes'\n"
    "            USING ERRCODE = 'restrict_violation';\n"
    "    END IF;\n"
)
# A row that is not pending (nor filled or billed once) is final, its request id with the rest.
_FINAL = (
    (
        "NEW.attempts)\n       IS DISTINCT FROM",
        "NEW.attempts, NEW.request_id)\n       IS DISTINCT FROM",
    ),
    ("OLD.attempts) THEN", "OLD.attempts, OLD.request_id) THEN"),
)

GUARD = _PREVIOUS.GUARD
for _before, _after in _ABOUT + _FINAL:
    assert GUARD.count(_before) == 1
    GUARD = GUARD.replace(_before, _after)
assert GUARD.count(_PENDING) == 1
GUARD = GUARD.replace(_PENDING, _NAMED + _PENDING)

TABLE = "usage_llmcallevent"
UNIQUE = "llm_call_request_id_unique"
REQUEST_ID_INDEX = models.Index(
    fields=["request_id"],
    condition=models.Q(request_id__isnull=False),
    name="llmcall_request_id",
)


def _on_postgresql(sql: str, doc: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            # No parameters: the SQL's own % signs are plpgsql's, not placeholders.
            schema_editor.execute(sql, params=None)

    run.__doc__ = doc  # what `migrate --plan` says the operation does
    return run


def _concurrently(schema_editor) -> str:
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def add_index(apps, schema_editor):
    """Index the request ids set."""
    model = apps.get_model("usage", "LlmCallEvent")
    drop_invalid_index(schema_editor, REQUEST_ID_INDEX.name)
    postgresql = schema_editor.connection.vendor == "postgresql"
    schema_editor.add_index(
        model, REQUEST_ID_INDEX, **({"concurrently": True} if postgresql else {})
    )


def remove_index(apps, schema_editor):
    """Drop the request ids' index."""
    model = apps.get_model("usage", "LlmCallEvent")
    postgresql = schema_editor.connection.vendor == "postgresql"
    schema_editor.remove_index(
        model, REQUEST_ID_INDEX, **({"concurrently": True} if postgresql else {})
    )


def drop_unique(apps, schema_editor):
    """Let two calls share a request id."""
    quote = schema_editor.quote_name
    schema_editor.execute(f"DROP INDEX{_concurrently(schema_editor)} IF EXISTS {quote(UNIQUE)}")


def add_unique(apps, schema_editor):
    """One call a request id again (fails if two share one)."""
    quote = schema_editor.quote_name
    drop_invalid_index(schema_editor, UNIQUE)
    schema_editor.execute(
        f"CREATE UNIQUE INDEX{_concurrently(schema_editor)} IF NOT EXISTS {quote(UNIQUE)} "
        f"ON {quote(TABLE)} ({quote('request_id')}) WHERE {quote('request_id')} IS NOT NULL"
    )


class Migration(migrations.Migration):
    atomic = False  # CREATE and DROP INDEX CONCURRENTLY run outside a transaction

    dependencies = [("usage", "0023_api_base_holds_no_credential")]

    operations = [
        migrations.RunPython(
            _on_postgresql(GUARD, "Let a completing call record its request id."),
            _on_postgresql(_PREVIOUS.GUARD, "Back to 0021's ledger guard."),
            atomic=True,
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(model_name="llmcallevent", index=REQUEST_ID_INDEX)
            ],
            database_operations=[migrations.RunPython(add_index, remove_index)],
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.RemoveConstraint(model_name="llmcallevent", name=UNIQUE)],
            database_operations=[migrations.RunPython(drop_unique, add_unique)],
        ),
    ]
