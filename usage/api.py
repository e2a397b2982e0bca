from rest_framework import generics

from usage.selectors import model_aliases_enabled
from usage.serializers import ModelAliasSerializer


class ModelListView(generics.ListAPIView):
    """`GET models`: the enabled model aliases agents may use."""

    serializer_class = ModelAliasSerializer
    pagination_class = None

    def get_queryset(self):
        return model_aliases_enabled()
