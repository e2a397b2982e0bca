"""Writes for agents and rooms. Each service owns its transaction."""

from collections.abc import Iterable, Sequence
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from pantheon.exceptions import Gone
from pantheon.quotas import owned_below_bound
from rooms.models import MODE_ALIASES, Agent, Room, RoomAgent, RoomMode
from rooms.signals import agent_deleting, room_deleting


def normalize_mode(mode: str) -> str:
    return MODE_ALIASES.get(mode, mode)


def _owned_agents_in_order(*, owner, agent_ids: Sequence[UUID]) -> list[Agent]:
    if len(set(agent_ids)) != len(agent_ids):
        raise ValidationError({"agent_ids": ["An agent can take only one seat in a room."]})
    # Locked until the caller's transaction ends: an agent deleted meanwhile would leave a seat
    # pointing at no row (a foreign-key error at commit, a 500).
    owned = Agent.objects.select_for_update().filter(owner=owner, id__in=agent_ids)
    found = {agent.id: agent for agent in owned}
    missing = [str(agent_id) for agent_id in agent_ids if agent_id not in found]
    if missing:
        raise ValidationError({"agent_ids": [f"Unknown agent: {agent_id}" for agent_id in missing]})
    return [found[agent_id] for agent_id in agent_ids]


def _seat(*, room: Room, agents: Sequence[Agent]) -> None:
    RoomAgent.objects.filter(room=room).delete()
    RoomAgent.objects.bulk_create(
        [RoomAgent(room=room, agent=agent, position=index) for index, agent in enumerate(agents)]
    )


def agent_create(*, owner, **fields) -> Agent:
    try:
        with transaction.atomic():
            owned_below_bound(
                owner=owner,
                owned=Agent.objects.filter(owner=owner),
                kind="agent",
                setting="PANTHEON_MAX_AGENTS_PER_USER",
            )
            return Agent.objects.create(owner=owner, **fields)
    except IntegrityError as exc:
        raise ValidationError({"agent_key": ["You already have an agent with this key."]}) from exc


def _changed(row, fields: dict) -> dict:
    """The fields whose values `row` does not hold already: a PATCH that changes nothing (`{}`,
    or the values as they are) writes nothing, and `updated_at` stays when nothing changed."""
    return {name: value for name, value in fields.items() if getattr(row, name) != value}


def agent_update(*, agent: Agent, **fields) -> Agent:
    fields = _changed(agent, fields)
    if not fields:
        return agent
    for name, value in fields.items():
        setattr(agent, name, value)
    try:
        with transaction.atomic():
            # Never an INSERT: an agent deleted meanwhile stays deleted.
            agent.save(force_update=True)
    except IntegrityError as exc:
        raise ValidationError({"agent_key": ["You already have an agent with this key."]}) from exc
    except DatabaseError as exc:  # "Forced update did not affect any rows."
        raise Gone() from exc
    return agent


@transaction.atomic
def room_create(
    *, owner, name: str, goal: str = "", mode: str = RoomMode.MANUAL, agent_ids: Sequence[UUID] = ()
) -> Room:
    owned_below_bound(
        owner=owner,
        owned=Room.objects.alive().filter(owner=owner),
        kind="room",
        setting="PANTHEON_MAX_ROOMS_PER_USER",
    )
    agents = _owned_agents_in_order(owner=owner, agent_ids=agent_ids)
    room = Room.objects.create(owner=owner, name=name, goal=goal, current_mode=normalize_mode(mode))
    _seat(room=room, agents=agents)
    return room


def _lock_live_room(room: Room) -> None:
    """Lock the room's row for the rest of the transaction and take its modes as they are now
    (a turn may have promoted the pending mode since this request read the room); Gone if
    another request deleted it meanwhile."""
    locked = (
        Room.objects.select_for_update()
        .alive()
        .filter(pk=room.pk)
        .values("current_mode", "pending_mode")
        .first()
    )
    if locked is None:
        raise Gone()
    room.current_mode, room.pending_mode = locked["current_mode"], locked["pending_mode"]


@transaction.atomic
def room_update(*, room: Room, **fields) -> Room:
    """Name and goal; the mode and the roster change through their own services."""
    _lock_live_room(room)
    fields = _changed(room, fields)
    if not fields:
        return room
    for name, value in fields.items():
        setattr(room, name, value)
    room.save(update_fields=[*fields, "updated_at"])
    return room


