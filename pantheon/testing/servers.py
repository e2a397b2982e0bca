"""Start the app the way production does (gunicorn with `gunicorn.conf.py`) on 127.0.0.1.

Each server gets its own free port and control socket, so several run side by side; `stop()`
ends exactly the processes it started (its own process group).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_run_command(port: int) -> str:
    """The last line of `make run`'s recipe, the server, with this interpreter's directory.
    Run from `make check` (CI), make is a sub-make: the parent's flags are not passed on, and
    it would name the directory it enters and leaves around the recipe."""
    dry_run = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "run",
            f"PORT={port}",
            f"BIN={Path(sys.executable).parent}",
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
        capture_output=True,
        text=True,
        check=True,
    )
    return dry_run.stdout.strip().splitlines()[-1]


def start_make_run(command: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """`sh -c COMMAND` (a `make_run_command`) in the checkout, in a process group of its own
    (stopped as a terminal stops it, by a signal to the group), its output added to
    `log_path`."""
    with open(log_path, "ab") as output:
        return subprocess.Popen(
            ["sh", "-c", command],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=output,
            stderr=output,
        )


def json_objects(lines: list[str]) -> list[dict]:
    """A JSON log's lines, each parsed: every one must be a JSON object."""
    objects = []
    for text in lines:
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        assert isinstance(line, dict), f"not a JSON object: {text!r}"
        objects.append(line)
    return objects


def postgres_url(settings_dict: Mapping) -> str:
    """A DATABASE_URL for the database Django is connected to (e.g. the test database)."""
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


def wait_healthy(url: str, process: subprocess.Popen, *, timeout: float, name: str) -> None:
    """Until the server at `url` answers its health check, or fail: `process` (the server's)
    exited, or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} at {url} did not become healthy in {timeout:g} s")


class AppServer:
    def __init__(
        self,
        *,
        database_url: str,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        port: int | None = None,
        log_path: Path | None = None,
        root: Path = ROOT,
    ) -> None:
        self.root = root  # the checkout served (another's: `bench/cpu_ab.py`)
        self.port = port or free_port()
        self.database_url = database_url
        self.workers = workers
        self.log_path = log_path  # where the server's output goes (by default nowhere)
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        # What a test or benchmark process set for itself is not the server's configuration.
        inherited = {k: v for k, v in os.environ.items() if k not in ("DB_POOL_MAX_SIZE",)}
        return {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "pantheon.settings",  # production's, not the tests'
            "DATABASE_URL": self.database_url,
            "DEBUG": "false",
            "SECRET_KEY": "live-server-" + "x" * 50,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(self.workers),
            "GUNICORN_LOG_LEVEL": "warning",
            **self.extra_env,
        }

    def start(self, timeout: float = 60) -> AppServer:
        self.launch()
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()  # a server that never became healthy is not left running
            raise
        return self

    def launch(self, *arguments: str) -> subprocess.Popen:
        """Start gunicorn (with these command-line `arguments` too), without waiting for it."""
        with open(self.log_path or os.devnull, "ab") as output:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "gunicorn"),
                    "--config",
                    "gunicorn.conf.py",
                    *arguments,
                ],
                cwd=self.root,
                env=self.environment(),
                start_new_session=True,
                stdout=output,
                stderr=output,
            )
        return self.process

    def wait_healthy(self, timeout: float = 60) -> None:
        assert self.process is not None
        wait_healthy(self.url, self.process, timeout=timeout, name="gunicorn")

    def worker_pids(self) -> list[int]:
        """The gunicorn workers of this server (children of its master but the one a reload
        runs to collect static files, `pantheon.before_serving`)."""
        assert self.process is not None
        return sorted(
            pid
            for pid in _children().get(self.process.pid, [])
            if b"pantheon.before_serving" not in _command_line(pid)
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent id, as /proc shows them now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone


def process_tree(root: int) -> list[int]:
    """`root` and every process below it."""
    children = _children()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def forget_throttle_history() -> None:
    """Empty `pantheon_throttle` and `pantheon_rate` (PostgreSQL). They are no model's tables:
    no test flush empties them, and a server a test starts commits a row per client it
    throttles, which would count against the tests after it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM pantheon_throttle")
        cursor.execute("DELETE FROM pantheon_rate")


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user and system) the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def end_other_connections(*, waiting_on_a_lock: bool = False) -> int:
    """End the connections to this test's database but its own, as PostgreSQL does to its
    clients when it restarts (or only those waiting on a lock), waiting until each has ended.
    Returns how many."""
    from django.db import connection

    waiting = " AND wait_event_type = 'Lock'" if waiting_on_a_lock else ""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()" + waiting
        )
        pids = [pid for (pid,) in cursor.fetchall()]
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
    return len(pids)
