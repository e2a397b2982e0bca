"""Followers benchmark: many clients following running turns (`GET turns/{id}/events`) on the
production server (gunicorn.conf.py, one worker) on PostgreSQL, with a stub provider that
streams a word every 100 ms, both on 127.0.0.1.

    python bench/followers.py --database-url postgres://.../pantheon_hfo_dev \\
        [--watchers 300] [--turns 10] [--seconds 30] [--port-base N]

It starts `--turns` streamed turns (each answer streams for longer than the run), then
`--watchers` followers spread evenly over them, waits until every follower has its first
event, and measures over `--seconds`:
- the server's CPU (its process tree) as a share of one core;
- PostgreSQL transactions committed per second on the database (`pg_stat_database`), the
  turns' own writes included;
- health-check latency (median and 95th percentile) while it all runs;
- the events and bytes the followers received.

A database whose name ends in `_bench` is dropped and made afresh; any other is migrated in
place and gets a user of its own (the run's rows stay).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
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
from pantheon.testing.servers import AppServer, cpu_seconds, process_tree  # noqa: E402
from pantheon.testing.stub_llm import StubLLM  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_arguments(parser, "followers", ports=True, existing_ok=True)
    parser.add_argument("--watchers", type=int, default=300)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--word-ms", type=int, default=100)
    return parser.parse_args()


def seed(stub_url: str, model: str, turns: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from rooms.models import Agent
    from sessions_app.models import Session
    from usage.models import ModelAlias

    call_command("migrate", verbosity=0)
    # Every alias answers from the stub: nothing here may reach a real provider.
    ModelAlias.objects.update(
        litellm_model="openai/slow-0", api_base=stub_url, api_key_env="STUB_API_KEY"
    )
    alias, _ = ModelAlias.objects.update_or_create(
        alias="stub_followed",
        defaults={
            "litellm_model": f"openai/{model}",
            "api_base": stub_url,
            "api_key_env": "STUB_API_KEY",
            "context_window": 32768,
            "enabled": True,
        },
    )
    user = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:8]}", password="x")
    agent = Agent.objects.create(
        owner=user, agent_key="talker", name="Talker", model_alias=alias.alias
    )
    sessions = [str(Session.objects.create(agent=agent, started_by=user).pk) for _ in range(turns)]
    return {"token": Token.objects.create(user=user).key, "sessions": sessions}


def transactions(url: str) -> int:
    """Transactions committed on the database so far (PostgreSQL's statistics, which its
    backends report within a second or so: a window of many seconds hardly notices)."""
    import environ

    name = environ.Env.db_url_config(url)["NAME"]
    with maintenance_connection(url) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [name]
        ).fetchone()
        return row[0] if row else 0


async def read_events(response: aiohttp.ClientResponse, seen: dict) -> None:
    """Count a stream's events (and the turn id of its first) until it ends."""
    async for line in response.content:
        seen["bytes"] += len(line)
        if line.startswith(b"event:"):
            seen["events"] += 1
            seen["first"].set()
        elif line.startswith(b"data:") and seen.get("turn_id") is None:
            import json

            seen["turn_id"] = json.loads(line[5:]).get("turn_id")


