"""gunicorn settings for production: `gunicorn --config gunicorn.conf.py`.

ASGI on uvicorn workers: a turn spends almost all its life waiting on LLM providers, and an
async worker holds each waiting (or streaming) turn as a coroutine, hundreds per process, with
no thread and no database connection held (see pantheon/db.py). Size it by CPU, not by waits:
one worker per core the app may use (WEB_CONCURRENCY), and a database pool per worker
(DB_POOL_MAX_SIZE) such that workers × pool stays under PostgreSQL's max_connections.
"""

import hashlib
import logging
import os
import sys
import tempfile

from gunicorn.glogging import Logger

# The project's own modules, whatever directory gunicorn was started from.
_CHECKOUT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _CHECKOUT)

import environ  # noqa: E402

# The variables below from the environment and an optional `.env`, as the app's settings read
# theirs (README, Configuration): the settings read it in each worker, too late for gunicorn's
# own, so WEB_CONCURRENCY or PORT written there were ignored (one worker, on port 8000). What
# the environment sets wins; the workers and collectstatic inherit what is read here.
environ.Env.read_env(os.path.join(_CHECKOUT, ".env"), overwrite=False)

from pantheon import handoff, orphans, pinning, runner  # noqa: E402
from pantheon.config import gunicorn_settings, refusal_stops  # noqa: E402
from pantheon.log_formats import (  # noqa: E402
    FORMATTERS,
    filter_secrets,
    guessable_secrets,
    log_format,
    weak_secret,
)

# This is the production server: the settings (in collectstatic below and in every worker)
# refuse what production must not run with (the laptop's secret key with DEBUG off).
os.environ["PANTHEON_PRODUCTION_SERVER"] = "true"

wsgi_app = "pantheon.asgi:application"
worker_class = "pantheon.workers.PantheonWorker"
# A value refused stops the start in one line, "Pantheon did not start: ...", as a setting of
# the app's does (`on_starting`); gunicorn printed its traceback under "Failed to read config
# file".
with refusal_stops("Pantheon did not start: "):
    # Read in `pantheon.config` (where each is said), as the settings read them for `manage.py
    # check`.
    _read = gunicorn_settings()
    bind = f"{os.environ.get('HOST', '0.0.0.0')}:{_read['port']}"
    workers = _read["workers"]
    worker_connections = _read["worker_connections"]
    timeout = _read["timeout"]
    graceful_timeout = _read["graceful_timeout"]
    keepalive = _read["keepalive"]
    accesslog = "-" if _read["access_log"] else None
    errorlog = "-"
    loglevel = _read["log_level"]
    _pin_workers = _read["pin_workers"]
    _log_format = log_format()
# gunicorn's own lines (a worker's boot and exit, signals, "Invalid HTTP request received." and
# the other lines of uvicorn's `uvicorn.error`, which the worker writes with gunicorn's
# handlers) as the app writes its own: with LOG_FORMAT=json one JSON object a line, so that
# every line of the server's output parses. Levels and streams stay gunicorn's: `loglevel`,
# errors to stderr, the opt-in access log to stdout. With LOG_FORMAT=text, gunicorn's format.
if _log_format == "json":
    logging.captureWarnings(True)
    logconfig_dict = {
        "formatters": {"json": FORMATTERS["json"]},
        "handlers": {
            "error_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
            "access_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {
                "handlers": ["access_console"] if accesslog else [],
                "propagate": False,
            },
            # The master's Python warnings (the workers': the app's LOGGING, pantheon.apps).
            "py.warnings": {"handlers": ["error_console"], "propagate": False},
        },
        # gunicorn's default gives the root logger a plain handler of its own; a worker's root
        # logger is the app's (its LOGGING setting).
        "root": {},
    }


class SecretsFilteredLogger(Logger):
    """gunicorn's log, whose handlers write no secret of the environment
    (`pantheon.log_formats.SecretsFilter`, as the app's): uvicorn's error lines, a traceback of
    the app's among them, are written by them, not by the app's handler. In both formats, and
    again as a reload (SIGHUP) sets the log up afresh; with LOG_FORMAT=text its handlers are
    gunicorn's own, which had none."""

    def setup(self, cfg):
        super().setup(cfg)
        filter_secrets(self.error_log, self.access_log)


# (gunicorn switches to its statsd logger by itself only from its default class: with
# `--statsd-host`, pass `--logger-class gunicorn.instrument.statsd.Statsd`, without the filter.)
logger_class = SecretsFilteredLogger

