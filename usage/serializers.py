import re
from datetime import UTC, date, datetime, time, timedelta

from django.db import DatabaseError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from pantheon.fields import StrictCharField
from usage.models import USAGE_TOTAL_FIELDS, DailyUsageRollup, ModelAlias
from usage.selectors import (
    model_alias_named,
    model_aliases_enabled,
    month_start,
    next_month_start,
)


@extend_schema_serializer(deprecate_fields=["alias"])
class ModelAliasSerializer(serializers.ModelSerializer):
    """An enabled alias as `GET models` lists it. Its name is `model_alias`, as an agent's
    `model_alias` and a turn's `model_alias_override` take it and `GET usage` totals by it;
    `alias`, its first name here, stays beside it for the clients that read it."""

    model_alias = serializers.CharField(
        source="alias",
        read_only=True,
        help_text="The alias, as an agent's `model_alias` (and a turn's "
        "`model_alias_override`) names it.",
    )
    alias = serializers.CharField(
        read_only=True, help_text="The same as `model_alias`, its first name: read that."
    )

    class Meta:
        model = ModelAlias
        fields = ["model_alias", "alias", "context_window", "max_output_tokens"]
        read_only_fields = fields


# What `from` and `to` look like: an ISO date (2026-11-01 or 20261101), or a date and time
# with an optional offset. A fraction of a second takes up to 9 digits, as clients write it
# (.NET's round-trip format 7, Go's RFC3339Nano and Java's Instant 9), read to the microsecond.
# Anything else is a 400. The schema publishes the same pattern, empty allowed (`?from=` means
# the default, as HTML forms send it).
_DAY_OR_MOMENT_SHAPE = (
    r"[0-9]{8}|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
DAY_OR_MOMENT_PATTERN = f"^({_DAY_OR_MOMENT_SHAPE})?$"
_DAY_OR_MOMENT = re.compile(_DAY_OR_MOMENT_SHAPE)

# The moments a usage query may name: wider than any ledger, narrow enough that the month and
# day arithmetic below never leaves Python's datetime range.
EARLIEST_MOMENT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_MOMENT = datetime(9999, 1, 1, tzinfo=UTC)


class ModelAliasField(StrictCharField):
    """A model alias by name (what `GET models` lists), in any case: read as the alias's own
    spelling (`STUBFAST` is `stubfast`), which is what is stored and answered. A name no alias
    has is kept as sent, for the caller to refuse. Which names are valid is data, not code, so
    the schema reads them when it is made (ModelAliasFieldSchema)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", ModelAlias._meta.get_field("alias").max_length)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not value:
            return value
        row = model_alias_named(value)
        return value if row is None else row.alias


class ModelAliasFieldSchema(OpenApiSerializerFieldExtension):
    """In a request body: one of the enabled aliases. In a response: any string, since an
    alias an agent uses may be disabled later."""

    target_class = "usage.serializers.ModelAliasField"

    def map_serializer_field(self, auto_schema, direction):
        schema = {"type": "string", "maxLength": self.target.max_length}
        try:
            aliases = list(model_aliases_enabled().values_list("alias", flat=True))
        except DatabaseError:  # a schema made offline, before `migrate`
            aliases = []
        if direction == "request" and aliases:
            schema["enum"] = [
                *([""] if self.target.allow_blank else []),
                *aliases,
                *([None] if self.target.allow_null else []),
            ]
            # One enum component per field name (ModelAliasEnum, ModelAliasOverrideEnum)
            # rather than a warning that one choice set has two names.
            schema["x-spec-enum-id"] = f"model-alias-{self.target.field_name}"
            schema["description"] = (
                "An enabled model alias (`GET models`); its case does not matter."
            )
        return schema


class DayOrMomentField(serializers.Field):
    """An ISO date (the whole UTC day) or an ISO datetime (naive means UTC), from 1970 to 9998.

    Parses to `(moment, whole_day)`, the moment in UTC (PostgreSQL refuses offsets past
    ±15:59, Python allows ±23:59): a bare date as an upper bound includes its whole day.
    """

    default_error_messages = {
        "invalid": "Use an ISO date (2026-11-01) or an ISO datetime (2026-11-01T12:00:00Z).",
        "out_of_range": "Use a moment from 1970-01-01 up to the end of 9998 (UTC).",
        "offset_plus_as_space": (
            "A + in a query string reads as a space: write an offset's + as %2B "
            "(2026-11-01T00:00:00%2B13:00), or give the moment in UTC (2026-10-31T11:00:00Z)."
        ),
    }

    def to_internal_value(self, data):
        if not isinstance(data, str) or not _DAY_OR_MOMENT.fullmatch(data):
            # `?from=2026-11-01T00:00:00+13:00` as typed, unescaped: its + arrives a space.
            if isinstance(data, str) and _DAY_OR_MOMENT.fullmatch(data.replace(" ", "+")):
                self.fail("offset_plus_as_space")
            self.fail("invalid")
        whole_day = False
        try:
            moment = datetime.combine(date.fromisoformat(data), time.min, tzinfo=UTC)
            whole_day = True
        except ValueError:
            moment = self._parse_moment(data)
        if not EARLIEST_MOMENT <= moment < LATEST_MOMENT:
            self.fail("out_of_range")
        return moment, whole_day

    def _parse_moment(self, data: str) -> datetime:
        try:
            moment = parse_datetime(data)
        except ValueError:
            moment = None
        if moment is None:
            self.fail("invalid")
        if timezone.is_naive(moment):
            return moment.replace(tzinfo=UTC)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            self.fail("out_of_range")

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
            # Never before 1970, as a given `from`: `to=1970-01-01` has nothing before it.
            start = max(
                month_start(end - timedelta(microseconds=1) if end else None), EARLIEST_MOMENT
            )
        if end is None:
            end = next_month_start(start)
        if end <= start:
            after = "'from'" if "from" in attrs else "1970-01-01T00:00:00Z, where usage starts"
            raise serializers.ValidationError({"to": [f"Must be after {after}."]})
        return {"from": start, "to": end}


class UsageTotalsSerializer(serializers.ModelSerializer):
    """Usage totals: LLM calls (agent answers, routing, summaries), tokens, credits and the
    provider's cost in USD (decimals as strings)."""

    class Meta:
        model = DailyUsageRollup
        fields = list(USAGE_TOTAL_FIELDS)
        read_only_fields = fields


class ModelUsageSerializer(UsageTotalsSerializer):
    """The caller's usage of one model alias in the range: every call made with it (agent
    answers, routing, summaries), its tokens, credits and provider cost in USD."""

    model_alias = serializers.CharField(read_only=True)

    class Meta(UsageTotalsSerializer.Meta):
        fields = ["model_alias", *USAGE_TOTAL_FIELDS]
        read_only_fields = fields


class UsageSerializer(serializers.Serializer):
    from_ = serializers.DateTimeField(help_text="The range's start, included.")
    to = serializers.DateTimeField(
        help_text="The range's end, excluded: a day's `to` (`to=2026-12-31`) comes back as the "
        "next midnight (`2027-01-01T00:00:00Z`)."
    )
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
        # `from` in its place, first (a Python keyword: declared as `from_`).
        return {
            "from" if name == "from_" else name: field
            for name, field in super().get_fields().items()
        }
