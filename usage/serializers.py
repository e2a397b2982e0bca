from datetime import UTC, date, datetime, time, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from usage.models import USAGE_TOTAL_FIELDS, DailyUsageRollup, ModelAlias
from usage.selectors import month_start, next_month_start


class ModelAliasSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelAlias
        fields = ["alias", "context_window", "max_output_tokens"]
        read_only_fields = fields


class DayOrMomentField(serializers.Field):
    """An ISO date (the whole UTC day) or an ISO datetime (naive means UTC).

    Parses to `(moment, whole_day)`: a bare date as an upper bound includes its whole day.
    """

    default_error_messages = {
        "invalid": "Use an ISO date (2026-11-01) or an ISO datetime (2026-11-01T12:00:00Z)."
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            day = date.fromisoformat(data)
        except ValueError:
            pass
        else:
            return datetime.combine(day, time.min, tzinfo=UTC), True
        try:
            moment = parse_datetime(data)
        except ValueError:
            moment = None
        if moment is None:
            self.fail("invalid")
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        return moment, False

    def to_representation(self, value):
        return value


class UsageQuerySerializer(serializers.Serializer):
    """`from` and `to` bound the range; default: the calendar month (UTC) of `from`, or this one.

    The validated data is `{"from": datetime, "to": datetime}`, `to` exclusive.
    """

    from_ = DayOrMomentField(required=False)
    to = DayOrMomentField(required=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields

    def validate(self, attrs):
        start = attrs["from"][0] if "from" in attrs else None
        if "to" in attrs:
            end, whole_day = attrs["to"]
            if whole_day:
                end += timedelta(days=1)
        else:
            end = None
        if start is None:
            start = month_start(end - timedelta(microseconds=1) if end else None)
        if end is None:
            end = next_month_start(start)
        if end <= start:
            raise serializers.ValidationError({"to": ["Must be after 'from'."]})
        return {"from": start, "to": end}


class UsageTotalsSerializer(serializers.ModelSerializer):
    """The usage totals (UsageTotals) of a turn, a rollup, or a dict of ledger sums."""

    class Meta:
        model = DailyUsageRollup
        fields = list(USAGE_TOTAL_FIELDS)
        read_only_fields = fields


class ModelUsageSerializer(UsageTotalsSerializer):
    model_alias = serializers.CharField(read_only=True)

    class Meta(UsageTotalsSerializer.Meta):
        fields = ["model_alias", *USAGE_TOTAL_FIELDS]
        read_only_fields = fields


class UsageSerializer(serializers.Serializer):
    from_ = serializers.DateTimeField()
    to = serializers.DateTimeField()
    credits_used = serializers.DecimalField(
        max_digits=24, decimal_places=10, help_text="Credits in the range from/to."
    )
    month_credits_used = serializers.DecimalField(
        max_digits=24,
        decimal_places=10,
        help_text="Credits this calendar month (UTC), whatever the range: what the cap counts.",
    )
    credit_cap = serializers.DecimalField(
        max_digits=24,
        decimal_places=10,
        allow_null=True,
        help_text="Monthly credit cap; null: no cap.",
    )
    by_model = ModelUsageSerializer(many=True)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields
