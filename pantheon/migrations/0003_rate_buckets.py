"""The API's per-user rates on PostgreSQL (`PANTHEON_API_RATE`, `PANTHEON_CREATE_RATE`): one row
per user and rate, holding one number.

These rates are checked on almost every request, so each check must stay cheap: one statement
on a row of constant size (`pantheon/throttling.py`, `BucketRateThrottle`), never a history that
grows with the rate as `pantheon_throttle`'s does. `tat` is when the user's bucket is full again
(epoch seconds; the generic cell rate algorithm's "theoretical arrival time"); a row past it
says nothing and is pruned. No index but the key's, so that the update of `tat` can stay on its
page (a HOT update, no index written); pages kept a third free for that.

UNLOGGED: a read would otherwise wait for a WAL flush (fsync) at the commit of its rate's
update. A crash of PostgreSQL empties the table, which forgets a few seconds of counting.
"""

from django.db import migrations

CREATE = """
CREATE UNLOGGED TABLE pantheon_rate (
    key varchar(255) PRIMARY KEY,
    tat double precision NOT NULL
) WITH (fillfactor = 70);
"""


def create(apps, schema_editor):
    """Create the rate buckets' table."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    """Drop the users' rate buckets."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP TABLE IF EXISTS pantheon_rate")


class Migration(migrations.Migration):
    dependencies = [("pantheon", "0002_throttle_hits")]

    operations = [migrations.RunPython(create, drop)]
