import math
import os
import re
import subprocess
import sys

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from pantheon.checks import (
    check_password_change_revokes_tokens,
    check_sections_fit_the_pool,
    check_security_middleware,
    check_stale_limit,
    longest_llm_call_seconds,
)
from pantheon.testing.processes import ROOT
from pantheon.testing.servers import postgres_url


def test_defaults_leave_room_for_the_slowest_call(settings):
    # 3 attempts of 60 s with 0.5 s and 1 s of backoff between them, and up to 30 s more of
    # pauses the provider asked (Retry-After).
    settings.PANTHEON_LLM_BACKOFF_SECONDS = 0.5
    assert longest_llm_call_seconds() == 211.5
    assert check_stale_limit() == []


def test_a_call_without_retries_waits_for_no_pause(settings):
    settings.PANTHEON_LLM_MAX_RETRIES = 0
    assert longest_llm_call_seconds() == 60.0
    settings.PANTHEON_LLM_MAX_RETRIES = 1
    settings.PANTHEON_LLM_BACKOFF_SECONDS = 0.5
    settings.PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS = 0
    assert longest_llm_call_seconds() == 120.5


@pytest.mark.parametrize("retries", [1100, 10**6])
def test_retries_past_what_a_float_holds_make_a_call_endless_not_a_crash(settings, retries):
    """The settings stop at 10 retries; the arithmetic holds past them. 2 ** (retries - 1)
    exactly was an OverflowError past 1023 retries (and took minutes and memory without end
    for 10**20)."""
    settings.PANTHEON_LLM_MAX_RETRIES = retries
    settings.PANTHEON_LLM_BACKOFF_SECONDS = 0.5

    assert longest_llm_call_seconds() == math.inf
    assert [warning.id for warning in check_stale_limit()] == ["pantheon.W001"]

    settings.PANTHEON_LLM_BACKOFF_SECONDS = 0.0  # no backoff: the attempts' timeouts alone
    assert longest_llm_call_seconds() == 60.0 * (retries + 1) + 30  # and the provider's pauses


def test_the_most_retries_allowed_wait_511_5_seconds_of_backoff(settings):
    """10 retries (PANTHEON_LLM_MAX_RETRIES' maximum): 11 attempts of 60 s, and between them
    0.5 s doubled each time, 0.5 + 1 + ... + 256 = 511.5 s."""
    settings.PANTHEON_LLM_MAX_RETRIES = 10
    settings.PANTHEON_LLM_BACKOFF_SECONDS = 0.5

    assert longest_llm_call_seconds() == 11 * 60 + 511.5 + 30  # and the provider's pauses


@pytest.mark.django_db  # `check` reads the aliases (usage.W001)
def test_a_stale_limit_shorter_than_one_call_is_flagged(settings):
    settings.PANTHEON_TURN_STALE_SECONDS = 120

    warnings = check_stale_limit()

    assert [warning.id for warning in warnings] == ["pantheon.W001"]
    with pytest.raises(SystemCheckError, match="pantheon.W001"):
        call_command("check", "--fail-level", "WARNING")


def test_the_stock_security_middleware_or_a_subclass_is_required(settings):
    assert check_security_middleware() == []

    settings.MIDDLEWARE = [
        path for path in settings.MIDDLEWARE if "XFrameOptions" not in path and "Csrf" not in path
    ]

    warnings = check_security_middleware()
    assert [warning.id for warning in warnings] == ["pantheon.W003", "pantheon.W003"]
    assert "XFrameOptionsMiddleware" in warnings[0].msg + warnings[1].msg


def test_database_sections_beyond_the_pool_are_flagged(settings):
    settings.DB_POOL_MAX_SIZE = 8
    settings.PANTHEON_DB_SECTIONS = 4
    assert check_sections_fit_the_pool() == []

    for sections in (12, 0):
        settings.PANTHEON_DB_SECTIONS = sections
        assert [warning.id for warning in check_sections_fit_the_pool()] == ["pantheon.W004"]


