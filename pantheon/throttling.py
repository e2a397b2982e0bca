"""Rate limits on what is cheap to send and costly to answer: logins and turns; and, per user,
every API request and every create (`BucketRateThrottle`, at the end).

DRF's throttles with their semantics (at most N requests in any window of the rate's length,
`Retry-After` when the oldest of them leaves it), but on PostgreSQL the history lives in table
`pantheon_throttle` (migration pantheon.0002), shared by every worker and host, and one
statement prunes it, counts it and records the request under the row's lock: requests racing
on two workers cannot both take the last place, as they can when DRF reads the history from the
cache and writes it back. On SQLite (the laptop) the throttles keep DRF's own cache-based
history. Each throttle reads its rate from a setting at request time
(`PANTHEON_AUTH_RATE_PER_IP`, `PANTHEON_AUTH_RATE_PER_USERNAME`,
`PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL`, `PANTHEON_TURN_RATE`), so an operator can change it
without code.

Logins count failures only (`LoginAttempt`): a stranger's guesses must not lock an account's
owner out. The limits on one account are therefore kept per address (its guesses from one
address) and, for a guesser spread over many addresses, in a total that spares the addresses
the account logged in from lately: those the guesser cannot fill. An IPv6 address counts as its
/64 (`login_address`).
"""

import contextlib
import ipaddress
import math
import random
import threading
import time
import unicodedata
from collections import OrderedDict

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.utils.crypto import salted_hmac
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

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
# Gives back the place a login attempt took (`SettingRateThrottle.release`): one hit, the one
# recorded at that instant, so two attempts recorded at the same microsecond lose one between them.
RELEASE = """
UPDATE pantheon_throttle
SET hits = hits[:array_position(hits, %(at)s::float8) - 1]
        || hits[array_position(hits, %(at)s::float8) + 1:]
WHERE key = %(key)s AND %(at)s::float8 = ANY(hits)
"""
# An address an account logged in from: a row with no hits, kept (not pruned) until `expires`.
REMEMBER = """
INSERT INTO pantheon_throttle AS t (key, hits, expires)
VALUES (%(key)s, '{}', extract(epoch FROM clock_timestamp()) + %(keep)s)
ON CONFLICT (key) DO UPDATE SET hits = '{}', expires = EXCLUDED.expires
"""
KNOWN = """
SELECT EXISTS (
    SELECT 1 FROM pantheon_throttle
    WHERE key = %(key)s AND expires > extract(epoch FROM clock_timestamp())
)
"""
# How long an address an account logged in from is spared its total of failures.
KNOWN_ADDRESS_SECONDS = 30 * 24 * 3600
# Identities that have been quiet for a whole window have nothing left to count.
PRUNE = "DELETE FROM pantheon_throttle WHERE expires < extract(epoch FROM clock_timestamp())"
# One check in this many also prunes its table (`PRUNE`, `PRUNE_BUCKETS`); 0: none does (the
# tests, whose statement counts are exact: a draw must not add a statement to one in 1000).
PRUNE_ONE_IN = 1000


def _prune_drawn() -> bool:
    return PRUNE_ONE_IN > 0 and random.randrange(PRUNE_ONE_IN) == 0


class SettingRateThrottle(SimpleRateThrottle):
    rate_setting: str = ""
    _wait: float | None = None
    # When this request was recorded (epoch seconds), for `release`; None if it was not.
    _recorded_at: float | None = None

    def get_rate(self) -> str | None:
        return getattr(settings, self.rate_setting) or None

    def allow_request(self, request, view) -> bool:
        # DRF makes the throttles afresh for each request: the rate is the setting's of now.
        if connection.vendor != "postgresql":
            allowed = super().allow_request(request, view)
            # DRF's history: `throttle_success` recorded `self.now` when it allowed.
            if allowed and self.rate is not None and self.key is not None:
                self._recorded_at = self.now
            return allowed
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
            if _prune_drawn():
                cursor.execute(PRUNE)
        if allowed:
            self._wait = None
            self._recorded_at = now
        elif oldest is None:  # the window filled up after this statement's snapshot
            self._wait = float(self.duration)
        else:  # as DRF: the next request fits when the oldest one in the window leaves it
            self._wait = max(oldest + self.duration - now, 1.0)
        return allowed

    def wait(self) -> float | None:
        if connection.vendor != "postgresql":
            return super().wait()
        return None if self._wait is None else math.ceil(self._wait)

    def release(self) -> None:
        """Give back the place this request took, if it took one: it turned out not to count
        (a login that succeeded, or one another limit refused)."""
        at, self._recorded_at = self._recorded_at, None
        if at is None or self.key is None:
            return
        if connection.vendor != "postgresql":
            history = self.cache.get(self.key, [])
            if at in history:
                history.remove(at)
                self.cache.set(self.key, history, self.duration)
            return
        with connection.cursor() as cursor:
            cursor.execute(RELEASE, {"key": self.key, "at": at})


