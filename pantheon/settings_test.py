"""Test settings: PostgreSQL, the production database, unless TEST_DATABASE_URL says otherwise."""

import os

os.environ.setdefault(
    "DATABASE_URL",
    os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/pantheon"),
)
os.environ.setdefault("PANTHEON_LLM_BACKEND", "demo")

from pantheon.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PANTHEON_LLM_BACKOFF_SECONDS = 0.0
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
