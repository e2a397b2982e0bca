"""The room page saved while a seat of the room is being saved elsewhere, for real on
PostgreSQL: the room page waits for the other save and numbers its seats after it."""

import threading

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
