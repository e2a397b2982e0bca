"""Turn-engine benchmark: server overhead per turn through a live gunicorn on PostgreSQL.

    python bench/turns.py [--samples 60] [--database-url postgres://postgres@127.0.0.1:5432/x]

It creates a scratch database, migrates it, seeds sessions already grown to turn 9 and turn
499 (bulk rows, with a summary, as a real session would have), starts gunicorn on a free
127.0.0.1 port with the offline demo backend (a provider with no network latency), posts one
turn to each session, and prints p50/p95 of:

- wall time per request, as the client sees it;
- server overhead = wall time minus the time spent inside LLM calls (the ledger's latency_ms),
  i.e. what Pantheon itself adds around the provider;
- SQL statements per turn, counted in-process on the same database (auth included).

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

TARGETS = {
    "single_p50_ms": 10.0,
    "single_p95_ms": 25.0,
    "growth_ratio": 1.1,
    "single_sql": 15,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=60, help="sessions measured per case")
    bench_arguments(parser, "turns", ports=True)
    parser.add_argument("--workers", type=int, default=1, help="server workers (WEB_CONCURRENCY)")
    return parser.parse_args()


def seed(samples: int) -> dict:
    """Sessions grown to turn 9 and 499, single-agent (direct) and a 3-agent roundtable."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from rooms.models import Agent, Room, RoomAgent, RoomMode
    from sessions_app.models import Message, Session, SessionSummary, Turn, TurnStatus

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-pass-123")
    token = Token.objects.create(user=user).key
    agents = [
        Agent.objects.create(
            owner=user,
            agent_key=key,
            name=key.title(),
            model_alias=alias,
            role_prompt=f"{key.title()} gives short, concrete answers.",
        )
        for key, alias in (("ada", "deepseek"), ("grace", "qwen"), ("linus", "llama"))
    ]
    room = Room.objects.create(
        owner=user, name="bench", goal="Benchmark", current_mode=RoomMode.ROUNDTABLE
    )
    RoomAgent.objects.bulk_create(
        RoomAgent(room=room, agent=agent, position=i) for i, agent in enumerate(agents)
    )

    def grow(kind: str, turns: int, count: int = samples) -> list[str]:
        ids = []
        for _ in range(count):
            if kind == "single":
                session = Session.objects.create(started_by=user, agent=agents[0])
                speakers, mode = agents[:1], "direct"
            else:
                session = Session.objects.create(started_by=user, room=room)
                speakers, mode = agents, RoomMode.ROUNDTABLE
            turn_rows = Turn.objects.bulk_create(
                Turn(
                    session=session,
                    turn_index=index,
                    mode=mode,
                    status=TurnStatus.COMPLETED,
                    user_input=f"question {index}",
                )
                for index in range(1, turns + 1)
            )
            messages, sequence = [], 0
            for turn in turn_rows:
                sequence += 1
                messages.append(
                    Message(
                        session=session,
                        turn=turn,
                        sequence=sequence,
                        role="user",
                        content=turn.user_input,
                        token_estimate=4,
                    )
                )
                for agent in speakers:
                    sequence += 1
                    messages.append(
                        Message(
                            session=session,
                            turn=turn,
                            sequence=sequence,
                            role="assistant",
                            agent_key=agent.agent_key,
                            agent_name=agent.name,
                            model_alias=agent.model_alias,
                            content=f"{agent.name} answers question {turn.turn_index} briefly.",
                            token_estimate=12,
                        )
                    )
            Message.objects.bulk_create(messages, batch_size=2000)
            SessionSummary.objects.create(
                session=session,
                from_sequence=1,
                to_sequence=sequence,
                summary_text=f"{turns} turns of questions and short answers.",
            )
            ids.append(str(session.id))
        return ids

    return {
        "token": token,
        # Warm-up turns go to a session of their own: every counted one starts at its turn.
        "warm": grow("single", 9, count=1),
        "single@10": grow("single", 9),
        "single@500": grow("single", 499),
        "roundtable@10": grow("roundtable", 9),
        "roundtable@500": grow("roundtable", 499),
        "room": room.pk,
    }


def measure(client, base: str, cases: dict[str, list[str]], message: str) -> dict:
    """One turn per session, the cases interleaved so that drift on the machine (autovacuum,
    other load) lands on every case alike rather than on whichever runs last."""
    from django.db.models import Sum

    from usage.models import LlmCallEvent

    results = {case: ([], []) for case in cases}
    for round_ids in zip(*cases.values(), strict=True):
        for case, session_id in zip(cases, round_ids, strict=True):
            started = time.perf_counter()
            response = client.post(
                f"{base}/api/v1/sessions/{session_id}/turns", json={"message": message}
            )
            wall_ms = (time.perf_counter() - started) * 1000
            if response.status_code != 201:
                raise RuntimeError(f"turn failed: {response.status_code} {response.text[:300]}")
            events = LlmCallEvent.objects.filter(turn_id=response.json()["id"])
            llm_ms = events.aggregate(total=Sum("latency_ms"))["total"] or 0
            walls, overheads = results[case]
            walls.append(wall_ms)
            overheads.append(wall_ms - llm_ms)
    return results


