"""What management commands share: their argument types (a bad value is the parser's one-line
error, exit 2 on the command line and a CommandError from call_command, never a traceback) and
their one-line errors."""

import argparse
import math
from collections.abc import Callable
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError

from pantheon.days import NoSuchDay, day_written

# The exit status every project command gives when the database fails under it: not 1, which
# cron rules read as the command's own finding (drift, a refused value), and no traceback.
DATABASE_FAILED = 3


class ProjectCommand(BaseCommand):
    """The base of the project's commands: a database that cannot be reached (or that breaks
    the connection mid-run) is one line on stderr and exit 3; what the command had not committed
    is rolled back with the connection."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.epilog = (
            f"Exit {DATABASE_FAILED} when the database cannot be reached or fails mid-run "
            "(one line on stderr, no traceback)."
        )
        return parser

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as exc:
            raise database_failed(exc) from exc


def database_failed(exc: Exception, *, saying: str = "the database failed") -> CommandError:
    """A database error as a command's exit 3, on one line (psycopg's own message has two)."""
    return CommandError(f"{saying}: {' '.join(str(exc).split())}", returncode=DATABASE_FAILED)


def command_error(exc: ValidationError) -> CommandError:
    """A service's ValidationError as a command's one-line error: `field: message; ...`."""
    if hasattr(exc, "error_dict"):
        problems = [f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items()]
    else:
        problems = exc.messages
    return CommandError("; ".join(problems))


def iso_day(text: str) -> date:
    """An argparse type: a day written as 2026-11-01, and only so (`pantheon.days`, the billing
    dashboard's rule): Python's date.fromisoformat took 2026-W49-1 and 20261101 too."""
    try:
        return day_written(text)
    except NoSuchDay:
        raise argparse.ArgumentTypeError(f"{text} is no such day") from None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date like 2026-11-01, not {text!r}"
        ) from None


def add_since_argument(parser, *, does: str) -> None:
    """`--since DATE`: the first UTC day a command `does` ("check", "rebuild")."""
    parser.add_argument(
        "--since",
        type=iso_day,
        metavar="DATE",
        help=f"first UTC day to {does}, as 2026-11-01 (default: every day of the ledger)",
    )


# The longest age a command takes: a century, far inside what a date can go back to.
LONGEST_AGE = timedelta(days=36_500)


def age_in(unit: str) -> Callable[[str], float]:
    """An argparse type: how old, as a number of `unit` ("seconds", "hours") from 0 to a
    century. Python's float takes "nan", "inf" and 1e400, which no timedelta can hold."""
    longest = LONGEST_AGE / timedelta(**{unit: 1})

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 <= value <= longest:  # also false for nan
            raise argparse.ArgumentTypeError(
                f"expected a number of {unit} from 0 to {longest:,.0f}, not {text!r}"
            )
        return value

    return parse
