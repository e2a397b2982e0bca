"""`POST auth/token`: where API callers get their token; `DELETE auth/token` and
`POST auth/token/rotate`: where they end it, or replace it with a new one; `POST
auth/password`: where they change their password."""

from django.contrib.auth import get_user_model
from django.db import transaction
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from pantheon.authentication import TokenAuthentication
from pantheon.exceptions import InvalidCredentials, WrongCurrentPassword
from pantheon.fields import StrictCharField
from pantheon.passwords import api_token_rotate, api_token_sign_out, password_change
from pantheon.schema import BadRequestBody, InvalidCredentialsSerializer, bad_request
from pantheon.throttling import LOGIN_THROTTLES, LoginAttempt, TokenRateThrottle

TOKEN_ANSWER = inline_serializer("AuthToken", {"token": serializers.CharField()})
# A credential: no cache (a proxy's, the browser's) keeps a copy (RFC 6749, 5.1).
NO_STORE = {"Cache-Control": "no-store"}


class TokenRequestSerializer(AuthTokenSerializer):
    """DRF's login body, its texts held to the API's rule: a string, or "Must be a string." as
    every other field of the API says (DRF's own says "Not a valid string.")."""

    username = StrictCharField(write_only=True)
    password = StrictCharField(trim_whitespace=False, write_only=True)
    # Whether validation went as far as checking the password (DRF's `validate` checks it only
    # when both fields are there, and runs only when each field is valid).
    password_checked = False

    def validate_username(self, username: str) -> str:
        # As the console's login reads it (Django's `UsernameField`) and as usernames are
        # stored (`normalize_username`): NFKC, so that "ｒｏｏｔ" is root and "zoe\u0308" is zoë.
        # The login limits fold the name so too (`pantheon.throttling.username_digest`).
        return get_user_model().normalize_username(username)

    def validate(self, attrs):
        self.password_checked = bool(attrs.get("username") and attrs.get("password"))
        return super().validate(attrs)


