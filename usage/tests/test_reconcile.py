"""`reconcile_usage`: rollups, monthly counters, turn totals and the transcript against the
ledger; exit 1 on drift, `--fix` rebuilds what derives from the ledger."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from pantheon.figures import counted, plain_amount
from rooms.models import RoomMode
from sessions_app.models import Message, Turn
from usage.models import DailyUsageRollup, LlmCallEvent, MonthlyUsage, RollupCoverage
from usage.reconcile import (
    COUNTERS,
    LOST,
    ROLLUPS,
    STUCK,
    TRANSCRIPT,
    TURN_TOTALS,
    UNPRICED,
    check_counters,
    check_rollups,
    check_turns,
    reconcile,
)
from usage.rollups import counter_months_rebuild, rollup_rebuild, rollups_cover_until, today
from usage.selectors import month_of
from usage.services import usage_call_complete

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[int, str]:
    """(exit code, output) of reconcile_usage."""
    out = StringIO()
    try:
        call_command("reconcile_usage", *args, stdout=out)
    except SystemExit as exc:
        return exc.code, out.getvalue()
    return 0, out.getvalue()


def yesterday_at(hour: int) -> datetime:
    day = today() - timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def finished_turn(owner, make_agent, make_room, make_session, ledger_row):
    """A finished two-agent turn written as the engine writes one: a message and an agent
    event per answer, a summary event, totals equal to the sums of its events."""
    agents = [make_agent(owner, "ada"), make_agent(owner, "grace")]
    session = make_session(owner, room=make_room(owner, agents))
    turn = Turn.objects.create(
        session=session,
        turn_index=1,
        mode="roundtable",
        status="completed",
        user_input="hi",
        created_at=yesterday_at(9),
    )
    Message.objects.create(session=session, turn=turn, sequence=1, role="user", content="hi")
    for sequence, key in enumerate(["ada", "grace"], start=2):
        Message.objects.create(
            session=session,
            turn=turn,
            sequence=sequence,
            role="assistant",
            agent_key=key,
            content=f"{key} says hi",
            created_at=yesterday_at(9),
        )
        ledger_row(owner, at=yesterday_at(9), turn=turn, session=session, agent_key=key)
    ledger_row(owner, at=yesterday_at(9), turn=turn, session=session, purpose="summary")
    turn.llm_calls, turn.input_tokens, turn.output_tokens = 3, 360, 30
    turn.credits, turn.provider_cost_usd = Decimal("0.0141"), Decimal("0.0003")
    turn.save()
    return turn


@pytest.fixture
def clean(finished_turn, owner, outsider, ledger_row):
    ledger_row(outsider, at=yesterday_at(3), alias="premium", credits=Decimal("2"))
    ledger_row(owner, at=datetime.now(UTC), credits=Decimal("1"))  # today
    rollup_rebuild()
    return finished_turn


def test_a_clean_ledger_exits_0_with_a_table_and_a_summary(clean):
    code, out = run()

    assert code == 0, out
    for name in (ROLLUPS, COUNTERS, TURN_TOTALS, TRANSCRIPT, UNPRICED, LOST, STUCK):
        assert name in out
    assert "DRIFT" not in out
    assert out.splitlines()[-1].startswith("Clean: 5 ledger rows in all agree")


def test_a_tampered_rollup_is_drift_and_fix_rebuilds_it(clean):
    row = DailyUsageRollup.objects.get(model_alias="premium")
    DailyUsageRollup.objects.filter(pk=row.pk).update(credits=Decimal("1.99"))

    code, out = run()
    assert code == 1
    assert "rollups vs ledger" in out and "DRIFT" in out
    assert "credits" in out  # an example names the figures
    assert "Run with --fix" in out.splitlines()[-1]

    code, out = run("--fix")
    assert code == 0, out
    assert "fixed: rollups" in out
    assert DailyUsageRollup.objects.get(model_alias="premium").credits == Decimal("2")
    assert run()[0] == 0


def test_a_missing_or_extra_rollup_is_drift(clean, owner):
    DailyUsageRollup.objects.filter(model_alias="premium").delete()
    assert check_rollups().drift == 1

    rollup_rebuild()
    DailyUsageRollup.objects.create(day=today(), user=owner, model_alias="qwen")
    assert check_rollups().drift == 1


def test_a_tampered_counter_is_drift_and_fix_rebuilds_it(clean, owner):
    counter = MonthlyUsage.objects.filter(user=owner).order_by("-month").first()
    expected = counter.credits
    MonthlyUsage.objects.filter(pk=counter.pk).update(credits=counter.credits - Decimal("0.0047"))

    code, out = run()
    assert code == 1
    assert check_counters().drift == 1
    assert "monthly counters vs ledger" in out

    code, out = run("--fix")
    assert code == 0, out
    assert MonthlyUsage.objects.get(user=owner, month=counter.month).credits == expected


def test_a_counters_calls_are_those_completed_and_compared(clean, owner, ledger_row):
    """A rebuild counted every ledger row among a month's calls, lost ones and those under
    way too, which the live counter never counts (lost) or counts once they complete (so
    twice): the console's monthly usage showed 5 calls, then 2, for the same month; and
    reconcile compared credits only, so it never said."""
    month = MonthlyUsage.objects.get(user=owner, month=month_of(datetime.now(UTC)))
    live_calls = month.llm_calls
    now = datetime.now(UTC)
    ledger_row(owner, at=now, status="lost", credits=Decimal("0"), provider="")
    pending = ledger_row(owner, at=now, status="pending", credits=Decimal("0"))
    assert MonthlyUsage.objects.get(pk=month.pk).llm_calls == live_calls
    assert check_counters().drift == 0

    counter_months_rebuild(months=[month.month])
    assert MonthlyUsage.objects.get(user=owner, month=month.month).llm_calls == live_calls

    # Completed, the call under way is counted once.
    pending.status = "success"
    usage_call_complete(event=pending)
    assert MonthlyUsage.objects.get(user=owner, month=month.month).llm_calls == live_calls + 1
    assert check_counters().drift == 0

    MonthlyUsage.objects.filter(user=owner, month=month.month).update(llm_calls=99)
    code, out = run()
    assert code == 1
    assert f"calls, counter {plain_amount(month.credits)} credits, 99 calls" in out


def test_a_missing_counter_is_drift(clean, outsider):
    MonthlyUsage.objects.filter(user=outsider).delete()

    assert run()[0] == 1
    assert run("--fix")[0] == 0
    assert MonthlyUsage.objects.filter(user=outsider).exists()


def test_drift_examples_name_users_by_username(clean, outsider):
    DailyUsageRollup.objects.filter(model_alias="premium").update(credits=Decimal("1.99"))
    MonthlyUsage.objects.filter(user=outsider).update(credits=Decimal("0.5"))

    code, out = run()

    assert code == 1
    assert f"{yesterday_at(0).date()} outsider premium: ledger 1 calls, 2 credits" in out
    assert (
        f"outsider {yesterday_at(0):%Y-%m}: ledger 2 credits, 1 call, counter 0.5 credits, 1 call"
        in out
    )
    assert f"user {outsider.pk}" not in out


def test_fix_shows_the_drift_it_found_before_rebuilding_it(clean, outsider):
    """An operator running --fix (from cron, say) learns what had drifted and by how much: the
    check after the rebuild is clean, and alone it would say nothing had been wrong."""
    MonthlyUsage.objects.filter(user=outsider).update(credits=Decimal("0.5"))

    code, out = run("--fix")

    assert code == 0, out  # the rebuild worked: clean now
    assert (
        f"outsider {yesterday_at(0):%Y-%m}: ledger 2 credits, 1 call, counter 0.5 credits, 1 call"
        in out
    )
    before, after = out.split("After --fix:")
    assert "monthly counters vs ledger" in before and "DRIFT" in before
    assert "DRIFT" not in after
    last = out.splitlines()[-1]
    assert last.startswith("Clean after --fix: drift in monthly counters vs ledger rebuilt"), last


def test_verbosity_0_is_quiet_when_clean_and_says_everything_on_drift(clean, outsider):
    """cron's `-v 0`: a clean check prints nothing; drift (found, or rebuilt by --fix) prints
    the whole report, as at the default verbosity."""
    out = StringIO()
    call_command("reconcile_usage", verbosity=0, stdout=out)
    assert out.getvalue() == ""

    MonthlyUsage.objects.filter(user=outsider).update(credits=Decimal("0.5"))
    with pytest.raises(SystemExit) as exited:
        call_command("reconcile_usage", verbosity=0, stdout=out)
    assert exited.value.code == 1
    assert "counter 0.5" in out.getvalue() and out.getvalue().splitlines()[-1].startswith("Drift")

    fixed = StringIO()
    call_command("reconcile_usage", "--fix", verbosity=0, stdout=fixed)
    assert "counter 0.5" in fixed.getvalue() and "Clean after --fix" in fixed.getvalue()

    clean_again = StringIO()
    call_command("reconcile_usage", "--fix", verbosity=0, stdout=clean_again)
    assert clean_again.getvalue() == ""


def test_what_was_checked_counts_the_missing_rows_it_found(clean):
    keys = MonthlyUsage.objects.count()
    rollups = DailyUsageRollup.objects.count()
    MonthlyUsage.objects.all().delete()
    DailyUsageRollup.objects.filter(model_alias="premium").delete()

    counters, rollup_check = check_counters(), check_rollups()

    # Every (user, month) the ledger has was compared, and found missing: checked = drift.
    assert (counters.checked, counters.drift) == (keys, keys)
    assert (rollup_check.checked, rollup_check.drift) == (rollups, 1)
    code, out = run()
    line = next(line for line in out.splitlines() if line.startswith(COUNTERS))
    assert line.split()[-3:-1] == [str(keys), str(keys)]


def test_turn_totals_that_differ_from_their_events_are_rebuilt(clean):
    Turn.objects.filter(pk=clean.pk).update(credits=Decimal("5"), llm_calls=7)

    code, out = run()
    assert code == 1
    assert f"turn {clean.pk}" in out

    assert run("--fix")[0] == 0
    clean.refresh_from_db()
    assert (clean.llm_calls, clean.credits) == (3, Decimal("0.0141"))


def test_a_running_turn_is_not_checked(clean):
    Turn.objects.filter(pk=clean.pk).update(status="running", credits=Decimal("5"))

    totals, transcript = check_turns()
    assert (totals.checked, totals.drift, transcript.drift) == (0, 0, 0)


def test_a_message_without_its_ledger_row_is_drift_fix_cannot_rebuild(clean):
    clean.messages.filter(role="assistant", agent_key="grace").delete()

    code, out = run("--fix")

    assert code == 1
    assert "transcript vs ledger" in out and "not fixable" in out
    assert f"turn {clean.pk}: 1 assistant messages, 2 agent calls" in out
    assert LlmCallEvent.objects.filter(turn=clean).count() == 3  # the ledger is never edited


def test_drift_fix_cannot_rebuild_does_not_send_the_operator_to_fix(clean):
    """The transcript and the ledger are both records: --fix rebuilds neither, so the summary
    must not tell the operator to run it (with or without --fix already given)."""
    clean.messages.filter(role="assistant", agent_key="grace").delete()

    for args in ((), ("--fix",)):
        code, out = run(*args)
        assert code == 1
        last = out.splitlines()[-1]
        assert last.startswith("Drift in transcript vs ledger"), last
        assert "Run with --fix" not in last
        assert "Not fixable by --fix" in last


def test_events_of_a_deleted_turn_are_fine(clean):
    clean.session.delete()  # cascades the turn; its events keep their rows with turn NULL

    assert run()[0] == 0
    assert LlmCallEvent.objects.filter(turn__isnull=True).count() == 5


def test_unpriced_and_lost_calls_are_counted_not_drift(clean, owner, ledger_row):
    ledger_row(owner, at=yesterday_at(5), priced=False, provider_cost_usd=Decimal("0"))
    ledger_row(owner, at=yesterday_at(5), status="lost", credits=Decimal("0"))
    ledger_row(owner, at=yesterday_at(5), status="lost", credits=Decimal("0"), priced=False)
    rollup_rebuild()

    report = reconcile()

    assert report.clean
    # A lost call had no usage to price: lost, not unpriced, whatever its `priced` flag.
    assert (report.check(UNPRICED).drift, report.check(LOST).drift) == (1, 2)
    code, out = run()
    assert code == 0
    assert "(1 unpriced, 2 lost;" in out


def test_turns_stuck_running_are_counted_and_named_with_what_ends_them(
    clean, settings, owner, make_session
):
    """Seven turns of a killed worker stayed `running`, their calls pending, and the run said
    "Clean" with no word of them."""
    stale = datetime.now(UTC) - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 60)
    sessions = [clean.session, make_session(owner, room=clean.session.room)]
    for session, progress in zip(sessions, [stale, datetime.now(UTC)], strict=True):
        Turn.objects.create(  # a dead one, a live one
            session=session,
            turn_index=session.turns.count() + 1,
            mode="roundtable",
            user_input="hi",
            status="running",
            progress_at=progress,
        )

    code, out = run()

    assert code == 0, out
    assert (reconcile().check(STUCK).checked, reconcile().check(STUCK).drift) == (2, 1)
    assert out.splitlines()[-1].startswith("Clean: 5 ledger rows in all agree")
    assert (
        "(0 unpriced, 0 lost, 1 turn(s) stuck running past the stale limit: recover_turns "
        "ends them;" in out
    )

    # Cron's -v 0 said nothing of them: the one line, though nothing drifted (exit 0).
    quiet = StringIO()
    call_command("reconcile_usage", verbosity=0, stdout=quiet)
    (line,) = quiet.getvalue().splitlines()
    assert line.startswith("Clean: 5 ledger rows in all agree")
    assert "1 turn(s) stuck running past the stale limit: recover_turns ends them;" in line


@pytest.fixture
def before_the_nightly_run(clean, owner, ledger_row):
    """A morning before the nightly rollup_usage: the last one ran the night before yesterday,
    so the rollups hold the days before yesterday (a call 3 days back among them), and
    yesterday's calls are in the ledger only."""
    yesterday = today() - timedelta(days=1)
    ledger_row(owner, at=yesterday_at(9) - timedelta(days=2), credits=Decimal("3"))
    rollup_rebuild()
    DailyUsageRollup.objects.filter(day__gte=yesterday).delete()
    RollupCoverage.objects.filter(pk=1).update(until=yesterday)
    return yesterday


