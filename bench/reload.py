"""Reload benchmark: how long the production server (gunicorn.conf.py) keeps clients waiting
while it reloads (SIGHUP to its master), on PostgreSQL with the demo provider.

    python bench/reload.py [--reloads 2] [--clients 4] [--database-url postgres://.../x_bench]

Clients send `GET health` and a demo turn each in a loop, over new connections, before, during
and after each reload. For each reload it prints the requests answered while it ran (from the
signal until only the new worker is left), the errors, the longest a request took, and how long
the old worker took requests more while the new one warmed up (its log). Before
`pantheon.handoff`, the old worker stopped as the new one was forked, and the longest request
was the new one's warm-up.

It creates a scratch database and drops it, starts the server and stops it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from pantheon.testing.scratch import Ports, bench_arguments, scratch_database  # noqa: E402
from pantheon.testing.servers import AppServer  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_arguments(parser, "reload", ports=True)
    parser.add_argument("--reloads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    return parser.parse_args()


def seed(clients: int) -> tuple[str, list[str]]:
    """A user's token and a demo session per client."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from rooms.models import Agent
    from sessions_app.models import Session

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-pass-123")
    agent = Agent.objects.create(owner=user, agent_key="demo", name="Demo", model_alias="deepseek")
    sessions = [
        str(Session.objects.create(agent=agent, started_by=user).pk) for _ in range(clients)
    ]
    return Token.objects.create(user=user).key, sessions


class Clients:
    """Threads sending requests in a loop; each request's start, duration and outcome."""

    def __init__(self, url: str, token: str, sessions: list[str]) -> None:
        self.url, self.token, self.sessions = url, token, sessions
        self.records: list[tuple[float, float, bool]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.running = True
        self.threads = [
            threading.Thread(target=self._loop, args=(session,), daemon=True)
            for session in sessions
        ]

    def _loop(self, session: str) -> None:
        headers = {"Authorization": f"Token {self.token}", "Connection": "close"}
        turn = f"{self.url}/api/v1/sessions/{session}/turns"
        health = f"{self.url}/api/v1/health"
        while self.running:
            for method, url, body in (("GET", health, None), ("POST", turn, {"message": "hi"})):
                began = time.monotonic()
                try:
                    response = httpx.request(method, url, json=body, headers=headers, timeout=120)
                    ok = response.status_code in (200, 201)
                    error = f"{method} {response.status_code}"
                except httpx.HTTPError as exc:
                    ok, error = False, f"{method} {type(exc).__name__}: {exc}"
                with self.lock:
                    self.records.append((began, time.monotonic() - began, ok))
                    if not ok:
                        self.errors.append(error)
            time.sleep(0.05)

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        for thread in self.threads:
            thread.join()

    def between(self, start: float, end: float) -> list[tuple[float, float, bool]]:
        with self.lock:
            return [record for record in self.records if start <= record[0] <= end]


def main() -> int:
    args = parse_args()
    log_path = Path(tempfile.mkstemp(prefix="reload-bench-", suffix=".log")[1])
    server = None
    with scratch_database(args.database_url, keep=args.keep_db):
        try:
            token, sessions = seed(args.clients)
            server = AppServer(
                database_url=args.database_url,
                port=Ports(args.port_base)(),
                env={"PANTHEON_LLM_BACKEND": "demo", "LOG_LEVEL": "INFO"},
                log_path=log_path,
            ).start()
            print(
                f"{'reload':>6} {'requests':>9} {'errors':>7} {'longest s':>10} {'handoff s':>10}"
            )
            with Clients(server.url, token, sessions) as clients:
                time.sleep(3)
                for number in range(1, args.reloads + 1):
                    [old] = server.worker_pids()
                    began = time.monotonic()
                    os.kill(server.process.pid, signal.SIGHUP)
                    deadline = began + 120
                    while old in server.worker_pids() or len(server.worker_pids()) != 1:
                        if time.monotonic() > deadline:
                            raise SystemExit("the reload did not end within 120 s")
                        time.sleep(0.05)
                    # The new worker answers (it may still be warming up), then the requests
                    # sent until then have ended.
                    httpx.get(f"{server.url}/api/v1/health", timeout=120)
                    ended = time.monotonic()
                    time.sleep(2)
                    during = clients.between(began, ended)
                    handoffs = re.findall(
                        r"took requests for ([0-9.]+) s more", log_path.read_text()
                    )
                    print(
                        f"{number:>6} {len(during):>9} {sum(not ok for *_, ok in during):>7} "
                        f"{max(took for _, took, _ in during):>10.2f} "
                        f"{handoffs[number - 1] if len(handoffs) >= number else '-':>10}"
                    )
            for error in sorted(set(clients.errors)):
                print(f"error: {error} ({clients.errors.count(error)})")
        finally:
            if server is not None:
                server.stop()
            log_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
