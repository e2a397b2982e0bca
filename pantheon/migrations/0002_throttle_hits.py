"""The throttles' request history on PostgreSQL: one row per throttled identity.

DRF's throttles read a request history from the cache, decide in Python and write it back: two
workers that read at once both see room for one more request, and each check costs the database
cache five statements (read, count for culling, then a locked read and write). Here the check is
one statement (pantheon/throttling.py) that prunes the history, counts it and appends the new
request under the row's lock, so concurrent requests cannot pass together.

`hits` holds the epoch seconds of the requests inside the window, at most the rate's count;
`expires` is when the newest of them leaves the window (rows past it are pruned). SQLite, the
laptop default, has no arrays: there the throttles keep DRF's cache-based history.
"""

from django.db import migrations

CREATE = """
CREATE TABLE pantheon_throttle (
    key varchar(255) PRIMARY KEY,
    hits double precision[] NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX pantheon_throttle_expires ON pantheon_throttle (expires);
"""


def create(apps, schema_editor):
    """Create the throttles' table."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    """Drop the throttles' history table."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP TABLE IF EXISTS pantheon_throttle")


class Migration(migrations.Migration):
    dependencies = [("pantheon", "0001_create_cache_table")]

    operations = [migrations.RunPython(create, drop)]
