"""Everything under /api/ answers JSON (404, 405, 413, 415, 500 included); elsewhere Django's
HTML pages stay. A 500 names its request id and never shows a traceback."""

import logging

import pytest
from django.contrib import admin
from django.test import Client
from rest_framework.test import APIClient

from pantheon.error_views import server_error

pytestmark = pytest.mark.django_db

API = "/api/v1"
# DRF's sentence, and its code beside it (as a 401's): a client tells the cases apart by the code.
NOT_FOUND = {"detail": "Not found.", "code": "not_found"}


@pytest.fixture
def api(owner) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(owner)
    return client


def assert_json(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope",
        "/api/v1/agents/not-a-uuid",
        "/api/v1/sessions/not-a-uuid/messages",
        "/api/v1/rooms/12345/mode",
        "/api/v2/agents",
        "/api/",
        "/api/v1/agents/",  # no trailing slashes in this API
    ],
)
def test_unknown_api_paths_and_malformed_ids_are_json_404s(api, path):
    assert assert_json(api.get(path), 404) == NOT_FOUND


def test_unknown_api_paths_are_json_404s_for_anonymous_callers_too():
    assert assert_json(APIClient().post("/api/v1/nope", {}), 404) == NOT_FOUND


def test_paths_outside_the_api_keep_djangos_html_pages(api):
    response = api.get("/nope")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("method", "path"),
    [("delete", "/usage"), ("put", "/agents"), ("post", "/models"), ("patch", "/health")],
)
def test_a_method_an_endpoint_does_not_take_is_a_json_405(api, method, path):
    body = assert_json(getattr(api, method)(API + path), 405)

    assert body == {
        "detail": f'Method "{method.upper()}" not allowed.',
        "code": "method_not_allowed",
    }


def test_put_on_a_room_is_a_405_whose_allow_header_offers_no_put(api, owner, make_room):
    room = make_room(owner)

    response = api.put(f"{API}/rooms/{room.id}", {"name": "Replaced"}, format="json")

    assert_json(response, 405)
    allowed = {method.strip() for method in response["Allow"].split(",")}
    assert allowed == {"GET", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def test_an_oversized_body_is_a_json_413_even_without_credentials(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000

    response = APIClient().post(
        f"{API}/auth/token", '{"username": "' + "x" * 2_000 + '"}', content_type="application/json"
    )

    assert assert_json(response, 413)["detail"]["code"] == "request_too_large"


def test_a_non_json_body_is_a_json_415(api):
    response = api.post(f"{API}/rooms", "name=R", content_type="application/x-www-form-urlencoded")

    assert assert_json(response, 415) == {
        "detail": 'Unsupported media type "application/x-www-form-urlencoded" in request.',
        "code": "unsupported_media_type",
    }


def test_malformed_json_is_a_400_with_a_code(api):
    response = api.post(f"{API}/rooms", '{"name": ', content_type="application/json")

    body = assert_json(response, 400)
    assert body["code"] == "parse_error"
    assert body["detail"].startswith("JSON parse error")


def test_a_client_that_takes_nothing_offered_is_a_json_406_with_a_code(api):
    response = api.get(f"{API}/agents", HTTP_ACCEPT="application/xml")

    assert assert_json(response, 406) == {
        "detail": "Could not satisfy the request Accept header.",
        "code": "not_acceptable",
    }


def test_a_console_session_posting_without_its_csrf_token_is_a_json_403_with_a_code(owner):
    """The console's cookie signs the API in too, but a write needs the CSRF token beside it."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post(f"{API}/rooms", {"name": "R"}, format="json")

    body = assert_json(response, 403)
    assert body["code"] == "permission_denied"
    assert body["detail"].startswith("CSRF Failed")


def test_an_unexpected_error_is_a_json_500_with_the_request_id_and_no_traceback(
    api, monkeypatch, caplog
):
    def broken(**kwargs):
        raise RuntimeError("the secret internals of the failure")

    monkeypatch.setattr("usage.selectors.billing_profile_for", broken)

    with caplog.at_level(logging.ERROR):
        response = api.get(f"{API}/usage", HTTP_X_REQUEST_ID="req-500-test")

    body = assert_json(response, 500)
    assert body == {
        "detail": {
            "code": "server_error",
            "message": "Something went wrong on our side. Quote the request id if you report it.",
            "request_id": "req-500-test",
        }
    }
    assert response["X-Request-ID"] == "req-500-test"
    assert b"Traceback" not in response.content
    assert b"secret internals" not in response.content
    # The traceback is in the log, under the same id.
    failure = next(r for r in caplog.records if r.name == "django.request" and r.exc_info)
    assert failure.request_id == "req-500-test"
    assert "secret internals" in str(failure.exc_info[1])


@pytest.mark.parametrize("debug", [False, True], ids=["debug off", "debug on"])
def test_a_host_the_server_does_not_answer_is_a_json_400_with_a_code(settings, debug):
    """Django refuses it before any view: with DEBUG on its traceback page (HTML), with DEBUG
    off `{"detail": "Bad request."}`, the one API error without a code."""
    settings.DEBUG = debug

    response = Client().get(f"{API}/health", HTTP_HOST="evil.example")

    assert assert_json(response, 400) == {
        "detail": {
            "code": "bad_request",
            "message": "The request was refused: its Host is not one this server answers, or "
            "it is otherwise malformed in a way the server will not serve.",
        }
    }
    assert Client().get("/admin/login/", HTTP_HOST="evil.example").status_code == 400


@pytest.mark.parametrize("accept", ["*/*", "application/json"])
def test_an_unexpected_error_is_a_json_500_with_debug_on_too(api, monkeypatch, settings, accept):
    """`make run` serves with DEBUG on, where Django answers its traceback page in place of the
    500 handler: HTML, or plain text to a client that takes no HTML."""
    settings.DEBUG = True

    def broken(**kwargs):
        raise RuntimeError("the secret internals of the failure")

    monkeypatch.setattr("usage.selectors.billing_profile_for", broken)

    response = api.get(f"{API}/usage", HTTP_ACCEPT=accept, HTTP_X_REQUEST_ID="req-500-debug")

    assert assert_json(response, 500)["detail"] == {
        "code": "server_error",
        "message": "Something went wrong on our side. Quote the request id if you report it.",
        "request_id": "req-500-debug",
    }
    assert b"secret internals" not in response.content


def test_the_console_keeps_djangos_traceback_page_with_debug_on(staff, monkeypatch, settings):
    settings.DEBUG = True

    def app_list(*args, **kwargs):
        raise RuntimeError("the console's failure")

    monkeypatch.setattr(admin.site, "get_app_list", app_list)
    client = Client(raise_request_exception=False)
    client.force_login(staff)

    response = client.get("/admin/")

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert b"the console&#x27;s failure" in response.content


def test_the_500_page_outside_the_api_stays_djangos_html(rf):
    html = server_error(rf.get("/admin/"))
    api_error = server_error(rf.get("/api/v1/usage"))

    assert html.status_code == api_error.status_code == 500
    assert html["Content-Type"].startswith("text/html")
    assert api_error["Content-Type"] == "application/json"


@pytest.mark.django_db
@pytest.mark.parametrize("format_", ["", "xml", "api"])
def test_an_unknown_or_empty_format_is_a_404_that_names_the_format(owner_client, format_):
    """Not DRF's bare "Not found.", which a client would read as the resource being gone."""
    response = owner_client.get(f"/api/v1/agents?format={format_}")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"].startswith("Unknown format")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/agents/not-a-uuid/sessions"])
