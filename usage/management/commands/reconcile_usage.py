import json
import sys
import time
from datetime import date

from django.core.management.base import CommandError
from django.db import DatabaseError

from pantheon.commands import ProjectCommand, add_since_argument, database_failed
from pantheon.figures import counted
from usage.reconcile import CheckResult, Report, reconcile
from usage.rollups import database_today


class Command(ProjectCommand):
    # A nightly job: skip the system checks (they import every URLconf and the LLM stack).
    requires_system_checks = []
    requires_migrated_database = True  # pantheon.commands.ProjectCommand
    help = (
        "Compare what derives from the ledger (daily rollups, monthly counters, turn totals) "
        "and the transcript with the ledger; exit 0 when all agree, exit 1 on any drift, 2 on a "
        "usage error, 3 when the database could not be read. The rollups are compared for the "
        "days they record they hold (to the last rollup_usage); past days after those are "
        "said to be not rolled up yet, which is not drift (days go by the database's clock, "
        "which stamps the ledger, not this host's). --fix rebuilds what drifted from "
        "the ledger (never the ledger itself): the days of rollups (of the days they hold), the "
        "months of counters, the turns, and checks them again. With -v 0 it prints nothing "
        "unless something drifted or turns are stuck running past the stale limit (one line). "
        "--format json prints the same verdicts as one JSON object, whatever -v: per check its "
        "name, what it checked, the drift found and its examples, and what --fix rebuilt of it "
        "and the check after; exit codes as in text."
    )

    def add_arguments(self, parser):
        add_since_argument(parser, does="check")
        parser.add_argument("--fix", action="store_true", help="rebuild what drifted")
        parser.add_argument(
            "--dry-run", action="store_true", help="with --fix: say what would be rebuilt"
        )
        parser.add_argument(
            "--format",
            choices=["text", "json"],
            default="text",
            help="text (default: a table and a summary line) or json (one object, for scripts)",
        )

    def handle(
        self,
        *args,
        since: date | None = None,
        fix=False,
        dry_run=False,
        verbosity=1,
        format="text",
        **options,
    ):
        # A call that cannot be carried out exits 2, as the parser's own errors do: 1 is drift.
        # Today by the database's clock, which stamps the ledger: read once, for the whole run.
        day = database_today()
        if since is not None and since > day:
            # Nothing would be checked, and "Clean" would say the opposite of what happened.
            raise CommandError(
                f"--since {since} is in the future: there is nothing to check yet "
                f"(today is {day} UTC, by the database's clock).",
                returncode=2,
            )
        if dry_run and not fix:
            raise CommandError("--dry-run says what --fix would rebuild: give both.", returncode=2)
        started = time.monotonic()
        try:
            report = reconcile(since=since, fix=fix, dry_run=dry_run, today_is=day)
        except DatabaseError as exc:
            # Not drift (exit 1, which may page someone or prompt a --fix): nothing was checked.
            doing = "check and rebuild (--fix)" if fix and not dry_run else "check"
            raise database_failed(exc, saying=f"could not {doing}") from exc
        if format == "json":
            seconds = time.monotonic() - started
            document = report_json(report, fix=fix, dry_run=dry_run, seconds=seconds)
            self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False))
            if not report.clean:
                sys.exit(1)
            return
        if verbosity == 0 and report.clean and report.before is None:
            # Cron's -v 0: nothing drifted, nothing to say, but for turns stuck running (not
            # drift, but an operator's to end), in the one line.
            if report.check("turns stuck running").drift:
                self.stdout.write(summary_line(report, seconds=time.monotonic() - started))
            return
        if report.before is not None:
            # What was found comes first: the check after the rebuild alone would hide it.
            self.stdout.write(render_table(report.before))
            for line in report.fixed:
                self.stdout.write(f"  fixed: {line}")
            self.stdout.write("After --fix:")
            self.stdout.write(render_table(report))
        else:
            self.stdout.write(render_table(report))
            for line in report.fixed:
                self.stdout.write(f"  {line}")  # --dry-run: what it would rebuild
        self.stdout.write(summary_line(report, seconds=time.monotonic() - started))
        if not report.clean:
            sys.exit(1)


def state_of(check: CheckResult) -> str:
    """The table's state column: ok, info, DRIFT or DRIFT (not fixable)."""
    if check.informational:
        return "info"
    if check.clean:
        return "ok"
    return "DRIFT" if check.fixable else "DRIFT (not fixable)"


