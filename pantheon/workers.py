"""The gunicorn worker class that serves Pantheon's ASGI application (`gunicorn.conf.py`)."""

import contextlib
import ctypes
import ctypes.util
import os

from uvicorn_worker import UvicornWorker

from pantheon.capacity import PROCESS, connection_cap

# glibc's mallopt parameter for the most malloc arenas (M_ARENA_MAX).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> None:
    """Bound glibc's malloc arenas. Every thread that allocates may otherwise get an arena of
    its own (up to 8 per core), and Django runs each request's database work in a thread: the
    freed memory they keep adds up in the worker's RSS. No-op off glibc."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or arenas <= 0:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(libc_name).mallopt(_M_ARENA_MAX, arenas)


class PantheonWorker(UvicornWorker):
    # uvloop and httptools: the fast event loop and HTTP parser. Django has no lifespan events.
    # No proxy headers: uvicorn would take the client's address and scheme from
    # X-Forwarded-For/-Proto of any connection from 127.0.0.1 (gunicorn's forwarded_allow_ips),
    # so a local client could choose its throttle identity. The app reads them itself, as
    # PANTHEON_NUM_PROXIES and SECURE_PROXY_SSL_HEADER say.
    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "off",
        "proxy_headers": False,
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # gunicorn's `worker_connections` (GUNICORN_WORKER_CONNECTIONS) is the number of
        # requests the app serves at once (`init_process`); uvicorn's own cap on open
        # connections sits above it (`pantheon.capacity`).
        self.config.limit_concurrency = connection_cap(self.cfg.worker_connections)

    def init_process(self) -> None:
        limit_malloc_arenas(int(os.environ.get("MALLOC_ARENAS", "2")))
        PROCESS.limit = self.cfg.worker_connections
        super().init_process()
