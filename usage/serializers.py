from rest_framework import serializers

from usage.models import ModelAlias


class ModelAliasSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelAlias
        fields = ["alias", "context_window", "max_output_tokens"]
        read_only_fields = fields
