"""Outage benchmark: what clients of the production server see while PostgreSQL is away, and how
soon after it is back they are served again.

    python bench/outage.py [--outages 15,60] [--database-url postgres://.../x_outage_bench]

The server (gunicorn.conf.py, its defaults) reaches PostgreSQL through a TCP proxy on
127.0.0.1 (`pantheon.testing.tcp_proxy`), and its provider is the stub, answering after 2 s.
For each outage length: a turn (with an Idempotency-Key) is posted, and PostgreSQL is cut away
(every connection closed, new ones refused) while the provider thinks. It prints:
- how long a list request (`GET agents`), the health check and that turn took to answer, and
  with what (503 `database_unavailable` is the contract);
- after PostgreSQL is back: how long until a list request is served, until the turn cut off by
  the outage is ended (`interrupted`) and its key freed, and until the session takes a new turn
  (201; a turn left `running` made it 409 until the stale limit).

It creates a scratch database and drops it, starts the stub, the proxy and the server and
stops them.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from pantheon.testing.scratch import Ports, bench_arguments, scratch_database  # noqa: E402
from pantheon.testing.servers import AppServer  # noqa: E402
from pantheon.testing.stub_llm import StubLLM  # noqa: E402
from pantheon.testing.tcp_proxy import TcpProxy  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_arguments(parser, "outage", ports=True)
    parser.add_argument(
        "--outages", default="15,60", help="outage lengths in seconds, comma-separated"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=120,
        help="seconds to wait for the cut-off turn to be ended once PostgreSQL is back",
    )
    return parser.parse_args()


def seed(stub_url: str, sessions: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from rooms.models import Agent
    from sessions_app.models import Session
    from usage.models import ModelAlias

    call_command("migrate", verbosity=0)
    ModelAlias.objects.update(
        litellm_model="openai/slow-0", api_base=stub_url, api_key_env="STUB_API_KEY"
    )
    user = get_user_model().objects.create_user("bench", password="bench-pass-123")
    ModelAlias.objects.create(
        alias="stub_slow",
        litellm_model="openai/slow-2000",
        api_base=stub_url,
        api_key_env="STUB_API_KEY",
        context_window=32768,
    )
    agent = Agent.objects.create(owner=user, agent_key="ada", name="Ada", model_alias="stub_slow")
    return {
        "token": Token.objects.create(user=user).key,
        "sessions": [
            str(Session.objects.create(agent=agent, started_by=user).pk) for _ in range(sessions)
        ],
    }


def timed(method: str, url: str, **kwargs) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    answer = httpx.request(method, url, timeout=300, **kwargs)
    return time.monotonic() - started, answer


def said(answer: httpx.Response) -> str:
    try:
        detail = answer.json().get("detail")
    except ValueError:
        detail = None
    code = detail.get("code") if isinstance(detail, dict) else None
    return f"{answer.status_code}{' ' + code if code else ''}"


def turn_status(session: str) -> str | None:
    """The status of the session's first turn (the one the outage cuts off)."""
    from sessions_app.models import Turn

    turn = Turn.objects.filter(session_id=session).order_by("turn_index").first()
    return turn.status if turn else None


def until(condition, limit: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            return float("inf")
        time.sleep(0.1)
    return time.monotonic() - started


def outage(
    server: AppServer, proxy: TcpProxy, data: dict, session: str, length: float, wait: float
) -> dict:
    from sessions_app.models import IdempotencyKey

    headers = {"Authorization": f"Token {data['token']}"}
    agents = f"{server.url}/api/v1/agents"
    turns = f"{server.url}/api/v1/sessions/{session}/turns"
    assert httpx.get(agents, headers=headers, timeout=30).status_code == 200
    asked: dict[str, tuple[float, httpx.Response]] = {}

    def ask(what: str, method: str, url: str, **kwargs) -> threading.Thread:
        thread = threading.Thread(target=lambda: asked.update({what: timed(method, url, **kwargs)}))
        thread.start()
        return thread

    key = {"Idempotency-Key": f"outage-{length}"}
    asking = [ask("turn", "POST", turns, json={"message": "hello"}, headers={**headers, **key})]
    time.sleep(0.5)  # the turn is claimed and waits on its provider
    proxy.cut()
    cut_at = time.monotonic()
    asking.append(ask("list", "GET", agents, headers=headers))
    asking.append(ask("health", "GET", f"{server.url}/api/v1/health"))
    time.sleep(max(0.0, length - (time.monotonic() - cut_at)))
    proxy.restore()
    back_at = time.monotonic()
    # Watched from now, beside the requests below: when the turn is ended and its key freed.
    ended: list[float] = []
    running = IdempotencyKey.State.RUNNING

    def watch() -> None:
        from django.db import connection

        took = until(
            lambda: (
                turn_status(session) != "running"
                and not IdempotencyKey.objects.filter(state=running).exists()
            ),
            wait,
        )
        ended.append(took)
        connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    results = {}
    took, answer = timed("GET", agents, headers=headers)
    results["list after"] = (took, said(answer))
    for thread in asking:
        thread.join(300)
    for what in ("list", "health", "turn"):
        took, answer = asked[what]
        results[what] = (took, said(answer))
    watcher.join(wait + 60)
    if ended[0] == float("inf"):
        results["turn ended"] = (wait, "not yet: still running")
    else:
        results["turn ended"] = (ended[0], "")
    took, answer = timed("POST", turns, json={"message": "again"}, headers=headers)
    results["next turn"] = (time.monotonic() - back_at, said(answer))
    results["turn"] = (results["turn"][0], f"{results['turn'][1]}, then {turn_status(session)}")
    return results


ORDER = ("list", "health", "turn", "list after", "turn ended", "next turn")


def main() -> int:
    args = parse_args()
    lengths = [float(value) for value in args.outages.split(",")]
    ports = Ports(args.port_base)
    with scratch_database(args.database_url, keep=args.keep_db):
        stub = StubLLM(port=ports()).start()
        try:
            data = seed(stub.base_url, len(lengths))
            from django.db import connection

            env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key"}
            with TcpProxy.in_front_of(connection.settings_dict) as proxy:
                url = proxy.database_url(connection.settings_dict)
                with AppServer(database_url=url, env=env, port=ports()) as server:
                    print("outage  what                        took (s)  answer")
                    for length, session in zip(lengths, data["sessions"], strict=True):
                        results = outage(server, proxy, data, session, length, args.wait)
                        for what in ORDER:
                            took, answer = results[what]
                            note = {
                                "list": "GET agents, during",
                                "health": "GET health, during",
                                "turn": "the turn cut off",
                                "list after": "GET agents, once back",
                                "turn ended": "turn ended, key freed *",
                                "next turn": "the session's next turn *",
                            }[what]
                            print(f"{length:5.0f}s  {note:<27} {took:8.1f}  {answer}")
            print("* seconds after PostgreSQL was back")
        finally:
            stub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