def test_days_the_rollups_do_not_hold_yet_are_said_not_drift(before_the_nightly_run):
    """Run in the morning, before the nightly rollup_usage, it reported yesterday's calls as
    drift ("ledger 3 calls, rollup nothing", exit 1, "Run with --fix"): the rollups record
    how far they reach, and yesterday is after it."""
    yesterday = before_the_nightly_run

    code, out = run()

    assert code == 0, out
    assert "DRIFT" not in out
    lines = out.splitlines()
    at = next(index for index, line in enumerate(lines) if line.startswith(ROLLUPS))
    assert lines[at].split()[-3:] == ["1", "0", "ok"]  # the day 3 back
    assert lines[at + 1] == (
        f"    not compared: {yesterday} not rolled up yet (the next rollup_usage rolls them up)"
    )
    assert lines[-1].startswith("Clean: 6 ledger rows in all agree")
    assert "(0 unpriced, 0 lost, 1 day not rolled up yet;" in lines[-1]

    # With -v 0 (cron) a clean check says nothing: the days not rolled up are no news.
    quiet = StringIO()
    call_command("reconcile_usage", verbosity=0, stdout=quiet)
    assert quiet.getvalue() == ""


def test_a_fix_rebuilds_the_days_the_rollups_hold_and_leaves_the_others_to_rollup_usage(
    before_the_nightly_run,
):
    yesterday = before_the_nightly_run
    DailyUsageRollup.objects.update(credits=Decimal("1.99"))

    code, out = run("--fix", "--dry-run")
    assert code == 1
    assert "  would rebuild rollups: 1 daily row (1 replaced) of 1 day\n" in out

    code, out = run("--fix")
    assert code == 0, out
    assert "  fixed: rollups: rebuilt 1 daily row (1 replaced) of 1 day\n" in out
    after = out.split("After --fix:")[1]
    assert f"not compared: {yesterday} not rolled up yet" in after
    assert DailyUsageRollup.objects.get().credits == Decimal("3")
    assert rollups_cover_until() == yesterday  # rolling yesterday up is the nightly run's work


