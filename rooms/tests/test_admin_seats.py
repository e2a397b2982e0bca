"""The room page's seated agents in the admin: a room seats only its owner's agents, as the API
(`PUT rooms/{id}/agents` answers 400 "Unknown agent" for anyone else's)."""

import re
from html.parser import HTMLParser

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pantheon.fields import MAX_LIST_ITEMS
from pantheon.testing.admin import client_for, history
from rooms.models import Room, RoomAgent

pytestmark = pytest.mark.django_db

User = get_user_model()


def room_form(room, seats, *, owner=None, initial=0) -> dict:
    """The room change (or add) form as the admin posts it, with `seats` as (agent, position,
    seat id or None) rows of its "seated agents" inline."""
    form = {
        "owner": (owner or room.owner).pk,
        "name": room.name,
        "goal": room.goal,
        "current_mode": room.current_mode,
        "pending_mode": "",
        "seats-TOTAL_FORMS": len(seats),
        "seats-INITIAL_FORMS": initial,
        "seats-MIN_NUM_FORMS": 0,
        "seats-MAX_NUM_FORMS": 1000,
    }
    for index, (agent, position, seat_id) in enumerate(seats):
        form |= {
            f"seats-{index}-id": seat_id or "",
            f"seats-{index}-room": "" if room._state.adding else room.pk,
            f"seats-{index}-agent": agent.pk,
            f"seats-{index}-position": position,
        }
    return form


@pytest.fixture
def room(owner, make_agent, make_room):
    return make_room(owner, [make_agent(owner, "ada")], name="Research")


@pytest.fixture
def spy(outsider, make_agent):
    """Another user's agent, with a role prompt of its own."""
    return make_agent(outsider, "spy", role_prompt="Outsider's private prompt.")


def change(room) -> str:
    return reverse("admin:rooms_room_change", args=[room.pk])


@pytest.mark.parametrize("who", ["owner_group", "superuser"])
def test_seating_another_users_agent_on_the_room_page_is_refused(
    room, spy, make_operator, staff, who
):
    operator = make_operator("Owner", "boss") if who == "owner_group" else staff
    ada_seat = RoomAgent.objects.get(room=room)

    response = client_for(operator).post(
        change(room),
        room_form(room, [(ada_seat.agent, 0, ada_seat.pk), (spy, 1, None)], initial=1),
    )

    assert response.status_code == 200  # the form again, with its error
    assert "a room seats only its owner&#x27;s agents" in response.content.decode()
    assert list(room.seats.values_list("agent__agent_key", flat=True)) == ["ada"]


def test_seating_the_owners_own_agent_on_the_room_page_works(room, owner, make_agent, staff):
    ada_seat = RoomAgent.objects.get(room=room)
    linus = make_agent(owner, "linus")

    response = client_for(staff).post(
        change(room),
        room_form(room, [(ada_seat.agent, 0, ada_seat.pk), (linus, 1, None)], initial=1),
    )

    assert response.status_code == 302
    assert list(room.seats.order_by("position").values_list("agent__agent_key", flat=True)) == [
        "ada",
        "linus",
    ]


def test_the_room_page_offers_only_the_owners_agents(room, owner, spy, make_agent, staff):
    make_agent(owner, "linus")

    response = client_for(staff).get(change(room))

    assert response.status_code == 200
    (formset,) = [formset.formset for formset in response.context["inline_admin_formsets"]]
    offered = formset.empty_form.fields["agent"].queryset
    assert sorted(offered.values_list("agent_key", flat=True)) == ["ada", "linus"]
    assert spy.agent_key not in {agent.agent_key for agent in offered}


def test_a_new_room_cannot_seat_another_users_agent(owner, spy, make_operator):
    unsaved = Room(owner=owner, name="Fresh")

    response = client_for(make_operator("Owner", "boss")).post(
        reverse("admin:rooms_room_add"), room_form(unsaved, [(spy, 0, None)])
    )

    assert response.status_code == 200
    assert "a room seats only its owner&#x27;s agents" in response.content.decode()
    assert not Room.objects.filter(name="Fresh").exists()
    assert not RoomAgent.objects.filter(agent=spy).exists()


