"""Test settings: PostgreSQL, the production database.

TEST_DATABASE_URL (else a postgres:// DATABASE_URL, else the local default) names the server and
the base name; Django runs the tests in `test_<name>` and never touches `<name>` itself.
"""

import hashlib
import os
import tempfile
from pathlib import Path

_database_url = os.environ.get("DATABASE_URL", "")
os.environ["DATABASE_URL"] = os.environ.get("TEST_DATABASE_URL") or (
    _database_url
    if _database_url.startswith("postgres")
    else "postgres://postgres@127.0.0.1:5432/pantheon"
)
# Each test process (pytest-xdist runs two) collects static files of its own, it and the servers
# it starts (they inherit this environment): a server's collectstatic deletes and rewrites the
# hashed files, and a worker of another process's server booting meanwhile (WhiteNoise lists the
# files as it starts) failed on one gone (FileNotFoundError, gunicorn exit 3).
_checkout = hashlib.sha256(str(Path(__file__).resolve().parents[1]).encode()).hexdigest()[:12]
os.environ["STATIC_ROOT"] = str(
    Path(tempfile.gettempdir())
    / f"pantheon-static-{_checkout}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
)
# Tests never reach a real provider, whatever the shell says.
os.environ["PANTHEON_LLM_BACKEND"] = "demo"
# Tests hold their connection in a transaction; live servers they start use the pool.
os.environ["DB_POOL_MAX_SIZE"] = "0"

from pantheon.settings import *  # noqa: E402,F403

# The suite renders pages without running collectstatic first; the production storage (hashed
# names from a manifest) is tested on its own in pantheon/tests/test_static_serving.py.
PRODUCTION_STORAGES = STORAGES  # noqa: F405
STORAGES = {
    **PRODUCTION_STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PANTHEON_LLM_BACKOFF_SECONDS = 0.0
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
# A transactional test's teardown truncates every table; the ledger's guard allows it only
# with this switch (usage/migrations/0011_ledger_append_only.py). Row-level rules still hold.
DATABASES["default"].setdefault("OPTIONS", {}).update(  # noqa: F405
    options="-c pantheon.ledger_maintenance=on",
    # Live-server tests tell the servers' connections from the suite's own by this name.
    application_name="pantheon-tests",
)
