"""What a worker does before its first request (`pantheon.warmup`)."""

from pantheon.testing.processes import production_python
from pantheon.warmup import GC_YOUNG_THRESHOLD


def test_the_startup_heap_is_left_out_of_garbage_collection():
    """Imported at worker start, the ASGI module loads litellm and Django, then freezes them:
    a full collection no longer walks every object they brought."""
    frozen, still_tracked, threshold = production_python(
        "import gc, json, pantheon.asgi; "
        "print(json.dumps([gc.get_freeze_count(), len(gc.get_objects()), gc.get_threshold()]))",
        PANTHEON_LLM_BACKEND="demo",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/unused",  # not reached: no pool
        DB_POOL_MAX_SIZE="0",
    )

    assert frozen > 100_000  # litellm alone brings ~300,000
    assert still_tracked < frozen / 10
    assert threshold[0] == GC_YOUNG_THRESHOLD


def test_the_gunicorn_master_imports_no_django():
    """gunicorn's master imports the worker class before it forks its workers; whatever that
    brings stays in the master's memory, next to each worker's (Django and DRF: 27 MB). So
    does the module its `on_starting` collects static files with."""
    loaded = production_python(
        "import json, sys, pantheon.workers, pantheon.collect_static; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    assert {"pantheon.workers", "pantheon.collect_static"} <= set(loaded)
    assert not [name for name in loaded if name.split(".")[0] in {"django", "rest_framework"}]
