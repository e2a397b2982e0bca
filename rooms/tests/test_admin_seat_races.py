"""The room page saved while a seat of the room is being saved elsewhere, for real on
PostgreSQL: the room page waits for the other save and numbers its seats after it; a seat
deleted on its page while the API seats a roster waits for it, never deadlocks with it."""

import threading
import time

import pytest
from django.db import connection, transaction
from django.urls import reverse

from pantheon.testing.admin import client_for
from rooms.models import Room, RoomAgent
from rooms.tests.test_admin_seats import room_form, seats_now


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_room_page_waits_for_a_seat_being_saved_and_numbers_after_it(
    owner, make_agent, make_room, staff
):
    """The room page numbered its new seat 2 while another save was seating one at 2: it
    waited on the other's unique index entry, then failed on it (a 500)."""
    ada, linus, bo, cy = (make_agent(owner, key) for key in ("ada", "linus", "bo", "cy"))
    room = make_room(owner, [ada, linus], name="Research")
    opened = [(seat.agent, seat.position, seat.pk) for seat in room.seats.order_by("position")]
    form = room_form(room, [*opened, (cy, 9, None)], initial=2)
    answers = []

    def save_the_room_page():
        try:
            answers.append(
                client_for(staff)
                .post(reverse("admin:rooms_room_change", args=[room.pk]), form)
                .status_code
            )
        except Exception as error:  # noqa: BLE001 - the 500 the test client raises
            answers.append(repr(error))
        finally:
            connection.close()

    page = threading.Thread(target=save_the_room_page)
    with transaction.atomic():  # the seat's own page, saving bo at 2
        Room.objects.select_for_update().get(pk=room.pk)  # as every seat's save does
        RoomAgent.objects.create(room=room, agent=bo, position=2)
        page.start()
        page.join(timeout=1)
        assert page.is_alive()  # waiting for this save
    page.join(timeout=30)

    assert answers == [302]
    assert seats_now(room) == [("ada", 0), ("linus", 1), ("bo", 2), ("cy", 3)]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_seat_deleted_on_its_page_while_the_api_seats_a_roster(
    owner, make_agent, make_room, staff
):
    """A seat deleted on its own page while the API seats a new roster in its room: the page
    deleted the seat, then locked the room to close the gap, while the API held the room and
    waited for the seat (a deadlock, PostgreSQL's error a 500 on the page). Both lock the room
    first now, and the page waits."""
    ada, linus = make_agent(owner, "ada"), make_agent(owner, "linus")
    room = make_room(owner, [ada, linus], name="Research")
    seat = room.seats.get(agent=ada)
    answers = []

    def delete_on_its_page():
        try:
            answers.append(
                client_for(staff)
                .post(reverse("admin:rooms_roomagent_delete", args=[seat.pk]), {"post": "yes"})
                .status_code
            )
        except Exception as error:  # a 500 is raised by the test client
            answers.append(repr(error))
        finally:
            connection.close()

    page = threading.Thread(target=delete_on_its_page)
    api_error = None
    try:
        # room_set_agents' order: the room locked, then its seats cleared
        with transaction.atomic():
            Room.objects.select_for_update().get(pk=room.pk)
            page.start()
            time.sleep(1)  # the page deleted its seat, and waits for the room
            RoomAgent.objects.filter(room=room).delete()
    except Exception as error:  # the deadlock's loser may be this side
        api_error = repr(error)
    page.join(30)
    assert api_error is None and answers == [302], (api_error, answers)
