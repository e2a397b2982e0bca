"""`POST auth/token`: where API callers get their token."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.settings import api_settings

from pantheon.throttling import AuthTokenPerClientThrottle, AuthTokenPerUsernameThrottle


class ObtainTokenView(ObtainAuthToken):
    """`POST auth/token` `{username, password}` → `{"token": ...}`: the caller's API token.

    JSON only, like the rest of the API, and throttled per client address and per username
    (`PANTHEON_AUTH_RATE_PER_IP`, `PANTHEON_AUTH_RATE_PER_USERNAME`).
    """

    authentication_classes = []
    parser_classes = api_settings.DEFAULT_PARSER_CLASSES
    throttle_classes = [AuthTokenPerClientThrottle, AuthTokenPerUsernameThrottle]

    @extend_schema(
        request=inline_serializer(
            "AuthTokenRequest",
            {
                "username": serializers.CharField(),
                "password": serializers.CharField(trim_whitespace=False),
            },
        ),
        responses={200: inline_serializer("AuthToken", {"token": serializers.CharField()})},
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)
