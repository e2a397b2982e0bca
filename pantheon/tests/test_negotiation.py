"""Which renderer answers which `Accept`: q-values count (RFC 9110 §12.5.1), as DRF's own
negotiation did not; ties go to the more specific range, the client's order, then the view's."""

import pytest
from rest_framework.exceptions import NotAcceptable, NotFound
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from pantheon.negotiation import StrictContentNegotiation
from sessions_app.api_turns import EventStreamRenderer

TURNS = [JSONRenderer(), EventStreamRenderer()]  # POST sessions/{id}/turns: JSON by default
EVENTS = [EventStreamRenderer(), JSONRenderer()]  # GET turns/{id}/events: the stream by default


def negotiate(accept: str | None, renderers=TURNS, query: str = "") -> tuple[str, str]:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/{query}", **headers))
    renderer, media_type = StrictContentNegotiation().select_renderer(request, renderers)
    return renderer.format, media_type


@pytest.mark.parametrize(
    "accept, renderers, chosen",
    [
        (None, TURNS, ("json", "application/json")),
        ("*/*", TURNS, ("json", "application/json")),
        ("*/*", EVENTS, ("sse", "text/event-stream")),
        ("text/event-stream", TURNS, ("sse", "text/event-stream")),
        # DRF answered these in JSON: it ranks by specificity and ignores q.
        ("text/event-stream;q=0.9", TURNS, ("sse", "text/event-stream")),
        ("application/json;q=0.1, text/event-stream", TURNS, ("sse", "text/event-stream")),
        ("application/json;q=0, */*", TURNS, ("sse", "text/event-stream")),
        ("text/event-stream, application/json", TURNS, ("sse", "text/event-stream")),
        ("text/*;q=0.9, application/json;q=0.3", TURNS, ("sse", "text/event-stream")),
        # And these in the stream.
        ("text/event-stream;q=0, */*", EVENTS, ("json", "application/json")),
        ("application/json, text/event-stream;q=0.5", EVENTS, ("json", "application/json")),
        # The more specific range decides a type's q, not the first listed.
        ("application/json;q=0.2, */*;q=0.8", TURNS, ("sse", "text/event-stream")),
        # A browser's Accept: both come through */*, so the view's order decides.
        (
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            TURNS,
            ("json", "application/json"),
        ),
        # Parameters other than q reach the renderer (JSONRenderer reads indent).
        ("application/json; indent=2; q=0.8", TURNS, ("json", "application/json; indent=2")),
        ("*/*; indent=4", TURNS, ("json", "application/json; indent=4")),
        ("TEXT/EVENT-STREAM", TURNS, ("sse", "text/event-stream")),
        # A q=0 on a parameterised variant refuses that variant, not the bare type.
        ("application/json, application/json; indent=2; q=0", TURNS, ("json", "application/json")),
        ("application/json; indent=2, */*;q=0.1", EVENTS, ("json", "application/json; indent=2")),
        # A q that is no number counts as 1, as Django reads q=abc.
        ("text/event-stream, application/json;q=nan", TURNS, ("sse", "text/event-stream")),
        ("application/json;q=abc, text/event-stream;q=0.9", TURNS, ("json", "application/json")),
    ],
)
def test_the_client_gets_the_type_it_prefers(accept, renderers, chosen):
    assert negotiate(accept, renderers) == chosen


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "text/event-stream;q=0, application/json;q=0",
        "*/*;q=0",
        "application/xml, text/plain",
        "",
    ],
)
def test_a_client_that_takes_nothing_offered_is_not_acceptable(accept):
    with pytest.raises(NotAcceptable):
        negotiate(accept)


@pytest.mark.parametrize(
    "query, accept, renderers, chosen",
    [
        # A 406 before: Accept had to take the format's type too.
        ("?format=sse", "application/json", TURNS, ("sse", "text/event-stream")),
        ("?format=json", "text/event-stream", TURNS, ("json", "application/json")),
        ("?format=sse", "application/json", EVENTS, ("sse", "text/event-stream")),
        ("?format=json", "text/html", TURNS, ("json", "application/json")),
        ("?format=json", "application/json;q=0, */*", TURNS, ("json", "application/json")),
        ("?format=sse", "", EVENTS, ("sse", "text/event-stream")),
        # An Accept that takes it still passes its parameters on.
        ("?format=json", "*/*; indent=2", TURNS, ("json", "application/json; indent=2")),
        ("?format=sse", None, TURNS, ("sse", "text/event-stream")),
    ],
)
def test_the_format_parameter_wins_over_accept(query, accept, renderers, chosen):
    """The README's "`?format=sse` streams as `Accept: text/event-stream` does" and the
    schema's "in place of `Accept`": a client whose HTTP library sends a fixed Accept uses the
    parameter for that. The client tester's catch."""
    assert negotiate(accept, renderers, query) == chosen


@pytest.mark.parametrize("query", ["?format=xml", "?format="])
@pytest.mark.parametrize("accept", ["*/*", "application/json", "text/html"])
def test_a_format_the_view_does_not_speak_is_not_found_whatever_accept_says(query, accept):
    with pytest.raises(NotFound):
        negotiate(accept, TURNS, query)
