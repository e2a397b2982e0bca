import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from pantheon.checks import check_stale_limit, longest_llm_call_seconds


def test_defaults_leave_room_for_the_slowest_call(settings):
    # 3 attempts of 60 s with 0.5 s and 1 s of backoff between them.
    settings.PANTHEON_LLM_BACKOFF_SECONDS = 0.5
    assert longest_llm_call_seconds() == 181.5
    assert check_stale_limit() == []


def test_a_stale_limit_shorter_than_one_call_is_flagged(settings):
    settings.PANTHEON_TURN_STALE_SECONDS = 120

    warnings = check_stale_limit()

    assert [warning.id for warning in warnings] == ["pantheon.W001"]
    with pytest.raises(SystemCheckError, match="pantheon.W001"):
        call_command("check", "--fail-level", "WARNING")
