"""Scratch PostgreSQL databases for the benchmarks: made, used through Django, dropped.

Every benchmark takes the same options for them (`bench_arguments`: `--database-url`,
`--keep-db` and, for those that listen, `--port-base`) and runs inside `scratch_database`."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

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


def bench_arguments(
    parser: argparse.ArgumentParser, name: str, *, ports: bool = False, existing_ok: bool = False
) -> None:
    """The options of every benchmark's scratch database (`scratch_database`) and, with
    `ports`, of the ports it listens on (`Ports`). `existing_ok` as `scratch_database`'s: its
    help says what becomes of a database not named as a scratch one."""
    made = (
        "made afresh and dropped after if its name ends in _bench, any other migrated in place "
        "and kept"
        if existing_ok
        else "made afresh and dropped after (its name ends in _bench)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/pantheon_{name}_bench"
        ),
        help=f"the scratch database, {made}; "
        f"default: $BENCH_DATABASE_URL, else pantheon_{name}_bench on 127.0.0.1",
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the scratch database")
    if ports:
        parser.add_argument(
            "--port-base",
            type=int,
            default=None,
            help="listen on this port and the next ones (the stub provider, each server it "
            "starts, in turn); default: free ports",
        )


class Ports:
    """The ports a benchmark listens on: `base`, then the next ones, one a call; free ones
    (any the system gives) when there is no base."""

    def __init__(self, base: int | None) -> None:
        self._next = base

    def __call__(self) -> int:
        if self._next is None:
            from pantheon.testing.servers import free_port

            return free_port()
        port, self._next = self._next, self._next + 1
        return port


@contextlib.contextmanager
def scratch_database(
    url: str, *, keep: bool = False, reuse: bool = False, existing_ok: bool = False
) -> Iterator[None]:
    """The benchmark's database `url`, made afresh (`reuse`: one kept before, as it is) with
    Django set up on it in this process (`setup_django`); dropped when the block ends, also on
    failure, unless `keep`. With `existing_ok`, a database whose name does not end in _bench is
    used as it is and kept; without, it is refused."""
    import environ

    scratch = environ.Env.db_url_config(url)["NAME"].endswith("_bench")
    if existing_ok and not scratch:
        keep = reuse = True
    print(f"scratch database: {url}")
    if not reuse:
        recreate_database(url)
    try:
        setup_django(url)
        yield
    finally:
        if not keep:
            from django.db import connections

            connections.close_all()
            recreate_database(url, drop_only=True)


# How long the stub provider's process has to start listening (it imports aiohttp).
STUB_START_SECONDS = 30


@contextlib.contextmanager
def stub_provider_process(port: int) -> Iterator[str]:
    """The stub provider (`pantheon.testing.stub_llm`) in a process of its own on `port` (its
    CPU is not the benchmark's own), stopped when the block ends; yields its base URL once it
    listens. A port another process holds is refused at once: a stub that could not listen
    there had the benchmark measure against whatever did (an earlier run's stub, still
    stopping), and print its figures as if nothing were wrong."""
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the stub binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise SystemExit(
                f"the stub provider cannot listen on 127.0.0.1:{port} ({error.strerror}): "
                "another process holds the port; wait for it, or choose another --port-base"
            ) from None
    stub = subprocess.Popen(
        [sys.executable, "-m", "pantheon.testing.stub_llm", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + STUB_START_SECONDS
        while True:
            if stub.poll() is not None:
                raise SystemExit(
                    f"the stub provider exited with {stub.returncode} before it listened on "
                    f"127.0.0.1:{port}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the stub provider did not listen on 127.0.0.1:{port} within "
                    f"{STUB_START_SECONDS} s"
                )
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stub.terminate()
        stub.wait(10)