def render_table(report: Report) -> str:
    lines = [f"{'check':<28} {'checked':>10} {'drift':>8}  state"]
    for check in report.checks:
        state = state_of(check)
        lines.append(f"{check.name:<28} {check.checked:>10,} {check.drift:>8,}  {state}")
        lines.extend(f"    e.g. {example}" for example in check.examples)
        if check.note:
            lines.append(f"    {check.note}")
    return "\n".join(lines)


def what_the_fix_did(report: Report) -> str:
    """What drifted and what --fix rebuilt of it: a drift gone when its rebuild came to it
    (another --fix at the same time got there first) was not rebuilt by this one."""
    found = [check.name for check in report.before.checks if not check.clean]
    rebuilt = {rebuild.check for rebuild in report.fixed if rebuild.changed}
    said = []
    if done := [name for name in found if name in rebuilt]:
        said.append(f"drift in {', '.join(done)} rebuilt")
    if gone := [name for name in found if name not in rebuilt]:
        said.append(
            f"drift in {', '.join(gone)} gone by the time of its rebuild, nothing rebuilt "
            "(fixed meanwhile, as by another --fix)"
        )
    return "; ".join(said)


def summary_line(report: Report, *, seconds: float) -> str:
    since = f"since {report.since}" if report.since else "in all"
    unpriced = report.check("unpriced calls").drift
    lost = report.check("lost calls").drift
    notes = f"{unpriced:,} unpriced, {lost:,} lost"
    if stuck := report.check("turns stuck running").drift:
        # Not drift (their totals settle when they end), but what an operator should act on.
        notes += f", {stuck:,} turn(s) stuck running past the stale limit: recover_turns ends them"
    if report.rollups is not None and report.rollups.end is None:
        notes += ", no day rolled up yet"
    elif report.rollups is not None and (days := report.rollups.pending_days):
        # Not drift: yesterday, before the nightly rollup_usage.
        notes += f", {counted(days, 'day')} not rolled up yet"
    if report.clean:
        rows = f"{report.ledger_rows:,} ledger rows {since}"
        agree = f"{rows} agree with what derives from them ({notes}; {seconds:.1f} s)."
        if report.before is not None:
            return f"Clean after --fix: {what_the_fix_did(report)}; {agree}"
        return f"Clean: {agree}"
    drifted = [check.name for check in report.checks if not check.clean]
    fixable = [check for check in report.checks if not check.clean and check.fixable]
    if fixable and not report.fixed and report.before is None:
        hint = " Run with --fix to rebuild from the ledger."
    elif not fixable:
        # Both sides are records (the transcript and the ledger): look into it, --fix cannot.
        hint = " Not fixable by --fix: both sides are records."
    else:
        hint = ""
    return f"Drift in {', '.join(drifted)} ({notes}; {seconds:.1f} s).{hint}"


def _check_json(check: CheckResult) -> dict:
    return {
        "checked": check.checked,
        "drift": check.drift,
        "drift_found": not check.clean,
        "state": state_of(check),
        "examples": check.examples,
        "note": check.note or None,
    }


def report_json(report: Report, *, fix: bool, dry_run: bool, seconds: float) -> dict:
    """The verdicts of the text output as one object. Each check as first found (with --fix,
    the check before the rebuild: the text's first table), and `fix`: what --fix rebuilt of it
    (`rebuilt`, how many rows or turns it `changed`: 0 when another --fix got there first) and
    the check after (`after`), or, with --dry-run, what it would rebuild (`after` null); null
    for a check --fix had nothing to rebuild in. `clean` is the verdict the exit code gives."""
    found = report.before or report
    rebuilds = {rebuild.check: rebuild for rebuild in report.fixed}
    checks = []
    for check in found.checks:
        rebuild = rebuilds.get(check.name)
        done = None
        if rebuild is not None:
            after = None if rebuild.dry_run else report.check(check.name)
            done = {
                "dry_run": rebuild.dry_run,
                "said": str(rebuild),
                "rebuilt": rebuild.counted,
                "changed": None if rebuild.dry_run else rebuild.changed,
                "after": None if after is None else _check_json(after),
            }
        checks.append(
            {
                "name": check.name,
                "fixable": check.fixable and not check.informational,
                "informational": check.informational,
                **_check_json(check),
                "fix": done,
            }
        )
    pending = report.rollups.pending if report.rollups is not None else None
    return {
        "since": None if report.since is None else report.since.isoformat(),
        "fix": fix,
        "dry_run": dry_run,
        "clean": report.clean,
        "ledger_rows": report.ledger_rows,
        "rollups_not_rolled_up": (
            None
            if pending is None
            else {"from": pending[0].isoformat(), "to": pending[1].isoformat()}
        ),
        "checks": checks,
        "summary": summary_line(report, seconds=seconds),
    }
