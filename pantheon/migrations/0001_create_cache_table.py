"""The table of Django's DatabaseCache (on SQLite the throttles keep their history there; on
PostgreSQL in their own table, migration 0002).

PostgreSQL is the only store every worker and host shares, so the cache lives there. The table is Django's own definition (`createcachetable`), created
here so that `migrate` is the only setup step anywhere: laptop, CI and production.
"""

from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations

# settings.CACHES["default"]["LOCATION"]; pantheon.checks.check_cache_table warns if they differ.
CACHE_TABLE = "pantheon_cache"


def create_cache_table(apps, schema_editor):
    """Create the cache table."""
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, CACHE_TABLE, dry_run=False)


def drop_cache_table(apps, schema_editor):
    """Drop the cache table: entries go."""
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(CACHE_TABLE)}")


class Migration(migrations.Migration):
    dependencies = []

    operations = [migrations.RunPython(create_cache_table, drop_cache_table)]
