"""`python -m pantheon.pgcheck URL`: fail early, and helpfully, when PostgreSQL is not reachable."""

import sys

import environ
import psycopg

START_HINT = (
    "PostgreSQL is not reachable at {url}.\n"
    "Start it with:  pg_ctlcluster --skip-systemctl-redirect "
    "$(ls /etc/postgresql | head -n 1) main start\n"
    "or point TEST_DATABASE_URL at a server you can reach (postgres://user@host:port/name)."
)


def main(url: str) -> int:
    config = environ.Env.db_url_config(url)
    try:
        with psycopg.connect(
            host=config.get("HOST") or "127.0.0.1",
            port=config.get("PORT") or 5432,
            user=config.get("USER") or "postgres",
            password=config.get("PASSWORD") or None,
            dbname="postgres",
            connect_timeout=5,
        ):
            return 0
    except psycopg.OperationalError:
        print(START_HINT.format(url=url), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
