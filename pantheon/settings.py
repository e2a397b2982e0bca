"""Pantheon settings, read from the environment (and an optional `.env`).

Every variable is documented in README.md with its default.
"""

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

# First the checkout's `.env`, before any module defaults a variable it may set: the litellm
# door's default for EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER hid a `false` in `.env` from
# `manage.py` and `make run` (gunicorn, which reads `.env` itself, saw it).
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

from django.core.exceptions import ImproperlyConfigured  # noqa: E402

# Then the one door to litellm sets LITELLM_LOCAL_MODEL_COST_MAP (litellm must not fetch its
# price table from the network at import) before any app code can import litellm.
import orchestration.litellm_loader  # noqa: E402, F401
from pantheon import config, log_formats  # noqa: E402

env = environ.Env()

DEBUG = config.flag("DEBUG", False)
# The laptop's key, published with the code: `make run` (DEBUG on) uses it; the production
# server refuses to start on it (below). An empty SECRET_KEY (or blanks) is none: Django takes
# "" and answers every request with a 500 ("The SECRET_KEY setting must not be empty").
LOCAL_SECRET_KEY = "django-insecure-pantheon-local-only-change-me"
# Read as written: django-environ takes a value starting with `$` for the name of another
# variable, and a key of get_random_secret_key()'s alphabet starts with one once in fifty.
SECRET_KEY = os.environ.get("SECRET_KEY", "")
_SECRET_KEY_EMPTY = "SECRET_KEY" in os.environ and not SECRET_KEY.strip()
if not SECRET_KEY.strip():
    SECRET_KEY = LOCAL_SECRET_KEY
# Names written with blanks around them (`a, b`) are taken trimmed; blanks alone name none.
ALLOWED_HOSTS = [
    host.strip()
    for host in env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
    if host.strip()
]
CSRF_TRUSTED_ORIGINS = config.origins("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "pantheon.apps.PantheonAdminConfig",  # django.contrib.admin with Pantheon's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served locally: /api/docs/ works offline
    "pantheon.apps.PantheonConfig",
    "rooms",
    "sessions_app",
    "usage",
]

# Django's stock middleware, run on the event loop under ASGI (pantheon/async_middleware.py).
MIDDLEWARE = [
    # First: every response carries X-Request-ID and every log line the request's ids.
    "pantheon.middleware.RequestIdMiddleware",
    # Before anything that can answer (django-cors-headers' advice), so refusals carry CORS too.
    "corsheaders.middleware.CorsMiddleware",
    # 503 over_capacity past GUNICORN_WORKER_CONNECTIONS requests in flight (pantheon/capacity.py).
    "pantheon.middleware.CapacityMiddleware",
    "pantheon.async_middleware.SecurityMiddleware",
    # Static files (the admin's CSS, Swagger UI) served by the app itself, also with DEBUG off.
    "pantheon.async_middleware.StaticFilesMiddleware",
    # Before anything reads the body: 413 for an oversized one, 400 for NULs in the query.
    "pantheon.middleware.ApiGuardMiddleware",
    "pantheon.async_middleware.SessionMiddleware",
    "pantheon.async_middleware.CommonMiddleware",
    "pantheon.async_middleware.CsrfViewMiddleware",
    "pantheon.async_middleware.AuthenticationMiddleware",
    "pantheon.async_middleware.MessageMiddleware",
    "pantheon.async_middleware.XFrameOptionsMiddleware",
]

# Django's deploy checks for these three match its own dotted paths, not subclasses;
# pantheon.W003 (pantheon/checks.py) checks that our subclasses are in place instead, and Django's
# checks of the settings they read (HSTS, the CSRF cookie...) run for them there too.
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]

ROOT_URLCONF = "pantheon.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "pantheon.wsgi.application"
ASGI_APPLICATION = "pantheon.asgi.application"

