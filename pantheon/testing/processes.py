"""Python run in a fresh process with the production settings: what a worker or a command sees
when it starts, without touching the test process (its settings, its imports, its heap)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_production(args: list[str], *, timeout: float = 300, **env: str):
    """`python ARGS` in the checkout under `pantheon.settings`, with `env` on top of this
    process's environment; the completed process, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "pantheon.settings", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def production_python(script: str, **env: str) -> Any:
    """Run `script`, which prints a JSON value last (`run_production`); return that value."""
    result = run_production(["-c", script], **env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
