"""What management commands share: their argument types (a bad value is the parser's one-line
error, exit 2 on the command line and a CommandError from call_command, never a traceback) and
their one-line errors."""

import argparse
import contextlib
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connections,
)
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from pantheon import config
from pantheon.days import NoSuchDay, day_written, month_written
from pantheon.figures import AMOUNT_EXPECTED, typed_amount

# The exit status every project command gives when the database fails under it: not 1, which
# cron rules read as the command's own finding (drift, a refused value), and no traceback.
DATABASE_FAILED = 3

# The exit status of a command whose stdout's reader went away (`| head`): a shell's for a
# process ended by SIGPIPE, as any Unix tool that writes to a closed pipe ends.
READER_GONE = 128 + 13


class ProjectCommand(BaseCommand):
    """The base of the project's commands: a database that cannot be reached (or that breaks
    the connection mid-run), that fails under the command (it refuses writes, as a standby
    does, runs out of disk, is shut down: `database_fails`), or one not migrated, is one line
    on stderr and exit 3; what the command had not committed is rolled back with the
    connection. Any other database error (a query PostgreSQL refuses, a constraint, a trigger's
    refusal) is a bug or a refusal, and keeps its traceback.

    A command with `requires_migrated_database` checks the migrations before it starts: one
    whose queries would go through on a database a migration behind (a constraint or a table it
    does not touch missing) would otherwise write past the missing constraint, or report on
    what it could read as if it were all."""

    requires_migrated_database = False

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.epilog = (
            f"Exit {DATABASE_FAILED} when the database cannot be reached, is not migrated or "
            "fails mid-run (one line on stderr, no traceback)."
        )
        return parser

    def execute(self, *args, **options):
        if options.get("stdout") is None:
            # Usernames, names and the documents (export_user's JSON, usage_month_totals' CSV,
            # the dashboard's bytes) are UTF-8 whatever the locale: under a Latin-1 or ASCII
            # one, Python's stdout ended the command in a UnicodeEncodeError at "zoë".
            utf8_stdout()
        try:
            if self.requires_migrated_database and (unapplied := unapplied_migrations()):
                raise CommandError(not_migrated_message(unapplied), returncode=DATABASE_FAILED)
            done = super().execute(*args, **options)
            self.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
            return done
        except BrokenPipeError:
            # `| head` stopped reading: end quietly, what was not committed rolled back. Python
            # flushes stdout again as it exits; that now goes nowhere rather than to a traceback.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(READER_GONE) from None
        except DatabaseError as exc:
            if database_fails(exc):
                raise database_failed(exc) from exc
            unapplied = not_migrated(exc) if isinstance(exc, ProgrammingError) else []
            if not unapplied:
                raise  # a query PostgreSQL refuses, a constraint: a bug or a refusal
            raise database_failed(exc, unapplied=unapplied) from exc


def utf8_stdout() -> None:
    """The process's stdout writes UTF-8 (a console's, a pipe's, a file's), as the commands'
    documents are promised to be, whatever the locale's encoding."""
    stream = sys.stdout
    if (getattr(stream, "encoding", None) or "").lower().replace("-", "") != "utf8":
        with contextlib.suppress(AttributeError, ValueError):  # not a text file of its own
            stream.reconfigure(encoding="utf-8")  # type: ignore[union-attr]


# What PostgreSQL says when the database itself fails, not the command's statements, beside
# what arrives as an OperationalError (connection, class 08; insufficient resources, 53;
# operator intervention, 57; system error, 58; a deadlock or a lock timeout): the SQLSTATE
# classes of a snapshot too old (72) and an internal error (XX), and of class 25 (invalid
# transaction state) those the server imposes: a read-only transaction (25006, a hot standby
# after a failover, or default_transaction_read_only) and its idle and transaction timeouts.
# psycopg raises those as InternalError or a bare DatabaseError; an aborted transaction
# (25P02) follows an error someone swallowed, a bug.
_FAILING_CLASSES = {"08", "53", "57", "58", "72", "XX"}
_FAILING_SQLSTATES = {"25006", "25P03", "25P04"}


