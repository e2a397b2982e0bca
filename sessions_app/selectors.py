from django.db.models import Prefetch, QuerySet

from sessions_app.models import Message, Session, SessionSummary, Turn


def sessions_for_user(*, user) -> QuerySet[Session]:
    """Live sessions the user started, in rooms that still exist (or direct)."""
    return (
        Session.objects.filter(started_by=user, deleted_at__isnull=True)
        .exclude(room__deleted_at__isnull=False)
        .select_related("room", "agent")
    )


def session_timeline(*, session: Session) -> QuerySet[Message]:
    return Message.objects.filter(session=session)


def turns_for_user(*, user) -> QuerySet[Turn]:
    live_sessions = sessions_for_user(user=user)
    return (
        Turn.objects.filter(session__in=live_sessions)
        .select_related("session")
        .prefetch_related(
            Prefetch(
                "messages",
                queryset=Message.objects.order_by("sequence"),
                to_attr="prefetched_messages",
            )
        )
    )


def session_summary_latest(*, session: Session) -> SessionSummary | None:
    return SessionSummary.objects.filter(session=session).order_by("-to_sequence").first()