def login_username_digest(request, view=None) -> str | None:
    """The username a login tries, as login reads it (its field trims white space and
    zero-width characters: " bob", "bob\t" and "\u200bbob" log in as bob), then folded so that
    every spelling of one account counts against it; hashed. None when there is none. A view
    where a signed-in account tries its own password (`checks_own_password`: `POST
    auth/password`) tries that account's, whatever the body names."""
    if getattr(view, "checks_own_password", False) and request.user.is_authenticated:
        return username_digest(request.user.get_username())
    # The API's JSON body, or the console login's form.
    data = request.data if hasattr(request, "data") else request.POST
    return username_digest(data.get("username") if hasattr(data, "get") else None)


def username_digest(username: object) -> str | None:
    """`login_username_digest` of a username: trimmed, folded, hashed; None if it is no text."""
    if not isinstance(username, str):
        return None  # nothing to guess with; the per-client limit still applies
    folded = trimmed(unicodedata.normalize("NFKC", trimmed(username)).casefold())
    if not folded:
        return None
    return _keyed_digest(folded.encode("utf-8", "surrogatepass"))


# Django's keyed digest of SECRET_KEY, under a salt of this use alone.
_DIGEST_SALT = "pantheon.throttling.login"


def _keyed_digest(data: bytes) -> str:
    """A digest no one can recompute without the SECRET_KEY: the throttle's rows name an
    account and the addresses it logs in from (kept 30 days), and a plain SHA-256 of a known
    username with each of the 2^32 IPv4 addresses would give those addresses back."""
    return salted_hmac(_DIGEST_SALT, data, algorithm="sha256").hexdigest()


def login_address(request) -> str | None:
    """The client's address as the login limits count it (DRF's `get_ident`: REMOTE_ADDR, or
    the proxy's X-Forwarded-For entry), an IPv6 address as its /64: a host may send from any
    address of its /64 (each would be a fresh count), and a phone's or a laptop's privacy
    address changes within it every day or so (each would be a new, unknown address). An
    IPv4-mapped IPv6 address is its IPv4 address."""
    ident = BaseThrottle().get_ident(request)
    try:
        address = ipaddress.ip_address(ident)
    except ValueError:
        return ident
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return ident


class AuthTokenPerClientThrottle(SettingRateThrottle):
    """Failed logins per client address (REMOTE_ADDR, or the proxy's X-Forwarded-For entry
    when `PANTHEON_NUM_PROXIES` says how many proxies to trust; an IPv6 address by its /64),
    whatever the usernames."""

    scope = "auth_token_client"
    rate_setting = "PANTHEON_AUTH_RATE_PER_IP"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": login_address(request)}


class AuthTokenPerUsernameThrottle(SettingRateThrottle):
    """Failed logins at one username from one address. Keyed on the address too, so that a
    stranger's guesses do not refuse the owner's own address; below the per-client limit, it
    bounds the guesses at one account from an address that may try many (an office's NAT, given
    a higher `PANTHEON_AUTH_RATE_PER_IP`)."""

    scope = "auth_token_username"
    rate_setting = "PANTHEON_AUTH_RATE_PER_USERNAME"

    def get_cache_key(self, request, view) -> str | None:
        username = login_username_digest(request, view)
        if username is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": _at_address(username, request)}


class AuthTokenPerUsernameTotalThrottle(SettingRateThrottle):
    """Failed logins at one username from every address together: a guesser with many
    addresses is as slow at one account as this. The addresses the account logged in from in
    the last 30 days are spared it (`remember_login_address`): a stranger who fills it refuses
    only the owner's first login from a new address, never the usual ones."""

    scope = "auth_token_username_total"
    rate_setting = "PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL"

    def get_cache_key(self, request, view) -> str | None:
        username = login_username_digest(request, view)
        if username is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": username}

    def allow_request(self, request, view) -> bool:
        if self.rate is not None and login_address_is_known(request, view):
            return True
        return super().allow_request(request, view)