@pytest.mark.parametrize("seated", [True, False])
def test_a_rooms_owner_is_set_once(room, outsider, spy, owner, make_session, staff, seated):
    """Handed to another user (emptied first, or not), a room would run that user's agents in
    the sessions its first owner started there: its owner is read-only after the add page."""
    session = make_session(owner, room=room)
    seat = RoomAgent.objects.get(room=room)
    if not seated:
        seat.delete()
    seats = [(seat.agent, 0, seat.pk)] if seated else []

    response = client_for(staff).post(
        change(room), room_form(room, seats, owner=outsider, initial=len(seats))
    )

    assert response.status_code == 302
    room.refresh_from_db()
    assert room.owner == owner == session.started_by
    page = client_for(staff).get(change(room)).content.decode()
    assert 'name="owner"' not in page


def test_a_seat_of_its_own_page_cannot_take_another_users_agent(room, spy, make_operator):
    client = client_for(make_operator("Owner", "boss"))
    form = {"room": room.pk, "agent": spy.pk, "position": 5}

    response = client.post(reverse("admin:rooms_roomagent_add"), form)

    assert response.status_code == 200
    page = response.content.decode()
    assert "spy" in page and "belongs to outsider, not to owner, the room&#x27;s owner" in page
    assert not RoomAgent.objects.filter(agent=spy).exists()

    seat = RoomAgent.objects.get(room=room)
    response = client.post(
        reverse("admin:rooms_roomagent_change", args=[seat.pk]), {**form, "position": 0}
    )
    assert response.status_code == 200
    seat.refresh_from_db()
    assert seat.agent.agent_key == "ada"


def test_an_agent_cannot_be_handed_to_another_user_on_its_page(room, outsider, make_operator):
    ada = RoomAgent.objects.get(room=room).agent
    client = client_for(make_operator("Owner", "boss"))
    page = reverse("admin:rooms_agent_change", args=[ada.pk])
    form = {
        "owner": outsider.pk,
        "agent_key": "ada",
        "name": "Ada",
        "model_alias": "deepseek",
        "role_prompt": "Changed.",
        "tool_permissions": "[]",
    }

    assert 'name="owner"' not in client.get(page).content.decode()
    assert client.post(page, form).status_code == 302

    ada.refresh_from_db()
    assert (ada.owner.username, ada.role_prompt) == ("owner", "Changed.")


def test_the_room_page_names_each_seat_in_one_query(staff, owner, make_agent, room):
    """The inline's captions read "6b25cbbb-… #0: 7f0c6654-…", the seat's raw ids."""
    client = client_for(staff)
    page = reverse("admin:rooms_room_change", args=[room.pk])
    client.get(page)  # the process's caches (content types) filled
    with CaptureQueriesContext(connection) as one_seat:
        first = client.get(page).content.decode()
    for position, key in enumerate(["bo", "cy", "di"], start=1):
        RoomAgent.objects.create(room=room, agent=make_agent(owner, key), position=position)
    with CaptureQueriesContext(connection) as four_seats:
        html = client.get(page).content.decode()

    assert f"{room.pk} #0" not in first
    assert "(@ada) at seat 0 of Research" in first and "(@di) at seat 3 of Research" in html
    assert len(four_seats) == len(one_seat)


@pytest.mark.parametrize("swap", ["positions", "agents"])
def test_two_seats_swapped_on_the_room_page_are_saved(room, owner, make_agent, staff, swap):
    """Each seat took the other's place (or agent) while the other still held it: a 500 on the
    unique seats (room_position_unique, room_agent_unique). The API reorders the same way."""
    ada_seat = RoomAgent.objects.get(room=room)
    linus_seat = RoomAgent.objects.create(room=room, agent=make_agent(owner, "linus"), position=1)
    ada, linus = ada_seat.agent, linus_seat.agent
    seats = (
        [(ada, 1, ada_seat.pk), (linus, 0, linus_seat.pk)]
        if swap == "positions"
        else [(linus, 0, ada_seat.pk), (ada, 1, linus_seat.pk)]
    )
    client = client_for(staff)

    response = client.post(change(room), room_form(room, seats, initial=2))

    assert response.status_code == 302
    seated = room.seats.order_by("position").values_list("agent__agent_key", flat=True)
    assert list(seated) == ["linus", "ada"]
    assert RoomAgent.objects.filter(room=room).count() == 2
    history = client.get(reverse("admin:rooms_room_history", args=[room.pk]))
    assert history.status_code == 200 and "Changed" in history.content.decode()