def test_a_rollup_for_a_day_the_rollups_do_not_hold_is_drift(before_the_nightly_run, owner):
    yesterday = before_the_nightly_run
    DailyUsageRollup.objects.create(day=yesterday, user=owner, model_alias="qwen", llm_calls=3)

    assert run()[0] == 1
    assert run("--fix")[0] == 0
    assert not DailyUsageRollup.objects.filter(day=yesterday).exists()


def test_rollups_no_rollup_usage_has_vouched_for_are_not_compared(clean):
    """Migrated to the record of the rollups' reach, before the first rollup_usage: the pages
    read the ledger, and that run replaces every rollup."""
    RollupCoverage.objects.all().delete()
    DailyUsageRollup.objects.update(credits=Decimal("1.99"))

    code, out = run()

    assert code == 0, out
    assert (
        "    not compared: no day is rolled up yet (rollup_usage has not run); the billing "
        "pages read the ledger\n" in out
    )
    assert "0 lost, no day rolled up yet;" in out.splitlines()[-1]


def test_since_limits_what_is_checked(clean, owner):
    old = datetime.now(UTC) - timedelta(days=90)
    LlmCallEvent.objects.create(
        user=owner, model_alias="llama", purpose="agent", status="success", created_at=old
    )  # no rollup, no counter for that month: drift, but before --since

    assert run()[0] == 1
    assert run("--since", str(today() - timedelta(days=1)))[0] == 0