# Every limit a login is under, at either door.
LOGIN_THROTTLES = (
    AuthTokenPerClientThrottle,
    AuthTokenPerUsernameThrottle,
    AuthTokenPerUsernameTotalThrottle,
)


def _login_address_key(username: str | None, request) -> str | None:
    """The row saying that the account `username` (a `username_digest`) logged in from the
    request's address."""
    if username is None:
        return None
    return f"throttle_auth_known_{_at_address(username, request)}"


def _at_address(username: str, request) -> str:
    """One account (a `username_digest`) at the request's address: the per-username limit's key
    and its known addresses' are the same, or a known address would stop matching."""
    return _keyed_digest(f"{username} {login_address(request)}".encode())


def remember_login_address(request, user) -> None:
    """`user` logged in (its password checked) from this address: for 30 days its total of
    failures (`AuthTokenPerUsernameTotalThrottle`) does not refuse it there. Keyed on the
    account's own username, never on what the request sent."""
    key = _login_address_key(username_digest(user.get_username()), request)
    if key is None:
        return
    if connection.vendor != "postgresql":
        cache.set(key, True, KNOWN_ADDRESS_SECONDS)
        return
    with connection.cursor() as cursor:
        cursor.execute(REMEMBER, {"key": key, "keep": float(KNOWN_ADDRESS_SECONDS)})


def login_address_is_known(request, view=None) -> bool:
    key = _login_address_key(login_username_digest(request, view), request)
    if key is None:
        return False
    if connection.vendor != "postgresql":
        return bool(cache.get(key))
    with connection.cursor() as cursor:
        cursor.execute(KNOWN, {"key": key})
        return cursor.fetchone()[0]


class LoginAttempt:
    """One try at a password, at either door (`POST auth/token`, the console's login), under
    the limits of `LOGIN_THROTTLES` (their histories shared by both doors: one account's password
    is guessed as slowly at either). Only failures count, so that no one's guesses deny an
    account's owner: `check` takes a place under each limit before the password is checked
    (racing guesses cannot all take the last place, as they could if a failure, once known,
    were recorded), and `succeeded` gives them back. An attempt a limit refuses gives back the
    places it took under the others, and one that turns out to check no password (a field
    missing or blank) gives back all of them (`release`): neither is a failure."""

    def __init__(self, request, view=None, throttles=None):
        self.request = request
        self.view = view
        self.throttles = (
            list(throttles) if throttles is not None else [cls() for cls in LOGIN_THROTTLES]
        )

    def check(self) -> int | None:
        """None if the attempt may go on, else the seconds until it may (and no place kept).
        The first limit that refuses ends the check: one that went on to the next limits would
        take their places (until it gave them back) from attempts its own limit let in."""
        allowed = []
        try:
            for throttle in self.throttles:
                if not throttle.allow_request(self.request, self.view):
                    for taken in allowed:
                        taken.release()
                    return math.ceil(throttle.wait() or 1)
                allowed.append(throttle)
        except BaseException:
            # A limit that failed (its database, a body it could not read): the attempt goes
            # no further, so it keeps no place; the failure, not a giving back's, is reported.
            for taken in allowed:
                with contextlib.suppress(Exception):
                    taken.release()
            raise
        return None

    def succeeded(self, user) -> None:
        """`user`'s password was right and the login goes through: it counts as no failure,
        and its address is one the account logs in from. Only for a user whose password was
        checked: an attempt that checked none gives its places back with `release`."""
        self.release()
        remember_login_address(self.request, user)

    def release(self) -> None:
        """The attempt turned out to check no password (a field missing or blank): it counts
        as no failure, and makes no address known."""
        for throttle in self.throttles:
            throttle.release()


class PerUserRateThrottle(SettingRateThrottle):
    """A rate counted per authenticated user; requests without a user are not counted."""

    def get_cache_key(self, request, view) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class TurnRateThrottle(PerUserRateThrottle):
    """`POST sessions/{id}/turns` per user: each turn spends on LLM providers."""

    scope = "turns"
    rate_setting = "PANTHEON_TURN_RATE"


