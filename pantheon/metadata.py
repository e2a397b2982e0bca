"""`OPTIONS`: the bodies each writing method accepts, as the schema documents them.

DRF's SimpleMetadata describes PUT and POST only, with the view's one serializer. Ours also
describes PATCH (every field optional, as a partial update takes it), and the views pick their
serializer by method (`get_serializer_class`), so OPTIONS shows what `POST sessions/{id}/turns`
or `PATCH rooms/{id}` really read.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.metadata import SimpleMetadata
from rest_framework.request import clone_request

_WRITING_METHODS = ("POST", "PUT", "PATCH")


class Metadata(SimpleMetadata):
    def determine_actions(self, request, view):
        actions = {}
        for method in _WRITING_METHODS:
            if method not in view.allowed_methods:
                continue
            view.request = clone_request(request, method)
            try:
                view.check_permissions(view.request)
                if method in ("PUT", "PATCH") and _names_an_object(view):
                    view.get_object()
            except (exceptions.APIException, PermissionDenied, Http404):
                continue
            else:
                fields = self.get_serializer_info(view.get_serializer())
                if method == "PATCH":
                    # A partial update requires no field, whatever the serializer's own flags
                    # (which are the create's), as the schema's Patched bodies say.
                    for info in fields.values():
                        info["required"] = False
                actions[method] = fields
            finally:
                view.request = request
        return actions


def _names_an_object(view) -> bool:
    lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", None)
    return hasattr(view, "get_object") and lookup in view.kwargs
