"""What every log line of a request says about it: request id, user, session and turn.

The request middleware opens a scope per request (`request_scope`); authentication binds the
user; a view or the turn engine binds what it learns (`bind(session_id=..., turn_id=...)`).
Every log record then carries `request_id`, `user_id`, `session_id` and `turn_id` (None where
unknown), so a JSON log line can be joined with the ledger by `turn_id`. A ContextVar keeps
threads (gunicorn's gthread workers) and asyncio tasks apart.

The ids are record attributes: never pass them in a logger's `extra` (logging refuses to
overwrite them); bind them instead.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

# The fields every record carries, None where not known.
CONTEXT_FIELDS = ("request_id", "user_id", "session_id", "turn_id")

# Where the request middleware leaves, in a request's ASGI scope, what the request's log line
# says of it (`{"ids": {...}, "client": address}`), once its answer is ready: the server's
# protocol (`pantheon.protocol`) logs what it does to the connection afterwards (it resets one
# whose client stopped reading the answer) outside the request's context, and says from it
# which request that was and whose.
SCOPE_KEY = "pantheon.log"

_EMPTY: MappingProxyType = MappingProxyType({})
_context: ContextVar[MappingProxyType] = ContextVar("pantheon_log_context", default=_EMPTY)


def bind(**ids: Any) -> None:
    """Add ids to the current context (`bind(session_id=session.id, turn_id=turn.id)`).

    Values are stored as strings; None removes a key. Outside a request scope this binds for
    the rest of the current thread's context (a management command, say).
    """
    merged = dict(_context.get())
    for name, value in ids.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = str(value)
    _context.set(MappingProxyType(merged))


def current() -> MappingProxyType:
    """The ids bound so far (read-only)."""
    return _context.get()


@contextmanager
def request_scope(**ids: Any) -> Iterator[None]:
    """A fresh context for one request; whatever was bound inside is gone afterwards."""
    token = _context.set(_EMPTY)
    try:
        bind(**ids)
        yield
    finally:
        _context.reset(token)


def _stamp(record: logging.LogRecord) -> None:
    bound = _context.get()
    for name in CONTEXT_FIELDS:
        setattr(record, name, bound.get(name))


def install_record_factory() -> None:
    """Stamp the ids on every record when it is made, whatever handler (pytest's included)
    later reads it. Called once from PantheonConfig.ready()."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "stamps_pantheon_context", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _stamp(record)
        return record

    factory.stamps_pantheon_context = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class ContextFilter(logging.Filter):
    """On the console handler: the ids of a record made before the factory was installed
    (early startup), so the formatters can always name them."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _context.get()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, bound.get(name))
        return True


class SuspiciousRequestFilter(logging.Filter):
    """On the console handler: Django logs a suspicious request (a Host header that is not in
    ALLOWED_HOSTS, say) on `django.security.*` as an ERROR with a traceback. Any client can
    send one, it is answered 400, and nothing on our side went wrong: it is written as a
    WARNING without the traceback, so that ERROR lines stay the ones an operator must read."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security.") and record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True
