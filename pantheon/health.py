import logging
import os

from django.conf import settings
from django.db import DatabaseError, connection
from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestration.gateway import CALLS
from pantheon import draining
from pantheon.authentication import SessionAuthentication, TokenAuthentication
from pantheon.capacity import PROCESS
from pantheon.db import pool_now, sections_now
from pantheon.exceptions import DatabaseUnavailable
from pantheon.schema import CodedErrorSerializer

logger = logging.getLogger(__name__)


WORKER = inline_serializer(
    "HealthWorker",
    {
        "pid": serializers.IntegerField(),
        "requests_in_flight": serializers.IntegerField(),
        "request_limit": serializers.IntegerField(allow_null=True),
        "turns_running": serializers.IntegerField(),
        "db_sections": inline_serializer(
            "HealthDbSections",
            {
                "running": serializers.IntegerField(),
                "waiting": serializers.IntegerField(),
                "limit": serializers.IntegerField(help_text="0: no limit"),
            },
        ),
        "db_pool": inline_serializer(
            "HealthDbPool",
            {
                "size": serializers.IntegerField(),
                "idle": serializers.IntegerField(),
                "max": serializers.IntegerField(),
                "waiting": serializers.IntegerField(),
            },
            allow_null=True,
        ),
        "llm": inline_serializer(
            "HealthLlmCalls",
            {
                "window_seconds": serializers.IntegerField(),
                "calls": serializers.IntegerField(),
                "failed": serializers.IntegerField(),
                "refused_key": serializers.IntegerField(
                    help_text="failed with a 401 or 403: the provider refused the alias's key"
                ),
                "mean_ms": serializers.IntegerField(allow_null=True),
                "max_ms": serializers.IntegerField(allow_null=True),
                "last_failure": inline_serializer(
                    "HealthLlmFailure",
                    {
                        "at": serializers.DateTimeField(),
                        "model_alias": serializers.CharField(),
                        "error_kind": serializers.CharField(),
                        "provider_status": serializers.IntegerField(allow_null=True),
                    },
                    allow_null=True,
                ),
            },
        ),
    },
    allow_null=True,  # its figures could not be read (`worker_now`)
    required=False,  # for staff alone (`operator_asks`)
    help_text="How loaded the worker that answers is: to staff alone (an API token or the "
    "console's session of a staff account); null if its figures cannot be read.",
)
HEALTH = inline_serializer(
    "Health",
    {
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "database": serializers.ChoiceField(choices=["postgresql", "sqlite"]),
        "llm_backend": serializers.ChoiceField(choices=["demo", "live"]),
        "worker": WORKER,
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

    def perform_authentication(self, request):
        """None up front (DRF's would set the console session's user to anonymous, there
        being no authentication classes): `operator_asks` reads the credentials, when sent."""

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
            # Whether to show the worker's figures: a staff caller's token or session is read
            # from the database too, so an outage leaves them out (no one to show them to).
            operator = operator_asks(request)
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
        if operator:
            body["worker"] = worker_now()
        return Response(body)


def operator_asks(request) -> bool:
    """Whether the caller is staff, by the API's token or the console's session: the worker's
    figures (its pid, its load, the aliases whose calls fail) are the operators', not every
    address's. A balancer's probe sends no credentials and is answered without a lookup; a
    credential that fails is no operator, never a 401 (the check stays a probe)."""
    if not (
        request.META.get("HTTP_AUTHORIZATION") or settings.SESSION_COOKIE_NAME in request.COOKIES
    ):
        return False
    for authenticator in (TokenAuthentication(), SessionAuthentication()):
        try:
            found = authenticator.authenticate(request)
        except APIException:  # an unknown token (counted against the address), a throttle
            return False
        if found is not None:
            return found[0].is_staff
    return False


def worker_now() -> dict | None:
    """`worker_figures`, or None if they cannot be read: the check's verdict is the database's,
    and a figure that fails must not turn it into a 500."""
    try:
        return worker_figures()
    except Exception:
        logger.exception("health check: the worker's figures could not be read")
        return None


def worker_figures() -> dict:
    """How loaded the worker that answers is, from counters it keeps in memory (no query): what
    "everything is slow" asks first. Requests in flight against `GUNICORN_WORKER_CONNECTIONS`
    (past it: 503 `over_capacity`), the turns it runs (their clients there or gone), its
    database sections running and waiting for a place (`PANTHEON_DB_SECTIONS`: waiting ones
    mean its database work queues), and its connection pool (connections open, idle, the most
    it opens, requests waiting for one: waiting ones mean the pool is exhausted or PostgreSQL
    is slow to hand connections), and its LLM calls of the last five minutes (how many, failed,
    refused their key, how long they took, the latest failure: a rotated key shows as
    `refused_key` climbing). One worker's: a balancer's probe reaches one of them."""
    return {
        "pid": os.getpid(),
        "requests_in_flight": PROCESS.in_flight,
        "request_limit": PROCESS.limit,
        "turns_running": draining.turns_running(),
        "db_sections": sections_now(),
        "db_pool": pool_now(),
        "llm": CALLS.figures(),
    }
