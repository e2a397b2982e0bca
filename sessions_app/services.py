"""Session writes. The turn engine lives in `sessions_app.turns`."""

from django.db import transaction
from django.utils import timezone

from pantheon.exceptions import Gone
from rooms.models import Agent, Room
from sessions_app.models import Session


def session_create_in_room(*, room: Room, user, title: str = "") -> Session:
    return Session.objects.create(room=room, started_by=user, title=title)


@transaction.atomic
def session_create_direct(*, agent: Agent, user, title: str = "") -> Session:
    # Locked, so a concurrent DELETE of the agent waits for this session (and then detaches
    # it) instead of leaving it pointing at no row; Gone if the agent went first.
    if not Agent.objects.select_for_update().filter(pk=agent.pk).exists():
        raise Gone()
    return Session.objects.create(agent=agent, started_by=user, title=title)


def session_delete(*, session: Session) -> None:
    session.deleted_at = timezone.now()
    session.save(update_fields=["deleted_at"])
