"""Django's error pages, as JSON under `/api/` and as Django's usual HTML elsewhere.

DRF renders the errors its views raise; these cover what happens outside them: an unknown path
or a malformed id (the URL resolver's 404), an exception no handler caught (500; 503 when it is a
lost database connection), a body over Django's own size limit or another suspicious request
(400/413). A 500 body names the request id so an operator can find the traceback in the logs; it
never holds the traceback itself.
"""

import sys

from django.contrib import admin
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.views import defaults
from rest_framework import exceptions

from pantheon.db import connection_lost, release_connection
from pantheon.exceptions import DatabaseUnavailable, RequestTooLarge, SuspiciousRequest
from pantheon.middleware import (
    drf_error_response,
    error_response,
    is_api_path,
    server_error_response,
)


def bad_request(request, exception, *args, **kwargs):
    if not is_api_path(request.path_info):
        return defaults.bad_request(request, exception, *args, **kwargs)
    if isinstance(exception, RequestDataTooBig):
        return error_response(RequestTooLarge())
    return error_response(SuspiciousRequest())


def permission_denied(request, exception, *args, **kwargs):
    if is_api_path(request.path_info):
        return drf_error_response(exceptions.PermissionDenied)
    match = request.resolver_match
    user = getattr(request, "user", None)
    if match is not None and admin.site.name in match.namespaces and user and user.is_staff:
        # The console's own page: what the role may not do, and the way back. Under ASGI
        # Django runs this handler on a thread of its own (not the request's), whose
        # connection nothing else gives back to the pool: given back here.
        try:
            return admin.site.permission_denied(request, exception)
        finally:
            release_connection()
    return defaults.permission_denied(request, exception, *args, **kwargs)


def page_not_found(request, exception, *args, **kwargs):
    if not is_api_path(request.path_info):
        return defaults.page_not_found(request, exception, *args, **kwargs)
    return drf_error_response(exceptions.NotFound)


def server_error(request, *args, **kwargs):
    # Django calls this while it handles the exception, which is still the current one.
    if connection_lost(sys.exc_info()[1]):
        return database_unavailable(request)
    if not is_api_path(request.path_info):
        return defaults.server_error(request, *args, **kwargs)
    return server_error_response(request)


CONSOLE_DATABASE_UNAVAILABLE = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Service Unavailable (503)</title>\n'
    "</head>\n<body>\n  <h1>Service Unavailable (503)</h1><p>The database connection was lost. "
    "Try again in a moment.</p>\n</body>\n</html>\n"
)


def database_unavailable(request):
    """A lost database connection outside DRF's views (a middleware's session save, the
    console's pages): a 503 with a Retry-After, as the API's views answer it, not a 500 that
    reads as a bug. The console gets a page like Django's own 500 page (no template: the
    database may be what a template's context needs)."""
    if is_api_path(request.path_info):
        return error_response(DatabaseUnavailable())
    response = HttpResponse(CONSOLE_DATABASE_UNAVAILABLE, status=503)
    response["Retry-After"] = str(DatabaseUnavailable.retry_after_seconds)
    return response
