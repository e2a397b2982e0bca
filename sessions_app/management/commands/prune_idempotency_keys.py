from django.conf import settings
from django.core.management.base import CommandError

from pantheon.commands import ProjectCommand, age_in
from sessions_app.idempotency import idempotency_keys_prune


class Command(ProjectCommand):
    @property
    def help(self) -> str:
        # The lifetime in force, read when the help is asked for (not the setting's default).
        return (
            "Delete Idempotency-Keys older than --older-than hours (default "
            f"PANTHEON_IDEMPOTENCY_KEY_HOURS, here {settings.PANTHEON_IDEMPOTENCY_KEY_HOURS:g}), "
            "counted by the database's clock, which stamps them, not this host's: retries "
            "after that run as new requests. Prints one line; with -v 0 nothing "
            "unless --dry-run (its count). Exit 0 when done, 2 on a usage error (a malformed "
            "--older-than, or one less than the promised lifetime, which is refused), 3 when "
            "the database fails."
        )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=age_in("hours"),
            default=None,
            metavar="HOURS",
            help="age in hours of the keys to delete (default and least: the promised lifetime)",
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args, older_than=None, dry_run=False, verbosity=1, **options):
        hours = settings.PANTHEON_IDEMPOTENCY_KEY_HOURS if older_than is None else older_than
        if hours < settings.PANTHEON_IDEMPOTENCY_KEY_HOURS:
            raise CommandError(
                f"Keys are promised for {settings.PANTHEON_IDEMPOTENCY_KEY_HOURS:g} hours; "
                f"--older-than {hours:g} would break that promise.",
                returncode=2,  # a usage error, as the parser's own
            )
        count = idempotency_keys_prune(older_than_hours=hours, dry_run=dry_run)
        if verbosity == 0 and not dry_run:
            return  # cron's -v 0: routine work, nothing to report
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {count} idempotency key(s) older than {hours:g} hours.")
