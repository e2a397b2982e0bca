"""Content negotiation that takes `?format=` at its word."""

from rest_framework.exceptions import NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.settings import api_settings


class StrictContentNegotiation(DefaultContentNegotiation):
    """DRF ignores an empty `?format=` and answers in the default format; the schema lists the
    formats an operation speaks, and "" is none of them: a 404, as for an unknown format."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if request.query_params.get(api_settings.URL_FORMAT_OVERRIDE) == "":
            raise NotFound("Unknown format: use one the schema lists, or none.")
        return super().select_renderer(request, renderers, format_suffix)
