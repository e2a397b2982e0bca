"""What management commands share: their argument types (a bad value is the parser's one-line
error, exit 2 on the command line and a CommandError from call_command, never a traceback) and
their one-line errors."""

import argparse
import math
from collections.abc import Callable
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError


def command_error(exc: ValidationError) -> CommandError:
    """A service's ValidationError as a command's one-line error: `field: message; ...`."""
    if hasattr(exc, "error_dict"):
        problems = [f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items()]
    else:
        problems = exc.messages
    return CommandError("; ".join(problems))


def iso_day(text: str) -> date:
    """An argparse type: a day written as 2026-11-01."""
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date like 2026-11-01, not {text!r}"
        ) from exc


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