DATABASES = {"default": config.database("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# The servers' pool per worker process (0: none); manage.py's commands run without one
# (DB_POOL=off) but `manage.py check` still checks the servers' pool: its sizes and timeout are
# read (and a value that would stop gunicorn refused) whether or not this process uses it.
# PostgreSQL takes at most 262143 connections (its max_connections): a pool cannot hold more.
DB_POOL_MAX_SIZE = config.whole_number("DB_POOL_MAX_SIZE", 16, minimum=0, maximum=262_143)
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    DB_POOL_MAX_SIZE = 0
if DB_POOL_MAX_SIZE > 0:
    # A bounded pool per worker process: requests (and each short database section of a turn)
    # borrow a connection and give it back, so hundreds of turns waiting on their providers
    # share a few connections. Workers × DB_POOL_MAX_SIZE is the most a host opens.
    # A request waits up to DB_POOL_TIMEOUT for a connection; past it, 503 database_unavailable.
    # The sections gate keeps a worker's use of its pool below its size, so that wait is
    # long mainly while PostgreSQL cannot be reached: it is how long an outage (a restart, a
    # failover) is ridden through. Meanwhile the pool retries in the background, further and
    # further apart (1, 2, 4… s), for `reconnect_timeout`; psycopg's default, 5 minutes, had
    # the first request after a 40 s outage wait 20 s for the next try. Retrying no longer
    # than a request waits, the next request after that starts a new try at once.
    _pool_timeout = config.number("DB_POOL_TIMEOUT", 30.0, above=0, maximum=config.CENTURY_SECONDS)
    _pool = {
        "min_size": config.whole_number("DB_POOL_MIN_SIZE", 2, minimum=0, maximum=DB_POOL_MAX_SIZE),
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": _pool_timeout,
        "reconnect_timeout": _pool_timeout,
    }
if DB_POOL_MAX_SIZE > 0 and config.flag("DB_POOL", True):  # not manage.py's commands
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps connections, not the requests
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = _pool
else:
    DATABASES["default"].setdefault(
        "CONN_MAX_AGE",
        config.whole_number("CONN_MAX_AGE", 60, minimum=0, maximum=config.CENTURY_SECONDS),
    )
# A kept connection is checked before it is used: PostgreSQL may have dropped it meanwhile (a
# restart, a failover, a proxy's idle timeout). With the pool, Django checks each connection the
# pool hands out (one empty query), and a dead one is replaced instead of failing its request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = config.flag("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    # libpq's own limit on opening a connection (0: none). Without it, a server that accepts
    # the connection and never answers (a stuck proxy or pooler, a host mid-failover) holds the
    # attempt forever, and a pool whose attempt never ends never tries again.
    _connect_timeout = config.whole_number(
        "DB_CONNECT_TIMEOUT", 5, minimum=0, maximum=config.CENTURY_SECONDS
    )
    _db_options.setdefault("connect_timeout", _connect_timeout)
    if config.flag("DB_PREPARED_STATEMENTS", True):
        # Parameters bound by the server, not quoted into the SQL by psycopg, and the statements
        # a connection runs often prepared once (after psycopg's threshold of 5 runs):
        # PostgreSQL plans a turn's queries once per pooled connection instead of on every
        # request. A migration that changes a column's type under them is recovered from by
        # `pantheon.db.replan_after_schema_change`. Turn it off behind PgBouncer older than
        # 1.22 or without `max_prepared_statements`.
        _db_options["server_side_binding"] = True
        _db_options.setdefault("prepare_threshold", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The laptop demo serves from several threads; wait on the write lock instead of failing.
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    _db_options.setdefault("timeout", 20)
    # The timeout is no help to a transaction begun DEFERRED that read first (a roster's, a new
    # room's) and then writes while another one writes: SQLite refuses it at once ("database is
    # locked", a 500), as what it read may be stale by then. So every transaction takes the
    # write lock as it begins and waits there (select_for_update does nothing on SQLite: this
    # is what orders the writers). With the write-ahead log, reads go on meanwhile and writers
    # wait only for each other (the mode stays with the file once set).
    _db_options.setdefault("transaction_mode", "IMMEDIATE")
    _db_options.setdefault("init_command", "PRAGMA journal_mode=WAL")
    # The turn list's covering index (INCLUDE session) is a plain index on SQLite: that is fine
    # for a laptop, and not worth a warning on every command.
    SILENCED_SYSTEM_CHECKS.append("models.W040")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Whatever is cached must be shared by every worker and host, and PostgreSQL is the one shared
# store: Django's DatabaseCache, its table created by migration pantheon.0001. On PostgreSQL the
# throttles keep their history in a table of their own (pantheon/throttling.py); on SQLite, here.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "pantheon_cache",
        # On SQLite one row per throttled identity (user, address, username). Past this many
        # rows Django culls, expired rows first; the default (300) would drop live counters.
        "OPTIONS": {"MAX_ENTRIES": config.whole_number("CACHE_MAX_ENTRIES", 20_000, minimum=1)},
    }
}

# Largest request body (bytes); a bigger one is refused with 413 `request_too_large`. A body is
# read into memory whole, and no PostgreSQL value holds more than 1 GiB.
DATA_UPLOAD_MAX_MEMORY_SIZE = config.whole_number(
    "DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024, minimum=1024, maximum=2**30
)

# Where a console login goes when its `next` is refused (another site's): the console's index,
# not Django's default /accounts/profile/, which is no page here (a 404 after a good login).
LOGIN_REDIRECT_URL = "admin:index"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Not a rule: a password change revokes the account's API token (pantheon/passwords.py).
    # A settings file that replaces this list must keep it (`manage.py check` warns, W005).
    {"NAME": "pantheon.passwords.RevokeApiTokenOnPasswordChange"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# The console writes moments one way throughout (pantheon/formats/en/formats.py).
FORMAT_MODULE_PATH = ["pantheon.formats"]

STATIC_URL = "static/"
# `manage.py collectstatic` fills it (gunicorn, and pantheon.serve with DEBUG off, run it at
# start: pantheon/collect_static.py); WhiteNoise serves it with hashed names and far-future
# caching, compressed.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default="") or BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Production hardening, switched on whenever DEBUG is off.
# Trust X-Forwarded-Proto only when the operator says the proxy in front sets it (and strips
# it from clients); otherwise any client could claim its plain-HTTP request was HTTPS.
if config.flag("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = config.flag("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = config.flag("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = config.flag("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = config.whole_number(
    "SECURE_HSTS_SECONDS", 0, minimum=0, maximum=config.CENTURY_SECONDS
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = config.flag("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = config.flag("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "pantheon.authentication.TokenAuthentication",
        "pantheon.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Every authenticated request, per user (`PANTHEON_API_RATE`); a turn's post has its own
    # rate instead, logins theirs, and the views that create add `PANTHEON_CREATE_RATE`.
    "DEFAULT_THROTTLE_CLASSES": ["pantheon.throttling.ApiRateThrottle"],
    # The API speaks JSON only (anything else is 415), through a parser that bounds depth and
    # size and refuses NULs and lone surrogates.
    "DEFAULT_PARSER_CLASSES": ["pantheon.parsers.JSONParser"],
    # And answers in JSON only: DRF's browsable HTML pages (for `Accept: text/html`) would
    # answer errors in HTML too. Swagger UI at /api/docs/ is the page to explore it with.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "pantheon.schema.AutoSchema",
    "DEFAULT_METADATA_CLASS": "pantheon.metadata.Metadata",
    # How many proxies in front set X-Forwarded-For; 0 trusts only the socket's address, so a
    # client cannot pick its own throttle identity.
    "NUM_PROXIES": config.whole_number("PANTHEON_NUM_PROXIES", 0, minimum=0),
    "DEFAULT_PAGINATION_CLASS": "pantheon.pagination.DefaultPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "pantheon.exceptions.api_exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "pantheon.negotiation.StrictContentNegotiation",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Pantheon API",
    "DESCRIPTION": "Multi-agent LLM chat backend: agents, rooms, sessions, turns and usage.\n\n"
    # What no operation can list: answers to requests that reach no operation.
    "Beside the answers each operation lists, a request that reaches no operation gets one "
    "of these, on any path: a method the path does not list is a 405 `method_not_allowed` "
    '`{"detail": "Method \\"PUT\\" not allowed.", "code": "method_not_allowed"}` whose '
    "`Allow` header names the methods the path takes (those listed here, and OPTIONS, and "
    "HEAD where it takes one); a request that is not valid HTTP/1.1 is a 400 "
    "`malformed_request`, and one not sent in full in time a 408 `request_timeout` "
    '(`{"detail": {"code", "message"}}`), after which the connection is closed. Every answer '
    "carries `X-Request-ID`.",
    "VERSION": "1.0.0",
    # The operations' groups (pantheon.schema.AutoSchema.get_tags), in a reader's order.
    "TAGS": [
        {
            "name": "auth",
            "description": "Sign in for an API token; rotate or revoke it; change the password.",
        },
        {
            "name": "models",
            "description": "The model aliases an agent may use, with their context windows.",
        },
        {"name": "agents", "description": "Your agents: a model alias and a role prompt each."},
        {"name": "rooms", "description": "Rooms: which agents sit in them and how they answer."},
        {
            "name": "sessions",
            "description": "Chats in a room: their messages, turns and summary; post a turn.",
        },
        {
            "name": "turns",
            "description": "One turn: its state and answers, its events (SSE), its cancel.",
        },
        {
            "name": "usage",
            "description": "Your credits and tokens by model over a range, and this month's "
            "credits against your cap.",
        },
        {"name": "health", "description": "Whether the server and its database answer."},
    ],
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # drf-spectacular's own (nullable choices: NullEnum), then a nullable reference's null and
    # the defaults of texts that may be blank, as strict OpenAPI 3.0 validators read them.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "pantheon.schema.nullable_accepts_null",
        "pantheon.schema.default_beside_alternatives",
    ],
    # pantheon.converters: ids in paths are UUIDs in either case.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "string", "format": "uuid"}},
    "ENUM_NAME_OVERRIDES": {
        "RoomModeEnum": "rooms.models.RoomMode",
        "RoomModeInputEnum": "rooms.serializers.MODE_INPUT_CHOICES",
        "TurnModeEnum": "sessions_app.models.TURN_MODE_CHOICES",
        "TurnStatusEnum": "sessions_app.models.TurnStatus",
        "MessageStatusEnum": "sessions_app.models.MessageStatus",
        "MessageRoleEnum": "sessions_app.models.MessageRole",
        "TurnEventNameEnum": "sessions_app.event_schema.EVENT_NAMES",
        "AuthenticationErrorCodeEnum": "pantheon.schema.AUTHENTICATION_ERROR_CODES",
    },
}

# --- Pantheon ---------------------------------------------------------------------------------
PANTHEON_LLM_BACKEND = config.choice("PANTHEON_LLM_BACKEND", "demo", ("demo", "live"))
PANTHEON_MANAGER_MODEL_ALIAS = config.name_or_default("PANTHEON_MANAGER_MODEL_ALIAS", "deepseek")
PANTHEON_SUMMARIZER_MODEL_ALIAS = config.name_or_default(
    "PANTHEON_SUMMARIZER_MODEL_ALIAS", "deepseek"
)
# Durations are at most a century (config.CENTURY_SECONDS): the commands subtract them from now.
_CENTURY = config.CENTURY_SECONDS
PANTHEON_LLM_TIMEOUT_SECONDS = config.number(
    "PANTHEON_LLM_TIMEOUT_SECONDS", 60.0, above=0, maximum=_CENTURY
)
# Retries wait the backoff, doubled each time: 10 retries wait 1023 times the first delay in all
# (511.5 s at the default 0.5 s, most of the default stale limit, 600 s, before any attempt's
# own timeout), and each more doubles it. Past 10, a turn would outlive any sane stale limit
# waiting on one call, and 2**retries grew without bound (a check that never ended).
LLM_MAX_RETRIES_LIMIT = 10
PANTHEON_LLM_MAX_RETRIES = config.whole_number(
    "PANTHEON_LLM_MAX_RETRIES", 2, minimum=0, maximum=LLM_MAX_RETRIES_LIMIT
)
PANTHEON_LLM_BACKOFF_SECONDS = config.number(
    "PANTHEON_LLM_BACKOFF_SECONDS", 0.5, minimum=0, maximum=_CENTURY
)
# A provider's 429 (or 5xx) may say how long to wait (`Retry-After`): a retry waits that long, so
# long as the call's waits for its provider stay within this in all; past it the call ends at
# once (a retry sooner would be refused too).
PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS = config.number(
    "PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS", 30.0, minimum=0, maximum=_CENTURY
)
PANTHEON_TURN_STALE_SECONDS = config.whole_number(
    "PANTHEON_TURN_STALE_SECONDS", 600, minimum=1, maximum=_CENTURY
)
# Streaming: how often a streamed answer's text so far is saved for replays on other hosts, how
# often a replay of a running turn looks for news, and the idle time after which a stream sends
# a heartbeat comment (proxies cut silent connections).
PANTHEON_STREAM_SAVE_SECONDS = config.number(
    "PANTHEON_STREAM_SAVE_SECONDS", 0.25, above=0, maximum=_CENTURY
)
# Database sections (pantheon/db.py) a worker runs at once; the others wait, oldest request
# first. 0: no limit.
PANTHEON_DB_SECTIONS = config.whole_number("PANTHEON_DB_SECTIONS", 4, minimum=0)
PANTHEON_SSE_POLL_SECONDS = config.number(
    "PANTHEON_SSE_POLL_SECONDS", 0.25, above=0, maximum=_CENTURY
)
# Streams of `GET turns/{id}/events` one user may hold open on one worker at once (0: no
# limit): they are throttled by no rate, and each holds a place among the worker's requests.
PANTHEON_MAX_FOLLOWS_PER_USER = config.whole_number(
    "PANTHEON_MAX_FOLLOWS_PER_USER", 20, minimum=0, maximum=1_000_000
)
PANTHEON_SSE_HEARTBEAT_SECONDS = config.number(
    "PANTHEON_SSE_HEARTBEAT_SECONDS", 15.0, above=0, maximum=_CENTURY
)
# The production worker's HTTP protocol (pantheon/protocol.py): a client has this long to send
# a whole request, then gets 408 and its connection closed; a response whose client has taken
# nothing of it for this long is ended and its connection reset.
PANTHEON_REQUEST_READ_TIMEOUT_SECONDS = config.number(
    "PANTHEON_REQUEST_READ_TIMEOUT_SECONDS", 20.0, above=0, maximum=_CENTURY
)
PANTHEON_WRITE_TIMEOUT_SECONDS = config.number(
    "PANTHEON_WRITE_TIMEOUT_SECONDS", 60.0, above=0, maximum=_CENTURY
)
# A turn's answer says `low_balance` once the month's credits pass this share of the cap.
PANTHEON_LOW_BALANCE_SHARE = config.number("PANTHEON_LOW_BALANCE_SHARE", 0.9, minimum=0)
# How long an Idempotency-Key's answer is kept for retries, at least (prune_idempotency_keys).
PANTHEON_IDEMPOTENCY_KEY_HOURS = config.number(
    "PANTHEON_IDEMPOTENCY_KEY_HOURS", 24.0, above=0, maximum=config.CENTURY_HOURS
)
# Bounds on everything that reaches a prompt (characters); longer input is a 400. None can be
# longer than the largest body, 1 GiB (DATA_UPLOAD_MAX_MEMORY_SIZE).
PANTHEON_MAX_MESSAGE_CHARS = config.whole_number(
    "PANTHEON_MAX_MESSAGE_CHARS", 20_000, minimum=1, maximum=2**30
)
PANTHEON_MAX_ROLE_PROMPT_CHARS = config.whole_number(
    "PANTHEON_MAX_ROLE_PROMPT_CHARS", 8_000, minimum=1, maximum=2**30
)
PANTHEON_MAX_ROOM_GOAL_CHARS = config.whole_number(
    "PANTHEON_MAX_ROOM_GOAL_CHARS", 2_000, minimum=1, maximum=2**30
)
# Deepest JSON request body accepted; the API's own bodies are 3 levels deep.
PANTHEON_MAX_JSON_DEPTH = config.whole_number("PANTHEON_MAX_JSON_DEPTH", 32, minimum=4)
# Throttles (`N/second|minute|hour|day`): failed logins per client address, per username tried
# from one address and per username from every address together (the addresses the account
# logged in from spared), turns per user.
PANTHEON_AUTH_RATE_PER_IP = config.rate("PANTHEON_AUTH_RATE_PER_IP", "10/min")
PANTHEON_AUTH_RATE_PER_USERNAME = config.rate("PANTHEON_AUTH_RATE_PER_USERNAME", "10/min")
PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL = config.rate(
    "PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL", "100/hour"
)
PANTHEON_TURN_RATE = config.rate("PANTHEON_TURN_RATE", "60/min")
# API requests whose token is unknown (or its user inactive), per client address: a bucket of N
# refilled at N per period; past it every token from that address is refused (429
# too_many_invalid_tokens) before its lookup. A client meets a 401 once when its token is
# revoked; 60 a minute leaves an address many clients share room for theirs.
PANTHEON_INVALID_TOKEN_RATE = config.rate("PANTHEON_INVALID_TOKEN_RATE", "60/min")
# Every other authenticated API request, per user: a bucket of N refilled at N per period. A UI
# sends a handful of requests per page and a few a second while it polls; 10 a second, with a
# minute's worth at once, leaves it far below, and keeps one account's flood to a small share of
# what a worker serves.
PANTHEON_API_RATE = config.rate("PANTHEON_API_RATE", "600/min")
# Creates of agents, rooms and sessions, per user (a bucket as above, counted besides
# PANTHEON_API_RATE): a bound's worth of agents at once, then one every 18 seconds, so that a
# loop of creates and deletes adds at most 4,800 rows a day (deleted rooms and sessions stay).
PANTHEON_CREATE_RATE = config.rate("PANTHEON_CREATE_RATE", "200/hour")
# How many agents, rooms (not deleted) and sessions (not deleted, nor in a deleted room) one
# account may own; a create past it is a 409 (`pantheon.quotas`). 0: no bound. The console
# creates beyond them.
PANTHEON_MAX_AGENTS_PER_USER = config.whole_number(
    "PANTHEON_MAX_AGENTS_PER_USER", 200, minimum=0, maximum=2**31 - 1
)
PANTHEON_MAX_ROOMS_PER_USER = config.whole_number(
    "PANTHEON_MAX_ROOMS_PER_USER", 200, minimum=0, maximum=2**31 - 1
)
PANTHEON_MAX_SESSIONS_PER_USER = config.whole_number(
    "PANTHEON_MAX_SESSIONS_PER_USER", 10_000, minimum=0, maximum=2**31 - 1
)
# How many recent raw messages a turn reads at most to build its context. A constant bound keeps
# per-turn work independent of session length; the summary carries everything older. It is
# the query's LIMIT, a PostgreSQL bigint: more failed every turn ("bigint out of range").
PANTHEON_CONTEXT_HISTORY_LIMIT = config.whole_number(
    "PANTHEON_CONTEXT_HISTORY_LIMIT", 40, minimum=1, maximum=2**63 - 1
)
# glibc malloc arenas per gunicorn worker: read by the worker itself (pantheon/workers.py), and
# here so that `manage.py check` refuses a value that would stop it.
MALLOC_ARENAS = config.malloc_arenas()
# gunicorn's own variables (gunicorn.conf.py), read here too so that `manage.py check` refuses a
# value that would stop gunicorn (WEB_CONCURRENCY=0, PORT=http), as it does the pool's.
config.gunicorn_settings()
# litellm's switch to its own HTTP handler for OpenAI-compatible calls
# (`orchestration/litellm_loader.py` sets it on): litellm reads `true` or `false` alone, so an
# empty value, `1` or `on` went back to the OpenAI SDK without a word. Read as every flag here
# (a word no flag takes is refused) and written back as litellm reads it.
os.environ["EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"] = str(
    config.flag("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", True)
).lower()

# Browsers on other origins (a web client) may call the API; none by default.
# An origin copied from an address bar ends in "/": the origin is without it (corsheaders.E014).
CORS_ALLOWED_ORIGINS = config.origins("CORS_ALLOWED_ORIGINS")
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
    "x-csrftoken",
    "x-request-id",
]
# A browser shows a page of another origin only the headers listed here (and a few it always
# shows): what the README tells clients to read, a 201's Location included.
CORS_EXPOSE_HEADERS = ["X-Request-ID", "Retry-After", "Idempotent-Replayed", "Location"]

# One JSON object a line in production; readable text when DEBUG (or LOG_FORMAT=text). Every
# record carries request_id, user_id, session_id and turn_id (pantheon.logging_context).
LOG_FORMAT = log_formats.log_format()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": log_formats.FORMATTERS,
    "filters": {
        "context": {"()": "pantheon.logging_context.ContextFilter"},
        "suspicious_request": {"()": "pantheon.logging_context.SuspiciousRequestFilter"},
        "secrets": {"()": "pantheon.log_formats.SecretsFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context", "suspicious_request", "secrets"],
        },
    },
    "root": {
        "handlers": ["console"],
        "level": config.choice("LOG_LEVEL", "INFO", config.LOG_LEVELS, upper=True),
    },
    "loggers": {
        # Django's own handler (DEFAULT_LOGGING's "console", written when DEBUG) wrote each of
        # its lines a second time, unformatted and past the secrets filter: a console 403 as
        # two tracebacks, the second no JSON. Its lines reach the root's handler alone.
        "django": {"handlers": []},
        "LiteLLM": {"level": "WARNING"},
        "LiteLLM Router": {"level": "WARNING"},
        "LiteLLM Proxy": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

# The production server (gunicorn.conf.py marks its processes) with DEBUG off does not start on
# the published key: anyone could sign what Django signs with it (its messages' cookies, say).
# Last, so that a setting refused above is named first.
_PRODUCTION = config.flag("PANTHEON_PRODUCTION_SERVER", False) and not DEBUG
if _PRODUCTION and SECRET_KEY == LOCAL_SECRET_KEY:
    if _SECRET_KEY_EMPTY:
        raise ImproperlyConfigured(
            "SECRET_KEY is empty: the production server does not start without a key of its "
            "own with DEBUG off (set SECRET_KEY to a long random value)"
        )
    raise ImproperlyConfigured(
        "SECRET_KEY is not set: the production server does not start on the laptop's published "
        "key with DEBUG off (set SECRET_KEY to a long random value)"
    )
# Nor with no host to answer: with DEBUG off Django refuses every request (400) whose Host is not
# in ALLOWED_HOSTS, the health check's included.
if _PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS is empty: with DEBUG off the production server would refuse every request "
        "(400); set ALLOWED_HOSTS to the host names its clients use, comma-separated "
        "(pantheon.example.com,localhost)"
    )
# Nor on the laptop's database, a SQLite file in the checkout that a server alone creates, empty,
# when DATABASE_URL is not set: it served from it, its health check 200. A sqlite:/// URL
# given is taken (`pantheon.apps` warns).
if _PRODUCTION and not env.str("DATABASE_URL", default="").strip():
    raise ImproperlyConfigured(
        ("DATABASE_URL is empty" if "DATABASE_URL" in env else "DATABASE_URL is not set")
        + ": the production server does not start on the laptop's SQLite file with DEBUG off; "
        "set DATABASE_URL=postgres://user:password@host:5432/name"
    )
