"""Configuration from the environment: a value that cannot work stops the start with a message
naming the variable, instead of a server that answers 500 (or refuses everything)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from pantheon import config
from pantheon.testing.processes import ROOT
from pantheon.testing.servers import free_port


def run_alone(command: list[str], env: dict[str, str], *, timeout: float = 60):
    """`command` in the checkout with the variables `env` and no others (and PATH): unlike
    `run_production`, which passes this process's environment on, where a variable set for the
    test run (DB_POOL_MAX_SIZE, say) would change what the settings accept."""
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # A gunicorn that started after all: its workers too, not its master alone.
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def start_settings(
    code: str = "from django.conf import settings; settings.DEBUG", **env: str
) -> subprocess.CompletedProcess:
    """Load the production settings in a fresh interpreter, with these variables and no
    others (`run_alone`)."""
    return run_alone(
        [sys.executable, "-c", code],
        {
            "DJANGO_SETTINGS_MODULE": "pantheon.settings",
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused",
            **env,
        },
    )


def last_line(process: subprocess.CompletedProcess) -> str:
    """The last line a process that stopped wrote on stderr: the exception it stopped on."""
    return process.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "name, value, says",
    [
        # Each of these started, then answered every login or turn with a 500.
        ("PANTHEON_TURN_RATE", "10/fortnight", "N/second, N/minute, N/hour or N/day"),
        ("PANTHEON_AUTH_RATE_PER_IP", "abc", "N/second, N/minute, N/hour or N/day"),
        # These started and refused every request, or said nothing of a typo.
        ("DATA_UPLOAD_MAX_MEMORY_SIZE", "-1", "a whole number from 1024 to 1073741824"),
        ("DEBUG", "maybe", "true or false"),
        ("DB_POOL_MIN_SIZE", "50", "a whole number from 0 to 16"),
        ("PANTHEON_LOW_BALANCE_SHARE", "-0.1", "a number, at least 0"),
        ("PANTHEON_LLM_TIMEOUT_SECONDS", "-1", "a number above 0"),
        # No time to send a request or read an answer: every request 408, every answer cut.
        ("PANTHEON_REQUEST_READ_TIMEOUT_SECONDS", "0", "a number above 0"),
        ("PANTHEON_WRITE_TIMEOUT_SECONDS", "0", "a number above 0"),
        # These were a bare traceback that named neither the variable nor the value.
        ("PANTHEON_IDEMPOTENCY_KEY_HOURS", "abc", "a number above 0"),
        ("DB_POOL_MAX_SIZE", "abc", "a whole number from 0 to 262143"),
        ("DB_CONNECT_TIMEOUT", "-1", "a whole number from 0 to 3153600000"),
        ("DB_POOL_TIMEOUT", "0", "a number above 0"),
        ("LOG_LEVEL", "LOUD", "one of 'NOTSET', 'DEBUG', 'INFO', 'WARNING', 'WARN'"),
        # Taken, then `manage.py check` ran for ever (2 ** retries), or a command overflowed.
        ("PANTHEON_LLM_MAX_RETRIES", "99999999999999999999", "a whole number from 0 to 10"),
        ("PANTHEON_LLM_MAX_RETRIES", "11", "a whole number from 0 to 10"),
        (
            "PANTHEON_TURN_STALE_SECONDS",
            "100000000000000000000",
            "a whole number from 1 to 3153600000",
        ),
        ("PANTHEON_IDEMPOTENCY_KEY_HOURS", "1e300", "a number above 0 and at most 876000"),
        # The other durations: no longer than a century either.
        ("PANTHEON_LLM_TIMEOUT_SECONDS", "1e20", "a number above 0 and at most 3153600000"),
        ("PANTHEON_LLM_BACKOFF_SECONDS", "1e300", "a number from 0 to 3153600000"),
        ("PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS", "-1", "a number from 0 to 3153600000"),
        ("PANTHEON_STREAM_SAVE_SECONDS", "1e300", "a number above 0 and at most 3153600000"),
        ("PANTHEON_SSE_POLL_SECONDS", "1e300", "a number above 0 and at most 3153600000"),
        ("PANTHEON_SSE_HEARTBEAT_SECONDS", "1e300", "a number above 0 and at most 3153600000"),
        (
            "PANTHEON_REQUEST_READ_TIMEOUT_SECONDS",
            "1e20",
            "a number above 0 and at most 3153600000",
        ),
        ("PANTHEON_WRITE_TIMEOUT_SECONDS", "1e20", "a number above 0 and at most 3153600000"),
        ("DB_POOL_TIMEOUT", "1e300", "a number above 0 and at most 3153600000"),
        ("SECURE_HSTS_SECONDS", "10" * 20, "a whole number from 0 to 3153600000"),
        # A LIMIT PostgreSQL cannot take: every turn failed with "bigint out of range".
        (
            "PANTHEON_CONTEXT_HISTORY_LIMIT",
            "1" + "0" * 19,
            "a whole number from 1 to 9223372036854775807",
        ),
        ("PANTHEON_MAX_MESSAGE_CHARS", "1" + "0" * 12, "a whole number from 1 to 1073741824"),
        ("DB_POOL_MAX_SIZE", "1000000", "a whole number from 0 to 262143"),
        # A worker failed to boot on it (ValueError), naming nothing.
        ("MALLOC_ARENAS", "abc", "a whole number from 0 to 1024"),
    ],
)
def test_a_value_that_cannot_work_stops_the_start_and_says_why(name, value, says):
    started = start_settings(**{name: value})

    assert started.returncode != 0
    assert last_line(started).startswith(
        f"django.core.exceptions.ImproperlyConfigured: {name}={value!r}: must be {says}"
    )


def manage_py_check(**env: str) -> subprocess.CompletedProcess:
    """`manage.py check` as an operator runs it (manage.py sets DB_POOL=off for its commands),
    with these variables and no others."""
    return run_alone(
        [sys.executable, "manage.py", "check"],
        {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused", "LOG_LEVEL": "ERROR", **env},
    )


@pytest.mark.parametrize(
    "name, value, says",
    [
        # Passed by `manage.py check` (the pool is off for commands), then stopped gunicorn.
        ("DB_POOL_MIN_SIZE", "50", "a whole number from 0 to 16"),
        ("DB_POOL_TIMEOUT", "-1", "a number above 0"),
        ("DB_POOL_TIMEOUT", "0", "a number above 0"),
        # Passed, then every worker failed to boot without naming it.
        ("MALLOC_ARENAS", "abc", "a whole number from 0 to 1024"),
        # Passed, then prune_idempotency_keys and recover_turns overflowed a timedelta.
        ("PANTHEON_IDEMPOTENCY_KEY_HOURS", "1e300", "a number above 0 and at most 876000"),
        ("PANTHEON_TURN_STALE_SECONDS", "1" + "0" * 20, "a whole number from 1 to 3153600000"),
        # Spun for 10 minutes and more; 1100 was an OverflowError traceback.
        ("PANTHEON_LLM_MAX_RETRIES", "9" * 20, "a whole number from 0 to 10"),
        ("PANTHEON_LLM_MAX_RETRIES", "1100", "a whole number from 0 to 10"),
        # Passed, then stopped gunicorn: its own variables, read by gunicorn.conf.py alone.
        ("WEB_CONCURRENCY", "0", "a whole number, at least 1"),
        ("PORT", "http", "a whole number from 1 to 65535"),
        ("GUNICORN_GRACEFUL_TIMEOUT", "9" * 20, "a whole number from 1 to 3153600000"),
        ("GUNICORN_LOG_LEVEL", "loud", "one of 'DEBUG', 'INFO', 'WARNING'"),
        ("PIN_WORKERS", "maybe", "true or false (also 1/0, yes/no, on/off)"),
    ],
)
def test_manage_py_check_refuses_what_would_stop_the_servers_or_the_commands(name, value, says):
    checked = manage_py_check(**{name: value})

    assert checked.returncode == 1
    # One line, no traceback (there were 20 lines of it, the refusal last).
    [line] = checked.stderr.strip().splitlines()
    assert line.startswith(
        f"django.core.exceptions.ImproperlyConfigured: {name}={value!r}: must be {says}"
    )


def test_every_command_stops_on_a_refused_setting_in_one_line():
    """An operator's cron line (`recover_turns`) on a host whose environment went wrong: the
    refusal alone, exit 1; `--traceback` still shows where it was read."""
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused", "LOG_LEVEL": "ERROR"}
    env["PANTHEON_TURN_RATE"] = "10/fortnight"
    refused = run_alone([sys.executable, "manage.py", "recover_turns", "--dry-run"], env)
    traced = run_alone([sys.executable, "manage.py", "recover_turns", "--traceback"], env)

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "django.core.exceptions.ImproperlyConfigured: PANTHEON_TURN_RATE='10/fortnight': must be "
        "N/second, N/minute, N/hour or N/day (N at least 1)"
    ]
    assert traced.returncode == 1 and "Traceback" in traced.stderr


def test_manage_py_check_reads_the_servers_pool_but_commands_connect_without_it():
    assert manage_py_check(DB_POOL_MIN_SIZE="16", DB_POOL_TIMEOUT="2.5").returncode == 0
    # On SQLite the servers have no pool: its variables mean nothing there.
    sqlite = manage_py_check(DATABASE_URL="sqlite:////tmp/unused.sqlite3", DB_POOL_MIN_SIZE="50")
    assert sqlite.returncode == 0, sqlite.stderr
    assert "pool" not in database_options(DB_POOL="off", DB_POOL_MIN_SIZE="3")
    assert database_options(DB_POOL_MIN_SIZE="3")["pool"]["min_size"] == 3


def test_a_database_url_that_is_not_one_is_named_without_its_secrets():
    started = start_settings(DATABASE_URL="nonsense://user:s3cret@host/db")

    assert started.returncode != 0
    assert "DATABASE_URL (scheme 'nonsense'): must be a database URL" in started.stderr
    assert "s3cret" not in started.stderr


@pytest.mark.parametrize("url", ["mysql://root:s3cret@127.0.0.1/pantheon", "oracle://u@h/db"])
def test_a_database_pantheon_does_not_run_on_is_refused_as_such(url):
    """A MySQL URL asked 'Did you install mysqlclient?', as if installing it would do."""
    started = start_settings(DATABASE_URL=url)

    assert started.returncode != 0
    lines = started.stderr.strip().splitlines()
    assert lines[-1].startswith("django.core.exceptions.ImproperlyConfigured: DATABASE_URL")
    assert "Pantheon runs on PostgreSQL, and on SQLite for a laptop" in lines[-1]
    assert "s3cret" not in started.stderr


def test_the_defaults_and_good_values_start():
    assert start_settings().returncode == 0
    # What django-environ, DRF and logging took before stays good.
    good = start_settings(
        PANTHEON_TURN_RATE="5/hours",
        PANTHEON_AUTH_RATE_PER_IP="10/min",
        LOG_LEVEL="warn",
        DEBUG="y",
        DB_POOL_MIN_SIZE="16",
        PANTHEON_LOW_BALANCE_SHARE="2",
        PANTHEON_IDEMPOTENCY_KEY_HOURS="0.5",
    )
    assert good.returncode == 0, good.stderr
    # The largest of each bounded setting, and empty numbers (their defaults).
    largest = start_settings(
        PANTHEON_LLM_MAX_RETRIES="10",
        PANTHEON_TURN_STALE_SECONDS=str(config.CENTURY_SECONDS),
        PANTHEON_IDEMPOTENCY_KEY_HOURS=str(config.CENTURY_HOURS),
        DB_POOL_TIMEOUT=str(config.CENTURY_SECONDS),
        MALLOC_ARENAS="1024",
    )
    assert largest.returncode == 0, largest.stderr
    empty = start_settings(
        "from django.conf import settings; print(settings.MALLOC_ARENAS)", MALLOC_ARENAS=" "
    )
    assert (empty.returncode, empty.stdout.strip()) == (0, "2"), empty.stderr


def database_options(**env: str) -> dict:
    printed = start_settings(
        "import json; from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default']['OPTIONS']))",
        **env,
    )
    assert printed.returncode == 0, printed.stderr
    return json.loads(printed.stdout)


def test_how_long_postgresql_is_waited_for():
    """A request waits DB_POOL_TIMEOUT for a connection, the pool retries one it could not open
    for as long, and libpq gives up opening one after DB_CONNECT_TIMEOUT."""
    defaults = database_options()
    assert defaults["connect_timeout"] == 5
    assert (defaults["pool"]["timeout"], defaults["pool"]["reconnect_timeout"]) == (30, 30)

    chosen = database_options(DB_POOL_TIMEOUT="2.5", DB_CONNECT_TIMEOUT="0")
    assert chosen["connect_timeout"] == 0  # libpq's: no limit
    assert (chosen["pool"]["timeout"], chosen["pool"]["reconnect_timeout"]) == (2.5, 2.5)

    in_the_url = database_options(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/unused?connect_timeout=2",
        DB_CONNECT_TIMEOUT="7",
    )
    assert int(in_the_url["connect_timeout"]) == 2


def gunicorn_start(**env: str) -> subprocess.CompletedProcess:
    """gunicorn started with the production configuration and these variables, expected to stop
    before it serves anything."""
    return run_alone(
        [str(Path(sys.executable).parent / "gunicorn"), "--config", "gunicorn.conf.py"],
        {"GUNICORN_CONTROL_SOCKET": "off", "HOST": "127.0.0.1", "PORT": str(free_port()), **env},
        timeout=120,
    )


def did_not_start(started: subprocess.CompletedProcess) -> str:
    """The last line of a gunicorn that stopped before any worker booted (`gunicorn_start`):
    what it said it stopped on."""
    assert started.returncode != 0
    assert "Booting worker" not in started.stderr
    return started.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("name", ["WEB_CONCURRENCY", "GUNICORN_WORKER_CONNECTIONS"])
def test_gunicorn_refuses_a_server_with_no_worker_or_no_room(name):
    """WEB_CONCURRENCY=0 ran a master with no workers; 0 connections answered everything 503."""
    started = gunicorn_start(**{name: "0"})

    # One line, not gunicorn's "Failed to read config file" and the reader's traceback.
    assert did_not_start(started) == (
        "Pantheon did not start: django.core.exceptions.ImproperlyConfigured: "
        f"{name}='0': must be a whole number, at least 1"
    )
    assert "Traceback" not in started.stderr


def test_gunicorn_ends_with_the_setting_it_refused_not_a_failed_collectstatic():
    """A setting of the app's refused stopped gunicorn with 63 lines of two tracebacks: the
    refusal buried in the middle, the last line `CalledProcessError: … collectstatic …
    returned non-zero exit status 1`."""
    started = gunicorn_start(PANTHEON_TURN_RATE="10/fortnight")

    last = did_not_start(started)
    assert last == (
        "Pantheon did not start: django.core.exceptions.ImproperlyConfigured: "
        "PANTHEON_TURN_RATE='10/fortnight': must be N/second, N/minute, N/hour or N/day "
        "(N at least 1)"
    )
    assert "CalledProcessError" not in started.stderr
    # Nor the reader's traceback before it: gunicorn's own log lines, then this one.
    assert "Traceback" not in started.stderr


@pytest.mark.parametrize(
    "name", ["PANTHEON_MANAGER_MODEL_ALIAS", "PANTHEON_SUMMARIZER_MODEL_ALIAS"]
)
def test_an_empty_model_alias_setting_is_its_default(name):
    """Empty (or blanks) named the alias "" (or "  "), which no alias is: every orchestrator
    turn refused, or no summary made. An empty setting means its default, as README says."""
    read = f"from django.conf import settings; print(repr(settings.{name}))"

    assert start_settings(read, **{name: ""}).stdout.strip() == "'deepseek'"
    assert start_settings(read, **{name: "  "}).stdout.strip() == "'deepseek'"
    assert start_settings(read, **{name: " qwen "}).stdout.strip() == "'qwen'"


@pytest.mark.parametrize(
    "value, sdk", [("", False), ("1", False), ("on", False), ("True", False), ("no", True)]
)
def test_litellms_http_handler_switch_is_read_as_every_flag(value, sdk):
    """litellm reads `true` or `false` alone: empty, `1` or `on` sent every OpenAI-compatible
    call through the OpenAI SDK (2.5 ms more CPU a call), README's default and flags aside."""
    read = (
        "from django.conf import settings; settings.DEBUG; "
        "from orchestration.litellm_loader import uses_openai_sdk; print(uses_openai_sdk())"
    )
    started = start_settings(read, EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER=value)

    assert started.stdout.strip() == str(sdk), started.stderr


