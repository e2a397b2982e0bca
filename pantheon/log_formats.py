"""How log lines look (LOG_FORMAT): one JSON object a line, or readable text.

Plain Python, no Django settings: the app's LOGGING (`pantheon.settings`) and gunicorn's own
log (`gunicorn.conf.py`, read by the gunicorn master, which never loads Django) use the same
formatters, so that with LOG_FORMAT=json every line a server writes is one JSON object, its
gunicorn's and uvicorn's own included.
"""

import json
import logging
import os
from collections.abc import Mapping

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonEncoder
from pythonjsonlogger.json import JsonFormatter as PythonJsonFormatter

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
        "()": "pantheon.log_formats.JsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(user_id)s "
        "%(session_id)s %(turn_id)s",
        "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        "reserved_attrs": [*RESERVED_ATTRS, "color_message", "litellm_redacted"],
    },
}


class _Encoder(JsonEncoder):
    """python-json-logger's encoder, which writes a request Django puts in a line's `extra`
    (`django.request`'s server errors, `django.security`'s refusals: a Host not allowed) as
    its request line names it, its method and path. It wrote its repr, `<ASGIRequest: GET
    '/api/v1/health?token=...'>`, query string and all: a token or password a client put in
    the URL landed in the log. (Written here, the record keeps the request itself for the
    handlers after this one: a Sentry's reads its headers.)"""

    def default(self, o):
        if hasattr(o, "method") and hasattr(o, "path") and hasattr(o, "META"):
            return f"{o.method} {o.path}"
        return super().default(o)