def test_a_since_in_the_future_is_refused(clean):
    tomorrow = today() + timedelta(days=1)

    with pytest.raises(CommandError, match=f"--since {tomorrow} is in the future") as refused:
        run("--since", str(tomorrow))
    assert refused.value.returncode == 2  # not 1, which says drift

    assert run("--since", str(today()))[0] == 0  # today's rows are there to check


def test_dry_run_without_fix_is_refused(clean):
    with pytest.raises(CommandError, match="give both") as refused:
        run("--dry-run")
    assert refused.value.returncode == 2


def test_fix_dry_run_says_what_it_would_rebuild_and_writes_nothing(clean):
    DailyUsageRollup.objects.all().delete()
    MonthlyUsage.objects.all().delete()

    code, out = run("--fix", "--dry-run")

    assert code == 1
    assert "would rebuild rollups" in out and "would rebuild monthly counters" in out
    assert not DailyUsageRollup.objects.exists()
    assert not MonthlyUsage.objects.exists()


def test_fix_dry_run_gives_the_counts_the_fix_then_rebuilds(clean):
    """It said "would rebuild rollups" and "would rebuild monthly counters" and no more,
    although it had counted them; the operations tester's catch."""
    rollups, counters = DailyUsageRollup.objects.count(), MonthlyUsage.objects.count()
    months = counted(MonthlyUsage.objects.values("month").distinct().count(), "month")
    assert DailyUsageRollup.objects.values("day").distinct().count() == 1  # the drifted day
    DailyUsageRollup.objects.filter(model_alias="premium").delete()
    MonthlyUsage.objects.all().delete()
    Turn.objects.filter(pk=clean.pk).update(credits=Decimal("5"))

    code, out = run("--fix", "--dry-run")

    assert code == 1
    rebuilt_rollups = f"{rollups} daily rows ({rollups - 1} replaced) of 1 day"
    rebuilt_counters = f"{counted(counters, 'counter')} (0 replaced) of {months}"
    assert f"  would rebuild rollups: {rebuilt_rollups}\n" in out
    assert f"  would rebuild monthly counters: {rebuilt_counters}\n" in out
    assert "  would rebuild turn totals: 1 turn\n" in out
    code, out = run("--fix")
    assert code == 0, out
    assert f"  fixed: rollups: {'rebuilt ' + rebuilt_rollups}\n" in out
    assert f"  fixed: monthly counters: rebuilt {rebuilt_counters}\n" in out
    assert "  fixed: turn totals: rebuilt 1 turn\n" in out


