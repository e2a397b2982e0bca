"""Rate limits on what is cheap to send and costly to answer: logins and turns.

DRF throttles keep their counters in Django's default cache. In production that cache is
PostgreSQL (DatabaseCache, table `pantheon_cache`), shared by every worker and host, so a limit
means the same with two workers or twenty. Each throttle reads its rate from a setting at
request time (`PANTHEON_AUTH_RATE_PER_IP`, `PANTHEON_AUTH_RATE_PER_USERNAME`,
`PANTHEON_TURN_RATE`), so an operator can change it without code.
"""

import hashlib
import unicodedata

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class SettingRateThrottle(SimpleRateThrottle):
    rate_setting: str = ""

    def get_rate(self) -> str | None:
        return getattr(settings, self.rate_setting) or None

    @staticmethod
    def applies_to(method: str) -> bool:
        return True

    def allow_request(self, request, view) -> bool:
        if not self.applies_to(request.method):
            return True
        # The rate may have changed since the throttle was made (tests, settings reloads).
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


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
        username = request.data.get("username") if hasattr(request.data, "get") else None
        if not isinstance(username, str) or not username:
            return None  # nothing to guess with; the per-client limit still applies
        folded = unicodedata.normalize("NFKC", username).casefold()
        digest = hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}


class TurnRateThrottle(SettingRateThrottle):
    """`POST sessions/{id}/turns` per user: each turn spends on LLM providers."""

    scope = "turns"
    rate_setting = "PANTHEON_TURN_RATE"

    @staticmethod
    def applies_to(method: str) -> bool:
        return method == "POST"

    def get_cache_key(self, request, view) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
