"""The production ASGI handler's close of each response (`pantheon.threads`): on the event loop
when nothing of it needs the request's thread, on that thread otherwise, as Django's own."""

import asyncio
import hashlib
import inspect
import threading

import pytest
from django.contrib.auth.models import User
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import connection
from django.db.backends.signals import connection_created
from django.http import HttpResponse
from django.urls import path

from pantheon import threads
from pantheon.threads import PantheonASGIHandler

pytestmark = pytest.mark.django_db


def _users(request):
    """A synchronous view that reads the database (it runs on the request's thread)."""
    return HttpResponse(str(User.objects.count()))


def _nothing(request):
    return HttpResponse("nothing")


urlpatterns = [path("users", _users), path("nothing", _nothing)]


def _get(path_: str) -> tuple[int, bytes]:
    sent: list[dict] = []
    body = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if body:
            return body.pop()
        await asyncio.Event().wait()  # the client stays

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path_,
        "raw_path": path_.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(asyncio.wait_for(PantheonASGIHandler()(scope, receive, send), timeout=10))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def test_urls(settings):
    settings.ROOT_URLCONF = __name__


def test_a_connection_a_view_left_open_is_closed_when_its_request_ends(test_urls):
    """Without a pool (CONN_MAX_AGE 0), the connection a synchronous view opened on the
    request's thread is closed by `request_finished` there: no connection left behind."""
    opened = []

    def note(sender, connection, **kwargs):
        opened.append(connection)

    connection_created.connect(note)
    try:
        status, body = _get("/users")
    finally:
        connection_created.disconnect(note)

    assert status == 200 and body.isdigit()
    assert opened, "the view opened a connection"
    assert all(wrapper.connection is None for wrapper in opened)


def test_a_request_finished_receiver_of_the_project_runs_on_the_requests_thread(test_urls):
    """A receiver of `request_finished` other than Django's may do database work: it runs once
    per request, where synchronous code may query (not on the event loop, which refuses)."""
    answers: list[object] = []

    def count_users(sender, **kwargs):
        try:
            answers.append(User.objects.count())
        except Exception as exc:  # SynchronousOnlyOperation on the event loop
            answers.append(exc)
        finally:
            connection.close()

    request_finished.connect(count_users)
    try:
        status, body = _get("/nothing")
    finally:
        request_finished.disconnect(count_users)

    assert (status, body) == (200, b"nothing")
    assert len(answers) == 1 and isinstance(answers[0], int)


def test_a_response_closed_on_the_event_loop_still_sends_request_finished(test_urls, monkeypatch):
    """Nothing to close on its thread (no file, no connection open, receivers known to need no
    thread): `request_finished` is sent on the event loop, once."""
    ran_on: list[str] = []

    def note(sender, **kwargs):
        ran_on.append(threading.current_thread().name)

    monkeypatch.setattr(threads, "_FINISHED_ON_THE_LOOP", threads._FINISHED_ON_THE_LOOP | {note})
    request_finished.connect(note)
    try:
        assert _get("/nothing") == (200, b"nothing")
    finally:
        request_finished.disconnect(note)

    assert ran_on == [threading.current_thread().name]


def test_the_handling_it_replaces_is_djangos_as_copied():
    """`PantheonASGIHandler.handle` is Django 5.2's `ASGIHandler.handle` with the close of the
    response moved (and private members read: `_resource_closers`, `_live_receivers`). A Django
    whose handling reads otherwise fails here: compare the two, then update this digest."""
    source = inspect.getsource(ASGIHandler.handle)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323", source