def test_a_fix_rebuilds_only_the_days_and_months_that_drifted(clean, owner, ledger_row):
    """Three rollups and two counters off rebuilt every rollup and counter of the year (48,358
    and 2,401 at 700,000 ledger rows: 11.5 s, over the 10 s a command has), and checked
    everything twice."""
    for days_back in (40, 70, 100):
        ledger_row(owner, at=yesterday_at(9) - timedelta(days=days_back))
    rollup_rebuild()
    kept = {
        "rollups": dict(DailyUsageRollup.objects.values_list("pk", "updated_at")),
        "counters": dict(MonthlyUsage.objects.values_list("pk", "updated_at")),
    }
    drifted_day = (yesterday_at(9) - timedelta(days=70)).date()
    drifted_month = MonthlyUsage.objects.filter(user=owner).order_by("month").first()
    DailyUsageRollup.objects.filter(day=drifted_day).update(credits=Decimal("9"))
    MonthlyUsage.objects.filter(pk=drifted_month.pk).update(credits=Decimal("9"))

    code, out = run("--fix")

    assert code == 0, out
    assert "  fixed: rollups: rebuilt 1 daily row (1 replaced) of 1 day\n" in out
    assert "  fixed: monthly counters: rebuilt 1 counter (1 replaced) of 1 month\n" in out
    untouched = {
        "rollups": dict(
            DailyUsageRollup.objects.exclude(day=drifted_day).values_list("pk", "updated_at")
        ),
        "counters": dict(
            MonthlyUsage.objects.exclude(month=drifted_month.month).values_list("pk", "updated_at")
        ),
    }
    for kind, rows in untouched.items():
        assert rows and rows.items() <= kept[kind].items(), kind
    assert run()[0] == 0


def test_a_fix_checks_again_what_it_rebuilt_only(clean, monkeypatch):
    """The check after the rebuild went over the turns and their transcript again too (half
    of the command's time), which no rollup rebuild changes."""
    from usage import reconcile as reconciliation

    passes = []
    check_turns_once = reconciliation.check_turns
    monkeypatch.setattr(
        reconciliation, "check_turns", lambda **kw: passes.append(kw) or check_turns_once(**kw)
    )
    DailyUsageRollup.objects.filter(model_alias="premium").update(credits=Decimal("9"))

    code, out = run("--fix")

    assert code == 0, out
    assert len(passes) == 1
    after = out.split("After --fix:")[1]
    assert f"{TURN_TOTALS:<28} {1:>10,} {0:>8,}  ok" in after  # as the first check found it
    assert run()[0] == 0


@pytest.fixture
def another_fix_first(monkeypatch):
    """Another --fix run at the same time rebuilds the turn totals between this run's check
    and its rebuild (its rebuild committed first)."""
    from usage import reconcile as reconciliation

    rebuild = reconciliation.turn_totals_rebuild

    def after_the_other_run(**kwargs):
        rebuild(**kwargs)  # the other run's
        return rebuild(**kwargs)

    monkeypatch.setattr(reconciliation, "turn_totals_rebuild", after_the_other_run)


