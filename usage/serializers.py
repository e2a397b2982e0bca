from rest_framework import serializers

from usage.models import ModelAlias


class ModelAliasSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelAlias
        fields = ["alias", "context_window", "max_output_tokens"]
        read_only_fields = fields


class UsageQuerySerializer(serializers.Serializer):
    """`from` and `to` are dates (UTC days, both included) or datetimes; default: this month."""

    from_ = serializers.DateTimeField(required=False, input_formats=["iso-8601", "%Y-%m-%d"])
    to = serializers.DateTimeField(required=False, input_formats=["iso-8601", "%Y-%m-%d"])

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields

    def validate(self, attrs):
        start, end = attrs.get("from"), attrs.get("to")
        if start and end and end < start:
            raise serializers.ValidationError({"to": ["Must not be before 'from'."]})
        return attrs


class ModelUsageSerializer(serializers.Serializer):
    model_alias = serializers.CharField()
    llm_calls = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    credits = serializers.DecimalField(max_digits=24, decimal_places=10)
    provider_cost_usd = serializers.DecimalField(max_digits=20, decimal_places=10)


class UsageSerializer(serializers.Serializer):
    from_ = serializers.DateTimeField()
    to = serializers.DateTimeField()
    credits_used = serializers.DecimalField(max_digits=24, decimal_places=10)
    credit_cap = serializers.DecimalField(max_digits=24, decimal_places=10, allow_null=True)
    by_model = ModelUsageSerializer(many=True)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields
