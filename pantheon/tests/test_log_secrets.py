"""No log line holds a provider's key, whichever variable it came from and whoever wrote it."""

import asyncio
import io
import json
import logging
import os
import subprocess
import sys

import pytest
from django.conf import settings

from orchestration.gateway import LiteLLMGateway
from orchestration.litellm_loader import load_litellm
from orchestration.types import ChatMessage, LlmCall
from pantheon import logging_context
from pantheon.llm import alias_config
from usage.models import ModelAlias

litellm = load_litellm()

OPENAI_KEY = "sk-proj-litellmFoundThis0123456789"
ALIAS_KEY = "sk-live-abc123SECRETxyz"


def console(monkeypatch, **environ: str) -> io.StringIO:
    """What the server's log handler writes, as JSON lines, with its filters as a server that
    starts with `environ` builds them."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    handler = next(
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, logging_context.SuspiciousRequestFilter) for f in handler.filters)
    )
    monkeypatch.setattr(handler, "filters", [type(f)() for f in handler.filters])
    written = io.StringIO()
    # Not setStream, which flushes the stream it replaces: pytest may have closed it by now.
    monkeypatch.setattr(handler, "stream", written)
    return written


def lines(console: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in console.getvalue().splitlines()]


def failed_call(monkeypatch, alias: ModelAlias, error: Exception):
    async def refused(**request):
        raise error

    monkeypatch.setattr(litellm, "acompletion", refused)
    gateway = LiteLLMGateway(timeout_seconds=5, max_retries=0)
    call = LlmCall(
        alias=alias_config(alias),
        messages=(ChatMessage("user", "Hello"),),
        purpose="agent",
        agent_key="ada",
    )
    return asyncio.run(gateway.complete(call))


def test_a_key_litellm_found_itself_is_not_logged(monkeypatch):
    """An alias without `api_key_env` calls with the key litellm reads from its provider's
    variable: the gateway never sees it, and its line quoted it whole when the provider did."""
    output = console(monkeypatch, OPENAI_API_KEY=OPENAI_KEY)
    alias = ModelAlias(alias="gpt", litellm_model="openai/gpt-4o-mini", api_key_env="")
    error = litellm.AuthenticationError(
        message=f"Incorrect API key provided: {OPENAI_KEY}.", llm_provider="openai", model="m"
    )

    result = failed_call(monkeypatch, alias, error)

    assert result.error_kind == "bad_request"
    [line] = [line for line in lines(output) if line["logger"] == "orchestration.gateway"]
    assert line["level"] == "ERROR"  # a key the provider refused is an error (gateway)
    assert OPENAI_KEY not in json.dumps(line)
    assert "Incorrect API key provided: ***." in line["message"]


def test_a_key_with_a_trailing_newline_is_not_logged_either(monkeypatch):
    """A variable filled from a file keeps its newline; the provider quotes the key without."""
    output = console(monkeypatch, OPENAI_API_KEY=OPENAI_KEY + "\n")
    logging.getLogger("litellm.test").warning("key %s refused", OPENAI_KEY)

    [line] = lines(output)
    assert line["message"] == "key *** refused"


def test_a_traceback_quoting_a_key_is_logged_without_it(monkeypatch):
    output = console(monkeypatch, ACME_API_KEY=ALIAS_KEY)
    try:
        raise RuntimeError(f"upstream refused Bearer {ALIAS_KEY}")
    except RuntimeError as error:
        logging.getLogger("sessions_app.api_turns").error("a detached turn failed", exc_info=error)

    [line] = lines(output)
    assert ALIAS_KEY not in json.dumps(line)
    assert "RuntimeError: upstream refused Bearer ***" in line["exc_info"]
    assert line["message"] == "a detached turn failed"


def test_lines_without_a_secret_are_written_as_they_were(monkeypatch):
    # FEATURE_KEY is too short to be a key: its words stay.
    output = console(monkeypatch, ACME_API_KEY=ALIAS_KEY, FEATURE_KEY="on")
    logging.getLogger("pantheon.test").warning("turn %s: %s is on", "t1", "feature")

    [line] = lines(output)
    assert line["message"] == "turn t1: feature is on"


def test_a_line_whose_arguments_do_not_fit_does_not_fail_the_code_that_logged(monkeypatch):
    """logging reports a line it cannot format and the program goes on: a filter that raised
    failed the request or turn that logged it."""
    output = console(monkeypatch, ACME_API_KEY=ALIAS_KEY)
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "stream", None) is output)
    monkeypatch.setattr(logging, "raiseExceptions", False)  # reported, as in production
    unfit = logging.LogRecord(
        "pantheon.test", logging.WARNING, __file__, 1, "%d turns", ("many",), None
    )
    fit = logging.LogRecord(
        "pantheon.test", logging.WARNING, __file__, 2, "then %s", (ALIAS_KEY,), None
    )

    handler.handle(unfit)  # no exception here
    handler.handle(fit)

    assert [line["message"] for line in lines(output)] == ["then ***"]


# uvicorn's traceback of an app error, written by a worker through gunicorn's error log (as
# `uvicorn_worker.UvicornWorker` hands `uvicorn.error` gunicorn's handlers), with the gunicorn
# logger gunicorn.conf.py's settings make.
DOTENV_KEY = "sk-or-v1-fromTheDotEnvFile0123456789"
GUNICORN_LINE = f"""
import logging, runpy, sys
sys.argv = ["gunicorn"]
from gunicorn.config import Config
settings = runpy.run_path("gunicorn.conf.py")
cfg = Config()
for name, value in settings.items():
    if name in cfg.settings:
        cfg.set(name, value)