@pytest.mark.parametrize("sections", ["17", "0"])
def test_manage_py_check_flags_sections_beyond_the_servers_pool(sections):
    """manage.py's commands run without a pool of their own; the check is about the servers'."""
    env = {k: v for k, v in os.environ.items() if k != "DB_POOL_MAX_SIZE"}  # the default, 16
    env |= {
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "DATABASE_URL": postgres_url(connection.settings_dict),
        "PANTHEON_DB_SECTIONS": sections,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pantheon.W004" in result.stderr + result.stdout
    assert "DB_POOL_MAX_SIZE 16" in result.stderr + result.stdout


def test_a_password_validator_list_without_the_token_revocation_is_flagged(settings):
    """Tokens are revoked by an AUTH_PASSWORD_VALIDATORS entry: a settings file that replaces
    the list (to allow short passwords somewhere, say) would quietly turn that off."""
    assert check_password_change_revokes_tokens() == []

    settings.AUTH_PASSWORD_VALIDATORS = [
        {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"}
    ]
    assert [w.id for w in check_password_change_revokes_tokens()] == ["pantheon.W005"]


@pytest.mark.django_db  # the deploy checks read the users (pantheon.W006)
def test_check_deploy_checks_the_settings_our_middleware_subclasses_read(settings):
    """Django's checks of HSTS, nosniff, the SSL redirect, X-Frame-Options and the CSRF cookie
    look for its own middleware by dotted path: with our subclasses none of them ran."""
    settings.SECURE_HSTS_SECONDS = 0
    settings.SECURE_CONTENT_TYPE_NOSNIFF = False
    settings.SECURE_SSL_REDIRECT = False
    settings.X_FRAME_OPTIONS = "SAMEORIGIN"
    settings.CSRF_COOKIE_SECURE = False

    found = [problem.id for problem in run_checks(include_deployment_checks=True)]

    for expected in ("W004", "W006", "W008", "W016", "W019"):
        assert found.count(f"security.{expected}") == 1, (expected, found)


def test_check_deploy_with_insecure_cookies_says_so_of_both_and_of_https():
    """`SESSION_COOKIE_SECURE=false CSRF_COOKIE_SECURE=false manage.py check --deploy`
    reported W010 alone."""
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "pantheon.settings",
            "DATABASE_URL": postgres_url(connection.settings_dict),
            "DEBUG": "false",
            "SECRET_KEY": "k-" + "0123456789abcdef" * 4,
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "LOG_LEVEL": "ERROR",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    reported = sorted(set(re.findall(r"\(security\.(\w+)\)", checked.stderr)))
    assert reported == ["W004", "W008", "W010", "W016"], checked.stderr


def test_the_gateway_waits_for_its_provider_as_long_as_the_settings_say(settings):
    from pantheon.llm import get_gateway

    settings.PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS = 12.5
    get_gateway.cache_clear()
    try:
        assert get_gateway().retry_after_max_seconds == 12.5
    finally:
        get_gateway.cache_clear()


@pytest.mark.django_db
def test_check_deploy_warns_of_the_demo_superuser_with_its_published_password(
    django_user_model,
):
    """`seed_demo` refuses to create the demo superuser with DEBUG off, but a database `make
    run` once seeded served it on a server with DEBUG off (a token for demo / pantheon-demo),
    and `check --deploy` said nothing."""
    from sessions_app.management.commands.seed_demo import DEMO_PASSWORD, DEMO_USERNAME

    def deploy_warnings() -> list[str]:
        found = run_checks(include_deployment_checks=True)
        return [problem.id for problem in found if problem.id == "pantheon.W006"]

    assert deploy_warnings() == []  # no demo user
    demo = django_user_model.objects.create_superuser(DEMO_USERNAME, password=DEMO_PASSWORD)

    found = [p for p in run_checks(include_deployment_checks=True) if p.id == "pantheon.W006"]
    assert len(found) == 1
    assert "demo" in found[0].msg and "published password" in found[0].msg
    assert "pantheon.W006" not in [p.id for p in run_checks()]  # a deploy check only

    demo.is_active = False
    demo.save()
    assert deploy_warnings() == []  # it cannot log in
    demo.is_active = True
    demo.set_password("a-password-of-its-own-42")
    demo.save()
    assert deploy_warnings() == []
