"""`make run`'s server: uvicorn alone, one process, serving the app with the production
worker's HTTP protocol (`pantheon.protocol`: a deadline to send a request, a timeout to read the
answer, no `100 Continue` for a body announced too large) and its way of stopping
(`pantheon.workers.DrainingServer`). uvicorn's command line only names its own protocols and
servers, so the laptop server had none of these.

    python -m pantheon.serve [--host 127.0.0.1] [--port 8000] [--graceful-timeout 30]

Otherwise as `uvicorn pantheon.asgi:application --lifespan off --no-proxy-headers`: Django has
no lifespan events, and the app reads forwarded headers itself (PANTHEON_NUM_PROXIES). With
LOG_FORMAT=json uvicorn's own lines are the app's JSON lines too, not uvicorn's text.

Stopping (Ctrl-C, SIGTERM) drains as a production worker does (`pantheon.draining`): the turns
in flight, those whose client hung up included, get most of `--graceful-timeout` to end; those
still running then end `interrupted`. A second Ctrl-C stops waiting. Before, uvicorn waited for
open connections only: a turn whose client had hung up was dropped at once, left `running`
(its session refused new turns until the stale limit).

With DEBUG off it collects static files before it serves, as gunicorn does
(`pantheon.collect_static`): the admin's pages and `/api/docs/` name their assets from the
manifest collectstatic writes, and were a 500 without it. It also refuses, as gunicorn does, a
database not migrated (exit 1, the last line naming the first migration missing): it served
health 200 and a 500 to every turn. With DEBUG on (`make run`, which migrates first) the assets
are served from the apps' own directories, and neither is done.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import socket
import sys

from django.core.exceptions import ImproperlyConfigured
from uvicorn.config import LOGGING_CONFIG, Config

from pantheon import config as settings_config
from pantheon import draining
from pantheon.collect_static import collect_static
from pantheon.log_formats import log_format
from pantheon.workers import DrainingServer

APP = "pantheon.asgi:application"
PROTOCOL = "pantheon.protocol:PantheonHttpProtocol"
# gunicorn's default graceful_timeout, as production's (GUNICORN_GRACEFUL_TIMEOUT).
GRACEFUL_TIMEOUT_SECONDS = 30
# uvicorn's exit status for a server that could not start.
STARTUP_FAILURE = 3


def main(argv: list[str] | None = None) -> None:
    # A setting refused stops the start in one line, as gunicorn's does (`collect_static` with
    # DEBUG off; with it on, loading the app, which printed the reader's traceback before it).
    with settings_config.refusal_stops("Pantheon did not start: "):
        _serve(argv)


def _serve(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pantheon.serve",
        description="Serve Pantheon with uvicorn and the production worker's HTTP protocol.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=_port, default=8000, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--graceful-timeout",
        type=_graceful_timeout,
        default=GRACEFUL_TIMEOUT_SECONDS,
        help="seconds a stopping server gives the turns in flight (default: %(default)s)",
    )
    options = parser.parse_args(argv)
    drain_seconds, wind_down_seconds = draining.drain_seconds(options.graceful_timeout)
    config = Config(
        APP,
        host=options.host,
        port=options.port,
        http=PROTOCOL,
        lifespan="off",
        proxy_headers=False,
        # uvicorn's own lines (its start and stop, its access lines, "Invalid HTTP request
        # received.") in its own format with LOG_FORMAT=text; with json through the app's
        # logging (its LOGGING setting, from `load_app`), one JSON object a line as every other.
        # The same lines either way (INFO and above, whatever LOG_LEVEL).
        log_config=LOGGING_CONFIG if log_format() == "text" else None,
        log_level="info",
        # Whole seconds, as uvicorn types it; nothing kills this server at the graceful timeout.
        timeout_graceful_shutdown=math.ceil(draining.requests_seconds(options.graceful_timeout)),
    )
    # Before anything else: a port already taken (a `make run` still serving, another app on
    # 8000) stopped the start only after the app's warm-up (15 to 40 s), on uvicorn's
    # "[Errno 98] error while attempting to bind", the warm-up's lines before it.
    _stop_unless_free(options.host, options.port)
    # Before the app is loaded: WhiteNoise lists STATIC_ROOT's files as the app starts. A
    # database not migrated stops the start as gunicorn's does.
    if not _debug():
        collect_static(check_migrations=True)
    # The app is loaded before the event loop starts, as uvicorn.run and its command line do:
    # the app's warm-up (pantheon.asgi) runs a loop of its own.
    config.load_app()
    server = DrainingServer(
        config, drain_seconds=drain_seconds, wind_down_seconds=wind_down_seconds
    )
    # uvicorn raises Ctrl-C's KeyboardInterrupt again once the server has stopped.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _stop_unless_free(host: str, port: int) -> None:
    """Stop in one line, exit 3 as uvicorn's own failure to bind, when the address cannot be
    listened on. The probe binds as uvicorn does (SO_REUSEADDR) and closes at once."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            hint = ""
            if exc.errno == errno.EADDRINUSE:
                hint = " (another server on it? --port, or PORT=N make run, serves on another)"
            sys.stderr.write(
                f"Pantheon did not start: cannot listen on {host}:{port}: {exc.strerror}{hint}\n"
            )
            sys.exit(STARTUP_FAILURE)


def _port(value: str) -> int:
    """1 to 65535, as gunicorn's PORT: uvicorn said it was running on port 99999 (and listened
    on none)."""
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, not {value!r}")
    return int(value)


def _graceful_timeout(value: str) -> float:
    """A finite number of seconds, 0 to a century as every duration of the settings: `inf` and
    `nan` stopped the start with a traceback (math.ceil), and a negative one, taken, stopped the
    server at once without waiting for its turns."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= settings_config.CENTURY_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds from 0 to {settings_config.CENTURY_SECONDS}, "
            f"not {value!r}"
        )
    return seconds


def _debug() -> bool:
    """DEBUG as the settings read it from the environment. A DEBUG set only in `.env` (which the
    settings read too) counts as off here: the files are collected, needlessly but harmlessly.
    A DEBUG no flag reads as off too: collectstatic's settings then refuse it, in one line."""
    try:
        return settings_config.flag("DEBUG", False)
    except ImproperlyConfigured:
        return False


if __name__ == "__main__":
    main()
