"""Configuration values read from the environment, refused at start-up when they cannot work.

A server that starts with `PANTHEON_TURN_RATE=10/fortnight` answers every turn with a 500; one
with `DATA_UPLOAD_MAX_MEMORY_SIZE=-1` refuses every body. Each reader here names the variable,
its value and what it must be, and raises Django's ImproperlyConfigured before anything is
served. Plain Python (no Django settings needed): gunicorn.conf.py uses it too.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import ImproperlyConfigured

# django-environ's true words (what these variables took before), and their opposites.
_TRUE = {"1", "true", "yes", "y", "on", "ok"}
_FALSE = {"0", "false", "no", "n", "off"}
# DRF's throttle rates: N/ and a period DRF reads by its first letter (s, m, h or d), as in
# 10/min, 60/minute, 5/hours.
_RATE = re.compile(r"[1-9][0-9]*/[smhd][a-z]*")
# Every level name the logging module knows (WARN and FATAL are its aliases).
LOG_LEVELS = ("NOTSET", "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")
# The longest duration a setting (or a command's age) may say: a century. The commands
# subtract a stale limit or a key's lifetime from now, and 1e20 seconds overflowed Python's
# timedelta (a traceback, after `manage.py check` had passed it); a century back from now is a
# moment Python's datetime and PostgreSQL's timestamps hold, and longer than any wait that
# makes sense.
CENTURY_SECONDS = 36_500 * 24 * 3600
CENTURY_HOURS = 36_500 * 24


def refused_line(refused: ImproperlyConfigured) -> str:
    """A refusal as the one line a start or a command that stopped on it ends with: the
    exception's name and its message (the variable, its value, what it must be)."""
    return f"django.core.exceptions.ImproperlyConfigured: {refused}"


@contextmanager
def refusal_stops(prefix: str = "") -> Iterator[None]:
    """A setting refused within stops the process with its one line (`refused_line`, after
    `prefix`) on stderr and exit 1. It stopped with the reader's traceback before the line (20
    lines for manage.py, 30 and more for gunicorn and `python -m pantheon.serve`): what an
    operator needs is the line, and the traceback says only where the setting is read."""
    try:
        yield
    except ImproperlyConfigured as refused:
        raise SystemExit(prefix + refused_line(refused)) from None


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or not value.strip() else value.strip()


def _refuse(name: str, value: str, must: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name}={value!r}: must be {must}")