async def run(args: argparse.Namespace, server: AppServer, seeded: dict) -> dict:
    headers = {"Authorization": f"Token {seeded['token']}", "Accept": "text/event-stream"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        posters = []
        turn_seen = []
        for session in seeded["sessions"]:
            seen = {"bytes": 0, "events": 0, "first": asyncio.Event()}
            turn_seen.append(seen)

            async def post(session=session, seen=seen):
                async with client.post(
                    f"{server.url}/api/v1/sessions/{session}/turns",
                    json={"message": "talk for a while"},
                    headers=headers,
                ) as response:
                    assert response.status == 201, await response.text()
                    await read_events(response, seen)

            posters.append(asyncio.create_task(post()))
        for seen in turn_seen:
            await asyncio.wait_for(seen["first"].wait(), 30)
        turn_ids = [seen["turn_id"] for seen in turn_seen]

        totals = {"bytes": 0, "events": 0}
        watcher_seen = []

        async def watch(turn_id, seen):
            async with client.get(
                f"{server.url}/api/v1/turns/{turn_id}/events", headers=headers
            ) as response:
                assert response.status == 200, await response.text()
                await read_events(response, seen)

        watchers = []
        for index in range(args.watchers):
            seen = {"bytes": 0, "events": 0, "first": asyncio.Event(), "turn_id": "known"}
            watcher_seen.append(seen)
            watchers.append(asyncio.create_task(watch(turn_ids[index % len(turn_ids)], seen)))
        connected = time.monotonic()
        for seen in watcher_seen:
            await asyncio.wait_for(seen["first"].wait(), 60)
        connected = time.monotonic() - connected
        await asyncio.sleep(2)  # settle

        pids = process_tree(server.process.pid)  # type: ignore[union-attr]
        latencies = []
        before = {
            "cpu": cpu_seconds(pids),
            "xact": transactions(args.database_url),
            "events": sum(seen["events"] for seen in watcher_seen),
            "bytes": sum(seen["bytes"] for seen in watcher_seen),
            "at": time.monotonic(),
        }
        while time.monotonic() - before["at"] < args.seconds:
            started = time.monotonic()
            async with client.get(f"{server.url}/api/v1/health") as response:
                await response.read()
                assert response.status == 200
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - before["at"]
        cpu = cpu_seconds(pids) - before["cpu"]
        xact = transactions(args.database_url) - before["xact"]
        totals["events"] = sum(seen["events"] for seen in watcher_seen) - before["events"]
        totals["bytes"] = sum(seen["bytes"] for seen in watcher_seen) - before["bytes"]
        running = sum(not task.done() for task in posters)
        for task in [*watchers, *posters]:
            task.cancel()
        await asyncio.gather(*watchers, *posters, return_exceptions=True)
    latencies.sort()
    return {
        "elapsed": elapsed,
        "cpu_share": cpu / elapsed,
        "xact_per_s": xact / elapsed,
        "health_median_ms": statistics.median(latencies) * 1000,
        "health_p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
        "health_checks": len(latencies),
        "events_per_s": totals["events"] / elapsed,
        "kb_per_s": totals["bytes"] / elapsed / 1024,
        "connect_s": connected,
        "turns_still_running": running,
    }


def main() -> None:
    args = parse_args()
    ports = Ports(args.port_base)
    with scratch_database(args.database_url, keep=args.keep_db, existing_ok=True):
        stub = StubLLM(port=ports()).start()
        # Each answer streams for longer than the followers are measured.
        words = int((args.seconds + 60) * 1000 / args.word_ms)
        seeded = seed(stub.base_url, f"stream-{args.word_ms}-words-{words}", args.turns)
        # One user follows every turn here: the per-user bound on follow streams is lifted.
        env = {
            "PANTHEON_LLM_BACKEND": "live",
            "STUB_API_KEY": "stub",
            "PANTHEON_MAX_FOLLOWS_PER_USER": "0",
        }
        server = AppServer(database_url=args.database_url, env=env, port=ports())
        try:
            server.start()
            figures = asyncio.run(run(args, server, seeded))
        finally:
            server.stop()
            stub.stop()
    print(
        f"{args.watchers} followers of {args.turns} running turns "
        f"(a word every {args.word_ms} ms), measured over {figures['elapsed']:.0f} s"
    )
    print(f"  followers connected in       {figures['connect_s']:.1f} s")
    print(f"  server CPU                   {figures['cpu_share'] * 100:.0f} % of a core")
    print(f"  PostgreSQL transactions/s    {figures['xact_per_s']:.0f}")
    print(
        f"  health check                 median {figures['health_median_ms']:.1f} ms, "
        f"p95 {figures['health_p95_ms']:.1f} ms ({figures['health_checks']} checks)"
    )
    print(
        f"  followers received           {figures['events_per_s']:.0f} events/s, "
        f"{figures['kb_per_s']:.0f} KB/s"
    )
    print(f"  turns still running at end   {figures['turns_still_running']} of {args.turns}")


if __name__ == "__main__":
    main()
