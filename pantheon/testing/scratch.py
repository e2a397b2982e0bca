"""Scratch PostgreSQL databases for the benchmarks: made, used through Django, dropped."""

from __future__ import annotations

import os

# A benchmark's one user posts far more turns, and reads far more, a minute than the per-user
# rates allow: every process of a benchmark (the servers it starts and its own) runs with these.
UNTHROTTLED = {
    "PANTHEON_TURN_RATE": "1000000/min",
    "PANTHEON_API_RATE": "1000000/min",
    "PANTHEON_CREATE_RATE": "1000000/min",
}


def recreate_database(url: str, *, drop_only: bool = False) -> None:
    """Drop the database `url` names (its name must end in `_bench`) and, unless `drop_only`,
    create it empty."""
    import environ

    config = environ.Env.db_url_config(url)
    if not config["NAME"].endswith("_bench"):
        raise SystemExit(f"refusing to drop {config['NAME']!r}: a scratch name ends in _bench")
    with maintenance_connection(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{config["NAME"]}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{config["NAME"]}"')


def maintenance_connection(url: str):
    """An autocommit connection to the `postgres` database of the server `url` names: for what
    is done to a database from outside it (create, drop, read its statistics)."""
    import environ
    import psycopg

    config = environ.Env.db_url_config(url)
    return psycopg.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"] or "postgres",
        dbname="postgres",
        autocommit=True,
    )


def setup_django(url: str) -> None:
    """Django in this process on `url`, with the demo backend and a plain connection (the
    servers a benchmark starts use their own pools)."""
    os.environ["DATABASE_URL"] = url
    os.environ["PANTHEON_LLM_BACKEND"] = "demo"
    os.environ["DB_POOL_MAX_SIZE"] = "0"
    os.environ.update(UNTHROTTLED)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def vacuum_analyze() -> None:
    """Settle freshly bulk-loaded tables, as a long-lived database would be."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
