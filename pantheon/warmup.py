"""Load at startup what the first requests would otherwise pay for."""

import gc
import logging
import time

from django.db import DatabaseError, connection
from django.urls import resolve

from pantheon.llm import get_gateway

logger = logging.getLogger(__name__)


def warm_up() -> None:
    started = time.monotonic()
    resolve("/api/v1/health")  # loads the URL configuration: every view, serializer, service
    get_gateway().warm_up()  # litellm and the demo provider
    try:
        connection.ensure_connection()  # opens the pool
    except DatabaseError:
        logger.warning("warm-up: the database is not reachable yet")
    finally:
        connection.close()
    settle_garbage_collector()
    logger.info("worker warmed up in %.1fs", time.monotonic() - started)


# Allocations between two collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Leave what the worker loaded at startup out of every later collection, and collect the
    young generation less often. litellm alone brings about 300,000 objects: each full
    collection walked them all (a pause of 150-250 ms for every request in the worker), and
    the default threshold ran a young collection every few requests."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