def test_the_seat_autocomplete_names_each_agents_owner(
    room, outsider, make_agent, staff, django_user_model
):
    """Every owner's "Ada (@ada)" read alike: which one was seated?"""
    make_agent(outsider, "ada")
    client = client_for(staff)
    query = {"term": "ada", "app_label": "rooms", "model_name": "roomagent", "field_name": "agent"}

    def found() -> tuple[list[str], int]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(reverse("admin:autocomplete"), query)
        assert response.status_code == 200
        return sorted(result["text"] for result in response.json()["results"]), len(queries)

    labels, two_owners = found()
    assert labels == ["Ada (@ada) of outsider", "Ada (@ada) of owner"]
    for name in ("kim", "lee", "max"):
        make_agent(django_user_model.objects.create_user(name), "ada")
    labels, five_owners = found()
    assert len(labels) == 5 and "Ada (@ada) of max" in labels
    assert five_owners == two_owners  # the owners read with the agents


def test_the_room_page_numbers_its_seats_as_the_api_does(
    room, owner, make_agent, staff, owner_client
):
    """Positions were kept as typed (5, 9, 2), where the API seats a roster 0, 1, 2... in its
    order: the typed positions give the order, the seats take the API's numbers."""
    ada_seat = RoomAgent.objects.get(room=room)
    linus, bo = make_agent(owner, "linus"), make_agent(owner, "bo")
    client = client_for(staff)

    typed = [(ada_seat.agent, 5, ada_seat.pk), (linus, 9, None), (bo, 2, None)]
    response = client.post(change(room), room_form(room, typed, initial=1))

    assert response.status_code == 302
    seats = room.seats.order_by("position").values_list("agent__agent_key", "position")
    assert list(seats) == [("bo", 0), ("ada", 1), ("linus", 2)]
    assert RoomAgent.objects.get(pk=ada_seat.pk).position == 1  # the same seat, renumbered
    api = owner_client.get(f"/api/v1/rooms/{room.pk}").json()["agents"]
    assert [(seat["agent_key"], seat["position"]) for seat in api] == seats_now(room)
    history = client.get(reverse("admin:rooms_room_history", args=[room.pk])).content.decode()
    assert "Position: 0 → 1" in history  # the log names the number kept, not the one typed

    # A seat leaving closes the gap it leaves, as a roster without it would be seated.
    bo_seat = RoomAgent.objects.get(room=room, agent=bo)
    linus_seat = RoomAgent.objects.get(room=room, agent=linus)
    form = room_form(
        room,
        [(bo, 0, bo_seat.pk), (ada_seat.agent, 1, ada_seat.pk), (linus, 2, linus_seat.pk)],
        initial=3,
    )
    response = client.post(change(room), form | {"seats-0-DELETE": "on"})

    assert response.status_code == 302
    assert seats_now(room) == [("ada", 0), ("linus", 1)]
    api = owner_client.get(f"/api/v1/rooms/{room.pk}").json()["agents"]
    assert [(seat["agent_key"], seat["position"]) for seat in api] == [("ada", 0), ("linus", 1)]


def test_two_seats_typed_at_one_position_are_refused(room, owner, make_agent, staff):
    ada_seat = RoomAgent.objects.get(room=room)
    typed = [(ada_seat.agent, 3, ada_seat.pk), (make_agent(owner, "linus"), 3, None)]

    response = client_for(staff).post(change(room), room_form(room, typed, initial=1))

    assert response.status_code == 200
    assert "Please correct the duplicate data for position" in response.content.decode()
    assert seats_now(room) == [("ada", 0)]


def seats_now(room) -> list[tuple[str, int]]:
    seats = room.seats.order_by("position").values_list("agent__agent_key", "position")
    return list(seats)


# --- the room page saved after its seats changed elsewhere --------------------------------------


def add_seat(room, agent, position) -> None:
    """A seat added on the seat's own page, by another operator, while the room page is open."""
    other = User.objects.create_user("other-operator", is_staff=True, is_superuser=True)
    form = {"room": room.pk, "agent": agent.pk, "position": position}
    response = client_for(other).post(reverse("admin:rooms_roomagent_add"), form)
    assert response.status_code == 302


def test_a_seat_added_elsewhere_is_numbered_in_when_the_room_page_is_saved(
    room, owner, make_agent, staff
):
    """The room page renumbered only the seats it showed: its new seat took the number of the one
    seated meanwhile on the seat's own page (a 500 on room_position_unique)."""
    ada_seat = RoomAgent.objects.get(room=room)
    linus_seat = RoomAgent.objects.create(room=room, agent=make_agent(owner, "linus"), position=1)
    opened = [(ada_seat.agent, 0, ada_seat.pk), (linus_seat.agent, 1, linus_seat.pk)]
    add_seat(room, make_agent(owner, "bo"), 2)

    form = room_form(room, [*opened, (make_agent(owner, "cy"), 9, None)], initial=2)
    response = client_for(staff).post(change(room), form)

    assert response.status_code == 302
    assert seats_now(room) == [("ada", 0), ("linus", 1), ("bo", 2), ("cy", 3)]


