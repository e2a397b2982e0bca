"""Content negotiation that takes `?format=` at its word."""

from rest_framework.exceptions import NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.settings import api_settings

UNKNOWN_FORMAT = "Unknown format: use one the schema lists, or none."


class StrictContentNegotiation(DefaultContentNegotiation):
    """DRF ignores an empty `?format=` and answers in the default format; the schema lists the
    formats an operation speaks, and "" is none of them: a 404, as for an unknown format, whose
    message says it is the format that was not found (DRF's says "Not found.", as if the
    resource were gone)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if request.query_params.get(api_settings.URL_FORMAT_OVERRIDE) == "":
            raise NotFound(UNKNOWN_FORMAT)
        return super().select_renderer(request, renderers, format_suffix)

    def filter_renderers(self, renderers, format):
        speaking = [renderer for renderer in renderers if renderer.format == format]
        if not speaking:
            raise NotFound(UNKNOWN_FORMAT)
        return speaking
