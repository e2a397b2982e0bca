"""How log lines look (LOG_FORMAT): one JSON object a line, or readable text.

Plain Python, no Django settings: the app's LOGGING (`pantheon.settings`) and gunicorn's own
log (`gunicorn.conf.py`, read by the gunicorn master, which never loads Django) use the same
formatters, so that with LOG_FORMAT=json every line a server writes is one JSON object, its
gunicorn's and uvicorn's own included.
"""

from pythonjsonlogger.core import RESERVED_ATTRS

from pantheon import config

# Every record of the app carries request_id, user_id, session_id and turn_id
# (`pantheon.logging_context`); a JSON line names them all, null where unknown (gunicorn's
# own lines know none). Other attributes of a record are written as fields too (a request
# line's method, path, status_code, duration_ms), but for two that say nothing: uvicorn's
# copy of its message with terminal colours, and the mark litellm's redaction filter (on
# `uvicorn.error`, `asyncio`, `httpx`...) leaves on a record it has seen, an object written as
# `<object object at 0x...>`.
FORMATTERS = {
    "text": {
        "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    },
    "json": {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(user_id)s "
        "%(session_id)s %(turn_id)s",
        "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        "reserved_attrs": [*RESERVED_ATTRS, "color_message", "litellm_redacted"],
    },
}


def log_format() -> str:
    """LOG_FORMAT: `json`, or `text` (the default when DEBUG)."""
    debug = config.flag("DEBUG", False)
    return config.choice("LOG_FORMAT", "text" if debug else "json", ("json", "text"))
