"""Session writes. The turn engine lives in `sessions_app.turns`."""

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from uuid import UUID

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from pantheon import draining
from pantheon.exceptions import Gone
from pantheon.passwords import api_token_revoke_logged
from pantheon.quotas import owned_below_bound
from rooms.models import Agent, Room, RoomAgent
from rooms.services import agent_delete
from sessions_app.models import (
    IdempotencyKey,
    Message,
    Session,
    Turn,
    TurnFailure,
    TurnQuerySet,
    TurnStatus,
)
from usage.models import BillingProfile, LlmCallEvent
from usage.selectors import usage_totals_of_turn
from usage.services import (
    usage_call_bill_cancelled,
    usage_call_heard_after_loss,
    usage_calls_mark_lost,
    usage_month_add,
)


def _sessions_below_bound(*, user) -> None:
    owned_below_bound(
        owner=user,
        owned=Session.objects.alive().filter(started_by=user),
        kind="session",
        setting="PANTHEON_MAX_SESSIONS_PER_USER",
    )


@transaction.atomic
def session_create_in_room(*, room: Room, user, title: str = "") -> Session:
    _sessions_below_bound(user=user)
    return Session.objects.create(room=room, started_by=user, title=title)


@transaction.atomic
def session_create_direct(*, agent: Agent, user, title: str = "") -> Session:
    _sessions_below_bound(user=user)
    # Locked, so a concurrent DELETE of the agent waits for this session (and then detaches
    # it) instead of leaving it pointing at no row; Gone if the agent went first.
    if not Agent.objects.select_for_update().filter(pk=agent.pk).exists():
        raise Gone()
    return Session.objects.create(agent=agent, started_by=user, title=title)


def session_rename(*, session: Session, title: str) -> None:
    """Give the session `title` ("" for none). Gone when it was deleted meanwhile (a rename
    does not bring it back)."""
    if not Session.objects.alive().filter(pk=session.pk).update(title=title):
        raise Gone()


def session_delete(*, session: Session) -> None:
    """Soft-delete the session (it and its turns are 404 from then on). Its running turn, if
    any, ends at once as its user's cancel ends it (`turns_cancel_with_sessions`), so a deleted
    session spends no further call. (A turn claimed as the delete reads the running turns,
    unseen by it, ends at its first write, which finds its session deleted: `TurnRunner._step`.)"""
    with transaction.atomic():
        # The turn's row first, then the session's: as a room's delete, or a claim (a stale
        # turn's row, then its room's), never the other way round.
        turns_cancel_with_sessions(sessions=Session.objects.filter(pk=session.pk))
        session.deleted_at = timezone.now()
        session.save(update_fields=["deleted_at"])


@dataclass(frozen=True)
class Purged:
    """What `deleted_chats_purge` deleted (or would)."""

    sessions: int
    turns: int
    messages: int
    rooms: int


# Sessions deleted a transaction: each holds its turns' and messages' deletes, and the ledger's
# references cleared; a purge of years of chats takes no long lock.
PURGE_BATCH = 200


