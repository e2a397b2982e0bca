"""How API callers authenticate.

Both authentication classes bind the user's id to the log context (`pantheon.logging_context`),
so every later log line of the request says whose it was.
"""

import re
from importlib import import_module

from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from pantheon import logging_context
from pantheon.compiled import CompiledRead
from pantheon.exceptions import InvalidTokensThrottled
from pantheon.throttling import InvalidTokenThrottle

BEARER = "Bearer"
# The shape of the keys `POST auth/token` gives (DRF's: 40 hexadecimal digits).
OUR_KEY = re.compile(rb"[0-9a-fA-F]{40}")


def _token_with_user(key: str):
    return Token.objects.select_related("user", "user__billing_profile").filter(key=key)


# Every API request reads its token: compiled once per process (`pantheon.compiled`).
_TOKEN_WITH_USER = CompiledRead(_token_with_user, key=str)


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, loading the user's billing profile in the same query.

    Every turn checks the profile (suspension, credit cap) before any spend; fetching it with
    the token saves that query on the hot path.
    """

    request = None

    def authenticate(self, request):
        self.request = request  # for the limit on invalid tokens, by the client's address
        # `Bearer <key>` is the same token: what OAuth-minded HTTP clients and SDKs send
        # unless told otherwise, which was a 401 `not_authenticated` as if no token were sent.
        # (DRF makes the authenticators afresh for each request: the keyword is this one's.)
        scheme, _, credential = authentication.get_authorization_header(request).partition(b" ")
        if scheme.lower() == BEARER.lower().encode():
            if not OUR_KEY.fullmatch(credential.strip()):
                # Another system's bearer token (a JWT a proxy or a gateway adds): not ours to
                # judge, nor to count against the address as a made-up key; as before, the
                # request is taken as sending no API token.
                return None
            self.keyword = BEARER
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        limit = InvalidTokenThrottle()
        if self.request is not None and limit.refuses(self.request):
            # The address sent too many invalid tokens: refused before any lookup.
            raise InvalidTokensThrottled(limit.wait())
        try:
            token = _TOKEN_WITH_USER.get(key=key)
        except Token.DoesNotExist as exc:
            self._failed(limit)
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        if not token.user.is_active:
            self._failed(limit)
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        token.user.billing_profile_loaded = True
        logging_context.bind(user_id=token.user.pk)
        return token.user, token

    def _failed(self, limit: InvalidTokenThrottle) -> None:
        """Counts the failure against the client's address: past its rate, a 429 (and the
        address's next tokens refused unread) instead of the 401."""
        if self.request is not None and limit.failed(self.request):
            raise InvalidTokensThrottled(limit.wait())


class SessionAuthentication(authentication.SessionAuthentication):
    """The admin's cookie session, for the browsable API and the docs."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            logging_context.bind(user_id=result[0].pk)
        return result


def still_signed_in(request) -> bool:
    """Whether the credentials `request` was authenticated with still hold, read again: its API
    token not signed out or rotated (and its user still active), or its console session not
    logged out nor ended by a password change. A stream checks it as it goes: it outlived a
    sign-out, so a revoked token kept reading the conversation as long as the stream stayed
    open."""
    if isinstance(request.auth, Token):
        return Token.objects.filter(key=request.auth.key, user__is_active=True).exists()
    session = getattr(request._request, "session", None)
    if session is None or session.session_key is None:
        return False
    reread = HttpRequest()
    reread.session = import_module(settings.SESSION_ENGINE).SessionStore(session.session_key)
    return auth.get_user(reread).pk == request.user.pk
