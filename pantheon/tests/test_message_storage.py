"""Django's messages under ASGI (`pantheon.async_middleware.MessageMiddleware`): the storage is
made only for a request that touches its messages, and those messages still reach the next
page."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.contrib import messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.http import HttpResponse
from django.test import AsyncClient, override_settings
from django.urls import include, path

pytestmark = pytest.mark.django_db


def _say(request):
    messages.success(request, "Saved the agent.")
    return HttpResponse("said")


def _read(request):
    return HttpResponse(" | ".join(str(message) for message in messages.get_messages(request)))


def _level(request):
    messages.set_level(request, messages.WARNING)
    messages.info(request, "Below the level: dropped.")
    return HttpResponse(str(messages.get_level(request)))


urlpatterns = [
    path("say", _say),
    path("read", _read),
    path("level", _level),
    path("", include("pantheon.urls")),
]


def _served(*paths: str) -> list[str]:
    async def visit() -> list[str]:
        client = AsyncClient()
        return [(await client.get(each)).content.decode() for each in paths]

    return async_to_sync(visit)()


@override_settings(ROOT_URLCONF=__name__)
def test_a_message_added_under_asgi_shows_on_the_next_page_once():
    assert _served("/say", "/read", "/read") == ["said", "Saved the agent.", ""]


@override_settings(ROOT_URLCONF=__name__)
def test_a_level_set_under_asgi_holds_for_the_request():
    assert _served("/level", "/read") == [str(messages.WARNING), ""]


def test_an_api_request_makes_no_message_storage(monkeypatch):
    """Its storage (a cookie signer, the session's store) was made for every request, and an
    API request never reads or adds a message."""
    made = []
    real = FallbackStorage.__init__

    def counted(self, *args, **kwargs):
        made.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(FallbackStorage, "__init__", counted)

    assert _served("/api/v1/health") and made == []