def deleted_chats_purge(*, deleted_before, dry_run: bool = False) -> Purged:
    """Delete for good what users deleted before `deleted_before` (a moment, or an expression
    of the database's clock such as `Now() - timedelta(days=30)`): the sessions soft-deleted
    (theirs or their room's), with their turns, messages, summaries, context audits and the
    `Idempotency-Key` answers of their turns (which quote the answers), and the rooms, with
    their seats. The ledger keeps every row and figure, its references to them cleared (its
    trigger lets a purge clear them, and nothing else); the rollups and counters are figures
    alone. The console's history of them keeps who did what and when, not what they held
    (`history_erase`). What a user deleted was cancelled as it was deleted; a session with a
    turn still running (one claimed as its delete committed, whose worker died since: until
    `recover_turns` ends it) waits for the next purge."""
    deleted = Q(deleted_at__lt=deleted_before) | Q(room__deleted_at__lt=deleted_before)
    running = Turn.objects.filter(session=OuterRef("pk"), status=TurnStatus.RUNNING)
    sessions = Session.objects.filter(deleted).exclude(Exists(running))
    rooms = Room.objects.filter(deleted_at__lt=deleted_before).exclude(
        Exists(Session.objects.filter(room=OuterRef("pk")).exclude(pk__in=sessions.values("pk")))
    )
    if dry_run:
        return Purged(
            sessions=sessions.count(),
            turns=Turn.objects.filter(session__in=sessions.values("pk")).count(),
            messages=Message.objects.filter(session__in=sessions.values("pk")).count(),
            rooms=rooms.count(),
        )
    counts: dict[str, int] = {}
    # Read once: the sessions have no index on `deleted_at`, and a purge of a long backlog
    # would read them all again for each batch.
    purged_rooms = list(rooms.values_list("pk", flat=True))
    # Their seats go with them; a seat's own page wrote its room's name into its history.
    purged_seats = list(
        RoomAgent.objects.filter(room__in=purged_rooms).values_list("pk", flat=True)
    )
    found = list(sessions.values_list("pk", flat=True))
    for start in range(0, len(found), PURGE_BATCH):
        batch = found[start : start + PURGE_BATCH]
        with transaction.atomic():
            IdempotencyKey.objects.filter(turn__session__in=batch).delete()
            # The ledger's references to them cleared in one write of each row: the delete's
            # SET NULLs cleared the turn, then the session, two new versions of every row, each
            # written to every index of the ledger (5 s of a 200-session batch's 8 s).
            LlmCallEvent.objects.filter(session__in=batch).update(session=None, turn=None)
            _old_streams_erase(batch)
            history_erase(model=Session, object_ids=batch, why=CHAT_PURGED)
            _, by_model = Session.objects.filter(pk__in=batch).delete()
        for label, count in by_model.items():
            counts[label] = counts.get(label, 0) + count
    _old_streams_erase(None)
    with transaction.atomic():
        # Their sessions are gone (above: `rooms` left out those with one still running); a
        # room takes its seats with it.
        history_erase(model=Room, object_ids=purged_rooms, why=CHAT_PURGED)
        history_erase(model=RoomAgent, object_ids=purged_seats, why=CHAT_PURGED)
        _, by_model = Room.objects.filter(pk__in=purged_rooms).delete()
    return Purged(
        sessions=counts.get(Session._meta.label, 0),
        turns=counts.get(Turn._meta.label, 0),
        messages=counts.get(Message._meta.label, 0),
        rooms=by_model.get(Room._meta.label, 0),
    )


# The streamed text the release before `sessions_app` 0020 saved, which that migration leaves on
# PostgreSQL for that release (and without its foreign key, so a delete of a turn no longer
# takes the turn's row with it). A row outlives its turn's answer when the worker streaming it
# died (a crash, a kill during a deploy): the old release deleted it as it ended the turn
# (`recover_turns`), but no code of this one knows the table.
OLD_STREAM_TABLE = "sessions_app_turnstream"


def _old_streams_erase(session_ids: list | None) -> None:
    """Delete the old release's streamed text (`OLD_STREAM_TABLE`) of these sessions' turns,
    or with None, that of every turn already gone (a purge by this release before this rule):
    a purged chat's words must not stay in a table nothing reads or exports."""
    if connection.vendor != "postgresql":
        return  # SQLite's is dropped by the migration
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [OLD_STREAM_TABLE])
        if not cursor.fetchone()[0]:
            return  # dropped by a later release
        if session_ids is None:
            cursor.execute(
                f"DELETE FROM {OLD_STREAM_TABLE} AS stream WHERE NOT EXISTS "
                f"(SELECT 1 FROM {Turn._meta.db_table} AS turn WHERE turn.id = stream.turn_id)"
            )
        else:
            cursor.execute(
                f"DELETE FROM {OLD_STREAM_TABLE} WHERE turn_id IN "
                f"(SELECT id FROM {Turn._meta.db_table} WHERE session_id = ANY(%s))",
                [list(session_ids)],
            )


