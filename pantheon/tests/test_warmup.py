"""What a worker does before its first request (`pantheon.warmup`)."""

import json
import os
import subprocess
import sys

from django.conf import settings

from pantheon.warmup import GC_YOUNG_THRESHOLD


def test_the_startup_heap_is_left_out_of_garbage_collection():
    """Imported at worker start, the ASGI module loads litellm and Django, then freezes them:
    a full collection no longer walks every object they brought."""
    script = (
        "import gc, json, pantheon.asgi; "
        "print(json.dumps([gc.get_freeze_count(), len(gc.get_objects()), gc.get_threshold()]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "pantheon.settings",
            "PANTHEON_LLM_BACKEND": "demo",
            "DB_POOL_MAX_SIZE": "0",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    frozen, still_tracked, threshold = json.loads(result.stdout.strip().splitlines()[-1])

    assert frozen > 100_000  # litellm alone brings ~300,000
    assert still_tracked < frozen / 10
    assert threshold[0] == GC_YOUNG_THRESHOLD
