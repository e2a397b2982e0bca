"""What a client of the turn's event stream gets when there is no stream to give, or its
Last-Event-ID is no help: a 406 in JSON, 204 after the turn's last event, the whole turn for an
id that is not one."""

import re
import warnings

import pytest

from sessions_app import events

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_turn(owner, ada, make_session, owner_client):
    session = make_session(owner, agent=ada)
    response = owner_client.post(
        f"/api/v1/sessions/{session.pk}/turns", {"message": "hello"}, format="json"
    )
    assert response.status_code == 201
    return response.json()["id"]


def _event_ids(response) -> list[int]:
    with warnings.catch_warnings():  # the test client reads the async stream synchronously
        warnings.simplefilter("ignore")
        text = b"".join(response).decode()
    return [int(found) for found in re.findall(r"^id: (\d+)$", text, re.MULTILINE)]


def test_resuming_after_the_turns_last_event_is_answered_204(owner_client, finished_turn):
    """A browser's EventSource reconnects with the last id it saw whenever a stream closes; an
    empty 200 would have it reconnect for ever, a 204 tells it the turn has nothing more."""
    url = f"/api/v1/turns/{finished_turn}/events"
    for last in (str(events.TURN_ENDED_ID), "99999999999999999999"):
        response = owner_client.get(url, HTTP_LAST_EVENT_ID=last, HTTP_ACCEPT="text/event-stream")
        assert response.status_code == 204
        assert response.content == b""
        # HTTP forbids a Content-Length on a 204 (RFC 9110, 8.6); Django's CommonMiddleware
        # gave it one of 0.
        assert not response.has_header("Content-Length")

    # One before the end: the end again.
    response = owner_client.get(url, HTTP_LAST_EVENT_ID=str(events.TURN_ENDED_ID - 1))
    assert response.status_code == 200
    assert _event_ids(response) == [events.TURN_ENDED_ID]


def test_a_last_event_id_with_leading_zeros_is_the_same_id(owner_client, finished_turn):
    response = owner_client.get(
        f"/api/v1/turns/{finished_turn}/events", HTTP_LAST_EVENT_ID="0" * 20 + "1"
    )
    assert response.status_code == 200
    # Resumed after turn_started (1); a direct session has no routing event (2).
    assert _event_ids(response)[0] == events.FIRST_STEP_ID


@pytest.mark.parametrize("last", ["\xb2", "-3", "3.5", "x"])
def test_a_last_event_id_that_is_no_id_replays_the_whole_turn(owner_client, finished_turn, last):
    response = owner_client.get(f"/api/v1/turns/{finished_turn}/events", HTTP_LAST_EVENT_ID=last)
    assert response.status_code == 200
    ids = _event_ids(response)
    assert ids[0] == events.TURN_STARTED_ID and ids[-1] == events.TURN_ENDED_ID


@pytest.mark.parametrize("accept", ["text/html", "application/xml"])
def test_a_client_that_takes_neither_stream_nor_json_gets_a_406_in_json(
    owner_client, finished_turn, accept
):
    response = owner_client.get(f"/api/v1/turns/{finished_turn}/events", HTTP_ACCEPT=accept)
    assert response.status_code == 406
    assert response["content-type"] == "application/json"
    assert "detail" in response.json()


@pytest.mark.parametrize(
    "accept", ["application/json", "text/event-stream;q=0, */*", "application/json, text/*;q=0.5"]
)
def test_a_client_that_prefers_json_to_the_events_stream_gets_a_406_in_json(
    owner_client, finished_turn, accept
):
    """The events are a stream only; JSON is there for errors. Before, these got the stream."""
    response = owner_client.get(f"/api/v1/turns/{finished_turn}/events", HTTP_ACCEPT=accept)

    assert response.status_code == 406
    assert response["content-type"] == "application/json"
    assert response.json()["detail"] == "A turn's events are answered as text/event-stream only."


@pytest.mark.parametrize(
    "accept, query",
    [("application/json", ""), ("text/event-stream;q=0, */*", ""), ("*/*", "?format=json")],
)
@pytest.mark.parametrize("token", [None, "0" * 40])
def test_accept_is_checked_before_the_credentials_of_the_events(
    anon_client, finished_turn, accept, query, token
):
    """README: `Accept` is checked before the credentials (a turn's POST with `Accept:
    text/html` and no token is a 406). The events checked the credentials first: JSON with no
    token was a 401, and a 406 only with one."""
    if token is not None:
        anon_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = anon_client.get(f"/api/v1/turns/{finished_turn}/events{query}", HTTP_ACCEPT=accept)

    assert response.status_code == 406
    assert response["content-type"] == "application/json"
    assert response.json()["detail"] == "A turn's events are answered as text/event-stream only."
    # The stream itself still needs them.
    streamed = anon_client.get(
        f"/api/v1/turns/{finished_turn}/events", HTTP_ACCEPT="text/event-stream"
    )
    assert streamed.status_code == 401


