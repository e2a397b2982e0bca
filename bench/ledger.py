"""Ledger benchmark: the billing commands and the operator console at a million ledger rows.

    python bench/ledger.py [--events 1000000] [--database-url postgres://…/pantheon_billing_bench]

It creates a scratch PostgreSQL database, migrates it and fills it with COPY: 1,000 users, each
with a room and a direct session, 250,000 finished turns over the last 60 days, each with its
user message, three agent answers and their four ledger rows (three agent calls and a routing
call; 1,000,000 rows), turn totals and monthly counters that agree with the ledger. One user
has 100,000 calls this month, another 10. Then it prints:

- time and peak memory (the process's max RSS) of `rollup_usage` and `reconcile_usage`, each
  run as its own `manage.py` process, next to an idle `manage.py check` for the baseline;
- time (median of 5 after a warm-up) and SQL statements of the turn and ledger changelists,
  and of the billing dashboard and its CSV export for the last 30 days, through Django's test
  client logged in as staff;
- time of the month-credits lookup (the cap check's read) for the 10-call and the
  100,000-call user, next to re-summing the month from the ledger.

Targets: each command <= 10 s and <= 200 MB; each page <= 300 ms; the lookup the same at 10
and 100,000 calls. Everything it creates it drops, also on failure (unless --keep-db).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pantheon.testing.scratch import bench_arguments, scratch_database, vacuum_analyze  # noqa: E402

USERS = 1_000
DAYS = 60
CALLS_PER_TURN = 4  # three agents and the routing call
HEAVY_CALLS = 100_000
LIGHT_CALLS = 10
TARGETS = {"command_s": 10.0, "command_mb": 200.0, "page_ms": 300.0}
ALIASES = ("deepseek", "llama", "qwen", "gpt_oss", "premium")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="ledger rows to write")
    bench_arguments(parser, "billing")
    parser.add_argument(
        "--reuse-db", action="store_true", help="measure a database kept by --keep-db, unfilled"
    )
    return parser.parse_args()


# --- filling the database -----------------------------------------------------------------------


def copy_rows(model, rows: list[dict]) -> int:
    """COPY rows (dicts of attname → value) into the model's table. Every concrete column is
    written; a column a row leaves out takes its field's default, so a field added later
    needs no change here."""
    from django.db import connections
    from django.db.models import JSONField
    from psycopg.types.json import Jsonb

    connection = connections["default"]
    fields = list(model._meta.concrete_fields)
    defaults = {field.attname: field.get_default() for field in fields}
    json = {field.attname for field in fields if isinstance(field, JSONField)}
    names = [field.attname for field in fields]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for row in rows:
            values = []
            for name in names:
                value = row.get(name, defaults[name])
                values.append(Jsonb(value) if name in json and value is not None else value)
            copy.write_row(values)
    return len(rows)


def fill(events: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from orchestration.metering import compute_credits, compute_oe
    from rooms.models import Agent, Room, RoomMode
    from sessions_app.models import Message, Session, Turn
    from usage.models import LlmCallEvent, MonthlyUsage, PricingVersion
    from usage.selectors import month_of

    started = time.monotonic()
    call_command("migrate", verbosity=0)
    User = get_user_model()
    staff = User.objects.create_superuser("operator", password="operator-pass-123")
    users = User.objects.bulk_create(User(username=f"user{i:04}") for i in range(USERS))
    agents = Agent.objects.bulk_create(
        Agent(owner=user, agent_key="ada", name="Ada", model_alias="deepseek") for user in users
    )
    rooms = Room.objects.bulk_create(
        Room(owner=user, name=f"Room of {user.username}", current_mode=RoomMode.ROUNDTABLE)
        for user in users
    )
    sessions = Session.objects.bulk_create(
        [Session(started_by=user, room=room) for user, room in zip(users, rooms, strict=True)]
        + [Session(started_by=user, agent=agent) for user, agent in zip(users, agents, strict=True)]
    )
    version = PricingVersion.objects.order_by("-effective_from").first()
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    turns_total = events // CALLS_PER_TURN
    heavy, light = users[0], users[1]
    # The heavy user's turns all fall this month; everyone else's spread over 60 days.
    heavy_turns = HEAVY_CALLS // CALLS_PER_TURN
    plan = []  # (user index, created_at) per turn
    for index in range(heavy_turns):
        seconds = (now - this_month).total_seconds() - 60
        plan.append((0, this_month + timedelta(seconds=seconds * index / heavy_turns)))
    for index in range(LIGHT_CALLS // CALLS_PER_TURN + 1):
        plan.append((1, now - timedelta(minutes=10 * (index + 1))))
    rest = turns_total - len(plan)
    for index in range(rest):
        user_index = 2 + index % (USERS - 2)
        plan.append((user_index, now - timedelta(seconds=DAYS * 86400 * (index + 0.5) / rest)))
    plan.sort(key=lambda item: item[1])

    next_index: dict = {}
    next_sequence: dict = {}
    counters: dict = {}
    written = {"turns": 0, "messages": 0, "events": 0}
    turns, messages, ledger = [], [], []

    def flush() -> None:  # a chunk at a time: memory stays flat
        written["turns"] += copy_rows(Turn, turns)
        written["messages"] += copy_rows(Message, messages)
        written["events"] += copy_rows(LlmCallEvent, ledger)
        turns.clear(), messages.clear(), ledger.clear()

    for number, (user_index, created) in enumerate(plan):
        user = users[user_index]
        session = sessions[user_index + (USERS if number % 2 else 0)]
        next_index[session.pk] = next_index.get(session.pk, 0) + 1
        turn_id = uuid.uuid4()
        calls = []
        for call in range(CALLS_PER_TURN):
            purpose = "routing" if call == 3 else "agent"
            alias = ALIASES[(number + call) % len(ALIASES)]
            fresh, cached, output = 800 + number % 500, (number % 7) * 50, 120 + call * 40
            oe = compute_oe(fresh=fresh, cached=cached, output=output)
            credits = compute_credits(oe=oe, multiplier=Decimal(5 if alias == "premium" else 1))
            priced = number % 997 != 0
            calls.append(
                {
                    "id": uuid.uuid4(),
                    "user_id": user.pk,
                    "room_id": session.room_id,
                    "session_id": session.pk,
                    "turn_id": turn_id,
                    "agent_key": "" if purpose == "routing" else f"agent{call}",
                    "purpose": purpose,
                    "provider": "openrouter",
                    "model_alias": alias,
                    "provider_model": f"openrouter/{alias}",
                    "input_tokens_fresh": fresh,
                    "input_tokens_cached": cached,
                    "output_tokens": output,
                    "total_tokens": fresh + cached + output,
                    "oe_tokens": oe,
                    "provider_cost_usd": Decimal("0.0002") * (call + 1) if priced else Decimal(0),
                    "priced": priced,
                    "credits": credits,
                    "latency_ms": 900,
                    "status": "success",
                    "pricing_version_id": version.pk if version else None,
                    "created_at": created + timedelta(milliseconds=100 * call),
                }
            )
        totals = {
            "llm_calls": len(calls),
            "input_tokens": sum(c["input_tokens_fresh"] + c["input_tokens_cached"] for c in calls),
            "output_tokens": sum(c["output_tokens"] for c in calls),
            "credits": sum((c["credits"] for c in calls), Decimal(0)),
            "provider_cost_usd": sum((c["provider_cost_usd"] for c in calls), Decimal(0)),
        }
        turns.append(
            {
                "id": turn_id,
                "session_id": session.pk,
                "turn_index": next_index[session.pk],
                "mode": "roundtable" if session.room_id else "direct",
                "status": "completed",
                "user_input": f"question {number}",
                "created_at": created,
                "progress_at": created,
                "completed_at": created + timedelta(seconds=3),
                **totals,
            }
        )
        key = (user.pk, month_of(created))
        counters[key] = counters.get(key, Decimal(0)) + totals["credits"]
        ledger.extend(calls)
        for role, agent_key in [("user", "")] + [("assistant", f"agent{c}") for c in range(3)]:
            next_sequence[session.pk] = next_sequence.get(session.pk, 0) + 1
            messages.append(
                {
                    "id": uuid.uuid4(),
                    "session_id": session.pk,
                    "turn_id": turn_id,
                    "sequence": next_sequence[session.pk],
                    "role": role,
                    "agent_key": agent_key,
                    "content": "an answer" if agent_key else f"question {number}",
                    "created_at": created,
                }
            )
        if len(turns) == 5_000:
            flush()
    flush()
    MonthlyUsage.objects.bulk_create(
        MonthlyUsage(user_id=user_id, month=month, credits=credits, llm_calls=0)
        for (user_id, month), credits in counters.items()
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE usage_monthlyusage m SET llm_calls = c.n FROM ("
            " SELECT user_id, date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month,"
            " count(*) AS n FROM usage_llmcallevent GROUP BY 1, 2) c"
            " WHERE c.user_id = m.user_id AND c.month = m.month"
        )
    vacuum_analyze()
    return {
        **written,
        "seconds": time.monotonic() - started,
        "staff": staff,
        "heavy": heavy,
        "light": light,
    }


# --- measuring ----------------------------------------------------------------------------------


# Runs manage.py in-process and reports the process's own peak RSS (VmHWM) as it exits. The
# kernel's ru_maxrss of a child would also count this (large) benchmark process it forked from.
PEAK_WRAPPER = """
import atexit, runpy, sys
def report():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"PEAK_KB {peak}\\n")
atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_command(url: str, *args: str) -> tuple[float, float, int, str]:
    """(seconds, peak RSS in MB, exit code, last line) of `manage.py ARGS` as its own process."""
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    peak_kb = next(
        (
            int(line.split()[1])
            for line in process.stderr.splitlines()
            if line.startswith("PEAK_KB")
        ),
        0,
    )
    lines = [line for line in process.stdout.splitlines() if line.strip()]
    return seconds, peak_kb / 1024, process.returncode, lines[-1] if lines else ""