def test_an_unknown_api_path_is_json_with_debug_on_too(owner_client, settings, path):
    """`make run` serves with DEBUG on, where Django answers its HTML list of URL patterns."""
    settings.DEBUG = True
    response = owner_client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == NOT_FOUND
    # Off the API, the developer keeps Django's page.
    elsewhere = owner_client.get("/nowhere")
    assert elsewhere.status_code == 404
    assert elsewhere["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/schema", "/api/docs"])
def test_a_redirect_to_the_slashed_path_is_json_too(anon_client, path):
    """Django's APPEND_SLASH answered an empty body labelled text/html."""
    response = anon_client.get(path)

    assert response.status_code == 301
    assert response["Location"] == f"{path}/"
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f"Moved to {path}/."}


@pytest.mark.django_db
def test_an_object_unknown_or_not_yours_is_the_same_not_found_everywhere(
    owner_client, outsider, make_agent, make_room, make_session
):
    """An object no one has, or another user's, was "No Turn matches the given query." (Django's
    get_object_or_404, a text per model), and "Not found." when it was deleted while the request
    ran or the path was unknown: one 404, one body, whichever way it is not the caller's."""
    agent = make_agent(outsider, "ada")
    room = make_room(outsider, [agent])
    session = make_session(outsider, room=room)
    unknown = "00000000-0000-0000-0000-000000000001"
    paths = [
        f"/api/v1/agents/{agent.pk}",
        f"/api/v1/agents/{unknown}/sessions",
        f"/api/v1/rooms/{room.pk}",
        f"/api/v1/rooms/{unknown}/sessions",
        f"/api/v1/sessions/{session.pk}",
        f"/api/v1/sessions/{session.pk}/messages",
        f"/api/v1/sessions/{unknown}/turns",
        f"/api/v1/turns/{unknown}",
    ]

    answers = {path: owner_client.get(path) for path in paths}
    posted = owner_client.post(f"/api/v1/sessions/{session.pk}/turns", {"message": "hi"})

    assert {path: (r.status_code, r.json()) for path, r in answers.items()} == dict.fromkeys(
        paths, (404, NOT_FOUND)
    )
    assert (posted.status_code, posted.json()) == (404, NOT_FOUND)
