"""Sessions a user can find again: `GET sessions` (newest activity first, `?room=`, `?agent=`),
`GET agents/{id}/sessions`, and the item every session list shares."""

import base64
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from pantheon.testing.admin import admin_url, client_for
from rooms.models import Agent
from sessions_app.models import Session, Turn, TurnStatus

pytestmark = pytest.mark.django_db

SESSIONS_URL = "/api/v1/sessions"
ITEM_KEYS = {
    "id",
    "kind",
    "title",
    "room_id",
    "agent_id",
    "room",
    "agent",
    "turn_count",
    "last_activity_at",
    "created_at",
}
START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return START + timedelta(minutes=minutes)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def agent_sessions_url(agent) -> str:
    return f"/api/v1/agents/{getattr(agent, 'id', agent)}/sessions"


def created(session: Session, minutes: int) -> Session:
    """Backdate a session (created_at is set on insert)."""
    Session.objects.filter(pk=session.pk).update(created_at=at(minutes))
    session.refresh_from_db()
    return session


def add_turns(session: Session, *minutes: int) -> None:
    """Finished turns of the session, created at the given minutes."""
    first = Turn.objects.filter(session=session).count() + 1
    Turn.objects.bulk_create(
        Turn(
            session=session,
            turn_index=first + offset,
            mode="manual",
            status=TurnStatus.COMPLETED,
            user_input=f"question {first + offset}",
            created_at=at(minute),
        )
        for offset, minute in enumerate(minutes)
    )


def ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["results"]]


def walk(client, url: str) -> list[list[str]]:
    """Follow `next` links from `url`; the session ids of each page."""
    pages = []
    while url:
        response = client.get(url)
        pages.append(ids(response))
        url = response.json()["next"]
    return pages


@pytest.fixture
def grace(owner, make_agent):
    return make_agent(owner, "grace")


# --- GET sessions ---------------------------------------------------------------------------


def test_sessions_lists_the_callers_live_sessions_newest_activity_first(
    owner, outsider, owner_client, ada, room, make_room, make_session
):
    quiet = created(make_session(owner, room=room, title="quiet"), 0)
    busy = created(make_session(owner, agent=ada, title="busy"), 1)
    add_turns(busy, 10, 30)
    fresh = created(make_session(owner, room=room, title="fresh"), 20)
    revived = created(make_session(owner, room=room, title="revived"), 2)
    add_turns(revived, 25)
    # Never listed: deleted, in a deleted room, another user's.
    created(make_session(owner, room=room, deleted_at=timezone.now()), 40)
    gone_room = make_room(owner, name="Gone", deleted_at=timezone.now())
    created(make_session(owner, room=gone_room), 41)
    created(make_session(outsider, room=make_room(outsider, name="Theirs")), 42)

    response = owner_client.get(SESSIONS_URL)

    assert ids(response) == [str(s.id) for s in (busy, revived, fresh, quiet)]
    body = response.json()
    assert set(body) == {"next", "previous", "results"}
    assert body["next"] is None
    by_title = {item["title"]: item for item in body["results"]}
    assert {
        title: (item["turn_count"], parse(item["last_activity_at"]))
        for title, item in by_title.items()
    } == {
        "busy": (2, at(30)),
        "revived": (1, at(25)),
        "fresh": (0, at(20)),
        "quiet": (0, at(0)),
    }


def test_a_session_item_names_its_room_or_its_agent(owner, owner_client, ada, room, make_session):
    in_room = created(make_session(owner, room=room, title="Kickoff"), 1)
    direct = created(make_session(owner, agent=ada, title="1:1"), 0)
    add_turns(in_room, 5)

    room_item, direct_item = owner_client.get(SESSIONS_URL).json()["results"]

    assert set(room_item) == ITEM_KEYS
    assert set(direct_item) == ITEM_KEYS
    assert room_item == {
        "id": str(in_room.id),
        "kind": "room",
        "title": "Kickoff",
        "room_id": str(room.id),
        "agent_id": None,
        "room": {"id": str(room.id), "name": "Lab"},
        "agent": None,
        "turn_count": 1,
        "last_activity_at": room_item["last_activity_at"],
        "created_at": room_item["created_at"],
    }
    assert (parse(room_item["last_activity_at"]), parse(room_item["created_at"])) == (at(5), at(1))
    assert direct_item == {
        "id": str(direct.id),
        "kind": "direct",
        "title": "1:1",
        "room_id": None,
        "agent_id": str(ada.id),
        "room": None,
        "agent": {"id": str(ada.id), "agent_key": "ada", "name": "Ada"},
        "turn_count": 0,
        "last_activity_at": direct_item["last_activity_at"],
        "created_at": direct_item["created_at"],
    }
    assert parse(direct_item["last_activity_at"]) == parse(direct_item["created_at"]) == at(0)