def test_litellms_http_handler_switch_is_read_from_dot_env(tmp_path):
    """README: variables come from the environment and an optional `.env`. The litellm door
    defaulted the switch to true before the settings read `.env`, so `false` there was lost on
    `manage.py` and `make run` (gunicorn, reading `.env` first, took it). Here the settings
    load from a copy of the package, whose checkout is `tmp_path` and its `.env`."""
    shutil.copytree(
        ROOT / "pantheon", tmp_path / "pantheon", ignore=shutil.ignore_patterns("tests")
    )
    (tmp_path / ".env").write_text("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER=false\n")
    read = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
        "from django.conf import settings; print(settings.BASE_DIR); "
        "from orchestration.litellm_loader import uses_openai_sdk; print(uses_openai_sdk())"
    )

    started = start_settings(read)

    assert started.stdout.split() == [str(tmp_path), "True"], started.stderr


def test_litellms_http_handler_switch_refuses_a_word_no_flag_takes():
    started = start_settings(EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER="maybe")

    assert last_line(started) == (
        "django.core.exceptions.ImproperlyConfigured: EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER="
        "'maybe': must be true or false (also 1/0, yes/no, on/off)"
    )


def test_the_readers_take_what_they_document(monkeypatch):
    monkeypatch.setenv("X_RATE", "")
    assert config.rate("X_RATE", "10/min") == ""  # empty: no throttle
    monkeypatch.setenv("X_FLAG", " Yes ")
    assert config.flag("X_FLAG", False) is True
    monkeypatch.setenv("X_WHOLE", "1.5")
    with pytest.raises(ImproperlyConfigured, match="X_WHOLE='1.5': must be a whole number"):
        config.whole_number("X_WHOLE", 1)
    monkeypatch.setenv("X_NUMBER", "inf")
    with pytest.raises(ImproperlyConfigured, match="X_NUMBER='inf'"):
        config.number("X_NUMBER", 1.0, minimum=0)
    monkeypatch.delenv("X_NUMBER")
    assert config.number("X_NUMBER", 2.5, minimum=0) == 2.5
    monkeypatch.setenv("X_NUMBER", "1e300")
    with pytest.raises(
        ImproperlyConfigured, match="X_NUMBER='1e300': must be a number from 0 to 5"
    ):
        config.number("X_NUMBER", 1.0, minimum=0, maximum=5)
    monkeypatch.setenv("X_NUMBER", "5")
    assert config.number("X_NUMBER", 1.0, above=0, maximum=5) == 5


