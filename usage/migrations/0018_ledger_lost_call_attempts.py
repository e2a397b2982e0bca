"""A lost call records the attempt it sent: the ledger's guard tells a lost row never heard by
its provider from one heard (filled once with what the provider reported, 0015) by the provider
it records, not by its attempts.

A call is marked `lost` when its turn is ended while it runs (a worker that died, `recover_turns`,
a stale takeover). It was opened just before its first request was sent, so it records one
attempt (it was 0, which read as "never sent", and was what marked a lost row as not yet heard).
Nothing has been heard from its provider then: its `provider` is empty until the provider answers
after all, when the row may be filled, once, with the call's outcome (a provider, the attempts it
made), still `lost`, with the same error type, at no credit. Rows marked lost before keep the 0
attempts they record (the ledger is append-only), and can still be filled once as before.
"""

import importlib

from django.db import migrations

_PREVIOUS = importlib.import_module("usage.migrations.0015_ledger_lost_call_answered_late")

_HEARD_BEFORE = (
    "IF OLD.status = 'lost' AND NEW.status = 'lost' AND OLD.attempts = 0 AND NEW.attempts > 0"
)
_HEARD_NOW = (
    "IF OLD.status = 'lost' AND NEW.status = 'lost' AND OLD.provider = '' AND NEW.provider <> ''\n"
    "       AND NEW.attempts > 0"
)
assert _HEARD_BEFORE in _PREVIOUS.GUARD
GUARD = _PREVIOUS.GUARD.replace(_HEARD_BEFORE, _HEARD_NOW)


def _on_postgresql(sql: str, doc: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            # No parameters: the SQL's own % signs are plpgsql's, not placeholders.
            schema_editor.execute(sql, params=None)

    run.__doc__ = doc  # what `migrate --plan` says the operation does
    return run


class Migration(migrations.Migration):
    dependencies = [("usage", "0017_rollup_coverage")]

    operations = [
        migrations.RunPython(
            _on_postgresql(GUARD, "Let lost calls record attempts."),
            _on_postgresql(_PREVIOUS.GUARD, "Back to 0015's ledger guard."),
        )
    ]
