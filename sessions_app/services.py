"""Session writes. The turn engine lives in `sessions_app.turns`."""

from uuid import UUID

from django.db import transaction
from django.utils import timezone

from rooms.models import Agent, Room
from sessions_app.models import Session, Turn, TurnQuerySet, TurnStatus
from usage.services import usage_calls_mark_lost


def session_create_in_room(*, room: Room, user, title: str = "") -> Session:
    return Session.objects.create(room=room, started_by=user, title=title)


def session_create_direct(*, agent: Agent, user, title: str = "") -> Session:
    return Session.objects.create(agent=agent, started_by=user, title=title)


def session_delete(*, session: Session) -> None:
    session.deleted_at = timezone.now()
    session.save(update_fields=["deleted_at"])


def turns_interrupt(
    *, turns: TurnQuerySet, status: TurnStatus = TurnStatus.INTERRUPTED
) -> list[UUID]:
    """End these turns, if still running, as `interrupted` (or `failed`) with the totals of
    their stored ledger rows, and mark their calls in flight lost (the provider may have billed
    them). Finished steps and their rows are never touched. Returns the ids of the turns ended.

    The turns' row locks come first, before any ledger row's, as in a running step: a worker
    still alive and a recovery are ordered, never deadlocked."""
    with transaction.atomic():
        ids = list(turns.running().select_for_update().values_list("pk", flat=True))
        if ids:
            Turn.objects.filter(pk__in=ids).end(status)
            usage_calls_mark_lost(turn_ids=ids)
    return ids