def test_a_direct_session_whose_agent_was_deleted_stays_listed(
    owner, owner_client, ada, make_session
):
    session = make_session(owner, agent=ada)
    assert owner_client.delete(f"/api/v1/agents/{ada.id}").status_code == 204

    (item,) = owner_client.get(SESSIONS_URL).json()["results"]

    assert (item["id"], item["kind"], item["agent"], item["room"]) == (
        str(session.id),
        "direct",
        None,
        None,
    )


def test_a_direct_session_whose_agent_was_deleted_keeps_its_name_as_its_title(
    owner, owner_client, ada, grace, make_session, staff
):
    """It was listed with nothing to call it by: no title, no room, no agent. An untitled one
    takes the agent's name as it was; one with a title keeps it; one deleted already (a
    forgotten account's) stays as it was. The console's delete does the same."""
    untitled = make_session(owner, agent=ada)
    titled = make_session(owner, agent=ada, title="Taxes 2026")
    deleted = make_session(owner, agent=ada, deleted_at=timezone.now())
    assert owner_client.patch(f"/api/v1/agents/{ada.id}", {"name": "Ada L."}).status_code == 200

    assert owner_client.delete(f"/api/v1/agents/{ada.id}").status_code == 204

    items = {item["id"]: item for item in owner_client.get(SESSIONS_URL).json()["results"]}
    assert items[str(untitled.id)]["title"] == "Ada L."
    assert items[str(titled.id)]["title"] == "Taxes 2026"
    assert owner_client.get(f"{SESSIONS_URL}/{untitled.id}").json()["title"] == "Ada L."
    deleted.refresh_from_db()
    assert deleted.title == ""
    console_session = make_session(owner, agent=grace)
    page = client_for(staff).post(
        admin_url(Agent, "delete", grace.pk), {"post": "yes"}, follow=True
    )
    assert page.status_code == 200
    console_session.refresh_from_db()
    assert (console_session.agent_id, console_session.title) == (None, "Grace")


def test_sessions_walk_by_cursor_with_ties_broken_by_id(owner, owner_client, room, make_session):
    # Seven sessions with the very same activity, two with later turns.
    tied = [created(make_session(owner, room=room), 0) for _ in range(7)]
    later = [created(make_session(owner, room=room), 0) for _ in range(2)]
    add_turns(later[0], 9)
    add_turns(later[1], 8)

    pages = walk(owner_client, f"{SESSIONS_URL}?page_size=3")

    assert [len(page) for page in pages] == [3, 3, 3]
    expected = [str(later[0].id), str(later[1].id)]
    expected += sorted((str(s.id) for s in tied), key=uuid.UUID, reverse=True)
    assert [session_id for page in pages for session_id in page] == expected


def test_sessions_page_back_with_the_previous_cursor(owner, owner_client, room, make_session):
    sessions = [created(make_session(owner, room=room), minute) for minute in range(5)]

    second = owner_client.get(owner_client.get(f"{SESSIONS_URL}?page_size=2").json()["next"])
    first_again = owner_client.get(second.json()["previous"])

    assert ids(second) == [str(sessions[2].id), str(sessions[1].id)]
    assert ids(first_again) == [str(sessions[4].id), str(sessions[3].id)]


def cursor_of(link: str) -> str:
    return parse_qs(urlsplit(link).query, keep_blank_values=True)["cursor"][0]


def newest_first(sessions) -> list[str]:
    """Ids of sessions of one activity, in the list's order (ties broken by id, descending)."""
    return sorted((str(s.id) for s in sessions), key=uuid.UUID, reverse=True)