CHAT_PURGED = "the chat was purged"
ACCOUNT_FORGOTTEN = "the account was forgotten"


def history_erase(*, model, object_ids, why: str, name: str | None = None) -> None:
    """The console's history of these rows (`model`'s, by id) keeps who did what and when, not
    what they held: each entry's name (a session's title, an agent's, the account's username)
    becomes `name` (or says `why`), and its message the change's kind alone. The console wrote
    the values a change went from and to (`pantheon.console.ChangesWithValues`: an email
    address, a role prompt's first 60 characters)."""
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(model),
        object_id__in=[str(object_id) for object_id in object_ids],
    )
    shown = name if name is not None else f"({why})"
    for flag, said in ((ADDITION, "Added"), (CHANGE, "Changed")):
        entries.filter(action_flag=flag).update(
            object_repr=shown, change_message=f"{said} (what it said is erased: {why})."
        )
    entries.exclude(action_flag__in=(ADDITION, CHANGE)).update(object_repr=shown)


@dataclass(frozen=True)
class Forgotten:
    """What `user_forget` did (or would): the account's new name, and what it deleted."""

    username: str
    sessions: int
    rooms: int
    agents: int
    running_turns: int


FORGOTTEN_PREFIX = "forgotten-"


def _forgotten_name(user) -> str:
    """`forgotten-<id>`, or with a random suffix when another account has that name already
    (in any case: the console refuses case twins)."""
    name = f"{FORGOTTEN_PREFIX}{user.pk}"
    while (
        type(user)
        .objects.filter(**{f"{user.USERNAME_FIELD}__iexact": name})
        .exclude(pk=user.pk)
        .exists()
    ):
        name = f"{FORGOTTEN_PREFIX}{user.pk}-{secrets.token_hex(4)}"
    return name


def user_forget(*, user, dry_run: bool = False) -> Forgotten:
    """A user who asked to be forgotten: the account is closed and loses what names them (its
    username becomes `forgotten-<id>`, its names and email go, its password is made unusable,
    its API token is revoked, its roles and permissions are taken away, its console history
    says so, and that of its billing profile, agents, rooms, seats and sessions keeps none of
    the values it wrote); their sessions and rooms are deleted as their own deletes delete them
    (a turn running ends as a cancel ends it), for `purge_deleted_chats` to erase; their agents,
    whose role prompts are theirs, are deleted at once. The ledger keeps every row and figure
    under the account's id: what it was billed stays billed."""
    sessions = Session.objects.filter(started_by=user, deleted_at__isnull=True)
    rooms = Room.objects.filter(owner=user, deleted_at__isnull=True)
    agents = Agent.objects.filter(owner=user)
    username = _forgotten_name(user)
    if dry_run:
        running = Turn.objects.filter(session__started_by=user, status=TurnStatus.RUNNING)
        return Forgotten(
            username=username,
            sessions=sessions.count(),
            rooms=rooms.count(),
            agents=agents.count(),
            running_turns=running.count(),
        )
    with transaction.atomic():
        their_agents = list(agents)
        agent_ids = [agent.pk for agent in their_agents]  # a deleted instance's pk is None
        # Read before the agents' delete takes them: a seat's own page names its agent and
        # room ("Ada (@ada) at seat 1 of Research"); a room seats only its owner's agents.
        seat_ids = list(RoomAgent.objects.filter(agent__owner=user).values_list("pk", flat=True))
        # The turns' rows first, then the sessions' and the rooms': a delete's order.
        ended = turns_cancel_with_sessions(sessions=Session.objects.filter(started_by=user))
        now = timezone.now()
        deleted_sessions = sessions.update(deleted_at=now)
        deleted_rooms = rooms.update(deleted_at=now, updated_at=now)
        for agent in their_agents:
            agent_delete(agent=agent)
        # What the console's history said of them, and of the account: its entries stay (who
        # did what, when), their values go.
        history_erase(
            model=Session,
            object_ids=Session.objects.filter(started_by=user).values_list("pk", flat=True),
            why=ACCOUNT_FORGOTTEN,
        )
        history_erase(
            model=Room,
            object_ids=Room.objects.filter(owner=user).values_list("pk", flat=True),
            why=ACCOUNT_FORGOTTEN,
        )
        history_erase(model=Agent, object_ids=agent_ids, why=ACCOUNT_FORGOTTEN)
        history_erase(model=RoomAgent, object_ids=seat_ids, why=ACCOUNT_FORGOTTEN)
        history_erase(model=type(user), object_ids=[user.pk], why=ACCOUNT_FORGOTTEN, name=username)
        # "Billing profile of alice", "Added with User: alice, ...": who set the cap or
        # suspended the account, and when, stays, under the account's new name.
        history_erase(
            model=BillingProfile,
            object_ids=BillingProfile.objects.filter(user=user).values_list("pk", flat=True),
            why=ACCOUNT_FORGOTTEN,
            name=f"Billing profile of {username}",
        )
        user.username = username
        user.first_name = user.last_name = user.email = ""
        user.is_active = user.is_staff = user.is_superuser = False
        user.set_unusable_password()
        user.save()
        user.groups.clear()
        user.user_permissions.clear()
        # Its entry names the account by its new name.
        api_token_revoke_logged(user=user, why=ACCOUNT_FORGOTTEN)
    return Forgotten(
        username=username,
        sessions=deleted_sessions,
        rooms=deleted_rooms,
        agents=len(their_agents),
        running_turns=len(ended.turn_ids),
    )


