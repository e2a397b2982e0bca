"""Room and direct sessions, `GET, DELETE sessions/{id}` and the `sessions/{id}/messages` list."""

import random
import uuid

import pytest
from django.utils import timezone

from sessions_app.models import Message, MessageRole, Session

pytestmark = pytest.mark.django_db


def room_sessions_url(room) -> str:
    return f"/api/v1/rooms/{getattr(room, 'id', room)}/sessions"


def direct_sessions_url(agent) -> str:
    return f"/api/v1/agents/{getattr(agent, 'id', agent)}/sessions"


def session_url(session, suffix: str = "") -> str:
    return f"/api/v1/sessions/{getattr(session, 'id', session)}{suffix}"


def messages_url(session) -> str:
    return session_url(session, "/messages")


def add_messages(session, sequences) -> None:
    """Timeline rows written straight to the table, in the given (not necessarily sorted) order."""
    Message.objects.bulk_create(
        Message(
            session=session,
            sequence=sequence,
            role=MessageRole.USER if sequence % 2 else MessageRole.ASSISTANT,
            agent_key="" if sequence % 2 else "ada",
            content=f"message {sequence}",
        )
        for sequence in sequences
    )


def walk_timeline(client, first_url: str) -> list[list[int]]:
    """Follow `next` links from `first_url`; the sequences of each page."""
    pages, url = [], first_url
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append([message["sequence"] for message in response.json()["results"]])
        url = response.json()["next"]
    return pages


# --- room sessions --------------------------------------------------------------------------


def test_post_room_sessions_opens_a_room_session(owner, owner_client, room):
    response = owner_client.post(room_sessions_url(room), {"title": "Kickoff"})

    assert response.status_code == 201
    body = response.json()
    assert (body["kind"], body["room_id"], body["agent_id"], body["title"]) == (
        "room",
        str(room.id),
        None,
        "Kickoff",
    )
    session = Session.objects.get(pk=body["id"])
    assert (session.room, session.agent, session.started_by) == (room, None, owner)
    assert session.deleted_at is None
    # The same fields as reading it back (the 201 lacked room, agent, turn_count and
    # last_activity_at).
    assert body == owner_client.get(f"/api/v1/sessions/{session.id}").json()
    assert (body["room"], body["turn_count"]) == ({"id": str(room.id), "name": room.name}, 0)


def test_post_room_sessions_without_a_body_has_an_empty_title(owner_client, room):
    response = owner_client.post(room_sessions_url(room))

    assert response.status_code == 201
    assert response.json()["title"] == ""


def test_post_room_sessions_rejects_a_title_that_is_too_long(owner_client, room):
    response = owner_client.post(room_sessions_url(room), {"title": "t" * 201})

    assert response.status_code == 400
    assert set(response.json()) == {"title"}
    assert not Session.objects.exists()


def test_get_room_sessions_lists_only_that_rooms_live_sessions(
    owner, owner_client, room, make_room, make_session
):
    first = make_session(owner, room=room, title="first")
    make_session(owner, room=room, title="deleted", deleted_at=timezone.now())
    second = make_session(owner, room=room, title="second")
    make_session(owner, room=make_room(owner, name="Other room"))

    response = owner_client.get(room_sessions_url(room))

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [session["id"] for session in body["results"]] == [str(first.id), str(second.id)]
    assert {session["kind"] for session in body["results"]} == {"room"}


@pytest.mark.parametrize("method", ["get", "post"])
def test_room_sessions_of_another_users_room_are_404(
    outsider, owner_client, make_room, make_session, method
):
    theirs = make_room(outsider, name="Theirs")
    make_session(outsider, room=theirs)

    response = getattr(owner_client, method)(room_sessions_url(theirs))

    assert response.status_code == 404
    assert Session.objects.count() == 1


@pytest.mark.parametrize("method", ["get", "post"])
def test_room_sessions_of_a_deleted_room_are_404(owner, owner_client, make_room, method):
    gone = make_room(owner, name="Gone", deleted_at=timezone.now())

    response = getattr(owner_client, method)(room_sessions_url(gone))

    assert response.status_code == 404
    assert not Session.objects.exists()


