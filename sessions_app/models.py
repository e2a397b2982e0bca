from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, OuterRef, Q
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from rooms.models import Agent, Room, RoomMode
from usage.models import UsageTotals
from usage.selectors import usage_totals_of_turn


def short_id(value) -> str:
    """The first 8 characters of an id: enough to tell rows apart on a page."""
    return f"{str(value)[:8]}…"


class SessionQuerySet(models.QuerySet):
    @staticmethod
    def alive_q(through: str = "") -> Q:
        """Sessions not soft-deleted, in rooms not soft-deleted (or direct): a session goes with
        its room. The API serves these, and the console lists them as "not deleted". `through`:
        for rows reached through a relation to the session (a turn's "session__")."""
        return Q(
            **{f"{through}deleted_at__isnull": True, f"{through}room__deleted_at__isnull": True}
        )

    def alive(self) -> SessionQuerySet:
        return self.filter(self.alive_q())


class Session(models.Model):
    """A conversation, either in a room or directly with one agent."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    room = models.ForeignKey(
        Room, on_delete=models.CASCADE, null=True, blank=True, related_name="sessions"
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="direct_sessions"
    )
    # Indexed by session_user_created, which it leads (pantheon/migration_indexes.py).
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="chat_sessions",
        db_index=False,
    )
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # How many turns the session has and its latest turn's created_at (null while it has none):
    # kept by the database, a trigger on each turn's insert (migration 0019), whoever inserts
    # it; no statement of Django's. The lists read them (`sessions_with_activity`).
    turn_count = models.PositiveIntegerField(default=0, db_default=0, editable=False)
    last_turn_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # A room session or a direct session, never both. (A direct session whose agent was
            # deleted keeps its history with neither.)
            models.CheckConstraint(
                condition=models.Q(room__isnull=True) | models.Q(agent__isnull=True),
                name="session_room_or_agent",
            )
        ]
        indexes = [
            models.Index(fields=["started_by", "created_at"], name="session_user_created"),
            # Every session, newest first: the console's list (its order, and its last page's
            # reverse) reads a page of them instead of sorting them all.
            models.Index(fields=["created_at", "id"], name="session_created"),
            # A user's sessions, newest activity first (`sessions_with_activity`'s
            # `last_activity_at`, the lists' cursor order): a page is a scan of LIMIT rows.
            models.Index(
                F("started_by"),
                Coalesce("last_turn_at", "created_at").desc(),
                F("id").desc(),
                name="session_user_activity",
            ),
            # A user's sessions not deleted: what a create counts under the user's lock
            # (`PANTHEON_MAX_SESSIONS_PER_USER`), without reading the deleted ones.
            models.Index(
                fields=["started_by"],
                condition=models.Q(deleted_at__isnull=True),
                name="session_user_alive",
            ),
        ]

    def __str__(self) -> str:
        # From its own columns (lists name many sessions): its title, or when it started; with
        # the start of its id, which the record page and the logs give whole.
        if self.title:
            named = f"“{self.title}”"
        elif self.created_at:
            named = f"of {self.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        else:
            named = "(new)"
        return f"Session {named} · {short_id(self.id)}"

    def save(self, *, force_insert=False, force_update=False, using=None, update_fields=None):
        """An update writes every field but those the database keeps (`KEPT_BY_DATABASE`): a
        turn inserted since the session was read (the console's edit of its title) would lose
        its count otherwise. Row-local, no write of its own (CONVENTIONS: no business writes
        in `save()`); an update of a row gone since is Django's "did not affect any rows"
        error, never an insert of it again."""
        if update_fields is None and not self._state.adding and not force_insert:
            deferred = self.get_deferred_fields()
            update_fields = [
                field.attname
                for field in self._meta.concrete_fields
                if not field.primary_key
                and field.name not in KEPT_BY_DATABASE
                and field.attname not in deferred
            ]
        super().save(
            force_insert=force_insert,
            force_update=force_update,
            using=using,
            update_fields=update_fields,
        )

    @property
    def is_direct(self) -> bool:
        return self.room_id is None


# A session's columns that the database keeps, from its turns (migration 0019's trigger).
KEPT_BY_DATABASE = frozenset({"turn_count", "last_turn_at"})


DIRECT_MODE = "direct"
TURN_MODE_CHOICES = [*RoomMode.choices, (DIRECT_MODE, "Direct")]


class TurnStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class TurnFailure(models.TextChoices):
    """Why a turn was ended from outside its steps: the code of its `turn_failed` event, kept so
    that a replay ends as the live stream did. A turn that ran to its end has none (its status
    says how it went; `failed` then means every agent failed to answer)."""

    NONE = "", "ran to its end"
    SERVER_ERROR = "server_error", "the server failed"
    INTERRUPTED = "turn_interrupted", "interrupted: its server stopped, or it stalled"
    CONFLICT = "turn_conflict", "stalled, and taken over by a later turn"
    DATABASE_UNAVAILABLE = "database_unavailable", "its database connection was lost"
    CANCELLED = "turn_cancelled", "cancelled by its user"


class TurnQuerySet(models.QuerySet):
    def running(self) -> TurnQuerySet:
        return self.filter(status=TurnStatus.RUNNING)

    def while_alive(self, session_id) -> TurnQuerySet:
        """These turns while their session `session_id` is not deleted, nor its room
        (`SessionQuerySet.alive`): an EXISTS on the session's primary key, looked up once,
        that a turn's UPDATE can carry (no join, no statement more)."""
        return self.filter(models.Exists(Session.objects.alive().filter(pk=session_id)))

    def end(
        self,
        status: TurnStatus,
        *,
        totals: Mapping[str, Any] | None = None,
        now: datetime | None = None,
        failure: TurnFailure = TurnFailure.NONE,
    ) -> int:
        """End these turns if they are still running: the one place a turn ends, whether it
        finished, failed or was interrupted. Sets the status, `completed_at` and the usage
        totals: `totals` when the caller holds every ledger row of the turn, else the sums of
        its stored rows, computed by the UPDATE itself. `failure` says why a turn was ended from
        outside its steps. Returns how many turns it ended. `now` is the ending's time, by the
        database's clock (`TurnState.now`); without it, the database's clock itself."""
        ended_at = Now() if now is None else now
        if totals is None:
            totals = usage_totals_of_turn(OuterRef("pk"))
        if status in (TurnStatus.FAILED, TurnStatus.INTERRUPTED) and failure != (
            TurnFailure.CANCELLED
        ):
            # A step broke off: the text it was streaming is no message, and no replay wants it.
            # A cancel's stay until the worker that ran the turn has billed the words they are
            # (`TurnRunner.end` deletes them then): until they go, a follower waits for that
            # bill (`sessions_app.events.settling`).
            TurnStreamChunk.objects.filter(turn__in=self.running()).delete()
        return self.running().update(
            status=status,
            failure_code=failure,
            completed_at=ended_at,
            progress_at=ended_at,
            **totals,
        )


class Turn(UsageTotals):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by turn_index_unique, which it leads.
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="turns", db_index=False
    )
    turn_index = models.PositiveIntegerField()
    mode = models.CharField(max_length=16, choices=TURN_MODE_CHOICES)
    status = models.CharField(max_length=16, choices=TurnStatus.choices, default=TurnStatus.RUNNING)
    failure_code = models.CharField(
        "ended by",
        max_length=32,
        choices=TurnFailure.choices,
        default=TurnFailure.NONE,
        # In the table too: a host still running the code before this field inserts turns
        # without it while a deploy rolls on.
        db_default=TurnFailure.NONE,
        blank=True,
        help_text="Why the turn was ended from outside its steps: the code its stream's "
        "turn_failed event carries.",
    )
    # The server process that runs the turn (`pantheon.runner`): the worker that replaces it,
    # should it die, ends the turns it left running.
    worker = models.CharField(
        "served by",
        max_length=100,
        blank=True,
        default="",
        db_default="",  # a host still on the code before this field inserts turns without it
        help_text="The server process that ran the turn: host, pid and a token.",
    )
    user_input = models.TextField()
    model_alias_override = models.CharField(max_length=64, blank=True)
    roster = models.JSONField(default=list, blank=True)
    routing = models.JSONField(null=True, blank=True)
    # The usage totals (UsageTotals) are the sums of this turn's LlmCallEvents, written when
    # the turn ends.
    created_at = models.DateTimeField(default=timezone.now)
    # A running turn of a user with a monthly cap holds its worst case against the cap (every call
    # it may make at its alias's price, with the input estimate and the alias's max output);
    # what running turns hold counts as spent when the next turn is claimed.
    reserved_credits = models.DecimalField(max_digits=24, decimal_places=10, default=Decimal("0"))
    # When the running turn last committed a step; a turn is stale when this is too old, so a
    # long roundtable that keeps answering is never taken for a dead one.
    progress_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = TurnQuerySet.as_manager()

    class Meta:
        # The session's column, not its model: ordering by the relation follows the session's
        # own order, a join, and a FOR UPDATE over it locked the session's row too.
        ordering = ["session_id", "turn_index"]
        constraints = [
            models.UniqueConstraint(fields=["session", "turn_index"], name="turn_index_unique"),
            # The database, not the application, guarantees one turn in flight per session.
            models.UniqueConstraint(
                fields=["session"],
                condition=models.Q(status="running"),
                name="one_running_turn_per_session",
            ),
            models.CheckConstraint(
                condition=models.Q(turn_index__gte=1), name="turn_index_positive"
            ),
        ]
        indexes = [
            # The console's turns sorted by status then time, in either direction each: the
            # first serves both the same way (status and newest first both ascending, or both
            # descending: the stale-turn and running-turn reads use its status too), the
            # second opposite ways (each status newest first, as the console's header links
            # sort it).
            models.Index(fields=["status", "created_at"], name="turn_status_created"),
            models.Index(fields=["status", "-created_at"], name="turn_status_newest"),
            # The console lists turns newest first; the dashboard counts active users by date
            # (the session is included so that count reads the index alone). The id, the
            # list's last order, lets a page deep in the list find its rows' ids from the index
            # alone (`pantheon.console.EitherEndPaginator`).
            models.Index(fields=["created_at", "id"], include=["session"], name="turn_created"),
        ]

    def __str__(self) -> str:
        return f"Turn {self.turn_index} of session {short_id(self.session_id)} ({self.status})"

    @staticmethod
    def final_status(answer_statuses: Iterable[str]) -> TurnStatus:
        """How a turn that ran to its end ended, from its answers' statuses: all ok →
        completed, some failed → partial, all failed (or none given) → failed."""
        statuses = list(answer_statuses)
        failed = sum(1 for status in statuses if status != MessageStatus.OK)
        if statuses and failed == 0:
            return TurnStatus.COMPLETED
        if 0 < failed < len(statuses):
            return TurnStatus.PARTIAL
        return TurnStatus.FAILED


