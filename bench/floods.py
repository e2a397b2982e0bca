"""Flood benchmark: what one client's flood of refused requests costs the others, on the
production server (gunicorn.conf.py) and PostgreSQL, both on 127.0.0.1.

    python bench/floods.py [--port 8850] [--seconds 10] [--flooders 8] [--workers 1]

Two floods, each for `--seconds` with `--flooders` concurrent connections from 127.0.0.2,
while another user reads `GET sessions` one request at a time from 127.0.0.1:
- bad tokens: `Authorization: Token <40 random hex>`, a new one each time: with no limit on
  invalid tokens (each a 401 after its lookup), then at the default `PANTHEON_INVALID_TOKEN_RATE`
  (401, then 429 before any lookup);
- over the rate: one user's valid token far past `PANTHEON_API_RATE` (429).
It prints, for each, the flood's requests a second and status codes, and the other user's
median and 95th-percentile latency, beside the same reads with no flood; the transactions
PostgreSQL ran per flood request (pg_stat_database's xact_commit, on the scratch database, the
pool's check of a connection included); and the server's CPU time per request.

It creates a scratch database and drops it, starts the server and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from pantheon.testing.scratch import (  # noqa: E402
    Ports,
    bench_arguments,
    maintenance_connection,
    scratch_database,
)
from pantheon.testing.servers import AppServer, cpu_seconds  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_arguments(parser, "floods", ports=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--reads", type=int, default=300, help="the other user's reads, at most")
    return parser.parse_args()


def make_users() -> tuple[str, str]:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    users = get_user_model().objects
    flooder = Token.objects.create(user=users.create_user("flooder", password="x-pass-12345"))
    reader = Token.objects.create(user=users.create_user("reader", password="x-pass-12345"))
    return flooder.key, reader.key


def commits(url: str) -> int:
    import environ

    name = environ.Env.db_url_config(url)["NAME"]
    with maintenance_connection(url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0])


async def read_as(session, base: str, token: str, stop: asyncio.Event, limit: int) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Token {token}"}
    while not stop.is_set() and len(latencies) < limit:
        started = time.perf_counter()
        async with session.get(f"{base}/api/v1/sessions", headers=headers) as response:
            await response.read()
            assert response.status == 200, response.status
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)
    return latencies


async def flood(session, base: str, token: str | None, deadline: float, codes, retry_after):
    while time.monotonic() < deadline:
        key = token or secrets.token_hex(20)
        async with session.get(
            f"{base}/api/v1/sessions", headers={"Authorization": f"Token {key}"}
        ) as response:
            await response.read()
            codes[response.status] += 1
            if "Retry-After" in response.headers:
                retry_after.add(response.headers["Retry-After"])


async def run(server, args, flood_token: str | None, reader: str, url: str) -> dict:
    base = server.url
    # The flood from an address of its own: the limit on invalid tokens refuses every token
    # from the flooding address (README).
    flooding = aiohttp.TCPConnector(limit=args.flooders, local_addr=("127.0.0.2", 0))
    async with (
        aiohttp.ClientSession(connector=flooding) as flood_session,
        aiohttp.ClientSession() as session,
    ):
        stop = asyncio.Event()
        codes: collections.Counter = collections.Counter()
        retry_after: set[str] = set()
        if flood_token == "none":  # no flood: the reads alone
            latencies = await read_as(session, base, reader, stop, args.reads)
            return {"reads": latencies}
        before = commits(url)
        cpu_before = cpu_seconds(server.worker_pids())
        started = time.monotonic()
        deadline = started + args.seconds
        floods = [
            asyncio.create_task(
                flood(flood_session, base, flood_token, deadline, codes, retry_after)
            )
            for _ in range(args.flooders)
        ]
        await asyncio.sleep(0.5)  # the flood under way
        reading = asyncio.create_task(read_as(session, base, reader, stop, args.reads))
        await asyncio.gather(*floods)
        elapsed = time.monotonic() - started
        stop.set()
        latencies = await reading
        after = commits(url)
        cpu = cpu_seconds(server.worker_pids()) - cpu_before
        sent = sum(codes.values())
        return {
            "reads": latencies,
            "rate": sent / elapsed,
            "codes": dict(codes),
            "retry_after": sorted(retry_after, key=int)[:5],
            "commits_per_request": (after - before - len(latencies)) / max(sent, 1),
            "cpu_ms": cpu * 1000 / (sent + len(latencies)),
        }


def describe(name: str, result: dict) -> None:
    reads = sorted(result["reads"])
    p95 = reads[int(len(reads) * 0.95) - 1]
    line = f"{name:<14} other user: median {statistics.median(reads):6.2f} ms, p95 {p95:6.2f} ms"
    line += f" ({len(reads)} reads)"
    if "rate" in result:
        line += (
            f"; flood {result['rate']:6.0f} req/s {result['codes']}"
            f" Retry-After {result['retry_after']}"
            f", {result['commits_per_request']:.2f} transactions per flood request"
            f", server CPU {result['cpu_ms']:.2f} ms per request"
        )
    print(line, flush=True)


def serving(args, port: int, **env: str) -> AppServer:
    return AppServer(
        database_url=args.database_url,
        port=port,
        workers=args.workers,
        env={"GUNICORN_CONTROL_SOCKET": "off", **env},
    )


def main() -> None:
    args = parse_args()
    ports = Ports(args.port_base)
    with scratch_database(args.database_url, keep=args.keep_db):
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        flooder, reader = make_users()
        url = args.database_url
        # Bad tokens: the reader is never throttled; first with no limit on invalid tokens (each
        # a 401 after its lookup, as before the limit), then with the default limit.
        no_limit = {"PANTHEON_API_RATE": "1000000/min", "PANTHEON_INVALID_TOKEN_RATE": ""}
        with serving(args, ports(), **no_limit) as server:
            describe("no flood", asyncio.run(run(server, args, "none", reader, url)))
            describe("bad, no limit", asyncio.run(run(server, args, None, reader, url)))
        with serving(args, ports(), PANTHEON_API_RATE="1000000/min") as server:
            describe("bad, 60/min", asyncio.run(run(server, args, None, reader, url)))
        # Over the rate: the reader under the same rate, whose bucket of 600 holds a run's reads.
        with serving(args, ports(), PANTHEON_API_RATE="600/min") as server:
            describe("over the rate", asyncio.run(run(server, args, flooder, reader, url)))


if __name__ == "__main__":
    main()
