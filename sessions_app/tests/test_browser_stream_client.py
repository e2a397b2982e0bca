"""A real browser on another origin (headless Chromium, the page `docs/browser_stream_client.html`
served apart from the API, which allows it by CORS_ALLOWED_ORIGINS) posts a turn that
streams word by word, loses its connection mid-answer and resumes with `GET turns/{id}/events`
and `Last-Event-ID`: what it shows is the stored answer, no word twice, none missing, and it read
the 201's `Location`. What the API promises a web client (README, Streaming), end to end through
the browser's CORS, its preflights (`Authorization`, `Idempotency-Key`, `Last-Event-ID`) and
its fetch streams."""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.browser import headless_chromium
from pantheon.testing.servers import AppServer, postgres_url
from sessions_app.tests.conftest import point_at_stub

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]

DOCS = Path(settings.BASE_DIR) / "docs"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture
def page_origin():
    """The page's own origin: a static server on 127.0.0.1, another port than the API's."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=DOCS))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser(tmp_path, monkeypatch):
    driver = headless_chromium(tmp_path / "chromium-profile", monkeypatch)
    driver.set_script_timeout(90)
    yield driver
    driver.quit()


def test_a_page_of_another_origin_streams_a_turn_and_resumes_it_whole(
    owner, ada, make_session, stub, page_origin, browser
):
    # 60 words, one every 40 ms; the stub quotes the question's first words in its answer.
    point_at_stub(stub, "stream-40-words-60", ada.model_alias)
    session = make_session(owner, agent=ada)
    token = Token.objects.create(user=owner).key
    env = {
        "PANTHEON_LLM_BACKEND": "live",
        "STUB_API_KEY": "stub-key",
        "CORS_ALLOWED_ORIGINS": page_origin,
    }
    with AppServer(database_url=postgres_url(connection.settings_dict), env=env) as server:
        api = f"{server.url}/api/v1"
        browser.get(f"{page_origin}/browser_stream_client.html?api={api}")
        # Its token as `pantheon.login` keeps it (the tests' password hasher is not the server's).
        browser.execute_script("pantheon.state.token = arguments[0]", token)
        send = (
            "const done = arguments[arguments.length - 1];"
            "pantheon.send(arguments[0], arguments[1], arguments[2])"
            ".then(done, e => done(String(e)));"
        )
        # A chat's first message, read whole; then the one whose stream breaks: it is resumed
        # as its own turn (the first's end, last id and answers stopped it: it kept the
        # first's `turn_completed` and showed its ten words after the first's answer).
        first = browser.execute_async_script(send, str(session.pk), "hello there", 0)
        result = browser.execute_async_script(
            send,
            str(session.pk),
            'Line "one" 😀 data: id: 7',  # the stub quotes its first four words
            10,
        )

    assert isinstance(first, dict), first
    assert (first["status"], first["ended"], first["breaks"]) == (201, "turn_completed", 0)
    assert first["shown"] == first["stored"]
    assert isinstance(result, dict), result
    assert (result["status"], result["ended"], result["breaks"]) == (201, "turn_completed", 1)
    assert result["location"].startswith("/api/v1/turns/")
    (stored,) = result["stored"].values()
    assert '«Line "one" 😀 data:»' in stored and len(stored.split()) == 60
    assert result["shown"] == result["stored"]