def count_sql(token: str, session_id: str, message: str) -> int:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            f"/api/v1/sessions/{session_id}/turns",
            {"message": message},
            content_type="application/json",
        )
    assert response.status_code == 201, response.content[:300]
    return len(queries)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    args = parse_args()
    import httpx

    server = None
    with scratch_database(args.database_url, keep=args.keep_db):
        try:
            started = time.monotonic()
            data = seed(args.samples)
            print(f"seeded {args.samples} sessions per case in {time.monotonic() - started:.1f}s")
            vacuum_analyze()

            server = AppServer(
                database_url=args.database_url,
                workers=args.workers,
                port=Ports(args.port_base)(),
                env={"PANTHEON_LLM_BACKEND": "demo"},  # unthrottled: inherited from setup_django
            ).start()
            base = server.url
            headers = {"Authorization": f"Token {data['token']}"}
            with httpx.Client(headers=headers, timeout=30) as client:
                # Warm every worker (imports, connections) on sessions we do not measure.
                warm = data["warm"][0]
                for _ in range(6 * args.workers):
                    # Each on a new connection, so that the workers' accepts share them out.
                    client.post(
                        f"{base}/api/v1/sessions/{warm}/turns",
                        json={"message": "warm"},
                        headers={"Connection": "close"},
                    )
                measured = {
                    case: data[case][:-1]
                    for case in ("single@10", "single@500", "roundtable@10", "roundtable@500")
                }
                results = measure(client, base, measured, "What should we do next, and why?")
            # This process's first turn pays one-time reads (e.g. the month's counter row): not a
            # turn's cost.
            count_sql(data["token"], warm, "warm")
            sql = {
                "single@10": count_sql(data["token"], data["single@10"][-1], "count me"),
                "single@500": count_sql(data["token"], data["single@500"][-1], "count me"),
                "roundtable@10": count_sql(data["token"], data["roundtable@10"][-1], "count me"),
                "roundtable@500": count_sql(data["token"], data["roundtable@500"][-1], "count me"),
            }
            # A single-agent turn in a room (manual mode, one tag) also reads the roster.
            from rooms.models import Room

            Room.objects.filter(pk=data["room"]).update(current_mode="manual")
            tagged = {
                "tagged@10": count_sql(data["token"], data["roundtable@10"][-2], "@ada count me"),
                "tagged@500": count_sql(data["token"], data["roundtable@500"][-2], "@ada count me"),
            }
        finally:
            if server is not None:
                server.stop()

    print()
    print(f"{'case':<16}{'wall p50':>10}{'wall p95':>10}{'ovh p50':>10}{'ovh p95':>10}{'SQL':>6}")
    summary = {}
    for case, (walls, overheads) in results.items():
        row = (
            percentile(walls, 50),
            percentile(walls, 95),
            percentile(overheads, 50),
            percentile(overheads, 95),
        )
        summary[case] = row
        print(f"{case:<16}" + "".join(f"{value:>9.2f} " for value in row) + f"{sql[case]:>5}")
    print(
        f"SQL per single-agent turn in a room (one @tag): turn 10 {tagged['tagged@10']}, "
        f"turn 500 {tagged['tagged@500']}"
    )
    print(
        "(ms; overhead = wall time minus time inside LLM calls; samples per case: "
        f"{args.samples - 1})"
    )

    single_growth = summary["single@500"][2] / summary["single@10"][2]
    roundtable_growth = summary["roundtable@500"][2] / summary["roundtable@10"][2]
    print()
    print(
        f"overhead growth turn 500 / turn 10: single {single_growth:.2f}x, "
        f"roundtable {roundtable_growth:.2f}x"
    )
    checks = [
        ("single-agent overhead p50 <= 10 ms", summary["single@10"][2] <= TARGETS["single_p50_ms"]),
        ("single-agent overhead p95 <= 25 ms", summary["single@10"][3] <= TARGETS["single_p95_ms"]),
        ("turn 500 <= 1.1x turn 10 (single)", single_growth <= TARGETS["growth_ratio"]),
        (
            "<= 15 SQL per single-agent turn (direct and tagged)",
            max(sql["single@10"], tagged["tagged@10"]) <= TARGETS["single_sql"],
        ),
        (
            "same SQL at turn 10 and turn 500",
            sql["single@10"] == sql["single@500"]
            and sql["roundtable@10"] == sql["roundtable@500"]
            and tagged["tagged@10"] == tagged["tagged@500"],
        ),
    ]
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
