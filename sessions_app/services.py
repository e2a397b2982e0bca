"""Session writes. The turn engine lives in `sessions_app.turns`."""

from django.utils import timezone

from rooms.models import Agent, Room
from sessions_app.models import Session


def session_create_in_room(*, room: Room, user, title: str = "") -> Session:
    return Session.objects.create(room=room, started_by=user, title=title)


def session_create_direct(*, agent: Agent, user, title: str = "") -> Session:
    return Session.objects.create(agent=agent, started_by=user, title=title)


def session_delete(*, session: Session) -> None:
    session.deleted_at = timezone.now()
    session.save(update_fields=["deleted_at"])