class MessageRole(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(models.TextChoices):
    OK = "ok"
    ERROR = "error"


class Message(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by message_sequence_unique, which it leads.
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    turn = models.ForeignKey(
        Turn, on_delete=models.CASCADE, null=True, blank=True, related_name="messages"
    )
    # Position in the session's timeline; only the session's one running turn writes messages.
    sequence = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    agent_key = models.CharField(max_length=32, blank=True)
    agent_name = models.CharField(max_length=100, blank=True)
    # The id of the agent that answered, a snapshot like its key and name: its key can change
    # and be given to another agent, so prompts tell an agent's own answers by this. No foreign
    # key: deleting an agent leaves its answers as they are. Null for the user's messages and
    # for answers stored before it was kept (prompts go by their key).
    agent_id = models.UUIDField(
        "agent id",
        null=True,
        blank=True,
        help_text="The id of the agent that answered, when it was stored.",
    )
    model_alias = models.CharField(max_length=64, blank=True)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=8, choices=MessageStatus.choices, default=MessageStatus.OK)
    error_code = models.CharField(max_length=64, blank=True)
    token_estimate = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["session", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["session", "sequence"], name="message_sequence_unique"),
        ]
        # The console lists every message newest first (half a million rows: bench at volume),
        # a page deep in the list found from the index alone (`turn_created`).
        indexes = [models.Index(fields=["created_at", "id"], name="message_created")]

    def __str__(self) -> str:
        who = self.agent_key or self.role
        return f"#{self.sequence} {who}: {self.content[:40]}"