def test_gunicorn_refuses_malloc_arenas_it_cannot_read_before_any_worker_boots():
    """MALLOC_ARENAS=abc stopped every worker with `ValueError: invalid literal for int()` and
    gunicorn with "Worker failed to boot", naming nothing."""
    started = gunicorn_start(MALLOC_ARENAS="abc")

    did_not_start(started)
    assert "MALLOC_ARENAS='abc': must be a whole number from 0 to 1024" in started.stderr
    assert "ValueError" not in started.stderr


def gunicorn_setting(name: str, **env: str):
    """What gunicorn.conf.py sets `name` to under these variables (or the error it raises)."""
    read = start_settings(
        "import runpy, sys; sys.argv = ['gunicorn']; "
        f"print(repr(runpy.run_path('gunicorn.conf.py')[{name!r}]))",
        **env,
    )
    if read.returncode == 0:
        return read.stdout.strip()
    return last_line(read).removeprefix("Pantheon did not start: ")


def test_gunicorn_reads_its_access_log_and_log_level_as_the_other_settings():
    # A flag as every other: yes was off, without a word.
    for on in ("on", "yes", "1", "true", "Y"):
        assert gunicorn_setting("accesslog", GUNICORN_ACCESS_LOG=on) == "'-'"
    for off in ("off", "no", "0", ""):
        assert gunicorn_setting("accesslog", GUNICORN_ACCESS_LOG=off) == "None"
    assert gunicorn_setting("accesslog") == "None"
    assert gunicorn_setting("accesslog", GUNICORN_ACCESS_LOG="maybe") == (
        "django.core.exceptions.ImproperlyConfigured: GUNICORN_ACCESS_LOG='maybe': must be true "
        "or false (also 1/0, yes/no, on/off)"
    )
    # Workers pinned to CPUs unless told otherwise (`pantheon.pinning`), read as every flag.
    assert gunicorn_setting("_pin_workers") == "True"
    assert gunicorn_setting("_pin_workers", PIN_WORKERS="off") == "False"
    assert gunicorn_setting("_pin_workers", PIN_WORKERS="maybe") == (
        "django.core.exceptions.ImproperlyConfigured: PIN_WORKERS='maybe': must be true "
        "or false (also 1/0, yes/no, on/off)"
    )
    # One of gunicorn's levels: it took any other word as info.
    assert gunicorn_setting("loglevel") == "'info'"
    assert gunicorn_setting("loglevel", GUNICORN_LOG_LEVEL="Warning") == "'warning'"
    assert gunicorn_setting("loglevel", GUNICORN_LOG_LEVEL="loud") == (
        "django.core.exceptions.ImproperlyConfigured: GUNICORN_LOG_LEVEL='loud': must be one of "
        "'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'"
    )