log = cfg.logger_class(cfg)
uvicorn_error = logging.getLogger("uvicorn.error")
uvicorn_error.handlers, uvicorn_error.propagate = log.error_log.handlers, False
try:
    raise RuntimeError("Incorrect API key provided: {OPENAI_KEY}")
except RuntimeError as exc:
    uvicorn_error.error("Exception in ASGI application", exc_info=exc)
log.error("worker said %s", "{OPENAI_KEY}")
# A worker's settings read the checkout's `.env` (`environ.Env.read_env`), after gunicorn's
# log was set up in the master: its keys are the environment's too.
import environ, pathlib, tempfile
dotenv = pathlib.Path(tempfile.mkdtemp()) / ".env"
dotenv.write_text("OPENROUTER_API_KEY={DOTENV_KEY}\\n")
environ.Env.read_env(dotenv, overwrite=False)
log.error("provider said %s", "{DOTENV_KEY}")
"""


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter in the checkout, with `env`: what it wrote."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_gunicorn_and_uvicorn_lines_hold_no_key_in_either_format(log_format):
    """With LOG_FORMAT=text, gunicorn's own handlers (which write uvicorn's tracebacks of the
    app's errors) had no secrets filter: only the JSON ones did."""
    env = {**os.environ, "LOG_FORMAT": log_format, "OPENAI_API_KEY": OPENAI_KEY}
    env.pop("OPENROUTER_API_KEY", None)
    written = run_python(GUNICORN_LINE, env)

    assert written.returncode == 0, written.stderr
    assert "Exception in ASGI application" in written.stderr
    assert "worker said ***" in written.stderr
    assert "provider said ***" in written.stderr
    assert "Incorrect API key provided: ***" in written.stderr
    assert OPENAI_KEY not in written.stderr + written.stdout
    assert DOTENV_KEY not in written.stderr + written.stdout


def test_a_key_in_a_json_lines_extra_fields_is_not_logged(monkeypatch):
    """A JSON line writes each of a record's `extra` fields: the filter looked at the message,
    traceback and stack alone, and a provider's error text or a URL put in a field was written
    whole."""
    output = console(monkeypatch, ACME_API_KEY=ALIAS_KEY)
    refusal = RuntimeError(f"401 for key {ALIAS_KEY}")
    logging.getLogger("orchestration.gateway").warning(
        "a provider refused the call",
        extra={
            "provider_error": f"Incorrect API key provided: {ALIAS_KEY}",
            "url": f"https://llm.example/v1?key={ALIAS_KEY}",
            "attempts": 2,
            "headers": {"authorization": f"Bearer {ALIAS_KEY}", "accept": "*/*"},
            "tried": [f"https://llm.example/{ALIAS_KEY}", "https://other.example"],
            "error": refusal,
        },
    )

    [line] = lines(output)
    assert ALIAS_KEY not in json.dumps(line)
    assert line["provider_error"] == "Incorrect API key provided: ***"
    assert line["url"] == "https://llm.example/v1?key=***"
    assert line["attempts"] == 2
    assert line["headers"] == {"authorization": "Bearer ***", "accept": "*/*"}
    assert line["tried"] == ["https://llm.example/***", "https://other.example"]
    assert line["error"] == "RuntimeError: 401 for key ***"
    assert str(refusal) == f"401 for key {ALIAS_KEY}"  # the caller's objects are left alone


