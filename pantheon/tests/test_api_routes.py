"""The API's routes (`pantheon.urls`): each app's, under /api/v1/, in one list."""

from __future__ import annotations

import uuid

import pytest
from django.urls import resolve, reverse
from django.urls.resolvers import URLPattern

from pantheon import api_urls
from rooms import urls as rooms_urls
from sessions_app import urls as sessions_urls
from usage import urls as usage_urls

APPS = (api_urls, usage_urls, sessions_urls, rooms_urls)
AN_ID = uuid.UUID("0b0e8f0e-1d6c-4c1b-9a57-5f6b0c1d2e3f")


def _named_routes():
    for module in APPS:
        for pattern in module.urlpatterns:
            assert isinstance(pattern, URLPattern)  # no include left inside an app's routes
            if pattern.name:
                yield pattern


@pytest.mark.parametrize("pattern", list(_named_routes()), ids=lambda p: p.name)
def test_every_app_route_is_served_under_api_v1(pattern):
    kwargs = {name: AN_ID for name in pattern.pattern.converters}
    if "format" in kwargs:
        kwargs["format"] = "json"
    path = reverse(pattern.name, kwargs=kwargs)
    match = resolve(path)

    assert path.startswith("/api/v1/")
    assert match.url_name == pattern.name
    assert match.func is pattern.callback
    assert match.route == "api/v1/" + str(pattern.pattern)


def test_a_turns_path_is_resolved_without_going_into_each_app():
    """Each app's routes were an include with an empty prefix: a turn's path went into the
    project's, the ledger's and then the sessions' routes, each a Resolver404 raised, caught
    and its routes copied, on every request."""
    match = resolve(f"/api/v1/sessions/{AN_ID}/turns")

    assert match.url_name == "session-turns"
    assert match.kwargs == {"session_id": AN_ID}
    assert max(len(tried) for tried in match.tried) <= 2, match.tried
