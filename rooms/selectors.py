from django.db.models import Prefetch, QuerySet

from rooms.models import Agent, Room, RoomAgent


def agents_for_user(*, user) -> QuerySet[Agent]:
    return Agent.objects.filter(owner=user)


def rooms_for_user(*, user) -> QuerySet[Room]:
    seats = RoomAgent.objects.select_related("agent").order_by("position")
    return Room.objects.filter(owner=user, deleted_at__isnull=True).prefetch_related(
        Prefetch("seats", queryset=seats)
    )


def room_roster(*, room: Room) -> list[Agent]:
    """The room's agents in seat order."""
    seats = RoomAgent.objects.filter(room=room).select_related("agent").order_by("position")
    return [seat.agent for seat in seats]
