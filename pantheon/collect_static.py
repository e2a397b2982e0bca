"""Static files collected before a server serves: `manage.py collectstatic` in a process of its
own, which both servers run at start (gunicorn's master in `on_starting`, `python -m
pantheon.serve` with DEBUG off). With DEBUG off the settings' storage
(`CompressedManifestStaticFilesStorage`) names every asset by its hashed name from the
manifest collectstatic writes: without it the admin's pages and `/api/docs/` are a 500
("Missing staticfiles manifest entry"), and WhiteNoise has nothing to serve.

Plain Python, no Django: gunicorn's master imports it, and what the master imports stays in its
memory next to each worker's (pantheon/tests/test_warmup.py).
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Beside STATIC_ROOT; every instance of one checkout takes it in turn.
LOCK_FILE = ROOT / ".collectstatic.lock"


def collect_static() -> None:
    """Run `manage.py collectstatic` (idempotent). Instances of one checkout take turns (the
    lock file): run at once, collectstatic deletes and rewrites the hashed files the other is
    reading, and an instance fails to start. A setting refused (ImproperlyConfigured, naming
    it) stops the start here: its traceback as manage.py printed it, then SystemExit with its
    last line ("Pantheon did not start: ..."), not a traceback of a failed subprocess."""
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        collected = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "collectstatic", "--noinput", "-v", "0"],
            stderr=subprocess.PIPE,
            text=True,
        )
    if collected.returncode:
        sys.stderr.write(collected.stderr)
        lines = collected.stderr.strip().splitlines() or ["(no output)"]
        raise SystemExit(f"Pantheon did not start: {lines[-1]}")