def test_gunicorns_timeouts_are_at_most_a_century_as_every_duration():
    """README: every `..._TIMEOUT` is at most a century. gunicorn's two were taken whatever
    their size (GUNICORN_GRACEFUL_TIMEOUT=99999999999999999999 started)."""
    assert gunicorn_setting("timeout", GUNICORN_TIMEOUT="3153600000") == "3153600000"
    for name, setting in (
        ("GUNICORN_TIMEOUT", "timeout"),
        ("GUNICORN_GRACEFUL_TIMEOUT", "graceful_timeout"),
    ):
        assert gunicorn_setting(setting, **{name: "9" * 20}) == (
            f"django.core.exceptions.ImproperlyConfigured: {name}='{'9' * 20}': must be a whole "
            f"number from {0 if name == 'GUNICORN_TIMEOUT' else 1} to 3153600000"
        )


def test_gunicorn_reads_its_variables_from_dot_env_as_the_app_does(tmp_path):
    """README: variables come from the environment and an optional `.env`. The settings read
    it in each worker, after gunicorn had read its own: `WEB_CONCURRENCY=2` and `PORT=8807` in
    `.env` served one worker on port 8000. The environment still wins."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text((ROOT / "gunicorn.conf.py").read_text())
    (tmp_path / ".env").write_text("WEB_CONCURRENCY=3\nPORT=8807\nGUNICORN_KEEPALIVE=7\n")
    read = (
        "import runpy, sys; sys.argv = ['gunicorn']; "
        f"conf = runpy.run_path({str(conf)!r}); "
        "print(conf['workers'], conf['bind'], conf['keepalive'])"
    )

    started = start_settings(read, PYTHONPATH=str(ROOT), GUNICORN_KEEPALIVE="9")

    assert started.stdout.strip() == "3 0.0.0.0:8807 9", started.stderr


def test_gunicorn_keeps_idle_connections_as_long_as_it_is_told():
    """Behind a balancer that keeps connections open longer than 5 s (an ALB's 60 s), the
    server must keep them longer still; it was 5 s, not settable."""
    assert gunicorn_setting("keepalive") == "5"
    assert gunicorn_setting("keepalive", GUNICORN_KEEPALIVE="65") == "65"
    assert gunicorn_setting("keepalive", GUNICORN_KEEPALIVE="0") == (
        "django.core.exceptions.ImproperlyConfigured: GUNICORN_KEEPALIVE='0': must be a whole "
        "number from 1 to 3600"
    )


def test_the_production_server_does_not_start_on_the_published_secret_key():
    """It started on `django-insecure-pantheon-local-only-change-me` with DEBUG off, the key
    anyone reading the code has (the security reviewer's catch); `check --deploy` only warned."""
    started = gunicorn_start()  # no SECRET_KEY, DEBUG off: production's defaults

    assert did_not_start(started) == (
        "Pantheon did not start: django.core.exceptions.ImproperlyConfigured: SECRET_KEY is not "
        "set: the production server does not start on the laptop's published key with DEBUG "
        "off (set SECRET_KEY to a long random value)"
    )
    # The laptop's server and every command still run on it; so does a DEBUG production server.
    assert start_settings().returncode == 0
    assert start_settings(DEBUG="true", PANTHEON_PRODUCTION_SERVER="true").returncode == 0


@pytest.mark.parametrize("blank", ["", "  "])
def test_the_production_server_does_not_start_on_an_empty_secret_key(blank):
    """`SECRET_KEY=` passed `manage.py check`, and gunicorn started and answered every request,
    its health check included, with a 500 ("The SECRET_KEY setting must not be empty")."""
    started = gunicorn_start(SECRET_KEY=blank)

    assert did_not_start(started) == (
        "Pantheon did not start: django.core.exceptions.ImproperlyConfigured: SECRET_KEY is "
        "empty: the production server does not start without a key of its own with DEBUG off "
        "(set SECRET_KEY to a long random value)"
    )


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_secret_key_is_the_laptop_key_where_that_is_taken(blank):
    """With DEBUG on (`make run`), and for the commands, an empty SECRET_KEY means the laptop's
    key, as an unset one does: it was taken as "", and every request was a 500."""
    read = "from django.conf import settings; print(settings.SECRET_KEY)"
    for env in ({"DEBUG": "true", "PANTHEON_PRODUCTION_SERVER": "true"}, {}):
        printed = start_settings(read, SECRET_KEY=blank, **env)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.strip() == "django-insecure-pantheon-local-only-change-me"


@pytest.mark.parametrize("blank", ["", " , "])
def test_the_production_server_does_not_start_with_no_allowed_host(blank):
    """`ALLOWED_HOSTS=` started a server that answered 400 to every request, health included."""
    started = gunicorn_start(SECRET_KEY="k" * 50, ALLOWED_HOSTS=blank)

    assert did_not_start(started) == (
        "Pantheon did not start: django.core.exceptions.ImproperlyConfigured: ALLOWED_HOSTS is "
        "empty: with DEBUG off the production server would refuse every request (400); set "
        "ALLOWED_HOSTS to the host names its clients use, comma-separated "
        "(pantheon.example.com,localhost)"
    )
    # With DEBUG on Django answers localhost whatever the list says; names are taken trimmed.
    read = "from django.conf import settings; print(settings.ALLOWED_HOSTS)"
    debug = start_settings(
        read, DEBUG="true", PANTHEON_PRODUCTION_SERVER="true", ALLOWED_HOSTS=blank
    )
    assert (debug.returncode, debug.stdout.strip()) == (0, "[]"), debug.stderr
    trimmed = start_settings(read, ALLOWED_HOSTS=" a.example.com , b.example.com ,")
    assert trimmed.stdout.strip() == "['a.example.com', 'b.example.com']", trimmed.stderr


@pytest.mark.parametrize("database_url", [None, "", " "])
def test_the_production_server_does_not_start_without_a_database_url(database_url, tmp_path):
    """With DATABASE_URL not set (or empty) gunicorn started on a new, empty SQLite file in the
    checkout, its health check 200 ("database": "sqlite"), every login a 500."""
    env = {"SECRET_KEY": "k" * 50}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    started = gunicorn_start(**env)

    said = "empty" if database_url is not None else "not set"
    assert did_not_start(started) == (
        f"Pantheon did not start: django.core.exceptions.ImproperlyConfigured: DATABASE_URL is "
        f"{said}: the production server does not start on the laptop's SQLite file with DEBUG "
        "off; set DATABASE_URL=postgres://user:password@host:5432/name"
    )
    # SQLite stays the laptop's default (DEBUG on, the commands), and one given is taken.
    laptop = start_settings(
        "from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])",
        DEBUG="true",
        PANTHEON_PRODUCTION_SERVER="true",
        DATABASE_URL="",
    )
    assert laptop.stdout.strip() == "django.db.backends.sqlite3", laptop.stderr
    given = start_settings(
        PANTHEON_PRODUCTION_SERVER="true",
        SECRET_KEY="k" * 50,
        DATABASE_URL=f"sqlite:///{tmp_path / 'given.sqlite3'}",
    )
    assert given.returncode == 0, given.stderr


def test_a_secret_key_is_taken_as_written_a_leading_dollar_included():
    """django-environ reads a value starting with `$` as the name of another variable: a key
    from Django's own get_random_secret_key() starts with one about once in fifty, and was
    read as empty (the production server refused it, DEBUG and the commands took the laptop's
    published key)."""
    key = "$k9x!f2(vq8z-" + "a" * 40
    read = "from django.conf import settings; print(settings.SECRET_KEY)"
    for env in ({"DEBUG": "false", "PANTHEON_PRODUCTION_SERVER": "true"}, {"DEBUG": "true"}, {}):
        printed = start_settings(read, SECRET_KEY=key, ALLOWED_HOSTS="localhost", **env)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.strip() == key


@pytest.mark.parametrize("name", ["CORS_ALLOWED_ORIGINS", "CSRF_TRUSTED_ORIGINS"])
def test_an_origin_without_its_scheme_stops_the_start(name):
    """`app.example.com` (no https://) started the server, which then matched no browser's
    origin: no page could call the API (CORS), every console form from it was a 403 (CSRF).
    Only `manage.py check` said so (corsheaders.E013, 4_0.E001), and no server runs it."""
    started = start_settings(**{name: "https://ok.example.com, app.example.com"})

    assert started.returncode != 0
    assert last_line(started) == (
        f"django.core.exceptions.ImproperlyConfigured: {name}='app.example.com': must be "
        "comma-separated origins with their scheme, such as https://app.example.com"
    )


def test_origins_are_trimmed_and_read_as_written():
    read = "from django.conf import settings; print(settings.CSRF_TRUSTED_ORIGINS)"
    started = start_settings(read, CSRF_TRUSTED_ORIGINS="https://*.example.com/ , http://a:8000")

    assert started.stdout.strip() == "['https://*.example.com', 'http://a:8000']", started.stderr


def test_an_origin_given_with_a_trailing_slash_is_the_origin():
    """`CORS_ALLOWED_ORIGINS=http://127.0.0.1:8891/` (as a browser's address bar shows a page)
    served CORS, but `manage.py check`, and so `make check`, failed on corsheaders.E014."""
    checked = start_settings(
        "import django; django.setup(); from django.conf import settings; "
        "from django.core.management import call_command; "
        "print(settings.CORS_ALLOWED_ORIGINS); call_command('check')",
        DEBUG="true",
        CORS_ALLOWED_ORIGINS="http://127.0.0.1:8891/,https://app.example.com",
    )

    assert checked.returncode == 0, checked.stderr[-2000:]
    assert checked.stdout.splitlines()[0] == "['http://127.0.0.1:8891', 'https://app.example.com']"