@dataclass(frozen=True)
class Interrupted:
    turn_ids: list[UUID]
    lost_calls: int


def turns_interrupt(
    *,
    turns: TurnQuerySet,
    status: TurnStatus = TurnStatus.INTERRUPTED,
    failure: TurnFailure = TurnFailure.INTERRUPTED,
    heard: Iterable[LlmCallEvent] = (),
) -> Interrupted:
    """End these turns, if still running, as `interrupted` (or `failed`) with the totals of
    their stored ledger rows, and mark their calls in flight lost (the provider may have billed
    them; those `heard`, with the usage it reported: `usage_calls_mark_lost`); `failure` is the
    code their replays end with. Finished steps and their rows are
    never touched.

    The turns' row locks come first, before any ledger row's, as in a running step: a worker
    still alive and a recovery are ordered, never deadlocked."""
    with transaction.atomic():
        # In id order: turns locked by two recoveries at once are taken in one order.
        running = turns.running().order_by("pk").select_for_update()
        ids = list(running.values_list("pk", flat=True))
        lost = 0
        if ids:
            lost = usage_calls_mark_lost(turn_ids=ids, heard=heard)
            Turn.objects.filter(pk__in=ids).end(status, failure=failure)
    return Interrupted(turn_ids=ids, lost_calls=lost)


def turn_cancel(*, turns: TurnQuerySet) -> Interrupted:
    """End the turn (`turns`: the caller's, by id) at its user's word, if it still runs: as a
    recovery ends it (`turns_interrupt`), `interrupted` with `turn_cancelled`, its finished
    steps kept and its call in flight lost. Its session takes a new turn at once, and its
    Idempotency-Key runs afresh, as an interrupted turn's does. The worker running it finds
    it ended at its next write (`TurnRunner._taken_over`); in this process the API stops it at
    once (`pantheon.draining.stop`)."""
    return turns_interrupt(turns=turns, failure=TurnFailure.CANCELLED)


def turns_cancel_with_sessions(*, sessions: QuerySet[Session]) -> Interrupted:
    """End the running turns of these sessions, which are being deleted (or their room), as
    their user's cancel ends them (`turn_cancel`, `turn_cancelled`): their poster's stream and
    every follower's end with `turn_failed` of that code, and no further call is made. Once
    the ending commits, a turn that this process runs is stopped at once (its provider call
    abandoned: `pantheon.draining.stop`); elsewhere its worker finds it ended at its next
    write."""
    # `session__in` a subquery, not a join: the FOR UPDATE locks the turns' rows only.
    ended = turn_cancel(turns=Turn.objects.filter(session__in=sessions.values("pk")))
    for turn_id in ended.turn_ids:
        transaction.on_commit(partial(draining.stop, turn_id))
    return ended


