"""`recover_turns` and `prune_idempotency_keys` as cron runs them: `-v 0` is quiet when there
is nothing to report (Django's "0=minimal output", which every command's --help offers)."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from pantheon import config
from sessions_app.models import IdempotencyKey, Turn, TurnStatus

pytestmark = pytest.mark.django_db


def run(command: str, *args, **options) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(command, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", ["recover_turns", "prune_idempotency_keys"])
def test_verbosity_0_prints_nothing_when_there_is_nothing_to_report(command):
    assert run(command, verbosity=0) == ("", "")
    # Verbosity 1 (the default) keeps its one-line summary.
    assert run(command)[0].count("\n") == 1


def test_recover_turns_at_verbosity_0_still_reports_the_turns_it_interrupted(stale_turn):
    """A worker died: that is worth cron's mail, quiet or not."""
    Turn.objects.filter(pk=stale_turn.pk).update(worker="web-1:12609:826fe4d5")
    out, _ = run("recover_turns", verbosity=0)

    assert f"turn {stale_turn.pk}" in out
    # Which process ran it: the pid gunicorn's "Worker (pid:12609) was sent SIGKILL!" names.
    assert "served by web-1:12609:826fe4d5)" in out
    assert "Interrupted 1 turn(s)" in out


def test_recover_turns_lists_only_turns_still_running(
    stale_turn, owner, ada, make_session, settings
):
    """A dry run lists the turns it would interrupt: a turn that ended long ago (its last
    progress as old as a stale one's) is none of them, and a real run leaves it as it ended."""
    long_ago = timezone.now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 5)
    ended = Turn.objects.create(
        session=make_session(owner, agent=ada),
        turn_index=1,
        mode="direct",
        user_input="answered",
        status=TurnStatus.COMPLETED,
        created_at=long_ago,
        progress_at=long_ago,
        completed_at=long_ago,
    )

    out, _ = run("recover_turns", "--dry-run")

    assert f"turn {stale_turn.pk}" in out and f"turn {ended.pk}" not in out
    assert out.endswith("Dry run: 1 stale turn(s) would be interrupted.\n")
    assert "Interrupted 1 turn(s)" in run("recover_turns")[0]
    ended.refresh_from_db()
    assert (ended.status, ended.completed_at) == (TurnStatus.COMPLETED, long_ago)


def test_prune_at_verbosity_0_deletes_quietly(owner):
    IdempotencyKey.objects.create(
        user=owner, key="old", fingerprint="f", created_at=timezone.now() - timedelta(hours=25)
    )

    assert run("prune_idempotency_keys", verbosity=0) == ("", "")
    assert not IdempotencyKey.objects.exists()
    # A dry run is asked for its count: it says it whatever the verbosity.
    assert "Would delete 0" in run("prune_idempotency_keys", "--dry-run", verbosity=0)[0]


def test_recover_turns_warns_when_its_age_is_shorter_than_a_call_can_take(settings):
    """`--older-than 60` reads as "stuck for a minute", but one LLM call may wait the timeout
    on every retry: a turn waiting on its provider would be interrupted alive, its answer lost
    and its call still billed (pantheon.W001 says the same of PANTHEON_TURN_STALE_SECONDS)."""
    settings.PANTHEON_LLM_TIMEOUT_SECONDS = 60
    settings.PANTHEON_LLM_MAX_RETRIES = 2
    settings.PANTHEON_LLM_BACKOFF_SECONDS = 0.5
    settings.PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS = 30

    _, err = run("recover_turns", "--older-than", "60")
    assert "Warning: --older-than 60 is not longer than one LLM call can take (212 s" in err
    _, err = run("recover_turns", "--older-than", "60", "--dry-run")
    assert "Warning" in err
    assert "Warning" in run("recover_turns", "--older-than", "211.5")[1]  # as long: W001's edge

    assert run("recover_turns", "--older-than", "220")[1] == ""
    assert run("recover_turns")[1] == ""  # the stale limit


def test_the_longest_lifetimes_the_settings_take_work_in_the_commands(settings, stale_turn):
    """A century, the most PANTHEON_TURN_STALE_SECONDS and PANTHEON_IDEMPOTENCY_KEY_HOURS take
    (1e20 seconds and 1e300 hours passed `check`, then these commands overflowed a
    timedelta): a moment the database holds, and nothing is that old."""
    settings.PANTHEON_TURN_STALE_SECONDS = config.CENTURY_SECONDS
    settings.PANTHEON_IDEMPOTENCY_KEY_HOURS = config.CENTURY_HOURS

    assert (
        run("recover_turns", "--dry-run")[0] == "Dry run: 0 stale turn(s) would be interrupted.\n"
    )
    assert run("recover_turns")[0].startswith("Interrupted 0 turn(s)")
    out, _ = run("prune_idempotency_keys", "--dry-run")
    assert out == "Would delete 0 idempotency key(s) older than 876000 hours.\n"