def database_fails(exc: DatabaseError) -> bool:
    """Whether `exc` says the database failed under a command (exit 3), not that it refused
    one of its statements (a bug, or a refusal such as a constraint: its traceback)."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    sqlstate = getattr(exc.__cause__, "sqlstate", None) or ""
    return sqlstate[:2] in _FAILING_CLASSES or sqlstate in _FAILING_SQLSTATES


@contextmanager
def unreachable_database_stops() -> Iterator[None]:
    """Django's own commands (`migrate`, `createsuperuser`, `changepassword`...) on a database
    that cannot be reached (a wrong host, port or name in DATABASE_URL, PostgreSQL down, an
    SQLite file in a directory that does not exist) end as the project's do: one line on
    stderr, exit 3. They ended with 30 lines of traceback, PostgreSQL's message last. Only a
    failure to open the connection is caught: an error of a statement keeps its traceback."""
    try:
        yield
    except OperationalError as exc:
        if not _raised_connecting(exc):
            raise
        settings_dict = connections[DEFAULT_DB_ALIAS].settings_dict
        place = f"{settings_dict['NAME']}"
        if settings_dict.get("HOST"):
            place += f" on {settings_dict['HOST']}:{settings_dict.get('PORT') or 5432}"
        sys.stderr.write(
            f"CommandError: the database cannot be reached (DATABASE_URL names {place}): "
            f"{first_line(exc)}\n"
        )
        raise SystemExit(DATABASE_FAILED) from None


def _raised_connecting(exc: BaseException) -> bool:
    """Whether `exc` came from a database backend opening its connection."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "get_new_connection":
            return True
        tb = tb.tb_next
    return False


def user_named(typed: str):
    """The account a username given to a command names: read as a login reads it (NFKC, the
    form usernames are stored in: "zoe\u0308" is zoë), or exactly as typed, for an account
    stored in another form (made by a raw insert: "\ufb01le" with its ligature, whose NFKC
    form is "file"). Two accounts so named is exit 1 naming both, never one of them guessed:
    `forget_user` cannot be undone. No account is exit 1 too."""
    model = get_user_model()
    read = model.normalize_username(typed)
    names = {f"{model.USERNAME_FIELD}__in": {typed, read}}
    found = list(model.objects.filter(**names).order_by("pk"))
    if len(found) > 1:
        named = " and ".join(repr(user.get_username()) for user in found)
        raise CommandError(
            f"Two users have the username {typed!r}, as typed and as a login reads it: "
            f"{named} (users {', '.join(str(user.pk) for user in found)}): rename one of them "
            "in the console first.",
            returncode=1,
        )
    if not found:
        raise CommandError(f"No user has the username {read!r}.", returncode=1)
    return found[0]


def database_failed(
    exc: Exception, *, saying: str | None = None, unapplied: list[str] | None = None
) -> CommandError:
    """A database error as a command's exit 3, on one line: the first of its message
    (PostgreSQL's next ones quote the statement, `LINE 4: ...`, or give a hint), or, for a
    database not migrated, what is missing and what to run. `saying` what could not be done
    comes first."""
    if unapplied is None:
        unapplied = not_migrated(exc)
    if not unapplied:
        return CommandError(
            f"{saying or 'the database failed'}: {first_line(exc)}", returncode=DATABASE_FAILED
        )
    message = not_migrated_message(unapplied, because=first_line(exc))
    return CommandError(f"{saying}: {message}" if saying else message, returncode=DATABASE_FAILED)


def not_migrated_message(unapplied: list[str], *, because: str | None = None) -> str:
    """What the commands (exit 3) and gunicorn (at start) say of a database with `unapplied`
    migrations: how many, the first, what to run; `because` what the database said, if it
    said anything."""
    count = f"{len(unapplied)} migration{'s' if len(unapplied) > 1 else ''}"
    said = f"{because}; " if because else ""
    return (
        f"the database is not migrated ({said}{count} not applied, the first {unapplied[0]}): "
        "run manage.py migrate"
    )


