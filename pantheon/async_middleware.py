"""Django's stock middleware, run on the event loop under ASGI.

In an async stack Django runs each hook of a `MiddlewareMixin` middleware through
`sync_to_async`: a thread hop per hook, about a dozen per request for the stock stack, which
costs more CPU than most API requests do. These hooks do no I/O (headers, redirects, a lazy
user, cookies), so they run inline here. Sessions and messages hop only when a request used
them: saving a session is database work. WhiteNoise's middleware gets the same treatment.

Under WSGI (and the test client) they behave exactly like Django's own.
"""

from __future__ import annotations

import functools

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.messages.storage import default_storage
from django.contrib.sessions import middleware as sessions
from django.http import FileResponse
from django.middleware import clickjacking, common, csrf, security
from django.utils.functional import SimpleLazyObject, empty
from whitenoise.middleware import WhiteNoiseMiddleware


class _InlineHooks:
    """`process_request` and `process_response` called directly, for hooks that never block."""

    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)  # type: ignore[attr-defined]
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class SecurityMiddleware(_InlineHooks, security.SecurityMiddleware):
    pass


class CommonMiddleware(_InlineHooks, common.CommonMiddleware):
    def process_response(self, request, response):
        """Django's, without the `Content-Length: 0` it gives a 204, which HTTP forbids there
        (RFC 9110, 8.6): a strict client or proxy may refuse such an answer."""
        response = super().process_response(request, response)
        if response.status_code == 204 and response.has_header("Content-Length"):
            del response.headers["Content-Length"]
        return response


class AuthenticationMiddleware(_InlineHooks, auth.AuthenticationMiddleware):
    """Sets a lazy `request.user`; the session is read only when the user is."""


class XFrameOptionsMiddleware(_InlineHooks, clickjacking.XFrameOptionsMiddleware):
    pass


class CsrfViewMiddleware(_InlineHooks, csrf.CsrfViewMiddleware):
    """Cookies and tokens only (CSRF_USE_SESSIONS is off); `process_view` inline too."""

    async def process_view(self, request, callback, callback_args, callback_kwargs):
        return super().process_view(request, callback, callback_args, callback_kwargs)


class SessionMiddleware(sessions.SessionMiddleware):
    async def __acall__(self, request):
        self.process_request(request)  # a lazy session store: no I/O yet
        response = await self.get_response(request)
        session = request.session
        if session.accessed or session.modified:
            # Used by this request (the admin, session authentication): may be saved.
            return await sync_to_async(self.process_response)(request, response)
        return self.process_response(request, response)


class MessageMiddleware(messages.MessageMiddleware):
    """The storage is made when the request first touches its messages (the admin's, the
    console's): an API request never does, and making it (a cookie signer, the session's
    store) cost every request more than the rest of this middleware. One never touched has
    nothing to store, as an untouched storage's `update` finds."""

    async def __acall__(self, request):
        request._messages = SimpleLazyObject(functools.partial(default_storage, request))
        response = await self.get_response(request)
        storage = request._messages
        if isinstance(storage, SimpleLazyObject) and storage._wrapped is empty:
            return response  # never touched: nothing to store
        if storage.used or storage.added_new:
            return await sync_to_async(self.process_response)(request, response)
        return self.process_response(request, response)


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, able to sit in an async stack. WhiteNoise's own middleware is sync-only,
    and one sync-only middleware makes Django run everything after it (the turn views
    included) inside a thread for the request's whole life: a waiting turn would hold one.
    Static files are small local reads; they are served inline."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None):
        super().__init__(get_response)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        if self.autorefresh:
            static_file = self.find_file(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return read_in_the_loop(self.serve(static_file, request))
        return await self.get_response(request)


# What one step of a static file's stream reads: the size of the ASGI handler's own chunks.
STATIC_CHUNK_BYTES = 64 * 1024


def read_in_the_loop(response: FileResponse) -> FileResponse:
    """WhiteNoise's response, its file read by an async iterator. It streams the file through a
    sync one, which Django's ASGI handler reads in a thread, after a warning written on stderr
    in plain text, not a log line ("StreamingHttpResponse must consume synchronous iterators",
    on the first static file of each worker)."""
    file = response.file_to_stream  # None for a HEAD or a 304: no body

    async def chunks():
        while file is not None and (chunk := file.read(STATIC_CHUNK_BYTES)):
            yield chunk

    response.streaming_content = chunks()  # the file itself is still closed with the response
    return response
