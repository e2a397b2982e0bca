"""WAL written by one streamed turn, by the length of its answer.

Starts the stub provider and a server on a scratch PostgreSQL database, streams one turn per
answer length (an OpenAI-compatible stub speaking 64-character words at a steady pace, each
word different, as incompressible as a real answer) and
reports the WAL written meanwhile: the cluster's (`pg_current_wal_lsn()` before and after) and
the scratch database's alone (its records in `pg_waldump`, when this process can read the
server's WAL directory; other databases on the cluster write too).

    .venv/bin/python bench/stream_wal.py --kb 8 32 128 --word-ms 10
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from pantheon.testing.scratch import (  # noqa: E402
    Ports,
    bench_arguments,
    scratch_database,
    stub_provider_process,
)
from pantheon.testing.servers import AppServer  # noqa: E402

WORD = 63  # characters a word, and a space: 64 a word


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_arguments(parser, "stream_wal", ports=True)
    parser.add_argument("--kb", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--word-ms", type=int, default=10, help="the stub's pace, per word")
    parser.add_argument("--wal-dir", default="/var/lib/postgresql/15/main/pg_wal")
    return parser.parse_args()


def seed(stub_url: str, models: list[str]) -> dict:
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
    sessions = {}
    for index, model in enumerate(models):
        ModelAlias.objects.create(
            alias=f"stub_{index}",
            litellm_model=f"openai/{model}",
            api_base=stub_url,
            api_key_env="STUB_API_KEY",
            context_window=1_000_000,
            max_output_tokens=100_000,
        )
        agent = Agent.objects.create(
            owner=user, agent_key=f"a{index}", name=f"A{index}", model_alias=f"stub_{index}"
        )
        sessions[model] = str(Session.objects.create(agent=agent, started_by=user).pk)
    return {"token": Token.objects.create(user=user).key, "sessions": sessions}


def lsn() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class DatabaseWal:
    """The bytes of the WAL records that touch this database, from now on: `pg_waldump`
    follows the WAL as it is written (a busy cluster recycles its segments within seconds),
    when this process can read the server's WAL directory."""

    LSN = re.compile(r"lsn: ([0-9A-F]+)/([0-9A-F]+)")
    LENGTH = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+)")

    def __init__(self, wal_dir: str, start: int) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
            oid = cursor.fetchone()[0]
        self.mine = re.compile(rf"rel \d+/{oid}/")
        self.total = 0
        self.reached = 0
        self.dump = None
        if os.access(wal_dir, os.R_OK):
            self.dump = subprocess.Popen(
                ["pg_waldump", "-f", "-p", wal_dir, "-s", lsn_text(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "PATH": "/usr/lib/postgresql/15/bin:" + os.environ["PATH"]},
            )
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()

    def _read(self) -> None:
        assert self.dump is not None and self.dump.stdout is not None
        for line in self.dump.stdout:
            where = self.LSN.search(line)
            if where:
                self.reached = (int(where.group(1), 16) << 32) + int(where.group(2), 16)
            if self.mine.search(line):
                length = self.LENGTH.search(line)
                if length:
                    self.total += int(length.group(1))

    def until(self, end: int) -> int | None:
        if self.dump is None:
            return None
        deadline = time.monotonic() + 120
        while self.reached < end and time.monotonic() < deadline:
            time.sleep(0.1)
        self.dump.terminate()
        self.dump.wait(10)
        return self.total if self.reached >= end else None


def main() -> int:
    args = parse_args()
    ports = Ports(args.port_base)
    with (
        scratch_database(args.database_url, keep=args.keep_db),
        stub_provider_process(ports()) as stub_url,
    ):
        models = {
            kb: f"stream-{args.word_ms}-words-{kb * 1024 // (WORD + 1)}-long-{WORD}-varied"
            for kb in args.kb
        }
        data = seed(stub_url, list(models.values()))
        env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub-key"}
        headers = {"Authorization": f"Token {data['token']}", "Accept": "text/event-stream"}
        with AppServer(database_url=args.database_url, env=env, port=ports()) as server:
            for kb, model in models.items():
                url = f"{server.url}/api/v1/sessions/{data['sessions'][model]}/turns"
                before = lsn()
                wal = DatabaseWal(args.wal_dir, before)
                started = time.monotonic()
                with httpx.stream(
                    "POST", url, json={"message": "go"}, headers=headers, timeout=600
                ) as response:
                    assert response.status_code == 201, response.status_code
                    body = "".join(response.iter_text())
                seconds = time.monotonic() - started
                time.sleep(0.5)
                after = lsn()
                assert "event: turn_completed" in body, body[-500:]
                mine = wal.until(after)
                print(
                    f"{kb:>4} KB answer in {seconds:5.1f} s: "
                    f"cluster WAL {after - before:>11,} B"
                    + (f", this database's {mine:>11,} B" if mine is not None else "")
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
