from decimal import Decimal

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from usage import selectors
from usage.serializers import (
    DAY_OR_MOMENT_PATTERN,
    ModelAliasSerializer,
    UsageQuerySerializer,
    UsageSerializer,
)


class ModelListView(generics.ListAPIView):
    """`GET models`: the enabled model aliases agents may use."""

    serializer_class = ModelAliasSerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.model_aliases_enabled()


class UsageView(APIView):
    """`GET usage?from=&to=`: the caller's usage in the range (every figure follows from/to),
    plus this calendar month's credits and the cap they count against, named apart."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "from",
                {"type": "string", "pattern": DAY_OR_MOMENT_PATTERN},
                description="ISO date or datetime (naive means UTC; an offset's + written "
                "%2B, as a query string's + reads as a space), 1970 to 9998. "
                "Default: the start of the month of `to`, or of this month.",
            ),
            OpenApiParameter(
                "to",
                {"type": "string", "pattern": DAY_OR_MOMENT_PATTERN},
                description="ISO date (that whole day included) or datetime (excluded), after "
                "`from`. Default: the end of the month of `from`.",
            ),
        ],
        responses=UsageSerializer,
    )
    def get(self, request: Request) -> Response:
        # An empty parameter (`?from=`) means the default, as forms send it.
        params = {key: value for key, value in request.query_params.items() if value}
        query = UsageQuerySerializer(data=params)
        query.is_valid(raise_exception=True)
        start, end = query.validated_data["from"], query.validated_data["to"]
        profile = selectors.billing_profile_for(user=request.user)
        by_model = selectors.usage_by_model(user=request.user, since=start, until=end)
        body = {
            "from": start,
            "to": end,
            "credits_used": sum((row["credits"] for row in by_model), Decimal("0")),
            "month_credits_used": selectors.month_credits(user=request.user),
            "credit_cap": profile.monthly_credit_cap if profile else None,
            "by_model": by_model,
        }
        return Response(UsageSerializer(body).data)