def test_room_sessions_of_an_unknown_room_are_404(owner_client):
    assert owner_client.post(room_sessions_url(uuid.uuid4())).status_code == 404


# --- direct sessions ------------------------------------------------------------------------


def test_post_agent_sessions_opens_a_direct_session(owner, owner_client, ada):
    response = owner_client.post(direct_sessions_url(ada), {"title": "1:1"})

    assert response.status_code == 201
    body = response.json()
    assert (body["kind"], body["room_id"], body["agent_id"], body["title"]) == (
        "direct",
        None,
        str(ada.id),
        "1:1",
    )
    session = Session.objects.get(pk=body["id"])
    assert (session.room, session.agent, session.started_by) == (None, ada, owner)
    assert body == owner_client.get(f"/api/v1/sessions/{session.id}").json()


def test_post_agent_sessions_of_another_users_agent_is_404(outsider, owner_client, make_agent):
    theirs = make_agent(outsider, "ada")

    response = owner_client.post(direct_sessions_url(theirs))

    assert response.status_code == 404
    assert not Session.objects.exists()


def test_post_agent_sessions_of_an_unknown_agent_is_404(owner_client):
    assert owner_client.post(direct_sessions_url(uuid.uuid4())).status_code == 404


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_agent_sessions_answers_only_get_and_post(owner, owner_client, ada, make_session, method):
    # GET lists the direct sessions (test_api_session_lists.py); nothing else is allowed.
    session = make_session(owner, agent=ada)

    assert getattr(owner_client, method)(direct_sessions_url(ada)).status_code == 405
    assert list(Session.objects.values_list("id", "deleted_at")) == [(session.id, None)]


def test_a_direct_session_outlives_its_agent(owner, owner_client, ada, make_session):
    session = make_session(owner, agent=ada)
    add_messages(session, [1, 2])

    assert owner_client.delete(f"/api/v1/agents/{ada.id}").status_code == 204

    response = owner_client.get(session_url(session))
    assert response.status_code == 200
    assert (response.json()["kind"], response.json()["agent_id"]) == ("direct", None)
    assert owner_client.get(messages_url(session)).json()["results"][0]["content"] == "message 1"


# --- one session ----------------------------------------------------------------------------


def test_get_session_returns_it(owner, owner_client, room, make_session):
    session = make_session(owner, room=room, title="Kickoff")

    response = owner_client.get(session_url(session))

    assert response.status_code == 200
    assert response.json()["id"] == str(session.id)
    assert (response.json()["kind"], response.json()["title"]) == ("room", "Kickoff")


def test_delete_session_is_a_soft_delete(owner, owner_client, room, make_session):
    session = make_session(owner, room=room)
    add_messages(session, [1])

    response = owner_client.delete(session_url(session))

    assert response.status_code == 204
    session.refresh_from_db()
    assert session.deleted_at is not None
    assert Message.objects.filter(session=session).count() == 1
    assert owner_client.get(session_url(session)).status_code == 404
    assert owner_client.get(messages_url(session)).status_code == 404
    assert owner_client.delete(session_url(session)).status_code == 404
    assert owner_client.get(room_sessions_url(room)).json()["count"] == 0


def test_patch_session_renames_it_and_only_its_title(owner, owner_client, room, make_session):
    """A chat app's "Rename" had no call (`PATCH sessions/{id}` was a 405): only the console
    could retitle a session."""
    session = make_session(owner, room=room, title="Kickoff")

    renamed = owner_client.patch(session_url(session), {"title": "  Q3 planning "}, format="json")
    kept = owner_client.patch(session_url(session), {"title": None}, format="json")
    untouched = owner_client.patch(session_url(session), {"kind": "direct"}, format="json")

    assert renamed.status_code == 200, renamed.json()
    assert renamed.json()["title"] == "Q3 planning"
    assert renamed.json() == owner_client.get(session_url(session)).json()
    assert (kept.status_code, kept.json()["title"]) == (200, "Q3 planning")
    assert (untouched.status_code, untouched.json()["kind"]) == (200, "room")
    cleared = owner_client.patch(session_url(session), {"title": ""}, format="json")
    assert (cleared.status_code, cleared.json()["title"]) == (200, "")
    session.refresh_from_db()
    assert (session.title, session.room_id) == ("", room.id)


