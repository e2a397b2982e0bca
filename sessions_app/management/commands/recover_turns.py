from django.conf import settings
from django.core.management.base import CommandError

from pantheon.checks import longest_llm_call_seconds, outlasts_a_call
from pantheon.commands import ProjectCommand, age_in
from sessions_app.services import turns_interrupt, turns_stale


class Command(ProjectCommand):
    @property
    def help(self) -> str:
        # The stale limit in force, read when the help is asked for.
        return (
            "Mark running turns that made no progress for --older-than seconds (default "
            f"PANTHEON_TURN_STALE_SECONDS, here {settings.PANTHEON_TURN_STALE_SECONDS:g}) "
            "interrupted, and their calls in flight lost: in doubt, the provider may have "
            "billed them. Finished steps and their ledger rows are kept. Lists the turns it "
            "interrupted and a one-line summary; with -v 0 nothing unless it interrupted one (a "
            "--dry-run always answers). Exit 0 when done, 2 on a usage error (a malformed "
            "--older-than), 3 when the database fails."
        )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=age_in("seconds"),
            default=None,
            metavar="SECONDS",
            help=(
                "how long a running turn has made no progress (default: the stale limit, "
                "PANTHEON_TURN_STALE_SECONDS); shorter than one LLM call can take, it also "
                "interrupts live turns waiting on their provider (a warning says so)"
            ),
        )
        parser.add_argument("--dry-run", action="store_true", help="list, change nothing")

    def handle(self, *args, older_than=None, dry_run=False, verbosity=1, **options):
        seconds = settings.PANTHEON_TURN_STALE_SECONDS if older_than is None else older_than
        if seconds < 0:  # call_command(older_than=-1) skips the parser's check
            raise CommandError("--older-than cannot be negative")
        if not outlasts_a_call(seconds):
            longest = longest_llm_call_seconds()
            # Allowed (all workers known dead: free their sessions now), but never by mistake.
            self.stderr.write(
                f"Warning: --older-than {seconds:g} is not longer than one LLM call can take "
                f"({longest:.0f} s: PANTHEON_LLM_TIMEOUT_SECONDS on every retry, the backoff "
                "and the pauses its provider may ask): a turn still waiting on its provider "
                "would be interrupted alive, its answer lost and its call billed all the same."
            )
        stale = turns_stale(older_than_seconds=seconds).select_related("session")
        # Described before they end (ending a turn moves its progress_at to now).
        found = [
            (
                turn.pk,
                f"turn {turn.pk} (session {turn.session_id}, #{turn.turn_index}, "
                f"last progress {turn.progress_at:%Y-%m-%d %H:%M:%S}Z, "
                # Which process ran it (host:pid:token): gunicorn's line of a killed worker
                # names its pid, and the turn's log lines before the kill its request.
                f"served by {turn.worker or 'an unrecorded process'})",
            )
            for turn in stale.order_by("progress_at")
        ]
        if dry_run:
            for _, line in found:
                self.stdout.write(line)
            self.stdout.write(f"Dry run: {len(found)} stale turn(s) would be interrupted.")
            return
        result = turns_interrupt(turns=stale)
        if verbosity == 0 and not result.turn_ids:
            return  # cron's -v 0: quiet unless a turn had to be interrupted
        ended = set(result.turn_ids)  # not those another run (or their worker) got to first
        for pk, line in found:
            if pk in ended:
                self.stdout.write(line)
        self.stdout.write(
            f"Interrupted {len(result.turn_ids)} turn(s) with no progress for {seconds:g}s; "
            f"marked {result.lost_calls} call(s) in flight lost."
        )