def test_a_seat_seated_elsewhere_and_gone_from_the_page_closes_the_gap(
    room, owner, make_agent, staff
):
    ada_seat = RoomAgent.objects.get(room=room)
    linus_seat = RoomAgent.objects.create(room=room, agent=make_agent(owner, "linus"), position=1)
    opened = [(ada_seat.agent, 0, ada_seat.pk), (linus_seat.agent, 1, linus_seat.pk)]
    add_seat(room, make_agent(owner, "bo"), 2)

    response = client_for(staff).post(
        change(room), room_form(room, opened, initial=2) | {"seats-0-DELETE": "on"}
    )

    assert response.status_code == 302
    assert seats_now(room) == [("linus", 0), ("bo", 1)]


def test_an_agent_seated_elsewhere_meanwhile_is_not_seated_twice(room, owner, make_agent, staff):
    """The page seats an agent another operator has just seated: said on the page, not a 500 on
    room_agent_unique, and nothing of the page is saved."""
    ada_seat = RoomAgent.objects.get(room=room)
    bo = make_agent(owner, "bo")
    add_seat(room, bo, 1)

    form = room_form(room, [(ada_seat.agent, 5, ada_seat.pk), (bo, 0, None)], initial=1)
    response = client_for(staff).post(change(room), form | {"name": "Renamed"})

    assert response.status_code == 200
    assert "seated in this room since this page was opened" in response.content.decode()
    assert seats_now(room) == [("ada", 0), ("bo", 1)]
    room.refresh_from_db()
    assert room.name == "Research"


def test_a_seat_the_api_replaced_meanwhile_is_said_on_the_page(
    room, owner, make_agent, staff, owner_client
):
    """`PUT rooms/{id}/agents` seats a new roster (new seats): the page's seats are gone."""
    ada_seat = RoomAgent.objects.get(room=room)
    linus = make_agent(owner, "linus")
    answer = owner_client.put(
        f"/api/v1/rooms/{room.pk}/agents",
        {"agent_ids": [str(linus.pk), str(ada_seat.agent.pk)]},
        format="json",
    )
    assert answer.status_code == 200

    form = room_form(room, [(ada_seat.agent, 0, ada_seat.pk)], initial=1)
    response = client_for(staff).post(change(room), form)

    assert response.status_code == 200
    # Django's own refusal sat in the seat's hidden id field: "Please correct the error below"
    # over no error at all.
    assert (
        "A seat this page shows was removed from the room since this page was opened: nothing "
        "was saved. The seats below are the room&#x27;s as they are now"
        in response.content.decode()
    )
    assert seats_now(room) == [("linus", 0), ("ada", 1)]


class ShownFields(HTMLParser):
    """The values a page's form shows: each input's, and each select's selected options."""

    def __init__(self, html: str):
        super().__init__()
        self.values: dict[str, object] = {}
        self._select: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "input" and "name" in attributes:
            self.values[attributes["name"]] = attributes.get("value")
        elif tag == "select":
            self._select = attributes["name"]
            self.values[self._select] = []
        elif tag == "option" and self._select and "selected" in attributes:
            self.values[self._select].append(attributes["value"])

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