# The API's rates (`BucketRateThrottle`) in one statement on one row of constant size: a bucket
# of N requests that refills at N per period. `tat` is when the bucket is full again; a request
# at `now` takes a place if, once it is counted (tat = max(tat, now) + period / N), the bucket
# is not over-full (tat - now <= period). The outer SELECT reads, from the snapshot before, the
# `tat` of a refused request, to say when the next place frees up.
BUCKET = """
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now),
taken AS (
    INSERT INTO pantheon_rate AS r (key, tat)
    SELECT %(key)s, now + %(interval)s FROM clock
    ON CONFLICT (key) DO UPDATE
    SET tat = greatest(r.tat, EXCLUDED.tat - %(interval)s) + %(interval)s
    WHERE greatest(r.tat, EXCLUDED.tat - %(interval)s) + %(interval)s
        <= EXCLUDED.tat - %(interval)s + %(period)s
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM taken),
       (SELECT tat FROM pantheon_rate WHERE key = %(key)s),
       (SELECT now FROM clock)
"""
# Whether a bucket has a place left, without taking it: its `tat` (none: full) and the time.
PEEK = """
SELECT (SELECT tat FROM pantheon_rate WHERE key = %(key)s),
       extract(epoch FROM clock_timestamp())::float8
"""
# A place given back (`BucketRateThrottle.release`).
GIVE_BACK = "UPDATE pantheon_rate SET tat = tat - %(interval)s WHERE key = %(key)s"
# A bucket full again says nothing: its row goes. No index on `tat` (the update stays HOT):
# this scans the table, of one row per user busy within the last period, one check in 1000.
PRUNE_BUCKETS = "DELETE FROM pantheon_rate WHERE tat < extract(epoch FROM clock_timestamp())"


class BucketRateThrottle(PerUserRateThrottle):
    """A per-user rate checked on nearly every request, so cheap: on PostgreSQL a bucket of N
    requests refilled at N per period (`N/period`), one statement on one row of constant size
    in an UNLOGGED table (migration pantheon.0003: its commit waits for no WAL flush). A steady
    client gets N per period; a burst after a quiet period may take the whole bucket at once.
    (`pantheon_throttle`'s history would hold and rewrite N timestamps on every request, and
    DRF's cache five statements.) On SQLite, DRF's cache-based history, as the others.

    Only authenticated requests are counted, each user apart."""

    def _hit(self, key: str) -> bool:
        period = float(self.duration)
        params = {"key": key, "interval": period / self.num_requests, "period": period}
        with connection.cursor() as cursor:
            cursor.execute(BUCKET, params)
            allowed, tat, now = cursor.fetchone()
            if _prune_drawn():
                cursor.execute(PRUNE_BUCKETS)
        if allowed:
            self._wait = None
            self._recorded_at = now  # a place taken, which `release` gives back
        else:  # the next place frees up when the bucket's level is one below full
            interval = params["interval"]
            level = max(tat if tat is not None else now, now) + interval
            self._wait = max(level - period - now, 1.0)
        return allowed

    def release(self) -> None:
        """Give back the place this request took, if it took one: the bucket's level one place
        lower (another request's place taken meanwhile stays taken)."""
        if connection.vendor != "postgresql":
            return super().release()
        at, self._recorded_at = self._recorded_at, None
        if at is None or self.key is None:
            return
        interval = float(self.duration) / self.num_requests
        with connection.cursor() as cursor:
            cursor.execute(GIVE_BACK, {"key": self.key, "interval": interval})

    def spent(self, request, view=None) -> bool:
        """Whether the bucket has no place left for this request, without taking one (on
        PostgreSQL; elsewhere never); `wait` then says when the next frees up."""
        if connection.vendor != "postgresql" or self.rate is None:
            return False
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return False
        period = float(self.duration)
        interval = period / self.num_requests
        with connection.cursor() as cursor:
            cursor.execute(PEEK, {"key": self.key})
            tat, now = cursor.fetchone()
        if tat is None or tat + interval <= now + period:
            return False
        self._wait = max(tat + interval - period - now, 1.0)
        return True