def test_the_api_answers_json_to_a_browser_that_asks_for_html_first(owner_client, ada):
    """No browsable HTML pages under /api/: a browser's Accept (HTML first, */* last) gets
    JSON, errors included; a client that takes HTML only gets a 406 in JSON."""
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    listed = owner_client.get("/api/v1/agents", HTTP_ACCEPT=browser)
    assert listed.status_code == 200
    assert listed["content-type"] == "application/json"
    assert [agent["agent_key"] for agent in listed.json()["results"]] == ["ada"]

    refused = owner_client.post("/api/v1/agents", {}, format="json", HTTP_ACCEPT=browser)
    assert refused.status_code == 400
    assert refused["content-type"] == "application/json"

    html_only = owner_client.get("/api/v1/agents", HTTP_ACCEPT="text/html")
    assert html_only.status_code == 406
    assert html_only["content-type"] == "application/json"


# --- Accept's q-values (streamed answers: test_turn_streaming; the ranking: test_negotiation) ---


def _post_turn(client, session, accept: str):
    return client.post(
        f"/api/v1/sessions/{session.pk}/turns",
        {"message": "hello"},
        format="json",
        HTTP_ACCEPT=accept,
    )


@pytest.mark.parametrize(
    "accept", ["*/*", "text/event-stream;q=0.5, application/json", "text/event-stream;q=0, */*"]
)
def test_a_turn_is_answered_in_json_to_a_client_that_prefers_json(
    owner_client, owner, ada, make_session, accept
):
    response = _post_turn(owner_client, make_session(owner, agent=ada), accept)

    assert response.status_code == 201
    assert response["content-type"] == "application/json"
    assert response.json()["status"] == "completed"


def test_a_client_that_refuses_both_gets_a_406_in_json_and_no_turn(
    owner_client, owner, ada, make_session
):
    session = make_session(owner, agent=ada)

    response = _post_turn(owner_client, session, "text/event-stream;q=0, application/json;q=0")

    assert response.status_code == 406
    assert response["content-type"] == "application/json"
    assert "detail" in response.json()
    assert not session.turns.exists()


def test_json_parameters_in_accept_still_reach_the_renderer(owner_client, ada):
    response = owner_client.get("/api/v1/agents", HTTP_ACCEPT="application/json; indent=2;q=0.8")

    assert response.status_code == 200
    assert response.content.decode().startswith('{\n  "')


# --- `?format=` in place of Accept ---


def test_the_format_parameter_answers_a_turn_in_its_form_whatever_accept_says(
    owner_client, owner, ada, make_session
):
    """`?format=sse` streams as `Accept: text/event-stream` does, and `?format=json` answers
    JSON, for a client whose HTTP library sends a fixed Accept: both were a 406 (and no turn)
    when Accept named the other type. The client tester's catch."""
    session = make_session(owner, agent=ada)
    turns = f"/api/v1/sessions/{session.pk}/turns"

    streamed = owner_client.post(
        f"{turns}?format=sse", {"message": "hi"}, format="json", HTTP_ACCEPT="application/json"
    )
    assert streamed.status_code == 201
    assert streamed["content-type"].startswith("text/event-stream")
    ids = _event_ids(streamed)
    assert ids[0] == events.TURN_STARTED_ID and ids[-1] == events.TURN_ENDED_ID

    answered = owner_client.post(
        f"{turns}?format=json", {"message": "hi"}, format="json", HTTP_ACCEPT="text/event-stream"
    )
    assert answered.status_code == 201
    assert answered["content-type"] == "application/json"
    assert answered.json()["status"] == "completed"
    assert session.turns.count() == 2


def test_the_format_parameter_streams_a_turns_events_whatever_accept_says(
    owner_client, finished_turn
):
    url = f"/api/v1/turns/{finished_turn}/events"

    streamed = owner_client.get(f"{url}?format=sse", HTTP_ACCEPT="application/json")
    assert streamed.status_code == 200
    assert streamed["content-type"].startswith("text/event-stream")
    assert _event_ids(streamed)[-1] == events.TURN_ENDED_ID

    # JSON is there for errors only: no format of this answer, whatever Accept says.
    refused = owner_client.get(f"{url}?format=json", HTTP_ACCEPT="*/*")
    assert refused.status_code == 406
    assert refused.json()["detail"] == "A turn's events are answered as text/event-stream only."


def test_a_last_event_id_in_the_query_resumes_when_no_header_is_sent(owner_client, finished_turn):
    """event-source-polyfill reconnects with `?lastEventId=` (it cannot set the header then):
    without it being read, the page would get the whole turn again and show its answer twice."""
    url = f"/api/v1/turns/{finished_turn}/events"
    response = owner_client.get(f"{url}?lastEventId={events.TURN_STARTED_ID}")
    assert response.status_code == 200
    assert _event_ids(response)[0] == events.FIRST_STEP_ID

    response = owner_client.get(f"{url}?lastEventId={events.TURN_ENDED_ID}")
    assert response.status_code == 204

    # The header, when sent, is the one read.
    response = owner_client.get(f"{url}?lastEventId={events.TURN_ENDED_ID}", HTTP_LAST_EVENT_ID="x")
    assert response.status_code == 200
    assert _event_ids(response)[0] == events.TURN_STARTED_ID


def test_a_deleted_session_is_a_204_without_content_length(owner_client, owner, ada, make_session):
    session = make_session(owner, agent=ada)
    response = owner_client.delete(f"/api/v1/sessions/{session.pk}")
    assert response.status_code == 204
    assert not response.has_header("Content-Length")