def room_turns_cancel(sender, *, room: Room, **kwargs) -> None:
    """`rooms.signals.room_deleting`'s receiver: a deleted room's sessions go with it, and so do
    their running turns (`turns_cancel_with_sessions`), in the room delete's transaction."""
    turns_cancel_with_sessions(sessions=Session.objects.filter(room=room))


def direct_sessions_keep_agent_name(sender, *, agent: Agent, **kwargs) -> None:
    """`rooms.signals.agent_deleting`'s receiver: the agent's live direct sessions without a
    title take its name as it is now, in the agent delete's transaction. Their agent goes
    (null), and a session list named them nothing: no title, no room, no agent. Those deleted
    already (a forgotten account's) keep theirs empty."""
    Session.objects.filter(agent=agent, title="", deleted_at__isnull=True).update(title=agent.name)


def turns_of_exited_workers_interrupt(*, workers: Iterable[str]) -> Interrupted:
    """End the turns these server processes (`pantheon.runner`) left running when they exited,
    as `recover_turns` would: a process that exited runs nothing, whatever their progress."""
    names = list(workers)
    if not names:
        return Interrupted(turn_ids=[], lost_calls=0)
    return turns_interrupt(turns=Turn.objects.filter(worker__in=names))


def turn_record_late_answer(*, heard: LlmCallEvent) -> bool:
    """A call whose turn was ended from outside while it ran (`recover_turns`, a stale takeover)
    and marked lost, answered by its provider after all (`heard`, metered in memory): its row
    gets the usage and cost the provider reported, still lost and at no credit
    (`usage_call_heard_after_loss`), and the turn's totals follow its rows again. The turn's
    row lock first, as in a step or a recovery. Returns whether the row was filled (not when
    it had been already, or was stored: the turn ended by itself)."""
    return _record_on_its_ended_turn(heard, usage_call_heard_after_loss, billed=False)


def turn_record_cancelled_answer(*, spoken: LlmCallEvent) -> bool:
    """A call whose turn its user cancelled (`turn_cancel`, which marked its row lost) after
    its first words had reached them (`spoken`, metered in memory: what it streamed, estimated,
    or the provider's usage if it had answered whole): its row is billed for them
    (`usage_call_bill_cancelled`), the turn's totals follow its rows again, and the user's month
    counter moves by its credits. In a step's order: the turn's row lock first, the counter
    last. Returns whether the row was billed (not when it had been already, or was heard or
    stored)."""
    return _record_on_its_ended_turn(spoken, usage_call_bill_cancelled, billed=True)


def _record_on_its_ended_turn(
    event: LlmCallEvent, record: Callable[..., bool], *, billed: bool
) -> bool:
    """`record(event=event)` on the lost row of a call whose turn has ended, in a step's order:
    the turn's row lock first, then the row, the turn's totals from its rows again, and, when
    the row is `billed`, the user's month counter last. Whether the row was recorded."""
    if event.turn_id is None:
        return False
    with transaction.atomic():
        ended = Turn.objects.filter(pk=event.turn_id).exclude(status=TurnStatus.RUNNING)
        if not list(ended.select_for_update().values_list("pk", flat=True)):
            return False
        if not record(event=event):
            return False
        ended.update(**usage_totals_of_turn(OuterRef("pk")))
        if billed:
            usage_month_add(user_id=event.user_id, at=event.created_at, credits=event.credits)
    return True


def turns_stale(*, older_than_seconds: float) -> TurnQuerySet:
    """Running turns that made no progress for this long: their worker is gone or stuck."""
    # By the database's clock, the one the turns' progress is written by (`TurnState.now`).
    cutoff = Now() - timedelta(seconds=older_than_seconds)
    return Turn.objects.running().filter(progress_at__lt=cutoff)
