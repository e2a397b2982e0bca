from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from django.shortcuts import get_object_or_404

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


def session_for_turn(*, user, session_id) -> Session:
    """The session with what its next turn must know, in one query (404 if not the user's):
    the latest turn (`last_turn_index`, `last_turn_status`, `last_turn_created_at`), where the
    timeline ends (`last_sequence`) and the latest summary (`summary_text`,
    `summary_to_sequence`). Each is an index lookup, whatever the session's length."""
    latest_turn = Turn.objects.filter(session=OuterRef("pk")).order_by("-turn_index")[:1]
    latest_summary = SessionSummary.objects.filter(session=OuterRef("pk")).order_by("-to_sequence")[
        :1
    ]
    last_message = Message.objects.filter(session=OuterRef("pk")).order_by("-sequence")[:1]
    sessions = sessions_for_user(user=user).annotate(
        last_turn_index=Subquery(latest_turn.values("turn_index")),
        last_turn_status=Subquery(latest_turn.values("status")),
        last_turn_created_at=Subquery(latest_turn.values("created_at")),
        last_sequence=Subquery(last_message.values("sequence")),
        summary_text=Subquery(latest_summary.values("summary_text")),
        summary_to_sequence=Subquery(latest_summary.values("to_sequence")),
    )
    return get_object_or_404(sessions, pk=session_id)