def test_a_fix_that_finds_the_drift_gone_by_its_rebuild_does_not_claim_it(clean, another_fix_first):
    """Two --fix runs at once on one drift: the second found it, then rebuilt nothing (the
    first had), and said "fixed: turn totals: 0 turns rebuilt" then "Clean after --fix: drift
    in turn totals vs ledger rebuilt"; the operations tester's catch."""
    Turn.objects.filter(pk=clean.pk).update(credits=Decimal("5"))

    code, out = run("--fix")

    assert code == 0, out
    assert "  fixed: turn totals: rebuilt 0 turns\n" in out
    assert out.splitlines()[-1].startswith(
        "Clean after --fix: drift in turn totals vs ledger gone by the time of its rebuild, "
        "nothing rebuilt (fixed meanwhile, as by another --fix); 5 ledger rows in all agree"
    )


def test_a_fix_says_which_drift_it_rebuilt_and_which_it_found_gone(clean, another_fix_first):
    Turn.objects.filter(pk=clean.pk).update(credits=Decimal("5"))
    MonthlyUsage.objects.all().delete()

    last = run("--fix")[1].splitlines()[-1]

    assert last.startswith(
        "Clean after --fix: drift in monthly counters vs ledger rebuilt; drift in turn totals "
        "vs ledger gone by the time of its rebuild"
    ), last


def test_a_fix_whose_counters_another_fix_rebuilt_first_rewrites_and_claims_nothing(
    clean, monkeypatch
):
    """Two --fix runs at once on drifted counters (a month-end close, cron and an operator):
    both found the drift, the second waited for the first's lock, then deleted and wrote the
    month's counters again and said "fixed: monthly counters: rebuilt 2 counters (2 replaced)"
    and "drift in monthly counters vs ledger rebuilt", as the turn totals no longer do. It now
    compares them with the ledger under the lock, and rebuilds only a month that still
    disagrees."""
    from usage import reconcile as reconciliation

    rebuild = reconciliation.counter_months_rebuild
    rewritten = []

    def after_the_other_run(**kwargs):
        rebuild(**kwargs)  # the other run's, committed first
        rewritten.extend(MonthlyUsage.objects.values_list("pk", flat=True))
        return rebuild(**kwargs)

    monkeypatch.setattr(reconciliation, "counter_months_rebuild", after_the_other_run)
    MonthlyUsage.objects.update(credits=Decimal("5"))

    code, out = run("--fix")

    assert code == 0, out
    assert "  fixed: monthly counters: rebuilt 0 counters (0 replaced) of " in out, out
    assert out.splitlines()[-1].startswith(
        "Clean after --fix: drift in monthly counters vs ledger gone by the time of its "
        "rebuild, nothing rebuilt (fixed meanwhile, as by another --fix)"
    ), out
    # The other run's counters stay as it wrote them: not deleted and written again.
    assert sorted(MonthlyUsage.objects.values_list("pk", flat=True)) == sorted(rewritten)
    assert run()[0] == 0


def test_a_fix_whose_rollups_another_fix_rebuilt_first_rewrites_and_claims_nothing(
    clean, monkeypatch
):
    """The same for the daily rollups: the second run deleted and wrote again the days the
    first had rebuilt, and said it had rebuilt their drift."""
    from usage import reconcile as reconciliation

    rebuild = reconciliation.rollup_days_rebuild
    rewritten = []

    def after_the_other_run(**kwargs):
        rebuild(**kwargs)  # the other run's, committed first
        rewritten.extend(DailyUsageRollup.objects.values_list("pk", flat=True))
        return rebuild(**kwargs)

    monkeypatch.setattr(reconciliation, "rollup_days_rebuild", after_the_other_run)
    DailyUsageRollup.objects.update(credits=Decimal("9"))

    code, out = run("--fix")

    assert code == 0, out
    assert "  fixed: rollups: rebuilt 0 daily rows (0 replaced) of 1 day\n" in out, out
    assert out.splitlines()[-1].startswith(
        "Clean after --fix: drift in rollups vs ledger gone by the time of its rebuild, "
        "nothing rebuilt (fixed meanwhile, as by another --fix)"
    ), out
    assert sorted(DailyUsageRollup.objects.values_list("pk", flat=True)) == sorted(rewritten)
    assert run()[0] == 0


def test_a_fix_rebuilds_the_month_that_still_drifts_and_leaves_the_one_that_agrees(
    owner, outsider, ledger_row
):
    last_month = month_of(month_start_of_last_month())
    ledger_row(owner, at=datetime.combine(last_month, datetime.min.time(), UTC))
    ledger_row(outsider, at=datetime.now(UTC), credits=Decimal("1"))
    kept = MonthlyUsage.objects.get(month=last_month)
    MonthlyUsage.objects.filter(user=outsider).update(credits=Decimal("3"))

    result = counter_months_rebuild(months=[last_month, month_of()])

    assert (result.rows_removed, result.rows_written) == (1, 1)
    assert MonthlyUsage.objects.get(month=last_month).pk == kept.pk
    assert MonthlyUsage.objects.get(user=outsider).credits == Decimal("1")


