"""One very long conversation through a live gunicorn on PostgreSQL (offline demo backend).

    python bench/long_chat.py [--turns 2500] [--database-url postgres://…/x_bench] [--port-base N]

It seeds a direct session of `--turns` exchanges (every 50th message a 100 KB answer, the rest
short), summed up to its last exchange as a session used that long would be, beside a fresh
direct session, and a roundtable room of 50 seats. Then it prints:

- per-turn wall time (p50 of 10 turns) and SQL statements (counted in-process, auth included) at
  the fresh session's start and at the long one's end: neither should grow with the history;
- status, time and size of the read endpoints on the long session (session detail, the first
  page of messages and turns at the default size and at 200, a turn's events replayed);
- how far the 50-seat room's summary has come after 20 turns of its demo agents (it should
  reach the exchange before the newest: a summary that lags leaves the middle of the
  conversation unseen by every agent).

Everything it starts it stops (gunicorn, the scratch database), also on failure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pantheon.testing.scratch import (  # noqa: E402
    Ports,
    bench_arguments,
    scratch_database,
    vacuum_analyze,
)
from pantheon.testing.servers import AppServer  # noqa: E402

BIG = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
SEATS = 50


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=2500, help="exchanges of the long session")
    bench_arguments(parser, "long_chat", ports=True)
    return parser.parse_args()


def seed(turns: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from orchestration.budget import estimate_tokens
    from rooms.models import Agent, Room, RoomAgent, RoomMode
    from sessions_app.models import Message, Session, SessionSummary, Turn, TurnStatus

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-pass-123")
    agents = [
        Agent.objects.create(
            owner=user, agent_key=f"a{i:02d}", name=f"Agent {i:02d}", model_alias="deepseek"
        )
        for i in range(SEATS)
    ]
    room = Room.objects.create(owner=user, name="table", current_mode=RoomMode.ROUNDTABLE)
    RoomAgent.objects.bulk_create(
        RoomAgent(room=room, agent=agent, position=i) for i, agent in enumerate(agents)
    )
    long = Session.objects.create(started_by=user, agent=agents[0])
    rows = Turn.objects.bulk_create(
        Turn(session=long, turn_index=i, mode="direct", status=TurnStatus.COMPLETED)
        for i in range(1, turns + 1)
    )
    messages, sequence = [], 0
    for turn in rows:
        for role in ("user", "assistant"):
            sequence += 1
            text = BIG if sequence % 50 == 0 else f"{role} says something about {turn.turn_index}"
            messages.append(
                Message(
                    session=long,
                    turn=turn,
                    sequence=sequence,
                    role=role,
                    agent_key="" if role == "user" else "a00",
                    content=text,
                    token_estimate=estimate_tokens(text),
                )
            )
    Message.objects.bulk_create(messages, batch_size=1000)
    SessionSummary.objects.create(
        session=long, from_sequence=1, to_sequence=sequence - 2, summary_text="A long talk."
    )
    return {
        "token": Token.objects.create(user=user).key,
        "long": str(long.pk),
        "fresh": str(Session.objects.create(started_by=user, agent=agents[0]).pk),
        "room": str(Session.objects.create(started_by=user, room=room).pk),
        "warm": str(Session.objects.create(started_by=user, agent=agents[1]).pk),
    }


def count_sql(token: str, session_id: str) -> int:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            f"/api/v1/sessions/{session_id}/turns",
            {"message": "count me"},
            content_type="application/json",
        )
    assert response.status_code == 201, response.content[:300]
    return len(queries)


def timed(client, method: str, url: str, **kwargs) -> tuple:
    started = time.perf_counter()
    response = client.request(method, url, **kwargs)
    return response, (time.perf_counter() - started) * 1000


def main() -> int:
    args = parse_args()
    import httpx

    with scratch_database(args.database_url, keep=args.keep_db):
        from sessions_app.models import Message, SessionSummary

        data = seed(args.turns)
        vacuum_analyze()
        server = AppServer(
            database_url=args.database_url,
            port=Ports(args.port_base)(),
            env={"PANTHEON_LLM_BACKEND": "demo"},
        )
        with (
            server,
            httpx.Client(
                headers={"Authorization": f"Token {data['token']}"}, timeout=300
            ) as client,
        ):
            api = f"{server.url}/api/v1"
            for _ in range(5):
                client.post(f"{api}/sessions/{data['warm']}/turns", json={"message": "warm"})
            walls: dict[str, list[float]] = {"fresh": [], "long": []}
            for _ in range(10):
                for case in walls:
                    response, ms = timed(
                        client, "POST", f"{api}/sessions/{data[case]}/turns", json={"message": "?"}
                    )
                    assert response.status_code == 201, response.text[:300]
                    walls[case].append(ms)
            count_sql(data["token"], data["warm"])  # this process's one-time reads
            for case, values in walls.items():
                sql = count_sql(data["token"], data[case])
                p50 = statistics.median(values)
                print(f"turn, {case:>5} session: p50 {p50:6.0f} ms, {sql} SQL")
            long = data["long"]
            replayed = client.get(f"{api}/sessions/{long}/turns?page_size=1").json()
            reads = [
                f"/sessions/{long}",
                f"/sessions/{long}/messages",
                f"/sessions/{long}/messages?page_size=200",
                f"/sessions/{long}/turns",
                f"/sessions/{long}/turns?page_size=200",
                f"/turns/{replayed['results'][0]['id']}/events",
            ]
            for path in reads:
                response, ms = timed(client, "GET", api + path)
                size = len(response.content) / 1000
                print(f"GET {path}: {response.status_code} {ms:.0f} ms {size:.0f} KB")
            room = f"{api}/sessions/{data['room']}/turns"
            for _ in range(20):
                response = client.post(room, json={"message": "?"})
                assert response.status_code == 201, response.text[:300]
            newest = Message.objects.filter(session_id=data["room"]).order_by("-sequence").first()
            summary = SessionSummary.objects.filter(session_id=data["room"]).latest("to_sequence")
            print(
                f"{SEATS}-seat room after 20 turns: summary to sequence {summary.to_sequence} of "
                f"{newest.sequence} (the newest exchange is {SEATS + 1} messages)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
