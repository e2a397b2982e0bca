import logging

from django.conf import settings
from django.db import DatabaseError, connection
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger(__name__)


HEALTH = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(),
        "database": serializers.CharField(),
        "llm_backend": serializers.CharField(),
    },
)


class HealthView(APIView):
    """Liveness and readiness: 200 when the database answers, 503 when it does not."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            200: HEALTH,
            503: OpenApiResponse(HEALTH, description="The database does not answer."),
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
            return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(body)