def month_start_of_last_month() -> datetime:
    return datetime.combine(month_of(), datetime.min.time(), UTC) - timedelta(days=1)


# --- turns the real engine wrote ----------------------------------------------------------------


def test_turns_written_by_the_engine_agree_with_the_ledger(
    owner, owner_client, make_agent, make_room, make_session, fake_gateway, post_turn
):
    agents = [make_agent(owner, key) for key in ("ada", "grace", "linus")]
    roundtable = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ROUNDTABLE))
    orchestrated = make_session(owner, room=make_room(owner, agents, mode=RoomMode.ORCHESTRATOR))
    fake_gateway.routing_reply = '{"selected_agent_keys": ["grace"]}'
    for index in range(8):  # the eighth summarizes
        fake_gateway.fail = {"linus": "provider_error"} if index % 3 == 0 else {}
        assert post_turn(owner_client, roundtable, f"round {index}").status_code == 201
        assert post_turn(owner_client, orchestrated, f"route {index}").status_code == 201

    totals, transcript = check_turns()

    assert totals.checked == 16
    assert (totals.drift, transcript.drift) == (0, 0), totals.examples + transcript.examples
    assert LlmCallEvent.objects.filter(purpose="summary").count() == 2
    assert LlmCallEvent.objects.filter(purpose="routing").count() == 8


def test_a_turn_whose_worker_died_is_not_drift_once_recovered(
    owner, owner_client, make_agent, make_session, fake_gateway, post_turn
):
    """A crash mid-call leaves a lost agent call and no message: that is the truth, not a
    gap; the counter and the turn's totals still agree with the ledger."""
    session = make_session(owner, agent=make_agent(owner, "ada"))
    assert post_turn(owner_client, session, "fine").status_code == 201

    def crash(call):
        raise RuntimeError("the worker dies")

    fake_gateway.during_call = crash
    owner_client.raise_request_exception = False
    assert post_turn(owner_client, session, "doomed").status_code == 500

    assert LlmCallEvent.objects.filter(status="lost").count() == 1
    code, output = run()
    assert code == 0, output
    assert check_counters().drift == 0


def test_a_check_that_could_not_run_is_not_reported_as_drift(clean, monkeypatch):
    """Exit 1 means drift (cron may page for it, or run --fix); a database that cannot be read
    exited 1 too, with a traceback. It is exit 3 now, with one line saying why."""
    from django.db import OperationalError

    import usage.management.commands.reconcile_usage as command

    def unreachable(**kwargs):
        raise OperationalError('connection to server at "127.0.0.1", port 5999 failed')

    monkeypatch.setattr(command, "reconcile", unreachable)

    with pytest.raises(CommandError, match="could not check: connection to server") as failed:
        run()
    assert failed.value.returncode == 3


def test_a_fix_on_a_database_that_refuses_writes_is_exit_3_saying_so(clean, outsider):
    """A standby after a failover: the check reads, the rebuild is refused. It said "could not
    check", of a check that had run and found the drift; the operations tester's catch."""
    from django.db import connection, transaction

    MonthlyUsage.objects.filter(user=outsider).update(credits=Decimal("0.5"))
    # Read-only until the savepoint is rolled back: the test's teardown checks its deferred
    # constraints, which takes locks a read-only transaction may not.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
        with pytest.raises(CommandError) as failed:
            run("--fix")
        transaction.set_rollback(True)

    assert failed.value.returncode == 3
    assert str(failed.value).startswith("could not check and rebuild (--fix): cannot execute ")
    assert str(failed.value).endswith(" in a read-only transaction")


def test_a_connection_ended_mid_check_is_said_in_its_first_line_only(clean, monkeypatch):
    """PostgreSQL's message goes on with the statement it broke (`LINE 4: ...` and a caret):
    the exit 3 line carried a piece of SQL."""
    from django.db import OperationalError

    import usage.management.commands.reconcile_usage as command

    def terminated(**kwargs):
        raise OperationalError(
            "terminating connection due to administrator command\n"
            'LINE 4: ...AS "lost" FROM "usage_llmcallevent" WHERE "usage_llmcallevent"...\n'
            "                                                             ^"
        )

    monkeypatch.setattr(command, "reconcile", terminated)

    with pytest.raises(CommandError) as failed:
        run()
    assert str(failed.value) == (
        "could not check: terminating connection due to administrator command"
    )
    assert failed.value.returncode == 3