def test_a_dict_logged_as_a_json_lines_fields_holds_no_key(monkeypatch):
    output = console(monkeypatch, ACME_API_KEY=ALIAS_KEY)
    fields = {"event": "refused", "detail": f"key {ALIAS_KEY}"}
    logging.getLogger("pantheon.test").warning(fields)

    [line] = lines(output)
    assert line["event"] == "refused"
    assert line["detail"] == "key ***"
    assert fields["detail"] == f"key {ALIAS_KEY}"


class Kept(logging.Handler):
    """A handler added after the console's, as Sentry's is: it reports the exception object."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_handler_after_the_console_still_gets_the_exception(monkeypatch):
    """The filter dropped the record's `exc_info` to have the JSON formatter write its
    blotted text: a handler after it (Sentry's) got a record without its exception."""
    output = console(monkeypatch, ACME_API_KEY=ALIAS_KEY)
    kept = Kept()
    monkeypatch.setattr(logging.getLogger(), "handlers", [*logging.getLogger().handlers, kept])
    try:
        raise RuntimeError(f"upstream refused Bearer {ALIAS_KEY}")
    except RuntimeError as error:
        raised = error
        logging.getLogger("sessions_app.api_turns").error("a detached turn failed", exc_info=True)

    [line] = lines(output)
    assert ALIAS_KEY not in json.dumps(line)
    assert "RuntimeError: upstream refused Bearer ***" in line["exc_info"]
    [record] = kept.records
    assert record.exc_info is not None
    assert record.exc_info[1] is raised
    # What it writes of the traceback, with logging's own formatter, is blotted as well.
    assert ALIAS_KEY not in logging.Formatter().format(record)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("POSTGRES_PASSWORD", "postgres"), ("DB_PASSWORD", "password"), ("PIN_SECRET", "12345678")],
)
def test_a_guessable_secret_does_not_blank_its_word_in_every_line(monkeypatch, variable, value):
    """`POSTGRES_PASSWORD=postgres` blotted out the word wherever a line said it."""
    output = console(monkeypatch, **{variable: value, "ACME_API_KEY": ALIAS_KEY})
    logging.getLogger("pantheon.test").warning(
        "connecting to %s as %s (%s, key %s)", "postgres", value, "12345678 tokens", ALIAS_KEY
    )

    [line] = lines(output)
    assert line["message"] == f"connecting to postgres as {value} (12345678 tokens, key ***)"


def test_a_passphrase_or_a_mixed_password_is_still_blotted(monkeypatch):
    passphrase, mixed = "correcthorsebatterystaple", "postgres1"
    output = console(monkeypatch, APP_PASSWORD=passphrase, DB_PASSWORD=mixed)
    logging.getLogger("pantheon.test").warning("said %s and %s", passphrase, mixed)

    [line] = lines(output)
    assert line["message"] == "said *** and ***"


def test_a_long_number_or_a_passphrase_of_sixteen_letters_is_still_blotted(monkeypatch):
    """A number of 20 digits is no guess (a numeric account secret, a signing key written in
    decimal), nor are 16 letters: both stay out of the log, as any secret does."""
    number, letters = "73910482657381920465", "quietlymarchingx"
    output = console(monkeypatch, WEBHOOK_SECRET=number, APP_PASSWORD=letters)
    logging.getLogger("pantheon.test").warning("said %s and %s", number, letters)

    [line] = lines(output)
    assert line["message"] == "said *** and ***"


@pytest.mark.django_db  # `check` reads the aliases (usage.W001)
def test_manage_py_check_says_a_guessable_secret_is_weak(monkeypatch):
    from django.core.management import call_command

    monkeypatch.setenv("POSTGRES_PASSWORD", "postgres")
    monkeypatch.setenv("ACME_API_KEY", ALIAS_KEY)
    out = io.StringIO()
    call_command("check", stdout=out, stderr=out)

    said = out.getvalue()
    assert "pantheon.W007" in said
    assert "POSTGRES_PASSWORD holds a word or a number anyone would guess" in said
    assert "ACME_API_KEY" not in said
    assert "postgres" not in said.replace("POSTGRES_PASSWORD", "")


