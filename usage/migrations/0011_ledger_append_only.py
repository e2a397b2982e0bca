"""The usage ledger is append-only in the database itself (PostgreSQL triggers).

Refused on `usage_llmcallevent`, whoever sends the SQL:
- DELETE and TRUNCATE;
- any UPDATE of a completed row, except setting a context foreign key (room, session, turn) to
  NULL, which is what purging a chat does (`on_delete=SET_NULL`);
- changing who, what and when a row is about (user, purpose, alias, agent key, pricing version,
  request id, created_at), even on a pending row.
A pending row may be completed (any outcome) or marked lost, once.

Maintenance switch: a connection with `pantheon.ledger_maintenance = 'on'` may TRUNCATE (the
test settings set it: a transactional test's teardown empties every table). Row-level rules
have no switch. It is a guard against mistakes and casual SQL, not against the database owner,
who can drop triggers anyway.

SQLite (the laptop default) has no such triggers; the ORM never updates or deletes ledger rows
outside these rules either way.
"""

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

CREATE TRIGGER usage_ledger_guard_rows
    BEFORE UPDATE OR DELETE ON usage_llmcallevent
    FOR EACH ROW EXECUTE FUNCTION usage_ledger_guard();
CREATE TRIGGER usage_ledger_guard_truncate
    BEFORE TRUNCATE ON usage_llmcallevent
    FOR EACH STATEMENT EXECUTE FUNCTION usage_ledger_guard();
"""

DROP = """
DROP TRIGGER IF EXISTS usage_ledger_guard_truncate ON usage_llmcallevent;
DROP TRIGGER IF EXISTS usage_ledger_guard_rows ON usage_llmcallevent;
DROP FUNCTION IF EXISTS usage_ledger_guard();
"""


def _on_postgresql(sql: str, doc: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            # No parameters: the SQL's own % signs are plpgsql's, not placeholders.
            schema_editor.execute(sql, params=None)

    run.__doc__ = doc  # what `migrate --plan` says the operation does
    return run


class Migration(migrations.Migration):
    dependencies = [("usage", "0010_rollup_user_without_db_constraint")]

    operations = [
        migrations.RunPython(
            _on_postgresql(GUARD, "Make the ledger append-only."),
            _on_postgresql(DROP, "Drop the ledger's append-only guard."),
        )
    ]