def test_a_month_of_lost_calls_alone_is_no_counter_drift(clean, django_user_model):
    """A user whose month holds only calls marked lost (a first turn recovered, or cancelled,
    while its call ran) has 0 credits in the ledger and no counter row (a lost row moves none):
    reconcile reported "ledger 0 credits, counter nothing" as drift, and exited 1."""
    newcomer = django_user_model.objects.create_user("newcomer")
    LlmCallEvent.objects.create(
        user=newcomer,
        model_alias="deepseek",
        purpose="agent",
        status="lost",
        input_tokens_fresh=120,
        total_tokens=120,
        credits=Decimal("0"),
    )
    assert not MonthlyUsage.objects.filter(user=newcomer).exists()

    assert reconcile().check(COUNTERS).drift == 0
    code, out = run()
    assert code == 0, out


# --- --format json ------------------------------------------------------------------------------


def run_json(*args) -> tuple[int, dict]:
    """(exit code, the object printed) of reconcile_usage --format json."""
    code, out = run("--format", "json", *args)
    return code, json.loads(out)


def test_json_gives_every_check_of_a_clean_ledger_and_exit_0(clean):
    code, document = run_json()

    assert code == 0
    assert document["clean"] is True and document["fix"] is False
    assert [check["name"] for check in document["checks"]] == [
        check.name for check in reconcile().checks
    ]
    assert all(check["drift_found"] is False for check in document["checks"])
    assert all(check["fix"] is None for check in document["checks"])
    assert document["ledger_rows"] == 5
    assert document["summary"].startswith("Clean: 5 ledger rows in all agree")


def test_json_says_the_drift_found_and_what_fix_rebuilt_with_the_text_exit_codes(clean, owner):
    counter = MonthlyUsage.objects.filter(user=owner).order_by("-month").first()
    MonthlyUsage.objects.filter(pk=counter.pk).update(credits=counter.credits - Decimal("1"))
    DailyUsageRollup.objects.filter(model_alias="premium").update(credits=Decimal("1.99"))

    code, found = run_json()
    assert code == 1 and found["clean"] is False
    checks = {check["name"]: check for check in found["checks"]}
    assert checks[COUNTERS]["drift"] == 1 and checks[COUNTERS]["drift_found"] is True
    assert checks[COUNTERS]["state"] == "DRIFT" and checks[COUNTERS]["fixable"] is True
    assert "owner" in checks[COUNTERS]["examples"][0]  # examples name users, as in the text
    assert checks[ROLLUPS]["drift"] == 1 and checks[TURN_TOTALS]["drift_found"] is False
    assert checks[COUNTERS]["fix"] is None
    assert "Run with --fix" in found["summary"]

    code, fixed = run_json("--fix")
    assert code == 0 and fixed["clean"] is True and fixed["fix"] is True
    checks = {check["name"]: check for check in fixed["checks"]}
    assert checks[COUNTERS]["drift"] == 1  # as found, before the rebuild
    rebuilt = checks[COUNTERS]["fix"]
    assert rebuilt["rebuilt"].endswith(" replaced) of 1 month") and rebuilt["changed"] >= 2
    assert rebuilt["said"] == f"monthly counters: rebuilt {rebuilt['rebuilt']}"
    assert rebuilt["after"]["drift"] == 0 and rebuilt["after"]["state"] == "ok"
    assert checks[ROLLUPS]["fix"]["after"]["drift_found"] is False
    assert checks[TURN_TOTALS]["fix"] is None  # nothing drifted there
    assert fixed["summary"].startswith("Clean after --fix: drift in rollups vs ledger, monthly")
    assert run_json()[0] == 0


def test_json_of_a_dry_run_says_what_would_be_rebuilt_and_writes_nothing(clean):
    MonthlyUsage.objects.all().delete()

    code, document = run_json("--fix", "--dry-run")

    assert code == 1 and document["dry_run"] is True
    fix = next(check["fix"] for check in document["checks"] if check["name"] == COUNTERS)
    assert fix["dry_run"] is True and fix["after"] is None and fix["changed"] is None
    assert fix["said"].startswith("would rebuild monthly counters: ")
    assert not MonthlyUsage.objects.exists()


def test_json_says_drift_fix_cannot_rebuild_is_not_fixable_and_exits_1(clean):
    clean.messages.filter(role="assistant", agent_key="grace").delete()

    code, document = run_json("--fix")

    assert code == 1
    transcript = next(check for check in document["checks"] if check["name"] == TRANSCRIPT)
    assert transcript["state"] == "DRIFT (not fixable)" and transcript["fixable"] is False
    assert transcript["fix"] is None
    assert "Not fixable by --fix" in document["summary"]


def test_json_is_printed_whatever_v_and_the_text_is_unchanged(clean):
    quiet = StringIO()
    call_command("reconcile_usage", "--format", "json", verbosity=0, stdout=quiet)
    assert json.loads(quiet.getvalue())["clean"] is True

    code, text = run()
    assert code == 0 and not text.lstrip().startswith("{")
    assert text.splitlines()[0] == f"{'check':<28} {'checked':>10} {'drift':>8}  state"
