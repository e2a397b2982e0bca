"""Query-count guards of `GET models` and `GET usage`: the same SQL with 3 rows and with 30.

Each guard was seen failing once with an extra query per row (see the helper
`assert_constant_queries` in the root conftest.py).
"""

from datetime import timedelta

import pytest

from usage.models import ModelAlias
from usage.tests.factories import ledger_event

pytestmark = pytest.mark.django_db


def test_models(owner_client, assert_constant_queries):
    ModelAlias.objects.all().delete()  # the seeded ones: 3 and 30 are then exact

    def grow(new):
        ModelAlias.objects.bulk_create(
            ModelAlias(alias=f"alias_{index:02}", litellm_model=f"openai/model-{index}")
            for index in new
        )

    # One statement: the enabled aliases (the list is not paginated).
    responses = assert_constant_queries(
        lambda: owner_client.get("/api/v1/models"), grow=grow, expected=1
    )

    assert [len(response.json()) for response in responses] == [3, 30]


def test_usage(owner, owner_client, this_month, assert_constant_queries):
    def grow(new):
        for index in new:
            # Two calls on each of ever more aliases.
            for second in (0, 1):
                ledger_event(
                    owner, at=this_month + timedelta(seconds=second), alias=f"alias_{index:02}"
                )

    # The billing profile, this month's credits, the totals by model alias.
    responses = assert_constant_queries(
        lambda: owner_client.get("/api/v1/usage"), grow=grow, expected=3
    )

    assert [len(response.json()["by_model"]) for response in responses] == [3, 30]
    assert {row["llm_calls"] for row in responses[-1].json()["by_model"]} == {2}
