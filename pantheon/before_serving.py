"""What a server runs before it serves, in a process of its own (`pantheon.collect_static`, which
gunicorn's master and `python -m pantheon.serve` call):

    python -m pantheon.before_serving [--check-migrations]    (from the checkout)

It collects static files (`manage.py collectstatic --noinput`), and with `--check-migrations`
(gunicorn) checks that the database is migrated: new code on a database `migrate` has not
caught up with looked healthy (its health check 200), and failed every request that reached
the table or column missing (a 500). Such a database stops the start, the last line saying how
many migrations are missing, the first, and to run `manage.py migrate` (exit 3). A database
that cannot be reached is not checked: the server starts (its health check answers 503 until
the database does), with one warning in the log.
"""

from __future__ import annotations

import logging
import os
import sys

NOT_MIGRATED = 3  # the commands' exit status for it (pantheon.commands.DATABASE_FAILED)
CHECK_MIGRATIONS = "--check-migrations"

logger = logging.getLogger("pantheon.before_serving")


def main(argv: list[str]) -> int:
    # As manage.py's commands: one connection, no pool.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
    os.environ.setdefault("DB_POOL", "off")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("collectstatic", interactive=False, verbosity=0)
    if CHECK_MIGRATIONS not in argv:
        return 0
    from django.db import DatabaseError, connection

    from pantheon.commands import first_line, not_migrated_message, unapplied_migrations

    try:
        unapplied = unapplied_migrations()
    except DatabaseError as error:
        logger.warning(
            "the database could not be reached to check its migrations (%s): starting anyway",
            first_line(error),
        )
        return 0
    finally:
        connection.close()
    if unapplied:
        sys.stderr.write(not_migrated_message(unapplied) + "\n")
        return NOT_MIGRATED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