class SessionSummary(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by summary_latest, which it leads.
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="summaries", db_index=False
    )
    turn = models.ForeignKey(
        Turn, on_delete=models.SET_NULL, null=True, blank=True, related_name="summaries"
    )
    from_sequence = models.PositiveIntegerField()
    to_sequence = models.PositiveIntegerField()
    summary_text = models.TextField()
    key_facts = models.JSONField(default=list, blank=True)
    decisions = models.JSONField(default=list, blank=True)
    open_questions = models.JSONField(default=list, blank=True)
    action_items = models.JSONField(default=list, blank=True)
    valid_json = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "session summaries"
        ordering = ["session", "-to_sequence"]
        indexes = [models.Index(fields=["session", "-to_sequence"], name="summary_latest")]

    def __str__(self) -> str:
        return f"Summary of session {short_id(self.session_id)} up to #{self.to_sequence}"


class TurnContextAudit(models.Model):
    turn = models.OneToOneField(Turn, on_delete=models.CASCADE, related_name="context_audit")
    model_context_limit = models.PositiveIntegerField()
    input_budget = models.PositiveIntegerField()
    estimated_tokens_before = models.PositiveIntegerField()
    estimated_tokens_after = models.PositiveIntegerField()
    history_messages_loaded = models.PositiveIntegerField(default=0)
    history_messages_pruned = models.PositiveIntegerField(default=0)
    summary_used = models.BooleanField(default=False)
    summary_triggered = models.BooleanField(default=False)
    pruned = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # One audit a turn: the console lists them newest first (bench at volume), a page deep
        # in the list found from the index alone (`turn_created`).
        indexes = [models.Index(fields=["created_at", "id"], name="turn_audit_created")]

    def __str__(self) -> str:
        return f"Context audit of turn {short_id(self.turn_id)}"


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key` on a turn: the first request's answer, replayed to retries.

    Unique per user and key; shared by every worker and host through the database."""

    class State(models.TextChoices):
        RUNNING = "running"
        DONE = "done"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by idempotency_key_unique_per_user, which it leads.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="idempotency_keys",
        db_index=False,
    )
    key = models.CharField(max_length=255)
    # sha256 of the method, the path and the body: a retry must send the same request.
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=8, choices=State.choices, default=State.RUNNING)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    turn = models.ForeignKey(
        Turn, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # By the database's clock, as `updated_at`: the turn's (`TurnState.now`) when a request
    # claims the key, the database's own default otherwise. Its lifetime (the hours promised,
    # `prune_idempotency_keys`) is counted from it by the same clock, whichever host prunes.
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_created")]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"


class TurnStreamChunk(models.Model):
    """A piece of the answer a turn is streaming right now: the characters from `start` on that
    its last save added, so that any host can replay a running turn's deltas (the step's text so
    far is its chunks in order of `start`). A save appends the words heard since the one before
    and rewrites nothing: the WAL a streamed answer writes grows with its length, not with its
    square, as it did when each save rewrote the whole text. Deleted with the step's commit,
    when the message holds the text, or when the turn fails or is interrupted mid-step; a
    cancelled turn's once its worker has billed the words they are (`TurnRunner.end`)."""

    pk = models.CompositePrimaryKey("turn", "sequence", "start")
    # Served by the primary key, which starts with it.
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, db_index=False)
    sequence = models.PositiveIntegerField()  # the message the step will become
    start = models.PositiveIntegerField()  # the step's characters before this chunk
    text = models.TextField()

    def __str__(self) -> str:
        return f"Stream of turn {short_id(self.turn_id)} #{self.sequence} from {self.start}"