@pytest.mark.parametrize("meanwhile", ["roster", "seat"])
def test_a_refused_room_page_shows_the_seats_as_they_are_now(
    room, owner, make_agent, staff, owner_client, meanwhile
):
    """Refused, the page showed the seats as posted beside the captions of the seats now in
    the room (ada's typed 3 beside "Linus (@linus) at seat 0"), two states mixed: saved again
    as shown, it was refused again. It shows the room's seats as they are now, the refusal
    above them, and the room's own fields as typed."""
    ada_seat = RoomAgent.objects.get(room=room)
    ada, linus, bo = ada_seat.agent, make_agent(owner, "linus"), make_agent(owner, "bo")
    if meanwhile == "roster":  # new seats: the page's seat of ada is gone
        roster = {"agent_ids": [str(linus.pk), str(ada.pk)]}
        answer = owner_client.put(f"/api/v1/rooms/{room.pk}/agents", roster, format="json")
        assert answer.status_code == 200
    else:  # linus seated on the seat's own page, which the page seats too
        add_seat(room, linus, 0)
    now = {seat.agent.agent_key: seat for seat in room.seats.select_related("agent")}
    typed = [(ada, 3, ada_seat.pk), (linus, 0, None), (bo, 1, None)]

    response = client_for(staff).post(
        change(room), room_form(room, typed, initial=1) | {"name": "Renamed"}
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "nothing was saved. The seats below are the room&#x27;s as they are now" in page
    shown = ShownFields(page).values
    assert (shown["seats-TOTAL_FORMS"], shown["seats-INITIAL_FORMS"]) == ("2", "2")
    assert [
        (
            shown[f"seats-{index}-id"],
            shown[f"seats-{index}-agent"],
            shown[f"seats-{index}-position"],
        )
        for index in range(2)
    ] == [
        (str(now["linus"].pk), [str(linus.pk)], "0"),
        (str(now["ada"].pk), [str(ada.pk)], "1"),
    ]
    selected = [value for name, value in shown.items() if name.endswith("-agent")]
    assert "seats-2-agent" not in shown and [str(bo.pk)] not in selected
    assert "(@linus) at seat 0 of Research" in page and "(@ada) at seat 1 of Research" in page
    assert shown["name"] == "Renamed"  # the room's own fields as typed
    assert seats_now(room) == [("linus", 0), ("ada", 1)]
    room.refresh_from_db()
    assert room.name == "Research"

    # Saved again as shown, it is saved.
    again = [(linus, 0, now["linus"].pk), (ada, 1, now["ada"].pk)]
    response = client_for(staff).post(
        change(room), room_form(room, again, initial=2) | {"name": "Renamed"}
    )
    assert response.status_code == 302
    room.refresh_from_db()
    assert (room.name, seats_now(room)) == ("Renamed", [("linus", 0), ("ada", 1)])


# --- the seat's own page numbers the room's seats as the room page does -------------------------


@pytest.fixture
def three_seats(room, owner, make_agent):
    """Research seats ada, linus and bo at 0, 1, 2."""
    for position, key in enumerate(["linus", "bo"], start=1):
        RoomAgent.objects.create(room=room, agent=make_agent(owner, key), position=position)
    return room


def seat_page(seat=None) -> str:
    if seat is None:
        return reverse("admin:rooms_roomagent_add")
    return reverse("admin:rooms_roomagent_change", args=[seat.pk])


@pytest.mark.parametrize(
    ("typed", "seated"),
    [
        (7, [("ada", 0), ("linus", 1), ("bo", 2), ("cy", 3)]),
        (1, [("ada", 0), ("cy", 1), ("linus", 2), ("bo", 3)]),
        (0, [("cy", 0), ("ada", 1), ("linus", 2), ("bo", 3)]),
    ],
)
def test_a_seat_added_on_its_own_page_takes_its_place_in_the_rooms_numbers(
    three_seats, owner, make_agent, staff, owner_client, typed, seated
):
    """Its position was kept as typed (7 in a room of three seats), or refused as taken (1),
    where the room page numbers its seats 0, 1, 2... in order: the typed one says where."""
    form = {"room": three_seats.pk, "agent": make_agent(owner, "cy").pk, "position": typed}
    client = client_for(staff)

    assert "numbered 0, 1, 2... in order" in client.get(seat_page()).content.decode()
    response = client.post(seat_page(), form)

    assert response.status_code == 302
    assert seats_now(three_seats) == seated
    api = owner_client.get(f"/api/v1/rooms/{three_seats.pk}").json()["agents"]
    assert [(seat["agent_key"], seat["position"]) for seat in api] == seated


@pytest.mark.parametrize(
    ("typed", "seated"),
    [(2, ["linus", "bo", "ada"]), (9, ["linus", "bo", "ada"]), (1, ["linus", "ada", "bo"])],
)
def test_a_seat_moved_on_its_own_page_takes_the_place_typed(three_seats, staff, typed, seated):
    ada_seat = RoomAgent.objects.get(room=three_seats, agent__agent_key="ada")
    form = {"room": three_seats.pk, "agent": ada_seat.agent.pk, "position": typed}

    response = client_for(staff).post(seat_page(ada_seat), form)

    assert response.status_code == 302
    assert seats_now(three_seats) == [(key, index) for index, key in enumerate(seated)]
    assert RoomAgent.objects.get(pk=ada_seat.pk).agent.agent_key == "ada"  # the same seat


def test_a_seat_moved_to_another_room_or_deleted_closes_its_gap(
    three_seats, owner, make_room, make_agent, staff
):
    other = make_room(owner, [make_agent(owner, "di")], name="Other")
    linus_seat = RoomAgent.objects.get(room=three_seats, agent__agent_key="linus")
    client = client_for(staff)

    form = {"room": other.pk, "agent": linus_seat.agent.pk, "position": 0}
    assert client.post(seat_page(linus_seat), form).status_code == 302

    assert seats_now(three_seats) == [("ada", 0), ("bo", 1)]
    assert seats_now(other) == [("linus", 0), ("di", 1)]

    ada_seat = RoomAgent.objects.get(room=three_seats, agent__agent_key="ada")
    delete = reverse("admin:rooms_roomagent_delete", args=[ada_seat.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302

    assert seats_now(three_seats) == [("bo", 0)]

    # The list's delete action too.
    di_seat = RoomAgent.objects.get(room=other, agent__agent_key="di")
    action = {"action": "delete_selected", "_selected_action": [linus_seat.pk], "post": "yes"}
    assert client.post(reverse("admin:rooms_roomagent_changelist"), action).status_code == 302

    assert seats_now(other) == [("di", 0)]
    assert RoomAgent.objects.get(pk=di_seat.pk).position == 0


def test_an_agent_deleted_in_the_console_leaves_no_gap_in_its_rooms(
    three_seats, owner, make_room, make_agent, staff
):
    """As the API's delete: the cascade alone took its seats and left positions 0, 2."""
    linus = RoomAgent.objects.get(room=three_seats, agent__agent_key="linus").agent
    other = make_room(owner, [linus, make_agent(owner, "di")], name="Other")
    client = client_for(staff)

    page = reverse("admin:rooms_agent_delete", args=[linus.pk])
    assert client.post(page, {"post": "yes"}).status_code == 302

    assert seats_now(three_seats) == [("ada", 0), ("bo", 1)]
    assert seats_now(other) == [("di", 0)]

    # The list's delete action too.
    ada = RoomAgent.objects.get(room=three_seats, agent__agent_key="ada").agent
    action = {"action": "delete_selected", "_selected_action": [ada.pk], "post": "yes"}
    assert client.post(reverse("admin:rooms_agent_changelist"), action).status_code == 302

    assert seats_now(three_seats) == [("bo", 0)]


def test_a_rooms_history_names_each_seat_an_agents_delete_took(
    three_seats, owner, make_room, make_agent, staff
):
    """The agent's delete page listed the seats going with it ("Room agent: Linus (@linus) at
    seat 1 of Research"); afterwards the history of each room said nothing of them, as if the
    agent still sat there. Each room's history says which seat went, and why, as its page's
    own seat deletions do ("Deleted room agent “…”."), in the delete's transaction."""
    linus = RoomAgent.objects.get(room=three_seats, agent__agent_key="linus").agent
    other = make_room(owner, [make_agent(owner, "di"), linus], name="Other")
    client = client_for(staff)

    deleted = client.post(reverse("admin:rooms_agent_delete", args=[linus.pk]), {"post": "yes"})
    assert deleted.status_code == 302

    assert history(three_seats) == [
        "Deleted room agent “Linus (@linus) at seat 1 of Research”: its agent was deleted."
    ]
    assert history(other) == [
        "Deleted room agent “Linus (@linus) at seat 1 of Other”: its agent was deleted."
    ]
    entry = LogEntry.objects.get(object_id=str(other.pk))
    assert (entry.user, entry.action_flag, entry.content_type.model) == (staff, CHANGE, "room")
    page = client.get(reverse("admin:rooms_room_history", args=[three_seats.pk]))
    assert "Linus (@linus) at seat 1 of Research”: its agent was deleted." in page.content.decode()

    # The list's delete action too.
    ada = RoomAgent.objects.get(room=three_seats, agent__agent_key="ada").agent
    action = {"action": "delete_selected", "_selected_action": [ada.pk], "post": "yes"}
    assert client.post(reverse("admin:rooms_agent_changelist"), action).status_code == 302

    assert history(three_seats)[-1] == (
        "Deleted room agent “Ada (@ada) at seat 0 of Research”: its agent was deleted."
    )
    # An agent seated nowhere touches no room's history.
    lone = make_agent(owner, "lone")
    deleted = client.post(reverse("admin:rooms_agent_delete", args=[lone.pk]), {"post": "yes"})
    assert deleted.status_code == 302 and not type(lone).objects.filter(pk=lone.pk).exists()
    assert LogEntry.objects.filter(content_type__model="room").count() == 3


def test_a_page_whose_seats_changed_meanwhile_says_so_before_its_typing_mistakes(
    room, owner, make_agent, staff
):
    """One of its seats deleted on the seat's page meanwhile, and two seats typed at one
    position: the page said "Please correct the duplicate data for position" over its seats as
    posted, beside the captions of others (Django reads the row of a seat gone as the seat now
    at its place). That the seats changed meanwhile comes first, with the seats as they are now.
    """
    ada_seat = RoomAgent.objects.get(room=room)
    linus_seat, bo_seat = (
        RoomAgent.objects.create(room=room, agent=make_agent(owner, key), position=position)
        for position, key in ((1, "linus"), (2, "bo"))
    )
    other = User.objects.create_user("other-operator", is_staff=True, is_superuser=True)
    delete = reverse("admin:rooms_roomagent_delete", args=[linus_seat.pk])
    assert client_for(other).post(delete, {"post": "yes"}).status_code == 302
    typed = [(seat.agent, 2, seat.pk) for seat in (ada_seat, linus_seat, bo_seat)]

    response = client_for(staff).post(change(room), room_form(room, typed, initial=3))

    assert response.status_code == 200
    page = response.content.decode()
    assert "A seat this page shows was removed from the room since this page was opened" in page
    assert "duplicate data" not in page
    shown = ShownFields(page).values
    assert shown["seats-TOTAL_FORMS"] == "2"
    assert [(shown[f"seats-{index}-id"], shown[f"seats-{index}-position"]) for index in (0, 1)] == [
        (str(ada_seat.pk), "0"),
        (str(bo_seat.pk), "1"),
    ]
    assert seats_now(room) == [("ada", 0), ("bo", 1)]


def test_a_room_page_saved_after_a_turn_promoted_its_mode_keeps_the_turns_mode(room, owner, staff):
    """A turn promotes a room's pending mode while its page is open; the page, saved with a new
    name, wrote back the modes it showed (current manual, roundtable pending again)."""
    Room.objects.filter(pk=room.pk).update(current_mode="manual", pending_mode="roundtable")
    room.refresh_from_db()
    console = client_for(staff)
    page = console.get(change(room)).content.decode()
    shown = dict(re.findall(r'name="initial-(\w+_mode)" value="(\w*)"', page))
    Room.objects.filter(pk=room.pk).update(current_mode="roundtable", pending_mode=None)
    seat = RoomAgent.objects.get(room=room)
    form = room_form(room, [(seat.agent, 0, seat.pk)], initial=1)
    form |= {"name": "Renamed", "pending_mode": "roundtable"}
    form |= {f"initial-{name}": value for name, value in shown.items()}

    response = console.post(change(room), form)

    assert shown == {"current_mode": "manual", "pending_mode": "roundtable"}
    assert response.status_code == 302
    room.refresh_from_db()
    assert (room.name, room.current_mode, room.pending_mode) == ("Renamed", "roundtable", None)


def test_a_mode_the_operator_changes_on_the_room_page_is_saved(room, owner, staff):
    seat = RoomAgent.objects.get(room=room)
    form = room_form(room, [(seat.agent, 0, seat.pk)], initial=1)
    form |= {
        "pending_mode": "orchestrator",
        "initial-pending_mode": "",
        "initial-current_mode": room.current_mode,
    }

    response = client_for(staff).post(change(room), form)

    assert response.status_code == 302
    room.refresh_from_db()
    assert room.pending_mode == "orchestrator"


# --- as many seats as the API's roster takes ------------------------------------------------------


@pytest.fixture
def full_room(owner, make_agent, make_room):
    """A room with as many seats as `PUT rooms/{id}/agents` takes (50), and one agent more."""
    agents = [make_agent(owner, f"a{index}") for index in range(MAX_LIST_ITEMS + 1)]
    return make_room(owner, agents[:MAX_LIST_ITEMS], name="Full"), agents[MAX_LIST_ITEMS]


def test_a_seat_page_cannot_seat_more_agents_than_the_api_takes(full_room, staff, owner_client):
    """A 51st seat made a roster the API then refused to take back as it reads it
    (`PUT rooms/{id}/agents` with the room's own agents was a 400)."""
    room, extra = full_room
    response = client_for(staff).post(
        seat_page(), {"room": room.pk, "agent": extra.pk, "position": 99}
    )

    assert response.status_code == 200
    assert f"A room seats at most {MAX_LIST_ITEMS} agents" in response.content.decode()
    assert room.seats.count() == MAX_LIST_ITEMS
    seated = [seat["id"] for seat in owner_client.get(f"/api/v1/rooms/{room.pk}").json()["agents"]]
    put = owner_client.put(
        f"/api/v1/rooms/{room.pk}/agents", {"agent_ids": seated[::-1]}, format="json"
    )
    assert put.status_code == 200


def test_a_seat_moved_into_a_full_room_on_its_page_is_refused(
    full_room, owner, make_agent, make_room, staff
):
    room, extra = full_room
    other = make_room(owner, [extra], name="Other")
    seat = RoomAgent.objects.get(room=other)

    response = client_for(staff).post(
        seat_page(seat), {"room": room.pk, "agent": extra.pk, "position": 0}
    )

    assert response.status_code == 200
    assert f"A room seats at most {MAX_LIST_ITEMS} agents" in response.content.decode()
    assert room.seats.count() == MAX_LIST_ITEMS
    assert list(other.seats.values_list("agent__agent_key", flat=True)) == [extra.agent_key]


def test_a_seat_moved_within_a_full_room_on_its_page_is_saved(full_room, staff):
    room, _ = full_room
    seat = RoomAgent.objects.get(room=room, position=0)

    response = client_for(staff).post(
        seat_page(seat), {"room": room.pk, "agent": seat.agent_id, "position": 99}
    )

    assert response.status_code == 302
    assert seats_now(room)[-1] == ("a0", MAX_LIST_ITEMS - 1)


def test_the_room_page_cannot_seat_more_agents_than_the_api_takes(full_room, staff):
    room, extra = full_room
    seats = [(seat.agent, seat.position, seat.pk) for seat in room.seats.order_by("position")]

    response = client_for(staff).post(
        change(room),
        room_form(room, [*seats, (extra, MAX_LIST_ITEMS, None)], initial=len(seats)),
    )

    assert response.status_code == 200
    assert f"A room seats at most {MAX_LIST_ITEMS} agents" in response.content.decode()
    assert room.seats.count() == MAX_LIST_ITEMS

    # One taken off as the other comes: 50 still, saved.
    swapped = [*seats[1:], (extra, MAX_LIST_ITEMS, None)]
    form = room_form(room, [seats[0], *swapped], initial=len(seats)) | {"seats-0-DELETE": "on"}
    response = client_for(staff).post(change(room), form)
    assert response.status_code == 302
    assert room.seats.count() == MAX_LIST_ITEMS
    assert not room.seats.filter(agent=seats[0][0]).exists()


# --- the room page saved after its seats were reordered elsewhere -------------------------------


@pytest.fixture
def reordered(room, owner, make_agent, staff):
    """A room page opened on ada 0, linus 1, bo 2 (its form, positions shown posted back as the
    page sends them); then another operator's page reorders the seats to bo, ada, linus."""
    seats = [RoomAgent.objects.get(room=room)]
    for position, key in enumerate(["linus", "bo"], start=1):
        agent = make_agent(owner, key)
        seats.append(RoomAgent.objects.create(room=room, agent=agent, position=position))
    rows = [(seat.agent, seat.position, seat.pk) for seat in seats]
    page = client_for(staff).get(change(room)).content.decode()
    assert 'name="initial-seats-2-position" value="2"' in page  # what the page posts back
    shown = {f"initial-seats-{index}-position": seat.position for index, seat in enumerate(seats)}
    elsewhere = room_form(room, rows, initial=3) | {
        "seats-0-position": 1,
        "seats-1-position": 2,
        "seats-2-position": 0,
    }
    other = User.objects.create_user("other-operator", is_staff=True, is_superuser=True)
    assert client_for(other).post(change(room), elsewhere | shown).status_code == 302
    assert seats_now(room) == [("bo", 0), ("ada", 1), ("linus", 2)]
    return room_form(room, rows, initial=3) | shown


def test_a_room_page_that_left_its_seats_alone_keeps_an_order_given_elsewhere(
    room, staff, reordered
):
    """Its seats' old numbers, posted back unchanged, put the seats back in the order the page
    had shown: another operator's reorder undone by a change of the room's name, and logged as
    this operator's."""
    response = client_for(staff).post(change(room), reordered | {"name": "Renamed"})

    assert response.status_code == 302
    assert seats_now(room) == [("bo", 0), ("ada", 1), ("linus", 2)]
    room.refresh_from_db()
    assert room.name == "Renamed"


def test_a_room_page_that_reorders_seats_reordered_elsewhere_is_refused(room, staff, reordered):
    swapped = reordered | {"seats-0-position": 1, "seats-1-position": 0, "name": "Renamed"}

    response = client_for(staff).post(change(room), swapped)

    assert response.status_code == 200
    assert "The seats were reordered since this page was opened" in response.content.decode()
    assert seats_now(room) == [("bo", 0), ("ada", 1), ("linus", 2)]
    room.refresh_from_db()
    assert room.name == "Research"