class JsonFormatter(PythonJsonFormatter):
    """python-json-logger's formatter, which writes a record's exception from its `exc_text`
    when that is set, as logging's own formatters do: `SecretsFilter` leaves the exception on
    the record, for the handlers after it (Sentry's reports the exception object), and the
    text to write, its secrets blotted out, in `exc_text`. python-json-logger formatted the
    exception afresh from `exc_info`, secrets and all."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("json_encoder", _Encoder)
        super().__init__(*args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        exc_info = record.exc_info
        if not (exc_info and record.exc_text):
            return self._blotted(super().format(record))
        record.exc_info = None  # the record is this thread's alone while its handlers run
        try:
            return self._blotted(super().format(record))
        finally:
            record.exc_info = exc_info

    @staticmethod
    def _blotted(line: str) -> str:
        """The line with no secret in any field it writes: `SecretsFilter` blots the message
        and the traceback, for every handler; the fields given in `extra` (a provider's
        error text, a URL with its key), a dict logged as the line's fields, are written by
        this formatter alone, and a look for each secret at the line it wrote is the cheapest
        way to cover all of them (looking into each field cost the filter 2-8 µs a line)."""
        for secret in _written_secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line


def log_format() -> str:
    """LOG_FORMAT: `json`, or `text` (the default when DEBUG)."""
    debug = config.flag("DEBUG", False)
    return config.choice("LOG_FORMAT", "text" if debug else "json", ("json", "text"))


# The environment variables whose values are secrets: a provider's key (`…_API_KEY`, the names
# aliases give and litellm's own, such as OPENAI_API_KEY), and any other key, token, secret or
# password. A shorter value is no key (a flag, a name) and would blot out words.
SECRET_NAME_ENDINGS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
SHORTEST_SECRET = 8
# A value of letters alone shorter than this is a word (`postgres`, `password`, `changeme`):
# the log's own words, which blotting it blanked in every line ("*** authentication
# failed"). A longer one is a passphrase, which no line says by chance.
SHORTEST_PASSPHRASE = 16
REDACTED = "***"


def guessable(value: str) -> bool:
    """Whether a secret's value is one anyone would try: a word (letters alone) or a number
    (digits alone), shorter than a passphrase. Such a value is not blotted out of the log (it
    would blank that word or number in every line, and hides nothing from whoever guesses
    it); `manage.py check` says it is weak (`pantheon.checks`). A longer number is a secret
    (20 random digits are no guess, nor a number a line says by chance): blotted."""
    value = value.strip()
    return (value.isdigit() or value.isalpha()) and len(value) < SHORTEST_PASSPHRASE


def _secret_variables(environ: Mapping[str, str]):
    for name, value in environ.items():
        if name.upper().endswith(SECRET_NAME_ENDINGS) and len(value.strip()) >= SHORTEST_SECRET:
            yield name, value.strip()


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """The secrets among `environ`'s values, longest first (one inside another goes with it),
    but for the guessable ones."""
    values = {value for _, value in _secret_variables(environ) if not guessable(value)}
    return sorted(values, key=len, reverse=True)


def guessable_secrets(environ: Mapping[str, str]) -> list[str]:
    """The names of the variables that hold a secret anyone would guess (`guessable`)."""
    return sorted(name for name, value in _secret_variables(environ) if guessable(value))


def weak_secret(name: str) -> str:
    """What the server's start and `manage.py check` say of a variable `guessable_secrets`
    names."""
    return (
        f"{name} holds a word or a number anyone would guess, not a secret: the log does not "
        "hide it (it would blank that word in every line). Set it to a long random value."
    )


def redacted(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


# The secrets as a JSON line writes them (escaped, as `json.dumps` writes a string), which the
# filters read from the environment last: `JsonFormatter` blots them out of the whole line.
_written_secrets: list[str] = []


def written_in_json(secrets: list[str]) -> list[str]:
    """`secrets` as a JSON line writes them, longest first: a value with a quote, a backslash or
    a character past ASCII is written escaped."""
    return sorted({json.dumps(secret)[1:-1] for secret in secrets}, key=len, reverse=True)


class SecretsFilter(logging.Filter):
    """On every handler that writes the log: no line holds a secret of the environment. A
    provider's error may quote the key it was sent (an "Incorrect API key provided: sk-…" with
    the whole key, a proxy's page echoing the Authorization header), and so may a traceback.
    The fields of a JSON line (`extra`: a provider's error text, a URL with its key) are
    blotted by `JsonFormatter`, with the secrets the filter read.
    The gateway blots out the alias's own key from its lines, but a call of an alias without
    `api_key_env` carries whatever key litellm found in its provider's variable, which the
    gateway never sees, and litellm and the server write lines of their own. The environment
    is read as the process sets up its logging, and again only when it has gained variables
    (reading it at each line cost 25-30 µs a line): gunicorn's log is set up by the master,
    which never reads the checkout's `.env`; a worker's settings add its keys to the
    environment later, and uvicorn's tracebacks, written by gunicorn's handlers, quoted them.

    It changes the record's texts in place, which every handler after it writes alike, but
    leaves the exception itself on the record: a handler added later (Sentry's) reports it.
    The traceback this handler's formatter writes is the record's `exc_text`, secrets blotted
    out (logging's formatters write it when it is set, and so does `JsonFormatter`)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._read_environment()

    def _read_environment(self) -> None:
        global _written_secrets
        self._variables = len(os.environ)
        self.secrets = secret_values(os.environ)
        _written_secrets = written_in_json(self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if len(os.environ) != self._variables:  # `.env` read since (it only adds variables)
            self._read_environment()
        secrets = self.secrets
        if not secrets:
            return True
        if isinstance(record.msg, dict) and not record.args:
            # A dict logged as a JSON line's fields (python-json-logger), written as its repr
            # by the text format: blotted where it holds a secret, and a dict still.
            if any(secret in str(record.msg) for secret in secrets):
                fields = json.dumps(record.msg, default=str)
                record.msg = json.loads(redacted(fields, written_in_json(secrets)))
            return self._rest(record, secrets)
        try:
            message = record.getMessage()
        except Exception:
            # A line whose arguments do not fit its format: a filter's error would reach the
            # code that logged (a handler's own is reported by logging and the program goes
            # on). Its handler reports it, with the line's format and arguments; no secret
            # is in it that the code did not pass.
            return True
        if (clean := redacted(message, secrets)) != message:
            record.msg, record.args = clean, None
        return self._rest(record, secrets)

    @staticmethod
    def _rest(record: logging.LogRecord, secrets: list[str]) -> bool:
        """The record's traceback and stack."""
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redacted(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redacted(record.stack_info, secrets)
        return True


def filter_secrets(*loggers: logging.Logger) -> None:
    """Put a `SecretsFilter` on each handler of `loggers` that has none: gunicorn's, which
    write gunicorn's lines and uvicorn's (its tracebacks of the app's errors included) in
    either LOG_FORMAT, gunicorn's own handlers with LOG_FORMAT=text."""
    secrets = SecretsFilter()
    for log in loggers:
        for handler in log.handlers:
            if not any(isinstance(f, SecretsFilter) for f in handler.filters):
                handler.addFilter(secrets)
