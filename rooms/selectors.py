from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404

from rooms.models import Agent, Room, RoomAgent


def agents_for_user(*, user) -> QuerySet[Agent]:
    return Agent.objects.filter(owner=user)


def agent_for_user(*, user, agent_id) -> Agent:
    """One of the user's agents (404 when it is not theirs, so ids leak nothing)."""
    return get_object_or_404(agents_for_user(user=user), pk=agent_id)


def rooms_for_user(*, user) -> QuerySet[Room]:
    """The user's live rooms, each with its seats (agents in seat order) for the room body."""
    seats = RoomAgent.objects.select_related("agent").order_by("position")
    return (
        Room.objects.alive().filter(owner=user).prefetch_related(Prefetch("seats", queryset=seats))
    )


def room_for_user(*, user, room_id) -> Room:
    """One of the user's live rooms without its seats, for an endpoint under it (404 when it is
    not theirs or deleted)."""
    return get_object_or_404(Room.objects.alive().filter(owner=user), pk=room_id)


def room_roster(*, room: Room) -> list[Agent]:
    """The room's agents in seat order."""
    seats = RoomAgent.objects.filter(room=room).select_related("agent").order_by("position")
    return [seat.agent for seat in seats]


def agents_on_alias(alias: str, *, named: int) -> tuple[int, list[str]]:
    """How many agents use `alias`, and the first `named` of them as `@key of owner` (keys are
    unique per owner only). One query, two when there are more than `named`."""
    agents = Agent.objects.filter(model_alias=alias).order_by("agent_key", "owner__username")
    first = [
        f"@{key} of {owner}"
        for key, owner in agents.values_list("agent_key", "owner__username")[:named]
    ]
    return (agents.count() if len(first) == named else len(first)), first
