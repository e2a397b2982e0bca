"""Static files collected before a server serves: `manage.py collectstatic` in a process of its
own (`pantheon.before_serving`, which for gunicorn also refuses a database not migrated), which
both servers run at start (gunicorn's master in `on_starting`, `python -m
pantheon.serve` with DEBUG off). With DEBUG off the settings' storage
(`CompressedManifestStaticFilesStorage`) names every asset by its hashed name from the
manifest collectstatic writes: without it the admin's pages and `/api/docs/` are a 500
("Missing staticfiles manifest entry"), and WhiteNoise has nothing to serve.

Plain Python, no Django: gunicorn's master imports it, and what the master imports stays in its
memory next to each worker's (pantheon/tests/test_warmup.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Beside STATIC_ROOT; every instance of one checkout takes it in turn.
LOCK_FILE = ROOT / ".collectstatic.lock"


# `python -m pantheon.before_serving` from any directory: the checkout on the path, the working
# directory kept (a relative sqlite:/// DATABASE_URL is relative to it, as for manage.py).
_BEFORE_SERVING = (
    f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
    "from pantheon.before_serving import main; sys.exit(main(sys.argv[1:]))"
)


def collect_static(*, check_migrations: bool = False) -> None:
    """Collect static files (`manage.py collectstatic`, idempotent), and with
    `check_migrations` (gunicorn) refuse a database that is not migrated, in one process
    (`pantheon.before_serving`). Instances of one checkout take turns (the lock file): run at
    once, collectstatic deletes and rewrites the hashed files the other is reading, and an
    instance fails to start. A setting refused (ImproperlyConfigured, naming it) or a database
    not migrated stops the start here: SystemExit with the one line that process ends with
    ("Pantheon did not start: ..."), not a traceback of a failed subprocess. What it logged
    otherwise (a database it could not reach to check) is passed on."""
    command = [sys.executable, "-c", _BEFORE_SERVING]
    if check_migrations:
        command.append("--check-migrations")
    # The lock is taken around collectstatic in that process (`pantheon.before_serving`).
    collected = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    if collected.returncode:
        lines = collected.stderr.strip().splitlines() or ["(no output)"]
        sys.stderr.write("".join(f"{line}\n" for line in lines[:-1]))
        raise SystemExit(f"Pantheon did not start: {lines[-1]}")
    sys.stderr.write(collected.stderr)
