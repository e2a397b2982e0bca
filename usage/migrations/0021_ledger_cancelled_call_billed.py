"""A call whose turn its user cancelled after its first words had reached them is billed for them.

A cancel (`POST turns/{id}/cancel`) marks the call in flight `lost`, as a recovery does: the input
estimate, no credit, no provider heard. When the call was a streamed answer whose first words
had reached the user, the worker running it then bills what it streamed, as a stream that failed
after its first words is billed: the row becomes `error`, of error type `cancelled`, with the
usage (the input estimate and an estimate of the text streamed, or the provider's usage if it
had answered whole), cost and credits of the call, and the month's counter moves with it
(`usage.services.usage_call_bill_cancelled`).

Allowed now, besides 0018's rules: a `lost` row never heard (no provider recorded) may become
`error` of type `cancelled`, with a provider and at least one attempt. Once: an `error` row is
final, and a lost row heard after all (0015, 0018: it records a provider) is not billed so. So
a row is filled with what its provider reported at no credit, or billed for what its user got,
never both, and never twice.
"""

import importlib

from django.db import migrations

_PREVIOUS = importlib.import_module("usage.migrations.0018_ledger_lost_call_attempts")

_HEARD = (
    "RETURN NEW;  -- a lost call its provider answered after all: what it reported, once\n"
    "    END IF;\n"
)
_BILLED = (
    "    IF OLD.status = 'lost' AND OLD.provider = '' AND NEW.status = 'error'\n"
    "       AND NEW.error_type = 'cancelled' AND NEW.provider <> '' AND NEW.attempts > 0 THEN\n"
    "        RETURN NEW;  -- a lost call whose user got its first words: billed for them, once\n"
    "    END IF;\n"
)
assert _PREVIOUS.GUARD.count(_HEARD) == 1
GUARD = _PREVIOUS.GUARD.replace(_HEARD, _HEARD + _BILLED)


def _on_postgresql(sql: str, doc: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            # No parameters: the SQL's own % signs are plpgsql's, not placeholders.
            schema_editor.execute(sql, params=None)

    run.__doc__ = doc  # what `migrate --plan` says the operation does
    return run


class Migration(migrations.Migration):
    dependencies = [("usage", "0020_ledger_created_id_index")]

    operations = [
        migrations.RunPython(
            _on_postgresql(GUARD, "Let cancelled calls be billed."),
            _on_postgresql(_PREVIOUS.GUARD, "Back to 0018's ledger guard."),
        )
    ]
