import logging

from django.conf import settings
from django.db import DatabaseError, connection
from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from pantheon.exceptions import DatabaseUnavailable
from pantheon.schema import CodedErrorSerializer

logger = logging.getLogger(__name__)


HEALTH = inline_serializer(
    "Health",
    {
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "database": serializers.ChoiceField(choices=["postgresql", "sqlite"]),
        "llm_backend": serializers.ChoiceField(choices=["demo", "live"]),
    },
)
# A 503 is the health check's own answer (the database is down) or, as for any request, a full
# worker's `over_capacity` refusal (pantheon.capacity).
HEALTH_UNAVAILABLE = PolymorphicProxySerializer(
    component_name="HealthUnavailable",
    serializers=[HEALTH, CodedErrorSerializer],
    resource_type_field_name=None,
)


class HealthView(APIView):
    """Liveness and readiness: 200 when the database answers, 503 when it does not."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []  # no user to count: a load balancer's probe

    @extend_schema(
        responses={
            200: HEALTH,
            503: OpenApiResponse(
                HEALTH_UNAVAILABLE,
                description="The database does not answer (`status: unavailable`); or "
                "`over_capacity`: the server is serving as many requests as it can. Retry after "
                "`Retry-After` seconds.",
            ),
        }
    )
    def get(self, request):
        body = {
            "status": "ok",
            "database": connection.vendor,
            "llm_backend": settings.PANTHEON_LLM_BACKEND,
        }
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            logger.exception("health check: the database is unreachable")
            body["status"] = "unavailable"
            # When to look again, as the API's other 503s say it: a balancer or a client
            # polling readiness backs off as long as a request that lost its connection does
            # (a restart or a failover is seconds long).
            return Response(
                body,
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": str(DatabaseUnavailable.retry_after_seconds)},
            )
        return Response(body)
