"""Rate limits on what is cheap to send and costly to answer: logins and turns.

DRF's throttles with their semantics (at most N requests in any window of the rate's length,
`Retry-After` when the oldest of them leaves it), but on PostgreSQL the history lives in table
`pantheon_throttle` (migration pantheon.0002), shared by every worker and host, and one
statement prunes it, counts it and records the request under the row's lock: requests racing
on two workers cannot both take the last place, as they can when DRF reads the history from the
cache and writes it back. On SQLite (the laptop) the throttles keep DRF's own cache-based
history. Each throttle reads its rate from a setting at request time
(`PANTHEON_AUTH_RATE_PER_IP`, `PANTHEON_AUTH_RATE_PER_USERNAME`, `PANTHEON_TURN_RATE`), so an
operator can change it without code.
"""

import hashlib
import math
import random
import unicodedata

from django.conf import settings
from django.db import connection
from rest_framework.throttling import SimpleRateThrottle

from pantheon.fields import trimmed

# One statement decides and records: `attempt` appends now to the history pruned to the window
# unless the window is full (a new identity gets its first row); the outer SELECT reads, from
# the snapshot before that, the oldest request still in the window, to say when the next one fits.
HIT = """
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now),
attempt AS (
    INSERT INTO pantheon_throttle AS t (key, hits, expires)
    SELECT %(key)s, ARRAY[now], now + %(window)s FROM clock
    ON CONFLICT (key) DO UPDATE
    SET hits = ARRAY(
            SELECT h FROM unnest(t.hits) AS h WHERE h > EXCLUDED.hits[1] - %(window)s
        ) || EXCLUDED.hits[1],
        expires = EXCLUDED.expires
    WHERE (
        SELECT count(*) FROM unnest(t.hits) AS h WHERE h > EXCLUDED.hits[1] - %(window)s
    ) < %(limit)s
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM attempt),
       (SELECT min(h) FROM pantheon_throttle AS t, unnest(t.hits) AS h, clock
         WHERE t.key = %(key)s AND h > clock.now - %(window)s),
       (SELECT now FROM clock)
"""
# Identities that have been quiet for a whole window have nothing left to count.
PRUNE = "DELETE FROM pantheon_throttle WHERE expires < extract(epoch FROM clock_timestamp())"
PRUNE_ONE_IN = 1000


class SettingRateThrottle(SimpleRateThrottle):
    rate_setting: str = ""
    _wait: float | None = None

    def get_rate(self) -> str | None:
        return getattr(settings, self.rate_setting) or None

    def allow_request(self, request, view) -> bool:
        # DRF makes the throttles afresh for each request: the rate is the setting's of now.
        if connection.vendor != "postgresql":
            return super().allow_request(request, view)
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        return self._hit(self.key)

    def _hit(self, key: str) -> bool:
        params = {"key": key, "window": float(self.duration), "limit": self.num_requests}
        with connection.cursor() as cursor:
            cursor.execute(HIT, params)
            allowed, oldest, now = cursor.fetchone()
            if random.randrange(PRUNE_ONE_IN) == 0:
                cursor.execute(PRUNE)
        if allowed:
            self._wait = None
        elif oldest is None:  # the window filled up after this statement's snapshot
            self._wait = float(self.duration)
        else:  # as DRF: the next request fits when the oldest one in the window leaves it
            self._wait = max(oldest + self.duration - now, 1.0)
        return allowed

    def wait(self) -> float | None:
        if connection.vendor != "postgresql":
            return super().wait()
        return None if self._wait is None else math.ceil(self._wait)


class AuthTokenPerClientThrottle(SettingRateThrottle):
    """`POST auth/token` per client address (REMOTE_ADDR, or the proxy's X-Forwarded-For entry
    when `PANTHEON_NUM_PROXIES` says how many proxies to trust)."""

    scope = "auth_token_client"
    rate_setting = "PANTHEON_AUTH_RATE_PER_IP"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class AuthTokenPerUsernameThrottle(SettingRateThrottle):
    """`POST auth/token` per username tried, whatever address it comes from: guessing one
    account's password from many addresses is as slow as from one."""

    scope = "auth_token_username"
    rate_setting = "PANTHEON_AUTH_RATE_PER_USERNAME"

    def get_cache_key(self, request, view) -> str | None:
        # The API's JSON body, or the console login's form.
        data = request.data if hasattr(request, "data") else request.POST
        username = data.get("username") if hasattr(data, "get") else None
        if not isinstance(username, str):
            return None  # nothing to guess with; the per-client limit still applies
        # The name as login reads it (its field trims white space and zero-width characters:
        # " bob", "bob\t" and "\u200bbob" log in as bob), then folded: every spelling of one
        # account counts against it.
        folded = trimmed(unicodedata.normalize("NFKC", trimmed(username)).casefold())
        if not folded:
            return None
        digest = hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}


def login_wait(request) -> int | None:
    """A login attempt outside DRF (the console's), counted against the limits of `POST
    auth/token` (its address and the username tried, in the same histories: one account's
    password is guessed as slowly at either door). None if it may go on, else the seconds until
    it may. Each limit records the attempt, as DRF's check of a view's throttles does."""
    waits = []
    for throttle in (AuthTokenPerClientThrottle(), AuthTokenPerUsernameThrottle()):
        if not throttle.allow_request(request, None):
            waits.append(throttle.wait() or 1)
    return math.ceil(max(waits)) if waits else None


class TurnRateThrottle(SettingRateThrottle):
    """`POST sessions/{id}/turns` per user: each turn spends on LLM providers."""

    scope = "turns"
    rate_setting = "PANTHEON_TURN_RATE"

    def get_cache_key(self, request, view) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
