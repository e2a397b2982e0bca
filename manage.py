#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main():
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
    if sys.argv[1:2] != ["runserver"]:
        # A command runs in one thread and opens one connection: the pool is the servers'. Without
        # it a wrong DATABASE_URL fails at once with PostgreSQL's own message, not after the
        # pool's 30 s wait with "couldn't get a connection". (DB_POOL_MAX_SIZE still says what
        # the servers' pool holds, for `manage.py check`.)
        os.environ.setdefault("DB_POOL", "off")
    try:
        from django.core.management import execute_from_command_line
    except ImportError as exc:
        raise ImportError(
            "Couldn't import Django. Are you sure it's installed and "
            "available on your PYTHONPATH environment variable? Did you "
            "forget to activate a virtual environment?"
        ) from exc
    if "--traceback" in sys.argv:
        execute_from_command_line(sys.argv)
        return
    from pantheon.commands import unreachable_database_stops
    from pantheon.config import refusal_stops

    # A setting refused (PANTHEON_TURN_RATE=10/fortnight, say) is one line on stderr, exit 1; a
    # database that cannot be reached, one line and exit 3.
    with refusal_stops(), unreachable_database_stops():
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