GUNICORN_START = """
import runpy, sys, types
sys.argv = ["gunicorn"]
import pantheon.collect_static
pantheon.collect_static.collect_static = lambda **kwargs: None  # not the test's concern
from gunicorn.config import Config
settings = runpy.run_path("gunicorn.conf.py")
cfg = Config()
for name, value in settings.items():
    if name in cfg.settings:
        cfg.set(name, value)
settings["on_starting"](types.SimpleNamespace(log=cfg.logger_class(cfg)))
"""


def test_the_servers_start_says_a_guessable_secret_is_weak():
    env = {**os.environ, "LOG_FORMAT": "text", "POSTGRES_PASSWORD": "postgres"}
    written = run_python(GUNICORN_START, env)

    assert written.returncode == 0, written.stderr
    assert "POSTGRES_PASSWORD holds a word or a number anyone would guess" in written.stderr


# What a client types in a URL as a password or a token, which no line may hold.
TYPED = "typed-by-a-client-0123456789"


@pytest.mark.django_db
def test_a_refused_hosts_line_names_its_request_without_the_query(monkeypatch, client):
    """`django.security` logs a request whose Host is not allowed with the request in its
    extra fields, which the JSON line wrote as its repr: the query string, a token in it."""
    output = console(monkeypatch)
    kept = Kept()  # a handler after the console's (a Sentry's) still gets the request
    monkeypatch.setattr(logging.getLogger(), "handlers", [*logging.getLogger().handlers, kept])

    response = client.get(
        f"/api/v1/health?token={TYPED}&password={TYPED}", HTTP_HOST="evil.example"
    )

    assert response.status_code == 400
    [line] = [line for line in lines(output) if line["logger"].startswith("django.security")]
    assert TYPED not in json.dumps(line)
    assert line["request"] == "GET /api/v1/health"
    [record] = [record for record in kept.records if record.name.startswith("django.security")]
    assert record.request.META["HTTP_HOST"] == "evil.example"


@pytest.mark.django_db
def test_a_server_errors_line_names_its_request_without_the_query(monkeypatch, client):
    """`django.request` logs a server error with the request in its extra fields too."""
    from pantheon.health import HealthView

    def broken(self, request):
        raise RuntimeError("broken")

    monkeypatch.setattr(HealthView, "get", broken)
    client.raise_request_exception = False
    output = console(monkeypatch)

    response = client.get(f"/api/v1/health?api_key={TYPED}")

    assert response.status_code == 500
    written = output.getvalue()
    assert "RuntimeError: broken" in written
    assert TYPED not in written
    assert '"request": "GET /api/v1/health"' in written


def test_a_secret_the_json_line_writes_escaped_is_blotted_too(monkeypatch):
    """A password with a quote or a backslash is written escaped (`\\"`) in a JSON line."""
    password = 'pa"ss\\word-0123'
    output = console(monkeypatch, DB_PASSWORD=password)
    logging.getLogger("pantheon.test").warning("refused", extra={"dsn": f"db://u:{password}@h"})

    [line] = lines(output)
    assert line["dsn"] == "db://u:***@h"


DJANGO_LINE = f"""
import django, logging
django.setup()
try:
    raise PermissionError("refused: {OPENAI_KEY}")
except PermissionError as exc:
    logging.getLogger("django.request").warning(
        "Forbidden (Permission denied): %s", "/admin/usage/modelalias/add/", exc_info=exc
    )
"""


def test_djangos_own_lines_are_written_once_as_the_apps_with_debug_on():
    """With DEBUG on (make run), Django's default handler wrote each django.* line a second
    time: unformatted (no JSON with LOG_FORMAT=json), without the ids, and with the key its
    traceback quoted (a console 403 left two tracebacks in the server's output)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "DEBUG": "true",
        "LOG_FORMAT": "json",
        "OPENAI_API_KEY": OPENAI_KEY,
    }
    written = run_python(DJANGO_LINE, env)

    assert written.returncode == 0, written.stderr
    lines = [json.loads(line) for line in written.stderr.splitlines()]  # every line parses
    forbidden = [line for line in lines if line["logger"] == "django.request"]
    assert len(forbidden) == 1
    assert "refused: ***" in json.dumps(forbidden[0])
    assert OPENAI_KEY not in written.stderr + written.stdout
