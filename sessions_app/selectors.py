from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import models
from django.db.models import Prefetch, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Now
from django.http import Http404

from orchestration.types import SUMMARY_LISTS
from pantheon.compiled import CompiledRead
from sessions_app.models import Message, Session, SessionSummary, Turn, TurnStatus


def _live_sessions() -> QuerySet[Session]:
    """Sessions not deleted, in rooms that still exist (or direct), with room and agent."""
    return Session.objects.alive().select_related("room", "agent")


def sessions_for_user(*, user) -> QuerySet[Session]:
    """Live sessions the user started, in rooms that still exist (or direct)."""
    return _live_sessions().filter(started_by=user)


def sessions_with_activity(
    *, user, room_id: UUID | None = None, agent_id: UUID | None = None
) -> QuerySet[Session]:
    """The user's live sessions, each with its `turn_count` and `last_activity_at` (the latest
    turn's created_at, else the session's own), optionally those of one room or the direct
    ones with one agent. One query with its room and agent, and no read of their turns: the
    session's own columns, which the database keeps (`Session.turn_count`, `last_turn_at`);
    the caller orders it (by activity, or by creation). By activity, a page of the user's
    sessions is a scan of the index `session_user_activity`, whatever their number."""
    sessions = sessions_for_user(user=user)
    if room_id is not None:
        sessions = sessions.filter(room_id=room_id)
    if agent_id is not None:
        sessions = sessions.filter(agent_id=agent_id)
    return sessions.annotate(last_activity_at=Coalesce("last_turn_at", "created_at"))


def session_timeline(*, session: Session) -> QuerySet[Message]:
    return Message.objects.filter(session=session)


def turns_for_user(*, user) -> QuerySet[Turn]:
    live_sessions = sessions_for_user(user=user)
    return (
        Turn.objects.filter(session__in=live_sessions)
        .select_related("session")
        .prefetch_related(Prefetch("messages", queryset=Message.objects.order_by("sequence")))
    )


def session_summary_latest(*, session: Session) -> SessionSummary | None:
    return SessionSummary.objects.filter(session=session).order_by("-to_sequence").first()


def _latest(model, column: str, order_by: str) -> str:
    """SQL for one column of the session's newest row of `model` (an index lookup)."""
    table, sessions = model._meta.db_table, Session._meta.db_table
    return (
        f'SELECT "{column}" FROM "{table}" WHERE "session_id" = "{sessions}"."id" '
        f'ORDER BY "{order_by}" DESC LIMIT 1'
    )


# Plain SQL subqueries: the turn endpoint's hottest read. The same query written with
# Subquery(OuterRef(...)) costs ~3 ms more per turn to build on every request.
_TURN_STATE: dict[str, tuple[type[models.Model], str, str, models.Field]] = {
    "last_turn_id": (Turn, "id", "turn_index", models.UUIDField()),
    "last_turn_index": (Turn, "turn_index", "turn_index", models.IntegerField()),
    "last_turn_status": (Turn, "status", "turn_index", models.CharField()),
    "last_turn_progress_at": (Turn, "progress_at", "turn_index", models.DateTimeField()),
    "last_sequence": (Message, "sequence", "sequence", models.IntegerField()),
    "summary_text": (SessionSummary, "summary_text", "to_sequence", models.TextField()),
    **{
        f"summary_{name}": (SessionSummary, name, "to_sequence", models.JSONField())
        for name, _ in SUMMARY_LISTS
    },
    "summary_to_sequence": (SessionSummary, "to_sequence", "to_sequence", models.IntegerField()),
}


def _session_with_turn_state(user_id: int, session_id: UUID) -> QuerySet[Session]:
    """The user's live session with its turn state annotated."""
    state = {
        name: RawSQL(_latest(model, column, order_by), (), output_field=output)
        for name, (model, column, order_by, output) in _TURN_STATE.items()
    }
    return (
        _live_sessions()
        .annotate(**state, read_at=Now())
        .filter(started_by_id=user_id, pk=session_id)
    )


# Built and compiled once per process (`pantheon.compiled`): building the 16 annotations, the
# live-session filter and the joins, then compiling them, on every turn cost about 3 % of a
# turn's CPU (py-spy), more than running the read.
_SESSION_WITH_TURN_STATE = CompiledRead(_session_with_turn_state, user_id=int, session_id=UUID)


def session_for_turn(*, user, session_id) -> Session:
    """The session with what its next turn must know, in one query (404 if not the user's):
    the latest turn (`last_turn_id`, `last_turn_index`, `last_turn_status`,
    `last_turn_progress_at`), where the timeline ends (`last_sequence`) and the latest summary
    (`summary_text`, its lists `summary_key_facts`..., `summary_to_sequence`). Each is an index
    lookup, whatever the session's length. `read_at` is the database's clock as it read them,
    the clock the turn goes by (`TurnState.now`)."""
    try:
        return _SESSION_WITH_TURN_STATE.get(user_id=user.pk, session_id=session_id)
    except Session.DoesNotExist:
        raise Http404("No Session matches the given query.") from None


@dataclass(frozen=True)
class TurnState:
    """What a session's next turn must know, read with the session by `session_for_turn`."""

    last_turn_id: UUID | None
    last_turn_index: int | None
    last_turn_status: str | None
    last_turn_progress_at: datetime | None
    last_sequence: int | None
    summary_text: str | None
    summary_key_facts: list | None
    summary_decisions: list | None
    summary_open_questions: list | None
    summary_action_items: list | None
    summary_to_sequence: int | None
    read_at: datetime  # the database's clock when the session was read
    read_clock: float = field(default_factory=time.monotonic)  # this process's, then

    @classmethod
    def of(cls, session: Session) -> TurnState:
        names = [*_TURN_STATE, "read_at"]  # annotations, unknown to the model's type
        return cls(**{name: getattr(session, name) for name in names})

    def now(self) -> datetime:
        """The database's clock now, as read with the session and moved on by this process's
        monotonic clock: the one clock of every host's turns, without a query to read it. A
        turn's times (`progress_at`, `completed_at`) are compared by other hosts, and by the
        database (`turns_stale`): written from a host's own clock, a host ten minutes behind
        wrote progress that the others took for ten minutes old, and the next turn posted on
        another host interrupted its live turn as stale (a host ahead interrupted theirs)."""
        return self.read_at + timedelta(seconds=time.monotonic() - self.read_clock)

    def turn_in_progress(self) -> bool:
        """Whether the session's latest turn is running and has made progress (a step's commit,
        a stream's save) within `PANTHEON_TURN_STALE_SECONDS` by the database's clock: it
        blocks the session's next turn. A running turn past that limit is taken for dead."""
        if self.last_turn_status != TurnStatus.RUNNING:
            return False
        assert self.last_turn_progress_at is not None
        return self.last_turn_progress_at >= stale_before(self.now())


def stale_before(now: datetime) -> datetime:
    """A running turn whose last progress is older than this is stale."""
    return now - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS)


def stale_in_database() -> models.Expression:
    """`stale_before` by the database's clock, for a query: the one clock that every host's
    turns write their progress by (`TurnState.now`)."""
    return Now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS)
