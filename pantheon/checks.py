"""System checks on settings that only make sense together."""

import math
import os

from django.conf import settings
from django.core.checks import Warning as CheckWarning
from django.core.checks.security import base as security_base
from django.core.checks.security import csrf as security_csrf
from django.utils.module_loading import import_string

from pantheon.log_formats import SHORTEST_PASSPHRASE, guessable_secrets, weak_secret


def longest_llm_call_seconds() -> float:
    """A single call at worst: every attempt times out, with the backoff between them, and
    the pauses its provider asks before a retry (`Retry-After`: at most
    PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS in all, a retry waiting the longer of its backoff and
    the pause). In floats, infinite past what a float holds: the settings bound the retries
    (10), but an exact 2 ** retries of a huge count took minutes and memory without end, and
    past 1023 retries its conversion to a float failed."""
    attempts = settings.PANTHEON_LLM_MAX_RETRIES + 1
    first_delay = settings.PANTHEON_LLM_BACKOFF_SECONDS
    paused = settings.PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS if attempts > 1 else 0.0
    try:
        backoff = first_delay * (math.ldexp(1.0, attempts - 1) - 1) if first_delay else 0.0
        return settings.PANTHEON_LLM_TIMEOUT_SECONDS * float(attempts) + backoff + paused
    except OverflowError:
        return math.inf


def outlasts_a_call(seconds: float) -> bool:
    """Whether a turn that made no progress for `seconds` cannot be waiting on one call: the
    stale limit must be, and so must recover_turns' --older-than (or live turns are ended)."""
    return seconds > longest_llm_call_seconds()


def check_stale_limit(app_configs=None, **kwargs):
    """A turn commits after each call; if one call can outlast the stale limit, healthy turns
    get interrupted mid-call (their call is still billed, their answer lost)."""
    if outlasts_a_call(settings.PANTHEON_TURN_STALE_SECONDS):
        return []
    longest = longest_llm_call_seconds()
    return [
        CheckWarning(
            f"PANTHEON_TURN_STALE_SECONDS ({settings.PANTHEON_TURN_STALE_SECONDS}) is not longer "
            f"than one LLM call can take ({longest:.0f}s with PANTHEON_LLM_TIMEOUT_SECONDS, "
            "PANTHEON_LLM_MAX_RETRIES, the backoff and PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS).",
            hint="Raise PANTHEON_TURN_STALE_SECONDS or lower the timeout or retries.",
            id="pantheon.W001",
        )
    ]


# Django's deploy checks look for its own middleware by dotted path; ours subclass them
# (pantheon.async_middleware) and are checked here instead.
REQUIRED_MIDDLEWARE = {
    "django.middleware.security.SecurityMiddleware": "security.W001",
    "django.middleware.clickjacking.XFrameOptionsMiddleware": "security.W002",
    "django.middleware.csrf.CsrfViewMiddleware": "security.W003",
}


def check_security_middleware(app_configs=None, **kwargs):
    installed = [import_string(path) for path in settings.MIDDLEWARE]
    problems = []
    for path, replaces in REQUIRED_MIDDLEWARE.items():
        required = import_string(path)
        if not any(issubclass(cls, required) for cls in installed if isinstance(cls, type)):
            problems.append(
                CheckWarning(
                    f"No middleware in MIDDLEWARE is (a subclass of) {path}.",
                    hint=f"Django's own check {replaces} is silenced in favour of this one.",
                    id="pantheon.W003",
                )
            )
    return problems


# Django's deploy checks of the settings its middleware reads, by the middleware they look for
# (by dotted path: each passes when its middleware is not there).
CHECKED_WITH = {
    "django.middleware.security.SecurityMiddleware": [
        security_base.check_sts,  # W004
        security_base.check_sts_include_subdomains,  # W005
        security_base.check_sts_preload,  # W021
        security_base.check_content_type_nosniff,  # W006
        security_base.check_ssl_redirect,  # W008
        security_base.check_referrer_policy,  # W022, E023
        security_base.check_cross_origin_opener_policy,  # E024
    ],
    "django.middleware.clickjacking.XFrameOptionsMiddleware": [
        security_base.check_xframe_deny,  # W019
    ],
    "django.middleware.csrf.CsrfViewMiddleware": [
        security_csrf.check_csrf_cookie_secure,  # W016
    ],
}


def check_settings_of_subclassed_middleware(app_configs=None, **kwargs):
    """Django's own checks of HSTS, nosniff, the SSL redirect, the CSRF cookie and the rest
    (`check --deploy`), for our subclasses of its middleware (pantheon.async_middleware): they
    look for Django's classes by dotted path, so with ours none ran, and `check --deploy` with
    insecure cookies said only W010. Run as Django runs them, with MIDDLEWARE naming Django's
    class in place of each subclass (where Django's own is listed, Django checks it itself)."""
    as_django_names = list(settings.MIDDLEWARE)
    checks = []
    for path, its_checks in CHECKED_WITH.items():
        if path in settings.MIDDLEWARE:
            continue
        stock = import_string(path)
        for index, entry in enumerate(settings.MIDDLEWARE):
            installed = import_string(entry)
            if isinstance(installed, type) and issubclass(installed, stock):
                as_django_names[index] = path
                checks.extend(its_checks)
                break
    if not checks:
        return []
    from django.test.utils import override_settings  # not in the servers: only checks need it

    with override_settings(MIDDLEWARE=as_django_names):
        return [problem for check in checks for problem in check(app_configs)]