def whole_number(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _refuse(name, raw, _bounds("a whole number", minimum, maximum)) from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _refuse(name, raw, _bounds("a whole number", minimum, maximum))
    return value


def number(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> float:
    """A finite float, at least `minimum`, or above `above` (a timeout of 0 is no timeout), and
    at most `maximum`."""
    raw = _raw(name)
    if raw is None:
        return default
    if above is not None:
        must = f"a number above {_figure(above)}"
        if maximum is not None:
            must += f" and at most {_figure(maximum)}"
    else:
        must = _bounds("a number", minimum, maximum)
    try:
        value = float(raw)
    except ValueError:
        raise _refuse(name, raw, must) from None
    too_low = (minimum is not None and value < minimum) or (above is not None and value <= above)
    too_high = maximum is not None and value > maximum
    if not math.isfinite(value) or too_low or too_high:
        raise _refuse(name, raw, must)
    return value


def flag(name: str, default: bool) -> bool:
    raw = _raw(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise _refuse(name, raw, "true or false (also 1/0, yes/no, on/off)")


def name_or_default(name: str, default: str) -> str:
    """A name (a model alias's), trimmed; empty or blanks are the default, as for a number or a
    flag. `PANTHEON_MANAGER_MODEL_ALIAS=` named the alias "", which none is: orchestrator rooms
    refused every turn, and the default was meant."""
    return _raw(name) or default


def origins(name: str) -> list[str]:
    """Comma-separated web origins (`https://app.example.com`), trimmed, a trailing `/` dropped
    (as a browser's address bar shows a page); empty: none. One with no scheme or host
    (`app.example.com`) is refused: the server started with it, and matched no browser's
    origin (CORS: no page could call the API; CSRF: every console form from it a 403), the
    fault found only by `manage.py check`, which no server runs."""
    from urllib.parse import urlsplit

    found = []
    for origin in (os.environ.get(name) or "").split(","):
        origin = origin.strip().rstrip("/")
        if not origin:
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _refuse(
                name,
                origin,
                "comma-separated origins with their scheme, such as https://app.example.com",
            )
        found.append(origin)
    return found


def rate(name: str, default: str) -> str:
    """A throttle rate, or "" (from an empty variable) for none."""
    value = os.environ.get(name)
    if value is None:
        return default
    value = value.strip()
    if value and not _RATE.fullmatch(value):
        raise _refuse(name, value, "N/second, N/minute, N/hour or N/day (N at least 1)")
    return value


def choice(name: str, default: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    raw = _raw(name)
    if raw is None:
        return default
    value = raw.upper() if upper else raw
    if value not in choices:
        options = [repr(option) for option in choices]
        must = " or ".join(options) if len(options) == 2 else "one of " + ", ".join(options)
        raise _refuse(name, raw, must)
    return value


def database(name: str, default: str) -> dict:
    """Django's DATABASES entry from a database URL (django-environ's reading of it); an empty
    one (or blanks) is the default, as for the other readers."""
    import environ

    url = _raw(name) or default
    scheme = url.partition(":")[0]  # never the password
    try:
        entry = environ.Env.db_url_config(url) if scheme in environ.Env.DB_SCHEMES else {}
    except (KeyError, ValueError):
        entry = {}
    if entry.get("ENGINE") not in DATABASE_ENGINES:
        # A URL django-environ reads for another database (mysql://, oracle://) is refused
        # too: Django then asked for its driver ("Did you install mysqlclient?"), and with it
        # the migrations' PostgreSQL SQL would fail.
        raise ImproperlyConfigured(
            f"{name} (scheme {scheme!r}): must be a database URL such as "
            "postgres://user@host:5432/name or sqlite:////path/to/db.sqlite3 "
            "(Pantheon runs on PostgreSQL, and on SQLite for a laptop)"
        )
    return entry


DATABASE_ENGINES = ("django.db.backends.postgresql", "django.db.backends.sqlite3")


def malloc_arenas() -> int:
    """MALLOC_ARENAS: glibc's malloc arenas per gunicorn worker (pantheon/workers.py), 0 for
    glibc's own default (8 per core). The worker reads it before it loads Django; the settings
    read it too, so that `manage.py check` refuses a bad value as it does any other. Each
    request a worker serves borrows a thread (GUNICORN_WORKER_CONNECTIONS, 1000, at once):
    1024 arenas, glibc's own default on 128 cores, is more than a worker can use."""
    return whole_number("MALLOC_ARENAS", 2, minimum=0, maximum=1024)


def gunicorn_settings() -> dict:
    """gunicorn's own variables (gunicorn.conf.py), read here so that the settings read them too
    and `manage.py check` refuses a value that would stop gunicorn, as it does the pool's."""
    return {
        "port": whole_number("PORT", 8000, minimum=1, maximum=65535),
        "workers": whole_number("WEB_CONCURRENCY", 1, minimum=1),
        # Requests (waiting turns, open streams) one worker serves at once; the next gets 503
        # over_capacity (PantheonWorker hands it to the app, pantheon/capacity.py).
        "worker_connections": whole_number("GUNICORN_WORKER_CONNECTIONS", 1000, minimum=1),
        # A worker that stops answering its heartbeat for this long is replaced (0: never). Long
        # turns are fine: the event loop keeps answering while turns wait. At most a century,
        # as every duration.
        "timeout": whole_number("GUNICORN_TIMEOUT", 60, minimum=0, maximum=CENTURY_SECONDS),
        # A stopping worker (a deploy, SIGTERM, SIGHUP to the master) serves the turns it runs
        # for up to this long, then ends those still running `interrupted` and is killed at its
        # end (pantheon.draining). Longer than a turn takes, deploys wait for every turn.
        "graceful_timeout": whole_number(
            "GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=1, maximum=CENTURY_SECONDS
        ),
        # How long an idle kept-alive connection stays open, in seconds. Behind a load balancer
        # or a proxy that keeps connections to the app open (nginx's upstream keepalive, an
        # ALB), set it above that one's idle timeout (an ALB's 60 s: 65 or more): a connection
        # this server closed first, while the balancer sent a request on it, is a 502 to that
        # client.
        "keepalive": whole_number("GUNICORN_KEEPALIVE", 5, minimum=1, maximum=3600),
        # Every request already logs one JSON line with its request id (pantheon.request);
        # uvicorn's access line on top is opt-in (a flag: on, yes, 1, true).
        "access_log": flag("GUNICORN_ACCESS_LOG", False),
        # Each worker on a CPU of its own, spread over those the server may use
        # (`pantheon.pinning`); off: wherever the kernel puts them.
        "pin_workers": flag("PIN_WORKERS", True),
        # gunicorn's own levels (it took any other word as info, without a word).
        "log_level": choice(
            "GUNICORN_LOG_LEVEL",
            "INFO",
            ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
            upper=True,
        ).lower(),
    }


def _bounds(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} from {_figure(minimum)} to {_figure(maximum)}"
    if minimum is not None:
        return f"{kind}, at least {_figure(minimum)}"
    if maximum is not None:
        return f"{kind}, at most {_figure(maximum)}"
    return kind


def _figure(value: float) -> str:
    """A bound as written in a variable: 3153600000, not 3.1536e+09; 0.5 as 0.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