class ObtainTokenView(ObtainAuthToken):
    """`POST auth/token` `{username, password}` → `{"token": ...}`: the caller's API token.

    JSON only, like the rest of the API. Its failures are throttled per client address, per
    username from one address and per username in all (`PANTHEON_AUTH_RATE_PER_IP`,
    `PANTHEON_AUTH_RATE_PER_USERNAME`, `PANTHEON_AUTH_RATE_PER_USERNAME_TOTAL`): a login that
    succeeds counts for none (`pantheon.throttling.LoginAttempt`).
    """

    serializer_class = TokenRequestSerializer
    parser_classes = api_settings.DEFAULT_PARSER_CLASSES
    login_attempt: LoginAttempt | None = None

    def _signing_out(self) -> bool:
        request = getattr(self, "request", None)  # Django's, then DRF's: both say the method
        return request is not None and request.method == "DELETE"

    # A login (POST) takes a password and no credentials, under the login limits; a sign-out
    # (DELETE) is the token's own, authenticated by it alone (not a console cookie), and is
    # no login: it takes no place under those limits, but one at the user's API rate, in a
    # bucket apart from their other requests' (`TokenRateThrottle`).
    def get_authenticators(self):
        return [TokenAuthentication()] if self._signing_out() else []

    def get_permissions(self):
        return [IsAuthenticated()] if self._signing_out() else []  # DRF's login: none

    def get_throttles(self):
        if self._signing_out():
            return [TokenRateThrottle()]
        return [throttle() for throttle in LOGIN_THROTTLES]

    def check_throttles(self, request):
        """DRF's check, as one login attempt: its places are given back if it succeeds, or if
        it checks no password. Only a POST tries one (a GET, 405, or an OPTIONS takes no place),
        and its body is read before any place is taken: a body that cannot be read (415, or
        malformed JSON, 400) is refused with no place taken. A sign-out: `TokenRateThrottle`'s."""
        if self._signing_out():
            return super().check_throttles(request)
        if request.method != "POST":
            return
        request.data  # noqa: B018 (raises for a body that cannot be read)
        self.login_attempt = LoginAttempt(request, self, self.get_throttles())
        wait = self.login_attempt.check()
        if wait is not None:
            self.throttled(request, wait)

    @extend_schema(
        request=inline_serializer(
            "Credentials",
            {
                "username": serializers.CharField(),
                "password": serializers.CharField(trim_whitespace=False),
            },
        ),
        responses={
            200: TOKEN_ANSWER,
            400: bad_request(
                "`invalid_credentials`: a wrong username or password (or an inactive user): "
                '`{"non_field_errors": ["Unable to log in with provided credentials."], '
                '"detail": {"code": "invalid_credentials", "message": "…"}}` '
                "(`non_field_errors` as ever, the code beside it). A missing field: "
                '`{"username": ["This field is required."]}`.',
                BadRequestBody(InvalidCredentialsSerializer),
            ),
        },
    )
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            if self.login_attempt is not None and not serializer.password_checked:
                # A field missing, blank or not a string: no password was checked, so this is
                # no failure (a stranger's bodies naming an account must not fill its limits).
                self.login_attempt.release()
            if serializer.password_checked:
                # DRF's "Unable to log in…", the one error a checked password gives: as a
                # refusal with its code, DRF's key kept beside it.
                raise InvalidCredentials()
            raise serializers.ValidationError(serializer.errors)
        user = serializer.validated_data["user"]
        with transaction.atomic():
            # Checking a password takes a while: one changed meanwhile (its token revoked) must
            # not hand the old password a new token. The user's row, locked, holds the hash
            # that was checked, or the change is refused as the wrong password it now is.
            stored = (
                get_user_model()
                .objects.select_for_update()
                .filter(pk=user.pk, is_active=True)
                .values_list("password", flat=True)
                .first()
            )
            if stored != user.password:
                raise InvalidCredentials()
            token, _ = Token.objects.get_or_create(user=user)
        if self.login_attempt is not None:
            self.login_attempt.succeeded(user)
        return Response({"token": token.key}, headers=NO_STORE)

    @extend_schema(
        request=None,
        responses={204: None},
        description="Sign out: the token that authenticates this request (`Authorization: "
        "Token …`; a console cookie does not) is revoked at once, and every request with it "
        "is a 401 from then on; a login (`POST auth/token`) hands out a new one. In the "
        "account's console history. A token ended meanwhile by another request (a rotation) "
        "is a 401 here too.",
    )
    def delete(self, request, *args, **kwargs):
        if not api_token_sign_out(token=request.auth):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class RotateTokenView(APIView):
    """`POST auth/token/rotate` (no body) → `{"token": ...}`: a new token in place of the one
    that authenticates the request, which is dead at once."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]
    # The API rate's pace, in a bucket apart: a flood of other requests cannot keep it back.
    throttle_classes = [TokenRateThrottle]

    @extend_schema(
        request=None,
        responses={200: TOKEN_ANSWER},
        description="Rotate the API token: a new token replaces the one that authenticates "
        "this request (`Authorization: Token …`; a console cookie does not), which is a 401 "
        "from then on; no password needed, no body read. In the account's console history. Of "
        "two rotations with one token at once, one gets the new token and the other a 401 "
        "(its token ended by the first): one token is left.",
    )
    def post(self, request, *args, **kwargs):
        token = api_token_rotate(token=request.auth)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        return Response({"token": token.key}, headers=NO_STORE)


class PasswordChangeSerializer(serializers.Serializer):
    current_password = StrictCharField(trim_whitespace=False, write_only=True)
    new_password = StrictCharField(
        trim_whitespace=False,
        write_only=True,
        help_text="Held to the server's password rules (Django's validators: length, not too "
        "common, not all digits, not like the username).",
    )


class ChangePasswordView(GenericAPIView):
    """`POST auth/password` `{current_password, new_password}` → `{"token": ...}`."""

    serializer_class = PasswordChangeSerializer  # what OPTIONS describes, as the schema

    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]
    # The login limits count a wrong current password as a failed login of this account
    # (`pantheon.throttling.login_username_digest`): a leaked token's holder guesses the
    # password here no faster than at the login.
    checks_own_password = True
    login_attempt: LoginAttempt | None = None

    def get_throttles(self):
        return [TokenRateThrottle(), *(throttle() for throttle in LOGIN_THROTTLES)]

    def check_throttles(self, request):
        """The API rate's pace, in the bucket of `DELETE auth/token` and rotation, for every
        POST (a body that cannot be read included: it went unthrottled); then, as a login, a
        place under each login limit, given back unless the current password turns out wrong
        (`LoginAttempt`), once the body is read."""
        if request.method != "POST":
            return
        pace, *login = self.get_throttles()
        if not pace.allow_request(request, self):
            self.throttled(request, pace.wait())
        request.data  # noqa: B018 (raises for a body that cannot be read)
        self.login_attempt = LoginAttempt(request, self, login)
        wait = self.login_attempt.check()
        if wait is not None:
            self.throttled(request, wait)

    @extend_schema(
        request=PasswordChangeSerializer,
        responses={
            200: TOKEN_ANSWER,
            400: bad_request(
                "`wrong_current_password` (a coded refusal): `current_password` is not the "
                "account's, and nothing changed; the new password refused by the password "
                'rules, as field errors: `{"new_password": ["This password is too short. '
                'It must contain at least 8 characters."]}`.'
            ),
        },
        description="Change the account's password: `current_password`, and `new_password`, "
        "held to the server's password rules. The account's API token is revoked, the one "
        "that authenticates this request included, and its console sessions end (a password "
        "change ends both, wherever it is made); the answer is the new token that takes its "
        "place (`Cache-Control: no-store`). In the account's console history. Authenticated "
        "by the token alone (a console cookie does not: 401). A wrong current password counts "
        "as a failed login of the account under the login limits (429 `throttled`), and every "
        "call at the pace of `PANTHEON_API_RATE` in the bucket of the token's other calls.",
    )
    def post(self, request, *args, **kwargs):
        body = self.get_serializer(data=request.data)
        if not body.is_valid():
            if self.login_attempt is not None:
                self.login_attempt.release()  # no password checked: no failure
            raise serializers.ValidationError(body.errors)
        try:
            token = password_change(user=request.user, **body.validated_data)
        except WrongCurrentPassword:
            raise  # the failure keeps its places under the login limits
        except BaseException:
            if self.login_attempt is not None:
                self.login_attempt.release()  # the password was right, or never checked
            raise
        if self.login_attempt is not None:
            self.login_attempt.succeeded(request.user)
        return Response({"token": token.key}, headers=NO_STORE)
