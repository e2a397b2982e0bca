import time
from datetime import date

from django.core.management.base import CommandError

from pantheon.commands import ProjectCommand, add_since_argument
from usage.rollups import database_today, rollup_rebuild


class Command(ProjectCommand):
    # A nightly job: skip the system checks (they import every URLconf and the LLM stack).
    requires_system_checks = []
    help = (
        "Recompute the daily usage rollups (per UTC day, user and model alias) from the ledger "
        "for whole days up to yesterday, by the database's clock (the one that stamps the "
        "ledger, whatever this host's clock says), stopping before a day with calls still in "
        "flight (opened within PANTHEON_TURN_STALE_SECONDS: a call running at midnight); "
        "idempotent. "
        "The billing dashboard reads them. Prints "
        "one line (with -v 0, only a --dry-run's count); exit 0 when done, exit 2 on a usage "
        "error (a bad or future --since), 3 when the database fails."
    )

    def add_arguments(self, parser):
        add_since_argument(parser, does="rebuild")
        parser.add_argument("--dry-run", action="store_true", help="count, write nothing")

    def handle(
        self, *args, since: date | None = None, dry_run: bool = False, verbosity=1, **options
    ):
        # Today by the database's clock, which stamps the ledger: read once, for the whole run.
        day = database_today()
        if since is not None and since > day:
            raise CommandError(
                f"--since {since} is in the future: rollups cover whole days up to yesterday "
                f"(today is {day} UTC, by the database's clock).",
                returncode=2,  # a usage error, as the parser's own
            )
        started = time.monotonic()
        result = rollup_rebuild(since=since, dry_run=dry_run, today_is=day)
        if verbosity == 0 and not dry_run:
            return  # cron's -v 0: a nightly run that worked says nothing
        span = f"{result.since or 'the first call'} to {result.until} (exclusive)"
        verb = "Would roll up" if dry_run else "Rolled up"
        self.stdout.write(
            f"{verb} {result.calls:,} calls into {result.rows_written:,} daily rows "
            f"({result.rows_removed:,} replaced) from {span} "
            f"in {time.monotonic() - started:.1f} s."
        )
        if result.asked_since is not None:
            began = (
                f"at their end, {result.since}"
                if result.since is not None
                else "at the first call (no rollup had been made)"
            )
            self.stdout.write(
                f"Begun {began}, not at --since {result.asked_since}: the rollups leave out no "
                "day in between."
            )
        if result.held_back is not None:
            self.stdout.write(
                f"Stopped before {result.held_back}: its calls still in flight (pending, or lost "
                "and awaiting their provider's late answer) may change its figures; the pages "
                "read it from the ledger, and the next run rolls it up once they settle."
            )
