"""What a server runs before it serves, in a process of its own (`pantheon.collect_static`, which
gunicorn's master and `python -m pantheon.serve` call):

    python -m pantheon.before_serving [--check-migrations]    (from the checkout)

It collects static files (`manage.py collectstatic --noinput`), and with `--check-migrations`
(gunicorn) checks that the database is migrated: new code on a database `migrate` has not
caught up with looked healthy (its health check 200), and failed every request that reached
the table or column missing (a 500). Such a database stops the start, the last line saying how
many migrations are missing, the first, and to run `manage.py migrate` (exit 3). A database
that cannot be checked within CHECK_SECONDS (10; unreachable, or one that accepts a connection and
never answers, whatever DB_CONNECT_TIMEOUT says) is not: the server starts (its health check
answers 503 until the database does), with one warning in the log. A database that does not
exist (PostgreSQL's FATAL 3D000: a name mistyped, a database never created) is no outage: it
stops the start as one not migrated.

Instances of one checkout collect their static files in turn (`collect_static.LOCK_FILE`: run at
once, collectstatic rewrites the hashed files another is reading); the check runs after the
lock is given back, so that a database slow to answer holds up no other instance.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
import threading

from pantheon.collect_static import LOCK_FILE

NOT_MIGRATED = 3  # the commands' exit status for it (pantheon.commands.DATABASE_FAILED)
CHECK_MIGRATIONS = "--check-migrations"
# The longest the check may take, connecting included.
CHECK_SECONDS = 10

logger = logging.getLogger("pantheon.before_serving")


def main(argv: list[str]) -> int:
    # As manage.py's commands: one connection, no pool.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
    os.environ.setdefault("DB_POOL", "off")
    import django
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import call_command

    from pantheon.config import refused_line

    try:
        django.setup()
    except ImproperlyConfigured as refused:  # the one line the start stops on, no traceback
        sys.stderr.write(refused_line(refused) + "\n")
        return 1
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # given back when the file closes
        call_command("collectstatic", interactive=False, verbosity=0)
    if CHECK_MIGRATIONS not in argv:
        return 0
    from django.db import DatabaseError, connection

    from pantheon.commands import first_line, not_migrated_message, unapplied_migrations

    checked: dict = {}

    def check() -> None:  # a thread's own connection, closed by it
        try:
            checked["unapplied"] = unapplied_migrations()
        except DatabaseError as error:
            checked["error"] = error
        except Exception as error:  # a bug: raised below, as it was before the thread
            checked["bug"] = error
        finally:
            connection.close()

    # A deadline over the whole check, not libpq's limits (DB_CONNECT_TIMEOUT may be 0, and a
    # pooler may refuse a statement_timeout given as a startup option).
    checking = threading.Thread(target=check, name="migration-check", daemon=True)
    checking.start()
    checking.join(CHECK_SECONDS)
    if "bug" in checked:
        raise checked["bug"]
    if "error" in checked and _no_such_database(checked["error"]):
        # Not an outage: the name is wrong, or the database was never created. It started
        # anyway and answered every request 503 until the pool's timeout, health included.
        sys.stderr.write(
            f"the database DATABASE_URL names does not exist ({first_line(checked['error'])}): "
            "create it, or fix the name, then run manage.py migrate\n"
        )
        return NOT_MIGRATED
    if checking.is_alive() or "error" in checked:
        cause = (
            f"no answer within {CHECK_SECONDS} s"
            if checking.is_alive()
            else first_line(checked["error"])
        )
        logger.warning(
            "the database's migrations could not be checked (%s): starting anyway", cause
        )
        if checking.is_alive():
            logging.shutdown()
            os._exit(0)  # not waiting for the thread, stuck in the driver
        return 0
    unapplied = checked["unapplied"]
    if unapplied:
        sys.stderr.write(not_migrated_message(unapplied) + "\n")
        return NOT_MIGRATED
    return 0


def _no_such_database(error: Exception) -> bool:
    """Whether PostgreSQL refused the connection because the database it names does not
    exist (FATAL 3D000). libpq gives a refused connection's message alone, no SQLSTATE: the
    server's English words are read; in another language the start goes on, as before."""
    return bool(re.search(r'FATAL:\s+database ".*" does not exist', str(error)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
