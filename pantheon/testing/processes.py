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


def production_python(script: str, **env: str) -> Any:
    """Run `script`, which prints a JSON value last, under `pantheon.settings` with `env` on
    top of this process's environment; return that value."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "pantheon.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
