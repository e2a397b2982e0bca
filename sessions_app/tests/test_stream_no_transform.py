"""A turn's event stream tells the proxies between it and a browser not to transform it: a
compressing proxy (Express's `compression()` in a Node front end, a CDN) gzips
`text/event-stream` as any text, and holds the deltas in its compressor until the turn ends,
so a chat page got a 12-second answer in one piece at its end. Such proxies leave alone an
answer whose `Cache-Control` says `no-transform` (RFC 9111, 5.2.2.6); the JSON answers do not
say it, so they are still compressed."""

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from pantheon.testing.sse import events

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
]


def _directives(response: httpx.Response) -> set[str]:
    return {part.strip() for part in response.headers["cache-control"].split(",")}


def test_a_turns_streams_say_no_transform_and_its_json_does_not(owner, ada, make_session):
    session = make_session(owner, agent=ada)
    auth = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    server = AppServer(
        database_url=postgres_url(connection.settings_dict), env={"PANTHEON_LLM_BACKEND": "demo"}
    )
    with server, httpx.Client(base_url=f"{server.url}/api/v1", headers=auth, timeout=60) as api:
        with api.stream(
            "POST",
            f"/sessions/{session.pk}/turns",
            json={"message": "plan the launch"},
            headers={"Accept": "text/event-stream"},
        ) as posted:
            told = list(events(posted))
        assert posted.status_code == 201 and told[-1].name == "turn_completed"
        turn_id = told[0].data["turn_id"]

        with api.stream(
            "GET", f"/turns/{turn_id}/events", headers={"Accept": "text/event-stream"}
        ) as followed:
            replayed = list(events(followed))
        assert followed.status_code == 200 and replayed[-1].name == "turn_completed"

        as_json = api.get(f"/turns/{turn_id}")
        assert as_json.status_code == 200

    for stream in (posted, followed):
        assert _directives(stream) == {"private", "no-store", "no-transform"}
        assert stream.headers["x-accel-buffering"] == "no"
    assert _directives(as_json) == {"private", "no-store"}