class InvalidTokenThrottle(BucketRateThrottle):
    """Requests whose API token is unknown (or its user inactive), per client address as the
    login limits count it (`login_address`: `PANTHEON_NUM_PROXIES`, an IPv6 address by its
    /64), at `PANTHEON_INVALID_TOKEN_RATE`. Only failures take a place (`failed`, after the
    token's lookup found none); while the address's bucket is spent, every token from it is
    refused before its lookup (`refuses`): a flood of made-up tokens costs no token lookup,
    and valid tokens from that address are refused with it (README: telling them apart is that
    lookup).

    Whether to look before the lookup is a hint kept by each worker: the addresses a token
    failed from on this worker within the rate's period (a bucket that no failure touched for a
    period is full again). The count itself is the shared bucket's; a worker that has not seen
    an address fail yet looks the token up, and counts its failure there, once."""

    scope = "invalid_token"
    rate_setting = "PANTHEON_INVALID_TOKEN_RATE"
    # Address key -> until when (time.monotonic()) this worker looks at its bucket first.
    _failing: "OrderedDict[str, float]" = OrderedDict()
    _failing_lock = threading.Lock()
    FAILING_KEPT = 10_000

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": login_address(request)}

    def refuses(self, request) -> bool:
        """Whether the request is refused before its token is looked up: its address's bucket is
        spent (looked at only where a token failed from it on this worker lately)."""
        if self.rate is None or not self._failing:
            return False  # no token failed on this worker lately: nothing to look at
        key = self.get_cache_key(request, None)
        with self._failing_lock:
            until = self._failing.get(key)
            if until is not None and until < time.monotonic():
                del self._failing[key]
                until = None
        return until is not None and self.spent(request)

    def failed(self, request) -> bool:
        """Counts a failed token; whether the address is over its rate (then `wait` says how
        long until the next place)."""
        if self.rate is None:
            return False
        allowed = self.allow_request(request, None)
        key = self.get_cache_key(request, None)
        with self._failing_lock:
            self._failing[key] = time.monotonic() + self.duration
            self._failing.move_to_end(key)
            while len(self._failing) > self.FAILING_KEPT:
                self._failing.popitem(last=False)
        return not allowed

    @classmethod
    def forget_failing(cls) -> None:
        """This worker's hint emptied (a test's fresh worker)."""
        with cls._failing_lock:
            cls._failing.clear()


class ApiRateThrottle(BucketRateThrottle):
    """Every authenticated API request but a turn's post (which has `PANTHEON_TURN_RATE`), per
    user: one account's flood of requests must not slow every other account's (the default
    throttle, REST_FRAMEWORK's DEFAULT_THROTTLE_CLASSES)."""

    scope = "api"
    rate_setting = "PANTHEON_API_RATE"


class TokenRateThrottle(BucketRateThrottle):
    """Signing out and rotating a token (`DELETE auth/token`, `POST auth/token/rotate`), per
    user, at `PANTHEON_API_RATE`'s pace in a bucket of their own: each revocation is a line of
    the account's console history, so a loop of them must not run at any speed, but a flood of
    other requests (a runaway script, a leaked token's holder) must not keep its owner from
    revoking the token, as it did when they shared the API rate's bucket (429 for as long as
    the flood went on)."""

    scope = "token"
    rate_setting = "PANTHEON_API_RATE"


class CreateRateThrottle(BucketRateThrottle):
    """POSTs that create an agent, a room or a session, per user: within the bounds on what an
    account owns (`pantheon.quotas`), a loop of creates and deletes would still add a row each
    time (rooms and sessions are deleted softly, their rows kept)."""

    scope = "creates"
    rate_setting = "PANTHEON_CREATE_RATE"

    def get_cache_key(self, request, view) -> str | None:
        if request.method != "POST":
            return None
        return super().get_cache_key(request, view)


# The throttles of a view that creates agents, rooms or sessions with its POST.
CREATING_THROTTLES = [ApiRateThrottle, CreateRateThrottle]


class GivesBackRefusedCreates:
    """For a view with `CREATING_THROTTLES`: a POST answered other than 2xx created nothing (a
    body that does not validate, 400; a bound reached, 409; another limit's 429; a 404), so it
    gives back the place it took under `PANTHEON_CREATE_RATE`: a user who fixes a typo and
    retries is not short of creates for it. Its place under `PANTHEON_API_RATE` stays taken,
    which bounds a loop of invalid bodies."""

    def get_throttles(self):
        self.checked_throttles = super().get_throttles()  # type: ignore[misc]
        return self.checked_throttles

    def finalize_response(self, request, response, *args, **kwargs):
        if request.method == "POST" and not 200 <= response.status_code < 300:
            for throttle in getattr(self, "checked_throttles", ()):
                if isinstance(throttle, CreateRateThrottle):
                    # A database that is gone (a 503 already) leaves nothing to give back to.
                    with contextlib.suppress(DatabaseError):
                        throttle.release()
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
