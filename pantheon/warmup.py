"""Load at startup what the first requests would otherwise pay for."""

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
    logger.info("worker warmed up in %.1fs", time.monotonic() - started)
