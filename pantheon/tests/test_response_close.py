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
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path

from pantheon import threads
from pantheon.threads import PantheonASGIHandler

pytestmark = pytest.mark.django_db


def _users(request):
    """A synchronous view that reads the database (it runs on the request's thread)."""
    return HttpResponse(str(User.objects.count()))


def _nothing(request):
    return HttpResponse("nothing")


async def _slow(request):
    await asyncio.sleep(30)
    return HttpResponse("late")


class _Lines:
    """A synchronous body whose `close` reads the database (as a file's, or a generator's
    `finally`, may): the user count it read, or what refused it."""

    closed: list[object] = []

    def __iter__(self):
        return iter([b"one\n", b"two\n"])

    def close(self):
        try:
            self.closed.append(User.objects.count())
        except Exception as exc:  # SynchronousOnlyOperation on the event loop
            self.closed.append(exc)


def _lines(request):
    return StreamingHttpResponse(_Lines())


urlpatterns = [
    path("users", _users),
    path("nothing", _nothing),
    path("lines", _lines),
    path("slow", _slow),
]


def _get(path_: str, *, leaves: bool = False) -> tuple[int, bytes] | None:
    """The status and body of a GET; `leaves`: the client hangs up once it is sent (None)."""
    sent: list[dict] = []
    body = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if body:
            return body.pop()
        if leaves:
            await asyncio.sleep(0.05)
            return {"type": "http.disconnect"}
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
    if leaves:
        assert sent == []
        return None
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


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
def test_a_bodys_close_runs_on_the_requests_thread(test_urls, monkeypatch):
    """A response's own closers (its body's: a file, a synchronous iterator) run where
    synchronous code may query, once, as with Django's handler: on the event loop the query
    was refused, and the refusal swallowed by the response's close."""
    monkeypatch.setattr(_Lines, "closed", [])
    assert _get("/lines") == (200, b"one\ntwo\n")
    assert len(_Lines.closed) == 1 and isinstance(_Lines.closed[0], int), _Lines.closed


def test_an_async_request_finished_receiver_runs_once_per_request(test_urls):
    """`request_finished`'s asynchronous receivers (a third party's) are awaited, once: sent
    from the event loop by `Signal.send`, they would fail the request's close."""
    heard: list[object] = []

    async def note(sender, **kwargs):
        heard.append(sender)

    request_finished.connect(note)
    try:
        assert _get("/nothing") == (200, b"nothing")
    finally:
        request_finished.disconnect(note)

    assert heard == [PantheonASGIHandler]


def test_a_client_that_hangs_up_before_its_answer_ends_its_request(test_urls):
    """The view is cancelled and `request_finished` sent once (no response to close): the
    request's thread closes what it opened, and the handler returns without an error."""
    heard: list[object] = []

    def note(sender, **kwargs):
        heard.append(sender)

    request_finished.connect(note)
    try:
        assert _get("/slow", leaves=True) is None
    finally:
        request_finished.disconnect(note)

    assert heard == [PantheonASGIHandler]


def test_the_handling_it_replaces_is_djangos_as_copied():
    """`PantheonASGIHandler.handle` is Django 5.2's `ASGIHandler.handle` with the close of the
    response moved (and private members read: `_resource_closers`, `_live_receivers`). A Django
    whose handling reads otherwise fails here: compare the two, then update this digest."""
    source = inspect.getsource(ASGIHandler.handle)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323", source