@transaction.atomic
def room_set_mode(*, room: Room, mode: str) -> Room:
    """Queue a mode change: it applies at the room's next turn, never to one in flight."""
    _lock_live_room(room)
    mode = normalize_mode(mode)
    room.pending_mode = None if mode == room.current_mode else mode
    room.save(update_fields=["pending_mode", "updated_at"])
    return room


@transaction.atomic
def room_set_agents(*, room: Room, agent_ids: Sequence[UUID]) -> Room:
    # The room first, then the agents: the order of every other writer of seats (the console's
    # seat pages, an agent's delete), which lock the room and then touch an agent's row (a
    # seat's foreign key, the delete). The other order could deadlock with them.
    _lock_live_room(room)
    agents = _owned_agents_in_order(owner=room.owner, agent_ids=agent_ids)
    _seat(room=room, agents=agents)
    room.save(update_fields=["updated_at"])
    return room


def rooms_lock(room_ids: Iterable, *, seats_change: bool = True) -> None:
    """Lock these rooms' rows for the rest of the transaction, in one order (two requests that
    lock the same rooms never wait for each other), before their seats change: a roster's
    change (`_lock_live_room`) locks its room first too.

    Their `updated_at` moves here, as a roster's change moves it: every writer of seats but
    the roster locks their rooms here first (a seat's own page, saved or deleted, an agent's
    delete), so each change moves it once, however many seats it writes, in the transaction
    that writes them. `seats_change=False` only locks, for a reader that does not know yet
    whether it will change them (the room page, whose save moves it if anything changed)."""
    room_ids = list(room_ids)
    list(Room.objects.select_for_update().filter(pk__in=room_ids).order_by("pk").values("pk"))
    if seats_change:
        rooms_touch(room_ids)


def rooms_touch(room_ids: Iterable) -> None:
    """Move these rooms' `updated_at`: their seats changed (the rooms locked already)."""
    Room.objects.filter(pk__in=list(room_ids)).update(updated_at=timezone.now())


def seats_close_gaps(*, room_ids: Iterable) -> None:
    """Number the seats of these rooms 0, 1, 2... again, in their order, as a roster is seated:
    a seat that left leaves no gap. Lock the rooms first (`rooms_lock`). A deleted room's
    seats stay as they were."""
    seats = RoomAgent.objects.filter(room_id__in=room_ids, room__deleted_at__isnull=True)
    numbers: dict = {}
    # In order within each room, each seat moves down to a number already free.
    for seat in seats.order_by("room_id", "position").only("pk", "room_id", "position"):
        number = numbers[seat.room_id] = numbers.get(seat.room_id, -1) + 1
        if seat.position != number:
            RoomAgent.objects.filter(pk=seat.pk).update(position=number)


@transaction.atomic
def agent_delete(*, agent: Agent) -> list[RoomAgent]:
    """The agent leaves every room it is seated in, whose seats are numbered again without it
    (it left a gap: 0, 2, 3); its direct sessions stay, their agent gone. Returns the seats it
    took, as they were (with their rooms): what the console writes in each room's history.
    Its direct sessions without a title take its name (`agent_deleting`), or a list would
    name them nothing."""
    room_ids: set = set()
    while True:
        seats = list(RoomAgent.objects.filter(agent=agent).select_related("room"))
        seated = {seat.room_id for seat in seats}
        if seated <= room_ids:
            break
        # Rooms first (the order of every writer of seats), then the agent's row: once that is
        # held, no roster can seat the agent anywhere else, and the rooms read next are all its
        # rooms. One seated meanwhile, between the read and the locks, is locked too: else its
        # seat went with the agent and left a gap in that room (0, 2).
        rooms_lock(seated - room_ids)
        room_ids |= seated
        Agent.objects.select_for_update().filter(pk=agent.pk).values("pk").first()
    # Its row held: no direct session with it can be opened until the delete commits.
    agent_deleting.send(sender=Agent, agent=agent)
    agent.delete()
    seats_close_gaps(room_ids=room_ids)
    for seat in seats:
        seat.agent = agent  # named by it, deleted now
    return seats


@transaction.atomic
def room_delete(*, room: Room) -> None:
    """Soft-delete the room; its sessions go from the API with it, and their running turns end
    at once (`room_deleting`: sessions_app ends them as their user's cancel would). Their rows
    are locked before the room's, the order of a turn's claim (a stale turn, then its room)."""
    room_deleting.send(sender=Room, room=room)
    room.deleted_at = timezone.now()
    room.save(update_fields=["deleted_at", "updated_at"])