@pytest.mark.parametrize(
    ("title", "error"),
    [
        ("x" * 201, "Ensure this field has no more than 200 characters."),
        (12, "Must be a string."),
    ],
)
def test_patch_session_refuses_a_bad_title_and_changes_nothing(
    owner, owner_client, room, make_session, title, error
):
    session = make_session(owner, room=room, title="Kickoff")

    response = owner_client.patch(session_url(session), {"title": title}, format="json")

    assert response.status_code == 400
    assert response.json() == {"title": [error]}
    session.refresh_from_db()
    assert session.title == "Kickoff"


def test_patch_a_deleted_or_another_users_session_is_404(
    owner, outsider, owner_client, make_room, make_session
):
    theirs = make_session(outsider, room=make_room(outsider, name="Theirs"), title="Theirs")
    mine = make_session(owner, room=make_room(owner, name="Mine"), title="Mine")
    assert owner_client.delete(session_url(mine)).status_code == 204

    for session in (theirs, mine):
        response = owner_client.patch(session_url(session), {"title": "Taken"}, format="json")
        assert response.status_code == 404
        session.refresh_from_db()
    assert (theirs.title, mine.title) == ("Theirs", "Mine")
    assert owner_client.put(session_url(theirs), {"title": "x"}, format="json").status_code == 405


@pytest.mark.parametrize("missing_id", ["5f0c9a5e-2d1b-4c8e-9a57-3e6f1b2c4d70", "not-a-uuid"])
def test_get_an_unknown_session_is_404(owner_client, missing_id):
    assert owner_client.get(session_url(missing_id)).status_code == 404


@pytest.mark.parametrize("method, suffix", [("get", ""), ("delete", ""), ("get", "/messages")])
def test_another_users_session_is_404(
    outsider, owner_client, make_agent, make_room, make_session, method, suffix
):
    theirs = make_session(outsider, room=make_room(outsider, name="Theirs"))
    add_messages(theirs, [1])

    response = getattr(owner_client, method)(session_url(theirs, suffix))

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.deleted_at is None


@pytest.mark.parametrize(
    "method, url_of",
    [
        ("get", lambda room, agent, session: room_sessions_url(room)),
        ("post", lambda room, agent, session: room_sessions_url(room)),
        ("post", lambda room, agent, session: direct_sessions_url(agent)),
        ("get", lambda room, agent, session: session_url(session)),
        ("delete", lambda room, agent, session: session_url(session)),
        ("get", lambda room, agent, session: messages_url(session)),
    ],
)
def test_anonymous_is_401(owner, anon_client, ada, room, make_session, method, url_of):
    session = make_session(owner, room=room)

    response = getattr(anon_client, method)(url_of(room, ada, session))

    assert response.status_code == 401
    assert list(Session.objects.values_list("id", "deleted_at")) == [(session.id, None)]


# --- timeline -------------------------------------------------------------------------------


def test_messages_are_oldest_first_with_their_fields(owner, owner_client, room, make_session):
    session = make_session(owner, room=room)
    add_messages(session, [3, 1, 2])

    response = owner_client.get(messages_url(session))

    assert response.status_code == 200
    body = response.json()
    assert body["previous"] is None and body["next"] is None
    assert [message["sequence"] for message in body["results"]] == [1, 2, 3]
    first, second = body["results"][:2]
    assert set(first) == {
        "id",
        "turn_id",
        "sequence",
        "role",
        "agent_key",
        "agent_name",
        "agent_id",
        "model_alias",
        "content",
        "status",
        "error_code",
        "created_at",
    }
    assert (first["role"], first["content"], first["status"], first["turn_id"]) == (
        "user",
        "message 1",
        "ok",
        None,
    )
    assert (second["role"], second["agent_key"]) == ("assistant", "ada")


