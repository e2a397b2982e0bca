"""The schema's own endpoint (`/api/schema/`). Apart from pantheon.schema, which is DRF's
schema class and so is imported while drf_spectacular's views are being defined."""

from drf_spectacular.views import SpectacularAPIView
from rest_framework.response import Response

from pantheon.negotiation import answer_in_json


class SchemaView(SpectacularAPIView):
    """The schema, in YAML or JSON as asked; its errors (an unknown `?format=`, an `Accept`
    it cannot answer) in JSON like every other answer under /api/, not in YAML."""

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response) and response.status_code >= 400:
            answer_in_json(request)
        return super().finalize_response(request, response, *args, **kwargs)