def first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# PostgreSQL's undefined_table and undefined_column; SQLite says it in words.
_MISSING_SQLSTATES = {"42P01", "42703"}
_MISSING_SQLITE = ("no such table:", "no such column:")


def not_migrated(exc: Exception) -> list[str]:
    """The migrations not applied to the database, when `exc` says that a table or a column is
    missing (else none: a missing table of a database fully migrated is a bug, not this). The
    migrations' own table is read through a connection of its own, so a command's broken
    transaction does not stand in the way."""
    cause = exc.__cause__
    missing = getattr(cause, "sqlstate", None) in _MISSING_SQLSTATES or str(exc).startswith(
        _MISSING_SQLITE
    )
    if not missing:
        return []
    connection = connections[DEFAULT_DB_ALIAS].copy()
    try:
        return unapplied_migrations(connection)
    except DatabaseError:
        return []
    finally:
        connection.close()


def unapplied_migrations(connection=None) -> list[str]:
    """The migrations `migrate` would apply to the database (of `connection`, by default the
    default one), in its order; none when it is migrated. One query (the migrations' table; a
    database without it has none applied). A DatabaseError when it cannot be read."""
    executor = MigrationExecutor(connection or connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [str(migration) for migration, backwards in plan if not backwards]


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


def begun_month(text: str) -> date:
    """An argparse type: a calendar month (UTC) written as 2026-11, and only so (`pantheon.days`),
    as its first day; one not begun yet is refused too: it has no figures to report, and a
    report of zeros would read as a month without calls."""
    try:
        first = month_written(text)
    except NoSuchDay:
        raise argparse.ArgumentTypeError(f"{text} is no such month") from None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a month written as 2026-11, not {text!r}"
        ) from None
    now = timezone.now().astimezone(UTC).date()
    if first > now:
        raise argparse.ArgumentTypeError(
            f"{text} has not begun: nothing to report yet (this month is {now:%Y-%m} UTC)"
        )
    return first


def add_since_argument(parser, *, does: str) -> None:
    """`--since DATE`: the first UTC day a command `does` ("check", "rebuild")."""
    parser.add_argument(
        "--since",
        type=iso_day,
        metavar="DATE",
        help=f"first UTC day to {does}, as 2026-11-01 (default: every day of the ledger)",
    )


# The longest age a command takes: a century, far inside what a date can go back to (and the
# longest the settings' durations may say).
LONGEST_AGE = timedelta(seconds=config.CENTURY_SECONDS)


def age_in(unit: str) -> Callable[[str], float]:
    """An argparse type: how old, as a number of `unit` ("seconds", "hours") from 0 to a
    century, written as every figure an operator types is (`typed_amount`: 600, 0.5). Python's
    float took 1e3, 1_000, "nan", "inf" and 1e400 (which no timedelta can hold)."""
    longest = LONGEST_AGE / timedelta(**{unit: 1})

    def parse(text: str) -> float:
        try:
            value = float(typed_amount(text))
        except ValueError:
            value = math.nan
        if not 0 <= value <= longest:  # also false for nan
            raise argparse.ArgumentTypeError(
                f"expected a number of {unit} from 0 to {longest:,.0f}, {AMOUNT_EXPECTED}, "
                f"not {text!r}"
            )
        return value

    return parse


COUNT_EXPECTED = "a whole number such as 8192 (digits 0-9 only; no sign, exponent or separator)"
_DIGITS = re.compile(r"[0-9]+")


def whole_number(text: str) -> int:
    """An argparse type: a count (of tokens) as an operator types a figure, spaces around it
    aside (`typed_amount`'s rule without the decimal point). Python's int took 1_000_000,
    +8192 and Arabic-Indic digits as ASCII ones."""
    plain = text.strip()
    if _DIGITS.fullmatch(plain) is None:
        raise argparse.ArgumentTypeError(f"expected {COUNT_EXPECTED}, not {text!r}")
    return int(plain)