# Each instance its own control socket (gunicorn's default path is shared by every instance of
# a user), or none: GUNICORN_CONTROL_SOCKET=off. By default one per port it listens on, named in
# `when_ready` (a `--bind` on the command line wins over `bind` above, and is known only there).
_control = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
if _control == "off":
    control_socket_disable = True
elif _control:
    control_socket = _control


def control_socket_for(address) -> str:
    """The default control socket of an instance listening at `address` (gunicorn's parsed
    binds: (host, port) pairs, a Unix socket's path, a file descriptor): one per port (the
    first bind's) in the temporary directory; a Unix socket's path is named by a digest (a
    socket's path is at most 107 bytes)."""
    first = address[0] if address else ""
    if isinstance(first, tuple):
        name = str(first[1])
    else:
        name = "unix-" + hashlib.sha256(str(first).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"pantheon-gunicorn-{name}.ctl")


def when_ready(server):
    """Name the control socket by the port gunicorn listens on, unless it was named
    (GUNICORN_CONTROL_SOCKET, `--control-socket`): it followed PORT, so two instances started
    with `--bind` and no PORT shared the socket of port 8000, the second taking it from the
    first (and the first's stop removing it)."""
    if _control or server.cfg.control_socket != server.cfg.settings["control_socket"].default:
        return
    server.cfg.set("control_socket", control_socket_for(server.cfg.address))


def on_starting(server):
    """Collect static files before the workers start, so WhiteNoise serves the admin's CSS and
    Swagger UI's assets with DEBUG off however the server was launched; instances of one
    checkout take turns, and a refused setting stops the start in one line
    (`pantheon.collect_static`, which `python -m pantheon.serve` runs too). So does a database
    with migrations not applied (one that cannot be reached is not checked: the health check
    answers 503 until it answers)."""
    from pantheon.collect_static import collect_static

    # A secret anyone would guess is not blotted out of the log: said once, at the start.
    for name in guessable_secrets(os.environ):
        server.log.warning(weak_secret(name))
    collect_static(check_migrations=True)


def on_reload(server):
    """A reload (SIGHUP): its old workers take requests until its new ones are warm
    (`pantheon.handoff`), where the host paused while they warmed up. It collects static files
    again before its new workers start: a deploy that changed them would otherwise serve pages
    naming assets the manifest of the first start does not hold (a 500). A refusal is logged,
    not raised: the master goes on, and new workers that cannot load the settings stop it as
    they fail to boot; those of code whose migrations are not applied serve, the log saying
    so."""
    from pantheon.collect_static import collect_static

    try:
        handoff.on_reload(server)
    except Exception:  # the old workers then stop at once, as before
        server.log.exception("pantheon: the reload's handoff failed")
    try:
        collect_static(check_migrations=True)
    except (SystemExit, Exception) as refused:  # never into the master's loop (it stops)
        server.log.error("on reload: %s", str(refused).removeprefix("Pantheon did not start: "))


# Each worker's name, which its turns record; a worker that exits leaves its name to the next
# one forked, which ends the turns it left running (pantheon.runner): a worker killed mid-turn
# frees its sessions once replaced, not at the stale limit.
# None of them raises into gunicorn (an exception in the master's stops the server).
_before_fork_names = runner.guarded(runner.before_fork)
_before_fork_handoff = runner.guarded(handoff.before_fork)


# Each worker on a CPU of its own (PIN_WORKERS): chosen in the master, taken in the worker
# before its first thread (`pantheon.pinning`).
def _choose_cpu(server, worker):
    pinning.before_fork(server, worker, enabled=_pin_workers)


_before_fork_cpu = runner.guarded(_choose_cpu)
_after_fork_names = runner.guarded(runner.after_fork)
_after_fork_cpu = runner.guarded(pinning.after_fork)


def pre_fork(server, worker):
    _before_fork_names(server, worker)
    _before_fork_handoff(server, worker)
    _before_fork_cpu(server, worker)


def post_fork(server, worker):
    _after_fork_cpu(server, worker)
    _after_fork_names(server, worker)


child_exit = runner.guarded(runner.after_exit)


def post_worker_init(worker):
    """The worker has loaded the app (warmed up, `pantheon.asgi`): a reload's old workers may
    stop taking requests (`pantheon.handoff`), and it starts watching its master."""
    try:
        handoff.when_worker_ready(worker)
    except Exception:
        worker.log.exception("pantheon: gunicorn's post_worker_init hook failed")
    # A worker whose master is killed stops, as at a deploy (`pantheon.orphans`): it served on.
    try:
        orphans.watch_master(worker)
    except Exception:
        worker.log.exception("pantheon: the worker could not watch its master")
