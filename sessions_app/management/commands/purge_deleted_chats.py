from datetime import timedelta

from django.core.management.base import CommandError
from django.db.models.functions import Now

from pantheon.commands import ProjectCommand, age_in
from sessions_app.services import deleted_chats_purge

DEFAULT_DAYS = 30
# A cancelled turn's provider may still answer, for its ledger row, minutes after the delete
# that cancelled it; a day is far past any call.
LEAST_DAYS = 1


class Command(ProjectCommand):
    help = (
        "Delete for good the sessions users deleted (theirs or their room's) more than "
        f"--older-than days ago by the database's clock (default {DEFAULT_DAYS}, at least "
        f"{LEAST_DAYS}): their turns, "
        "messages, summaries and context audits, the Idempotency-Key answers of their turns, "
        "and the deleted rooms with their seats. The usage ledger keeps every row and figure, "
        "its references to them cleared. Prints one line; with -v 0 nothing unless --dry-run "
        "(its counts). Exit 0 when done, 2 on a usage error (a malformed --older-than, or "
        "one under a day), 3 when the database fails."
    )
    requires_migrated_database = True

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=age_in("days"),
            default=DEFAULT_DAYS,
            metavar="DAYS",
            help=f"days since the delete (default {DEFAULT_DAYS}, at least {LEAST_DAYS})",
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args, older_than=DEFAULT_DAYS, dry_run=False, verbosity=1, **options):
        if older_than < LEAST_DAYS:
            raise CommandError(
                f"--older-than {older_than:g} is under {LEAST_DAYS} day: a turn cancelled by a "
                "delete may still have a provider answer on its way to its ledger row.",
                returncode=2,  # a usage error, as the parser's own
            )
        # By the database's clock, not this host's: one an hour ahead purged chats an hour
        # short of the days asked for (the turns' and the keys' times go by it too).
        purged = deleted_chats_purge(
            deleted_before=Now() - timedelta(days=older_than), dry_run=dry_run
        )
        if verbosity == 0 and not dry_run:
            return  # cron's -v 0: routine work, nothing to report
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {purged.sessions} session(s) ({purged.turns} turn(s), {purged.messages} "
            f"message(s)) and {purged.rooms} room(s) deleted more than {older_than:g} days ago."
        )