def test_messages_walk_the_whole_timeline_by_cursor(owner, owner_client, room, make_session):
    session = make_session(owner, room=room)
    sequences = list(range(1, 121))
    random.Random(5).shuffle(sequences)
    add_messages(session, sequences)

    pages = walk_timeline(owner_client, f"{messages_url(session)}?page_size=50")

    assert [len(page) for page in pages] == [50, 50, 20]
    assert [sequence for page in pages for sequence in page] == list(range(1, 121))


def test_a_chat_opens_at_its_newest_messages_and_walks_back(
    owner, owner_client, room, make_session
):
    """A chat shows its newest messages first: a client had to walk a long timeline from its
    first page to reach them (one request per page_size messages). `?latest=true` answers the
    newest page (still oldest first within it), whose `previous` walks back to the start."""
    session = make_session(owner, room=room)
    add_messages(session, range(1, 121))

    response = owner_client.get(f"{messages_url(session)}?latest=true&page_size=50")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert [message["sequence"] for message in body["results"]] == list(range(71, 121))
    assert body["next"] is None
    pages = [body["results"]]
    while body["previous"]:
        body = owner_client.get(body["previous"]).json()
        pages.insert(0, body["results"])
    assert [len(page) for page in pages] == [20, 50, 50]
    assert [message["sequence"] for page in pages for message in page] == list(range(1, 121))


@pytest.mark.parametrize("value", ["yes", "", "TRUE "])
def test_latest_is_true_or_false(owner, owner_client, room, make_session, value):
    session = make_session(owner, room=room)
    add_messages(session, range(1, 4))

    response = owner_client.get(messages_url(session), {"latest": value})

    assert response.status_code == 400
    assert response.json() == {"latest": ["Use true or false."]}


def test_latest_is_true_or_false_beside_a_cursor_too(owner, owner_client, room, make_session):
    """A cursor says where the page is, but a `latest` that is neither is refused as without
    one: it was taken silently."""
    session = make_session(owner, room=room)
    add_messages(session, range(1, 6))
    first = owner_client.get(messages_url(session), {"latest": "true", "page_size": 2}).json()

    walked = owner_client.get(first["previous"])
    refused = owner_client.get(first["previous"].replace("latest=true", "latest=yes"))

    assert walked.status_code == 200
    assert [message["sequence"] for message in walked.json()["results"]] == [2, 3]
    assert refused.status_code == 400
    assert refused.json() == {"latest": ["Use true or false."]}


def test_latest_false_is_the_timeline_from_its_start(owner, owner_client, room, make_session):
    session = make_session(owner, room=room)
    add_messages(session, range(1, 4))

    response = owner_client.get(messages_url(session), {"latest": "false", "page_size": 2})

    assert [message["sequence"] for message in response.json()["results"]] == [1, 2]


def test_messages_default_to_pages_of_fifty(owner, owner_client, room, make_session):
    session = make_session(owner, room=room)
    add_messages(session, range(1, 61))

    response = owner_client.get(messages_url(session))

    assert len(response.json()["results"]) == 50
    assert response.json()["next"] is not None


def test_messages_list_only_that_sessions_timeline(owner, owner_client, room, make_session):
    session = make_session(owner, room=room)
    other = make_session(owner, room=room)
    add_messages(session, [1, 2])
    add_messages(other, [1, 2, 3])

    response = owner_client.get(messages_url(session))

    assert [message["content"] for message in response.json()["results"]] == [
        "message 1",
        "message 2",
    ]


def test_messages_of_an_empty_session(owner, owner_client, room, make_session):
    session = make_session(owner, room=room)

    response = owner_client.get(messages_url(session))

    assert response.status_code == 200
    assert response.json() == {"next": None, "previous": None, "results": []}
