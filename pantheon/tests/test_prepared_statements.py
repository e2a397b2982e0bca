"""PostgreSQL plans the statements a connection repeats once, not on every request: parameters
bound by the server and psycopg's prepared statements (`DB_PREPARED_STATEMENTS`)."""

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import NotSupportedError, connection, transaction

from pantheon.testing.processes import production_python
from usage.models import ModelAlias
from usage.selectors import alias_pricing


def prepared(fragment: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
            [f"%{fragment}%"],
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_a_query_repeated_on_a_connection_is_prepared_once_with_its_parameters_apart():
    users = get_user_model().objects
    for number in range(4):
        list(users.filter(username=f"nobody-{number}"))
    assert prepared('"auth_user"."username" = $1') == []  # below psycopg's threshold

    for number in range(4, 8):
        list(users.filter(username=f"nobody-{number}"))

    assert len(prepared('"auth_user"."username" = $1')) == 1


@pytest.mark.django_db
def test_the_turns_alias_pricing_read_is_prepared_with_its_columns_named():
    """A prepared statement's result may not change shape: `alias.*` would fail on every pooled
    connection once a migration adds a column to the aliases."""
    for _ in range(6):
        assert alias_pricing(aliases=["deepseek"])["deepseek"].alias.alias == "deepseek"

    (statement,) = prepared("usage_modelalias alias")
    assert "alias.*" not in statement
    assert 'alias."litellm_model"' in statement


def test_the_switch_turns_prepared_statements_off_for_poolers_that_cannot_keep_them():
    def options(**env: str) -> dict:
        return production_python(
            "import json, django; django.setup(); from django.conf import settings; "
            "print(json.dumps(settings.DATABASES['default']['OPTIONS'], default=str))",
            DATABASE_URL="postgres://postgres@127.0.0.1:5432/unused",
            **env,
        )

    on = options(DB_PREPARED_STATEMENTS="true")
    off = options(DB_PREPARED_STATEMENTS="false")

    assert (on["server_side_binding"], on["prepare_threshold"]) == (True, 5)
    assert "server_side_binding" not in off and "prepare_threshold" not in off


@pytest.fixture
def alias_column_type():
    """Change the type of a column the alias pricing read returns from another connection, as a
    migration run during a deploy would, and change it back after."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)

    def alter(length: int) -> None:
        with psycopg.connect(**params, autocommit=True) as other:
            other.execute(
                f"ALTER TABLE usage_modelalias ALTER COLUMN api_key_env TYPE varchar({length})"
            )

    yield lambda: alter(120)
    alter(ModelAlias._meta.get_field("api_key_env").max_length)


def read_alias() -> str:
    return alias_pricing(aliases=["prepared"])["prepared"].alias.litellm_model


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_column_type_changed_under_a_prepared_statement_costs_no_request(
    alias_column_type,
):
    ModelAlias.objects.create(alias="prepared", litellm_model="openai/prepared")
    for _ in range(6):
        assert read_alias() == "openai/prepared"
    assert prepared("usage_modelalias alias")

    alias_column_type()

    assert read_alias() == "openai/prepared"
    assert read_alias() == "openai/prepared"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_inside_a_transaction_the_change_fails_it_once_and_its_rollback_recovers(
    alias_column_type,
):
    ModelAlias.objects.create(alias="prepared", litellm_model="openai/prepared")
    for _ in range(6):
        read_alias()
    alias_column_type()

    changed = pytest.raises(NotSupportedError, match="cached plan must not change result type")
    with changed, transaction.atomic():
        read_alias()

    assert read_alias() == "openai/prepared"
    with transaction.atomic():
        assert read_alias() == "openai/prepared"
