"""Paired A/B of the server CPU per single-agent turn: two checkouts (say, a git worktree of
the base and one of the change), each served by its own gunicorn (gunicorn.conf.py, one worker)
on its own scratch database, both against one stub provider at 0 ms (or the demo backend).

    python bench/cpu_ab.py A_DIR B_DIR [--rounds 12] [--turns 200] [--port-base 8820]
                           [--kind stub|demo] [--stream] [--database-url URL_WITH_{}]

Each round loads A and B one after the other (the order alternates each round) with 8 clients
posting turns back to back, and reads each server's CPU seconds meanwhile: a shared VM's speed
drifts from one minute to the next, and a round compares the two within seconds. It prints
each round's ms per turn for A and B and their ratio, then the median ratio and how many rounds
B used less. It drops its databases and stops its servers and the stub by itself.

With `--profile SECONDS` it serves A alone and loads it that long (for py-spy on its worker:
the worker's pid is printed), then stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402

from pantheon.testing.scratch import (  # noqa: E402
    UNTHROTTLED,
    recreate_database,
    stub_provider_process,
)
from pantheon.testing.servers import AppServer, cpu_seconds, process_tree  # noqa: E402

DATABASE = "postgres://postgres@127.0.0.1:5432/pantheon_cpu_ab_{}_bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="checkout A (the base)")
    parser.add_argument("b", type=Path, nargs="?", help="checkout B (the change)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--turns", type=int, default=200, help="turns per server per round")
    parser.add_argument("--port-base", type=int, default=8820, help="stub, then A, then B")
    parser.add_argument("--kind", choices=("stub", "demo"), default="stub")
    parser.add_argument("--stream", action="store_true", help="post as SSE (text/event-stream)")
    parser.add_argument("--profile", type=float, default=0, help="load A alone this long")
    parser.add_argument(
        "--database-url",
        default=DATABASE,
        help="the scratch databases, {} standing for a and b (made afresh and dropped after); "
        f"default: {DATABASE}",
    )
    parser.add_argument(
        "--seed", nargs=2, metavar=("DATABASE_URL", "STUB_URL"), help=argparse.SUPPRESS
    )
    return parser.parse_args()


def seed_here(url: str, stub_url: str) -> None:
    """(In a subprocess, one per database.) Migrate and seed; print the token and sessions."""
    from pantheon.testing.scratch import setup_django

    setup_django(url)
    from serving import seed

    data = seed(stub_url, {"fast": 8, "demo": 8})
    print(json.dumps(data))


async def closed_loop(
    base: str, headers: dict, sessions: list[str], total: int, stream: bool
) -> None:
    """8 clients posting turns back to back until `total`."""
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:
        counter = iter(range(total))

        async def client_loop(session: str) -> None:
            url = f"{base}/api/v1/sessions/{session}/turns"
            for _ in counter:
                if stream:
                    async with client.stream(
                        "POST",
                        url,
                        json={"message": "go"},
                        headers={"Accept": "text/event-stream"},
                    ) as response:
                        body = await response.aread()
                    assert response.status_code == 201, body
                    assert b"turn_completed" in body, body
                else:
                    response = await client.post(url, json={"message": "go"})
                    assert response.status_code == 201, response.text

        await asyncio.gather(*(client_loop(s) for s in sessions))


def load(server: AppServer, data: dict, kind: str, total: int, stream: bool) -> float:
    """Server CPU ms per turn over `total` turns."""
    headers = {"Authorization": f"Token {data['token']}"}
    pids = process_tree(server.process.pid)
    before = cpu_seconds(pids)
    asyncio.run(
        closed_loop(
            server.url,
            headers,
            data["sessions"]["fast" if kind == "stub" else kind][:8],
            total,
            stream,
        )
    )
    return (cpu_seconds(pids) - before) / total * 1000


def main() -> int:
    args = parse_args()
    if args.seed:
        seed_here(*args.seed)
        return 0
    checkouts = [args.a] if args.profile or args.b is None else [args.a, args.b]
    env = (
        {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key"}
        if args.kind == "stub"
        else {"PANTHEON_LLM_BACKEND": "demo"}
    )
    urls = [args.database_url.format(label) for label in "ab"[: len(checkouts)]]
    with contextlib.ExitStack() as held:
        stub_url = held.enter_context(stub_provider_process(args.port_base))
        datas = []
        for url in urls:
            recreate_database(url)
            held.callback(recreate_database, url, drop_only=True)
            seeded = subprocess.run(
                [sys.executable, __file__, str(args.a), "--seed", url, stub_url],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            datas.append(json.loads(seeded.stdout.strip().splitlines()[-1]))
        servers = [
            held.enter_context(
                AppServer(
                    database_url=url,
                    env={**UNTHROTTLED, **env},
                    port=args.port_base + 1 + index,
                    root=checkout.resolve(),
                )
            )
            for index, (checkout, url) in enumerate(zip(checkouts, urls, strict=True))
        ]
        for server, data in zip(servers, datas, strict=True):
            load(server, data, args.kind, 60, args.stream)  # warm
        if args.profile:
            workers = [pid for pid in process_tree(servers[0].process.pid)][1:]
            print(f"worker pids: {workers}", flush=True)
            deadline = time.monotonic() + args.profile
            count = 0
            while time.monotonic() < deadline:
                load(servers[0], datas[0], args.kind, 100, args.stream)
                count += 100
            print(f"served {count} turns")
            return 0
        ratios, a_all, b_all = [], [], []
        print(f"{'round':>5}{'A ms':>8}{'B ms':>8}{'B/A':>7}", flush=True)
        for number in range(args.rounds):
            order = [0, 1] if number % 2 == 0 else [1, 0]
            figures = {}
            for index in order:
                figures[index] = load(
                    servers[index], datas[index], args.kind, args.turns, args.stream
                )
            a, b = figures[0], figures[1]
            a_all.append(a)
            b_all.append(b)
            ratios.append(b / a)
            print(f"{number + 1:>5}{a:>8.2f}{b:>8.2f}{b / a:>7.3f}", flush=True)
        label = args.kind + (" SSE" if args.stream else "")
        a_median, b_median = statistics.median(a_all), statistics.median(b_all)
        print(
            f"{label}: A median {a_median:.2f} ms, B median {b_median:.2f} ms; "
            f"B/A median {statistics.median(ratios):.3f} "
            f"(range {min(ratios):.3f}-{max(ratios):.3f}); B used less in "
            f"{sum(r < 1 for r in ratios)} of {len(ratios)} rounds"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