def test_the_previous_link_of_an_empty_page_is_taken(owner, owner_client, room, make_session):
    """Three sessions of one activity, two a page: the second page's cursor is an offset. With
    a session deleted, that page is empty, and its previous link, the end of the list read
    backwards (r=1: no position, no offset), was a 404 "Invalid cursor"."""
    tied = [created(make_session(owner, room=room), 0) for _ in range(3)]
    second = owner_client.get(f"{SESSIONS_URL}?page_size=2").json()["next"]
    assert cursor_of(second) == base64.b64encode(b"o=2").decode()
    Session.objects.filter(pk=tied[0].pk).update(deleted_at=timezone.now())

    empty = owner_client.get(second)
    previous = empty.json()["previous"]

    assert ids(empty) == []
    assert cursor_of(previous) == base64.b64encode(b"r=1").decode()
    assert ids(owner_client.get(previous)) == newest_first(tied[1:])


def test_the_next_link_of_an_empty_page_read_backwards_is_taken(
    owner, owner_client, room, make_session
):
    """The mirror case: the last page's previous link is an offset read backwards; with a
    session deleted that page is empty, and its next link, the start of the list, is the empty
    cursor (`cursor=`), which was a 404 too."""
    tied = [created(make_session(owner, room=room), 0) for _ in range(3)]
    last = owner_client.get(owner_client.get(f"{SESSIONS_URL}?page_size=2").json()["next"])
    previous = last.json()["previous"]
    assert cursor_of(previous) == base64.b64encode(b"o=2&r=1").decode()
    Session.objects.filter(pk=tied[0].pk).update(deleted_at=timezone.now())

    empty = owner_client.get(previous)
    following = empty.json()["next"]

    assert ids(empty) == []
    assert cursor_of(following) == ""
    assert ids(owner_client.get(following)) == newest_first(tied[1:])


def test_a_walk_past_the_offset_cutoff_lists_every_session_once(owner, owner_client, room):
    """Sessions of one activity are paged by offset, and DRF reads an offset as at most 1,000
    (its `offset_cutoff`) while writing the next page's past it: the page at 1,200 was a 404
    (the cursor read back as 1,000 is not the one written), and DRF alone answered the page at
    1,000 again, for ever."""
    Session.objects.bulk_create(Session(started_by=owner, room=room) for _ in range(1250))
    Session.objects.filter(started_by=owner).update(created_at=at(0))

    pages = walk(owner_client, f"{SESSIONS_URL}?page_size=200")

    assert [len(page) for page in pages] == [200] * 6 + [50]
    listed = [session_id for page in pages for session_id in page]
    assert listed == newest_first(Session.objects.filter(started_by=owner))


def test_sessions_filter_by_room(owner, owner_client, ada, room, make_room, make_session):
    mine = [created(make_session(owner, room=room), minute) for minute in (0, 1)]
    make_session(owner, room=make_room(owner, name="Other"))
    make_session(owner, agent=ada)

    response = owner_client.get(SESSIONS_URL, {"room": str(room.id)})

    assert ids(response) == [str(mine[1].id), str(mine[0].id)]


def test_sessions_filter_by_agent_lists_its_direct_sessions(
    owner, owner_client, ada, grace, room, make_session
):
    with_ada = created(make_session(owner, agent=ada), 0)
    make_session(owner, agent=grace)
    make_session(owner, room=room)  # ada sits in this room: not a direct session with her

    response = owner_client.get(SESSIONS_URL, {"agent": str(ada.id)})

    assert ids(response) == [str(with_ada.id)]


def test_sessions_filters_combine(owner, owner_client, ada, room, make_session):
    make_session(owner, room=room)
    make_session(owner, agent=ada)

    response = owner_client.get(SESSIONS_URL, {"room": str(room.id), "agent": str(ada.id)})

    assert ids(response) == []


def test_sessions_filter_by_another_users_room_finds_nothing(
    owner, outsider, owner_client, room, make_room, make_session
):
    make_session(owner, room=room)
    theirs = make_room(outsider, name="Theirs")
    make_session(outsider, room=theirs)

    assert ids(owner_client.get(SESSIONS_URL, {"room": str(theirs.id)})) == []


@pytest.mark.parametrize("param", ["room", "agent"])
def test_sessions_filter_by_a_malformed_id_is_400(owner, owner_client, room, make_session, param):
    make_session(owner, room=room)

    response = owner_client.get(SESSIONS_URL, {param: "not-a-uuid"})

    assert response.status_code == 400
    assert response.json() == {param: ["Must be a valid UUID."]}