def time_page(client, url: str, query: dict | None = None) -> tuple[float, float, float, int, int]:
    """(first ms, median ms and best ms of 5 more, SQL statements, status) of GET url. The
    first request fills the cache of rollup sums (the dashboard's); the others find it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    started = time.perf_counter()
    client.get(url, query or {})
    first = (time.perf_counter() - started) * 1000
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        response = client.get(url, query or {})
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
        timings.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as captured:
        client.get(url, query or {})
    return first, statistics.median(timings), min(timings), len(captured), response.status_code


def time_lookup(function, repeat: int = 200) -> float:
    """Median microseconds of one call."""
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) * 1_000_000)
    return statistics.median(timings)


def main() -> int:
    args = parse_args()
    failures = []
    # The machine is shared: say how busy it was, next to the figures.
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with scratch_database(args.database_url, keep=args.keep_db, reuse=args.reuse_db):
        from django.test import Client, override_settings
        from django.urls import reverse

        from usage.models import LlmCallEvent
        from usage.selectors import credits_used, month_credits, month_start

        if args.reuse_db:
            from django.contrib.auth import get_user_model

            users = get_user_model().objects
            data = {
                "events": LlmCallEvent.objects.count(),
                "turns": 0,
                "messages": 0,
                "seconds": 0,
                "staff": users.get(username="operator"),
                "heavy": users.get(username="user0000"),
                "light": users.get(username="user0001"),
            }
        else:
            data = fill(args.events)
        print(
            f"filled {data['events']:,} ledger rows, {data['turns']:,} turns, "
            f"{data['messages']:,} messages in {data['seconds']:.0f} s"
        )

        print("\ncommand                               seconds   peak MB  exit  summary")
        baseline = run_command(args.database_url, "check")
        print(f"{'manage.py check (baseline)':<37} {baseline[0]:>7.2f} {baseline[1]:>9.0f}")
        for command in (["rollup_usage"], ["reconcile_usage"]):
            seconds, peak, code, summary = run_command(args.database_url, *command)
            print(f"{' '.join(command):<37} {seconds:>7.2f} {peak:>9.0f}  {code:>4}  {summary}")
            if seconds > TARGETS["command_s"] or peak > TARGETS["command_mb"]:
                failures.append(f"{command[0]}: {seconds:.1f} s, {peak:.0f} MB")
            if code != 0:
                failures.append(f"{command[0]} exited {code}")

        static = {
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
        }
        with override_settings(ALLOWED_HOSTS=["testserver"], STORAGES=static):
            client = Client()
            client.force_login(data["staff"])
            end = datetime.now(UTC).date()
            window = {"start": end - timedelta(days=29), "end": end}
            pages = [
                ("turn changelist", reverse("admin:sessions_app_turn_changelist"), None),
                ("ledger changelist", reverse("admin:usage_llmcallevent_changelist"), None),
                (
                    "ledger changelist, one user",
                    reverse("admin:usage_llmcallevent_changelist"),
                    {"username": "user0500"},
                ),
                ("billing dashboard, 30 days", reverse("admin:billing"), window),
                ("billing export, 30 days", reverse("admin:billing_export"), window),
            ]
            print("\npage                                  first ms  median ms   best ms  queries")
            for name, url, query in pages:
                first, ms, best, queries, status = time_page(client, url, query)
                print(f"{name:<37} {first:>8.1f} {ms:>10.1f} {best:>9.1f} {queries:>8}")
                if ms > TARGETS["page_ms"] or status != 200:
                    failures.append(f"{name}: {ms:.0f} ms, status {status}")

        heavy, light = data["heavy"], data["light"]
        counts = {
            user.username: LlmCallEvent.objects.filter(
                user=user, created_at__gte=month_start()
            ).count()
            for user in (light, heavy)
        }
        print("\nmonth credits (the cap check's read)   calls this month   counter µs   re-sum µs")
        for user in (light, heavy):
            counter = time_lookup(lambda user=user: month_credits(user=user))
            resum = time_lookup(
                lambda user=user: credits_used(user=user, since=month_start()), repeat=20
            )
            print(
                f"{user.username:<37} {counts[user.username]:>16,} {counter:>12.0f} {resum:>11.0f}"
            )
            assert month_credits(user=user) == credits_used(user=user, since=month_start())
    if failures:
        print("\nover target: " + "; ".join(failures))
        return 1
    print("\nall within target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