# The table migration pantheon.0001 creates for Django's DatabaseCache.
CACHE_TABLE = "pantheon_cache"


def check_cache_table(app_configs=None, **kwargs):
    """A DatabaseCache on another table would find none (`migrate` creates `pantheon_cache`)."""
    warnings = []
    for alias, cache in settings.CACHES.items():
        if cache["BACKEND"].endswith("DatabaseCache") and cache.get("LOCATION") != CACHE_TABLE:
            warnings.append(
                CheckWarning(
                    f"CACHES[{alias!r}] uses the table {cache.get('LOCATION')!r}, but the "
                    f"migrations create {CACHE_TABLE!r}.",
                    hint=f"Set LOCATION to {CACHE_TABLE!r} or run `manage.py createcachetable`.",
                    id="pantheon.W002",
                )
            )
    return warnings


def check_sections_fit_the_pool(app_configs=None, **kwargs):
    """Each running database section holds a connection: more sections at once than the pool
    has connections would leave some waiting on the pool with their place at the gate. The
    servers' pool (DB_POOL_MAX_SIZE), whether or not the process checking has one."""
    pool_size = settings.DB_POOL_MAX_SIZE
    sections = settings.PANTHEON_DB_SECTIONS
    if pool_size <= 0 or 0 < sections <= pool_size:
        return []
    return [
        CheckWarning(
            f"PANTHEON_DB_SECTIONS ({sections or 'no limit'}) lets more database sections run "
            f"at once than the pool has connections (DB_POOL_MAX_SIZE {pool_size}).",
            hint="Keep PANTHEON_DB_SECTIONS between 1 and DB_POOL_MAX_SIZE; other requests "
            "need connections too.",
            id="pantheon.W004",
        )
    ]


REVOKES_TOKENS = "pantheon.passwords.RevokeApiTokenOnPasswordChange"


def check_password_change_revokes_tokens(app_configs=None, **kwargs):
    """The token revocation rides on AUTH_PASSWORD_VALIDATORS (pantheon.passwords): a settings
    file that replaces the list without it lets API tokens outlive a password change."""
    if any(entry.get("NAME") == REVOKES_TOKENS for entry in settings.AUTH_PASSWORD_VALIDATORS):
        return []
    return [
        CheckWarning(
            "AUTH_PASSWORD_VALIDATORS leaves out the entry that revokes a user's API token when "
            "their password changes: tokens taken with a leaked password outlive its change.",
            hint=f'Add {{"NAME": "{REVOKES_TOKENS}"}} to AUTH_PASSWORD_VALIDATORS.',
            id="pantheon.W005",
        )
    ]


def check_published_demo_password(app_configs=None, **kwargs):
    """`seed_demo` refuses to create its superuser with DEBUG off, but a database that `make
    run` seeded once keeps it, and a server on that database let anyone who read the README log
    in as a superuser. One hash of the demo user's password, with no upgrade of the stored hash
    written back; a database `check --deploy` cannot read (none, not migrated) is left alone."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import check_password
    from django.db import DatabaseError

    from sessions_app.management.commands.seed_demo import DEMO_PASSWORD, DEMO_USERNAME

    try:
        stored = (
            get_user_model()
            .objects.filter(username=DEMO_USERNAME, is_active=True)
            .values_list("password", flat=True)
            .first()
        )
    except DatabaseError:
        return []
    if stored is None or not check_password(DEMO_PASSWORD, stored):
        return []
    return [
        CheckWarning(
            f"The active user {DEMO_USERNAME!r} has the demo's published password "
            f"({DEMO_PASSWORD!r}, in the README and `seed_demo --help`): anyone can log in as "
            "it, a superuser if `seed_demo` created it.",
            hint=f"Give it a password of its own (`manage.py changepassword {DEMO_USERNAME}`) "
            "or deactivate it on the console's users page.",
            id="pantheon.W006",
        )
    ]


def check_guessable_secrets(app_configs=None, **kwargs):
    """A secret anyone would guess (`POSTGRES_PASSWORD=postgres`) is not blotted out of the log
    (`pantheon.log_formats.guessable`): it blanked that word in every line, and hides nothing.
    It is named here, by its variable, so that an operator hears it is weak."""
    return [
        CheckWarning(
            weak_secret(name),
            hint=f"Letters, digits and signs, or a passphrase of {SHORTEST_PASSPHRASE} letters "
            "or more.",
            id="pantheon.W007",
        )
        for name in guessable_secrets(os.environ)
    ]