def test_sessions_empty_filters_are_not_ids(owner, owner_client, ada, room, make_session):
    make_session(owner, room=room)

    response = owner_client.get(f"{SESSIONS_URL}?room=")

    assert response.status_code == 400
    assert "room" in response.json()


def test_sessions_of_a_new_user_is_an_empty_list(owner_client):
    response = owner_client.get(SESSIONS_URL)

    assert response.status_code == 200
    assert response.json() == {"next": None, "previous": None, "results": []}


@pytest.mark.parametrize(
    "url", [SESSIONS_URL, agent_sessions_url("5f0c9a5e-2d1b-4c8e-9a57-3e6f1b2c4d70")]
)
def test_anonymous_is_401(anon_client, url):
    assert anon_client.get(url).status_code == 401


def test_get_session_has_the_list_item_shape(owner, owner_client, room, make_session):
    session = created(make_session(owner, room=room, title="Kickoff"), 0)
    add_turns(session, 3, 4, 7)

    body = owner_client.get(f"/api/v1/sessions/{session.id}").json()

    assert set(body) == ITEM_KEYS
    assert (body["room"], body["turn_count"], parse(body["last_activity_at"])) == (
        {"id": str(room.id), "name": "Lab"},
        3,
        at(7),
    )


def test_room_sessions_items_have_the_same_shape(owner, owner_client, room, make_session):
    session = make_session(owner, room=room)
    add_turns(session, 1)

    (item,) = owner_client.get(f"/api/v1/rooms/{room.id}/sessions").json()["results"]

    assert set(item) == ITEM_KEYS
    assert (item["id"], item["room"]["name"], item["turn_count"]) == (str(session.id), "Lab", 1)


# --- GET agents/{id}/sessions ---------------------------------------------------------------


def test_agent_sessions_lists_the_direct_sessions_with_that_agent(
    owner, owner_client, ada, grace, room, make_session
):
    older = created(make_session(owner, agent=ada, title="older"), 0)
    newer = created(make_session(owner, agent=ada, title="newer"), 1)
    add_turns(older, 5)
    make_session(owner, agent=ada, deleted_at=timezone.now())
    make_session(owner, agent=grace)
    make_session(owner, room=room)

    response = owner_client.get(agent_sessions_url(ada))

    assert ids(response) == [str(older.id), str(newer.id)]
    first = response.json()["results"][0]
    assert set(first) == ITEM_KEYS
    assert (first["kind"], first["agent"], first["turn_count"]) == (
        "direct",
        {"id": str(ada.id), "agent_key": "ada", "name": "Ada"},
        1,
    )


def test_agent_sessions_walk_by_cursor(owner, owner_client, ada, make_session):
    sessions = [created(make_session(owner, agent=ada), minute) for minute in range(5)]

    pages = walk(owner_client, f"{agent_sessions_url(ada)}?page_size=2")

    newest_first = [str(session.id) for session in reversed(sessions)]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]


def test_agent_sessions_of_another_users_agent_is_404(outsider, owner_client, make_agent):
    theirs = make_agent(outsider, "ada")

    assert owner_client.get(agent_sessions_url(theirs)).status_code == 404


def test_agent_sessions_of_an_unknown_agent_is_404(owner_client):
    assert owner_client.get(agent_sessions_url(uuid.uuid4())).status_code == 404


def test_agent_sessions_only_lists_the_callers_own_sessions(
    owner, outsider, owner_client, ada, make_session
):
    # A session with someone else's agent cannot exist through the API; the list still filters
    # on who started it.
    make_session(outsider, agent=ada)

    assert ids(owner_client.get(agent_sessions_url(ada))) == []


# --- schema ---------------------------------------------------------------------------------


def test_schema_documents_the_session_lists(anon_client):
    schema = anon_client.get("/api/schema/", {"format": "json"}).json()

    sessions = schema["paths"]["/api/v1/sessions"]["get"]
    assert {"room", "agent", "cursor", "page_size"} <= {p["name"] for p in sessions["parameters"]}
    assert {"get", "post"} <= set(schema["paths"]["/api/v1/agents/{agent_id}/sessions"])
    assert {"get", "delete"} <= set(schema["paths"]["/api/v1/sessions/{id}"])
    item = schema["components"]["schemas"]["SessionActivity"]
    assert set(item["properties"]) == ITEM_KEYS
