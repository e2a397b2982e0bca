"""Django's error pages, as JSON under `/api/` and as Django's usual HTML elsewhere.

DRF renders the errors its views raise; these cover what happens outside them: an unknown path
or a malformed id (the URL resolver's 404), an exception no handler caught (500), a body over
Django's own size limit or another suspicious request (400/413). A 500 body names the request
id so an operator can find the traceback in the logs; it never holds the traceback itself.
"""

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions

from pantheon.exceptions import RequestTooLarge
from pantheon.middleware import error_response, is_api_path, request_id_of


def bad_request(request, exception, *args, **kwargs):
    if not is_api_path(request.path_info):
        return defaults.bad_request(request, exception, *args, **kwargs)
    if isinstance(exception, RequestDataTooBig):
        return error_response(RequestTooLarge())
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request, exception, *args, **kwargs):
    if not is_api_path(request.path_info):
        return defaults.permission_denied(request, exception, *args, **kwargs)
    return JsonResponse({"detail": str(exceptions.PermissionDenied.default_detail)}, status=403)


def page_not_found(request, exception, *args, **kwargs):
    if not is_api_path(request.path_info):
        return defaults.page_not_found(request, exception, *args, **kwargs)
    return JsonResponse({"detail": str(exceptions.NotFound.default_detail)}, status=404)


def server_error(request, *args, **kwargs):
    if not is_api_path(request.path_info):
        return defaults.server_error(request, *args, **kwargs)
    request_id = request_id_of(request)
    return JsonResponse(
        {
            "detail": {
                "code": "server_error",
                "message": "Something went wrong on our side. Quote the request id if you "
                "report it.",
                "request_id": request_id,
            }
        },
        status=500,
    )
