"""usage/0024 lets a completing call record its provider's request id and swaps the unique
index on it for a plain one: rolled back, the release before's guard and unique index are
there again; rolled forward, the request id is written and searched as now."""

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from usage.models import LlmCallEvent
from usage.selectors import alias_pricing
from usage.services import usage_call_open

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

TABLE = LlmCallEvent._meta.db_table
BEFORE = ("usage", "0023_api_base_holds_no_credential")
INDEXES = f"SELECT indexname, indexdef FROM pg_indexes WHERE tablename = '{TABLE}'"


def migrate(*targets: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(list(targets) or executor.loader.graph.leaf_nodes())


def request_id_indexes() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(INDEXES)
        return {name: sql for name, sql in cursor.fetchall() if "request_id" in sql}


def complete_naming(event: LlmCallEvent, request_id: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET status = 'success', request_id = %s WHERE id = %s",
            [request_id, event.pk],
        )


@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the ledger's guard and concurrent index builds are PostgreSQL's")
    yield
    migrate()  # whatever a test left, the database the next test expects


@pytest.mark.usefixtures("postgresql")
def test_the_request_id_migration_rolls_back_and_forward(owner):
    pricing = alias_pricing(aliases=["deepseek"])["deepseek"]

    def opened() -> LlmCallEvent:
        return usage_call_open(user=owner, model_alias="deepseek", pricing=pricing, purpose="agent")

    now = request_id_indexes()
    assert list(now) == ["llmcall_request_id"]
    assert "UNIQUE" not in now["llmcall_request_id"]

    migrate(BEFORE)
    assert list(request_id_indexes()) == ["llm_call_request_id_unique"]
    assert "UNIQUE" in request_id_indexes()["llm_call_request_id_unique"]
    with pytest.raises(DatabaseError, match="never changes"):
        complete_naming(opened(), "req_before")

    migrate()
    assert request_id_indexes() == now
    first, second = opened(), opened()
    complete_naming(first, "req_after")
    complete_naming(second, "req_after")  # a repeated id: both rows complete
    named = LlmCallEvent.objects.filter(request_id="req_after")
    assert sorted(named.values_list("status", flat=True)) == ["success", "success"]
