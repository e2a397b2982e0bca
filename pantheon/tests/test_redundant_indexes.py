"""No index of the apps' tables is a leading part of another: each one costs every insert (and
every update that is not HOT: a ledger row's completion) a write, and the ledger's big tables
its space, for no read the longer index does not serve."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

OPERATED_APPS = ("rooms", "sessions_app", "usage")

# Every index of a table with its keys (INCLUDE columns left out), each its column, operator
# class (a `_like` index's pattern class serves other reads) and order, and whether the index is
# unique, partial or over an expression: (index, table, [key], unique, partial).
INDEXES = """
SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text,
       array(SELECT a.attname || ' ' || i.indclass[k.o - 1] || ' ' || i.indoption[k.o - 1]
             FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o),
       i.indisunique, i.indpred IS NOT NULL OR i.indexprs IS NOT NULL
FROM pg_index i
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace s ON s.oid = t.relnamespace AND s.nspname = current_schema()
WHERE t.relname LIKE ANY (%s)
"""


def redundant_indexes() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(INDEXES, [[f"{app}\\_%" for app in OPERATED_APPS]])
        indexes = cursor.fetchall()
    found = []
    for name, table, columns, unique, partial in indexes:
        if unique or partial:
            continue  # a constraint, or an index for a few rows: not replaced by a longer one
        for other, other_table, other_columns, _, other_partial in indexes:
            if other == name or other_table != table or other_partial:
                continue
            same = other_columns == columns
            # Two alike: one is redundant (the one with the lesser name, said once).
            if (same and name < other) or (not same and other_columns[: len(columns)] == columns):
                shown = ", ".join(column.split()[0] for column in columns)
                found.append(f"{name} ({shown}) is served by {other}")
                break
    return sorted(found)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's catalog")
def test_no_index_is_a_leading_part_of_another():
    assert redundant_indexes() == []
