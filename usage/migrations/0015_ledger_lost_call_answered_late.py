"""The ledger's guard (0011) lets a lost call take the usage its provider reported, once.

A call is marked `lost` when its turn is ended from outside while the call runs (`recover_turns`,
or a later turn taking a stalled session over). Its worker may still be alive: when the provider
answers, the answer is not stored (the turn has ended), but the provider billed it, and the
ledger should say what it billed rather than the input estimate the row was opened with. 0011
made a lost row final, so that usage was dropped.

Allowed now, besides 0011's rules: a `lost` row that was never heard (no attempt recorded, as
`recover_turns` leaves it) may be filled once with a call's outcome, provided it stays `lost`,
with the same error type, at no credit, with the attempts the call made (at least one: which
makes it heard, and final). Nothing else about a lost row changes, and a completed row stays
final.
"""

import importlib

from django.db import migrations

GUARD = """
CREATE OR REPLACE FUNCTION usage_ledger_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE'
       AND coalesce(current_setting('pantheon.ledger_maintenance', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('DELETE', 'TRUNCATE') THEN
        RAISE EXCEPTION 'the usage ledger is append-only: % refused', TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF (NEW.id, NEW.user_id, NEW.purpose, NEW.model_alias, NEW.agent_key,
        NEW.pricing_version_id, NEW.request_id, NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.user_id, OLD.purpose, OLD.model_alias, OLD.agent_key,
        OLD.pricing_version_id, OLD.request_id, OLD.created_at) THEN
        RAISE EXCEPTION 'the usage ledger is append-only: what a row is about never changes'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF (NEW.room_id IS DISTINCT FROM OLD.room_id AND NEW.room_id IS NOT NULL)
       OR (NEW.session_id IS DISTINCT FROM OLD.session_id AND NEW.session_id IS NOT NULL)
       OR (NEW.turn_id IS DISTINCT FROM OLD.turn_id AND NEW.turn_id IS NOT NULL) THEN
        RAISE EXCEPTION 'the usage ledger is append-only: a context reference may only be cleared'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status = 'pending' THEN
        RETURN NEW;  -- completion, or marking the call lost
    END IF;
    IF OLD.status = 'lost' AND NEW.status = 'lost' AND OLD.attempts = 0 AND NEW.attempts > 0
       AND NEW.credits = 0 AND NEW.error_type = OLD.error_type THEN
        RETURN NEW;  -- a lost call its provider answered after all: what it reported, once
    END IF;
    IF (NEW.status, NEW.provider, NEW.provider_model, NEW.input_tokens_fresh,
        NEW.input_tokens_cached, NEW.output_tokens, NEW.total_tokens, NEW.oe_tokens,
        NEW.provider_cost_usd, NEW.priced, NEW.credits, NEW.latency_ms, NEW.error_type,
        NEW.attempts)
       IS DISTINCT FROM
       (OLD.status, OLD.provider, OLD.provider_model, OLD.input_tokens_fresh,
        OLD.input_tokens_cached, OLD.output_tokens, OLD.total_tokens, OLD.oe_tokens,
        OLD.provider_cost_usd, OLD.priced, OLD.credits, OLD.latency_ms, OLD.error_type,
        OLD.attempts) THEN
        RAISE EXCEPTION 'the usage ledger is append-only: a % row is final', OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
"""


def _previous_guard() -> str:
    """0011's function alone (its triggers stay as they are)."""
    previous = importlib.import_module("usage.migrations.0011_ledger_append_only")
    return previous.GUARD.split("\nCREATE TRIGGER", 1)[0]


def _on_postgresql(sql, doc: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            # No parameters: the SQL's own % signs are plpgsql's, not placeholders.
            schema_editor.execute(sql() if callable(sql) else sql, params=None)

    run.__doc__ = doc  # what `migrate --plan` says the operation does
    return run


class Migration(migrations.Migration):
    dependencies = [("usage", "0014_bound_monthly_credit_cap")]

    operations = [
        migrations.RunPython(
            _on_postgresql(GUARD, "Let lost calls take late answers."),
            _on_postgresql(_previous_guard, "Back to 0011's ledger guard."),
        )
    ]
