from django.db.models import QuerySet

from sessions_app.models import Message, Session


def sessions_for_user(*, user) -> QuerySet[Session]:
    """Live sessions the user started, in rooms that still exist (or direct)."""
    return (
        Session.objects.filter(started_by=user, deleted_at__isnull=True)
        .exclude(room__deleted_at__isnull=False)
        .select_related("room", "agent")
    )


def session_timeline(*, session: Session) -> QuerySet[Message]:
    return Message.objects.filter(session=session)
