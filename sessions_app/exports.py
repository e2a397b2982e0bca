"""What Pantheon holds about one user, as one JSON document: the answer to a subject access
request, or a data portability request (`manage.py export_user`).

The document is written as it is read, a row at a time (`.iterator()`, server-side cursors on
PostgreSQL): a user with 100,000 turns is never held in memory, only one turn (with its
messages) and one chunk of each cursor at a time. Sessions, their turns, their messages and
their summaries are read by one cursor each, in the same order (by session), and stitched
together as they come. On PostgreSQL it reads one snapshot (a read-only, repeatable-read
transaction): a turn that ends meanwhile is in it whole or not at all, and its ledger rows with
it.

What it never holds: the password's hash (only whether the account has a usable one), the API
token's value (only that one exists, and since when), the copies of a turn's answer an
`Idempotency-Key` keeps for retries (their key, state and turn: the answer is the turn's),
a running answer's streamed text (the message it becomes is exported once it is stored), and
the names operators go by in the console's history (an operator's, not the user's).

Deleted chats (sessions and rooms the user deleted, or `forget_user` deleted, not yet erased by
`purge_deleted_chats`) are exported unless told otherwise, each marked with its `deleted_at`:
Pantheon still holds them (the console's operators read them) until the purge, and an answer
to an access request leaves out nothing held. `include_deleted=False` leaves them out, for a
portability copy of the chats the user keeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from rest_framework.authtoken.models import Token

from rooms.models import Agent, Room, RoomAgent
from sessions_app.models import (
    IdempotencyKey,
    Message,
    Session,
    SessionQuerySet,
    SessionSummary,
    Turn,
)
from usage.models import USAGE_TOTAL_FIELDS, BillingProfile, LlmCallEvent, MonthlyUsage

EXPORT_FORMAT = "pantheon-user-export"
EXPORT_VERSION = 1
# Rows each cursor fetches at a time.
CHUNK = 1000
# Ids a query of the console's history names at a time (SQLite's bound on a statement's
# parameters is 32,766; a user may have thousands of sessions).
HISTORY_BATCH = 500

_ACTIONS = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}


@dataclass
class Exported:
    """What `user_export` wrote: how many of each."""

    agents: int = 0
    rooms: int = 0
    sessions: int = 0
    deleted_sessions: int = 0
    turns: int = 0
    messages: int = 0
    ledger_rows: int = 0
    history_entries: int = 0


class Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def _json(value: Any) -> str:
    # Datetimes as ISO 8601 (UTC, "Z"), decimals as exact strings, ids as strings.
    return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)


class _Ahead:
    """A cursor with its next row in view, so that rows read in the same order as the rows
    they belong to (turns by session) are taken as long as they belong to the row at hand."""

    _END = object()

    def __init__(self, rows: Iterable[Any]) -> None:
        self._rows = iter(rows)
        self._next = next(self._rows, self._END)

    def take_while(self, belongs: Callable[[Any], bool]) -> Iterator[Any]:
        while self._next is not self._END and belongs(self._next):
            row, self._next = self._next, next(self._rows, self._END)
            yield row


def user_export(*, user, out: Writable, include_deleted: bool = True) -> Exported:
    """Write everything Pantheon holds about `user` to `out`, as one JSON object: the account,
    its agents, rooms, sessions (with their turns, messages, context audits and summaries),
    `Idempotency-Key`s, usage ledger rows and monthly totals, and the console's history of
    them. See the module's docstring for what it leaves out, and why."""
    exported = Exported()
    outermost = not connection.in_atomic_block  # not inside a test's transaction
    with transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            # The transaction's first statement: one snapshot, and nothing written.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        header = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": timezone.now(),
            "user_id": user.pk,
            "includes_deleted_chats": include_deleted,
        }
        out.write('{\n"export": ' + _json(header) + ",\n")
        out.write('"account": ' + _json(_account(user)) + ",\n")
        _write_list(out, "agents", _agents(user, exported))
        _write_list(out, "rooms", _rooms(user, include_deleted, exported))
        out.write('"sessions": [')
        _write_sessions(out, user, include_deleted, exported)
        out.write("\n],\n")
        _write_list(out, "idempotency_keys", _idempotency_keys(user, include_deleted))
        out.write('"usage": {\n')
        _write_list(out, "monthly", _monthly(user))
        _write_list(out, "ledger", _ledger(user, exported), last=True)
        out.write("},\n")
        _write_list(out, "console_history", _history(user, include_deleted, exported), last=True)
        out.write("}\n")
    return exported


def _write_list(out: Writable, name: str, items: Iterable[dict], *, last: bool = False) -> None:
    out.write(_json(name) + ": [")
    for index, item in enumerate(items):
        out.write(("," if index else "") + "\n" + _json(item))
    out.write("\n]" + ("" if last else ",") + "\n")


def _account(user) -> dict:
    token = Token.objects.filter(user=user).only("created").first()
    profile = BillingProfile.objects.filter(user=user).first()
    return {
        "id": user.pk,
        "username": user.get_username(),
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "date_joined": user.date_joined,
        "last_login": user.last_login,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "permissions": sorted(
            f"{app}.{codename}"
            for app, codename in user.user_permissions.values_list(
                "content_type__app_label", "codename"
            )
        ),
        "has_usable_password": user.has_usable_password(),
        "api_token": {"exists": token is not None, "created": token.created if token else None},
        "billing_profile": None
        if profile is None
        else {
            "monthly_credit_cap": profile.monthly_credit_cap,
            "is_suspended": profile.is_suspended,
            "updated_at": profile.updated_at,
        },
    }


def _agents(user, exported: Exported) -> Iterator[dict]:
    for agent in Agent.objects.filter(owner=user).order_by("created_at", "id").iterator(CHUNK):
        exported.agents += 1
        yield {
            "id": agent.pk,
            "agent_key": agent.agent_key,
            "name": agent.name,
            "model_alias": agent.model_alias,
            "role_prompt": agent.role_prompt,
            "tool_permissions": agent.tool_permissions,
            "created_at": agent.created_at,
            "updated_at": agent.updated_at,
        }


def _rooms(user, include_deleted: bool, exported: Exported) -> Iterator[dict]:
    rooms = Room.objects.filter(owner=user).prefetch_related("seats__agent")
    if not include_deleted:
        rooms = rooms.filter(deleted_at__isnull=True)
    for room in rooms.order_by("created_at", "id").iterator(CHUNK):
        exported.rooms += 1
        yield {
            "id": room.pk,
            "name": room.name,
            "goal": room.goal,
            "mode": room.current_mode,
            "pending_mode": room.pending_mode,
            "created_at": room.created_at,
            "updated_at": room.updated_at,
            "deleted_at": room.deleted_at,
            "seats": [
                {
                    "position": seat.position,
                    "agent_id": seat.agent_id,
                    "agent_key": seat.agent.agent_key,
                    "agent_name": seat.agent.name,
                }
                for seat in sorted(room.seats.all(), key=lambda seat: seat.position)
            ],
        }


def _write_sessions(out: Writable, user, include_deleted: bool, exported: Exported) -> None:
    """Each session, oldest first, then its turns (each with its messages and context audit)
    and its summaries, from four cursors read side by side in the sessions' order."""
    alive = Q() if include_deleted else SessionQuerySet.alive_q("session__")
    sessions = Session.objects.filter(started_by=user).annotate(
        room_deleted_at=F("room__deleted_at")
    )
    if not include_deleted:
        sessions = sessions.filter(SessionQuerySet.alive_q())
    turns = _Ahead(
        Turn.objects.filter(alive, session__started_by=user)
        .select_related("context_audit")
        .order_by("session__created_at", "session_id", "turn_index")
        .iterator(CHUNK)
    )
    messages = _Ahead(
        Message.objects.filter(alive, session__started_by=user)
        .order_by(
            "session__created_at",
            "session_id",
            F("turn__turn_index").asc(nulls_last=True),
            "sequence",
        )
        .iterator(CHUNK)
    )
    summaries = _Ahead(
        SessionSummary.objects.filter(alive, session__started_by=user)
        .order_by("session__created_at", "session_id", "to_sequence")
        .iterator(CHUNK)
    )
    for index, session in enumerate(sessions.order_by("created_at", "id").iterator(CHUNK)):
        exported.sessions += 1
        deleted_at = session.deleted_at or session.room_deleted_at
        exported.deleted_sessions += deleted_at is not None
        head = _json(
            {
                "id": session.pk,
                "title": session.title,
                "room_id": session.room_id,
                "agent_id": session.agent_id,
                "created_at": session.created_at,
                "deleted_at": deleted_at,
            }
        )
        out.write(("," if index else "") + "\n" + head[:-1] + ', "turns": [')

        def of_session(row: Any, session_id: Any = session.pk) -> bool:
            return row.session_id == session_id

        for number, turn in enumerate(turns.take_while(of_session)):
            exported.turns += 1

            def of_turn(row: Any, turn_id: Any = turn.pk) -> bool:
                return of_session(row) and row.turn_id == turn_id

            said = [_message(message) for message in messages.take_while(of_turn)]
            exported.messages += len(said)
            out.write(("," if number else "") + "\n" + _json(_turn(turn, said)))
        outside = [_message(message) for message in messages.take_while(of_session)]
        exported.messages += len(outside)
        kept = [_summary(summary) for summary in summaries.take_while(of_session)]
        out.write(
            "\n], "
            + _json("messages_outside_turns")
            + ": "
            + _json(outside)
            + ', "summaries": '
            + _json(kept)
            + "}"
        )


def _turn(turn: Turn, messages: list[dict]) -> dict:
    audit = getattr(turn, "context_audit", None)
    return {
        "id": turn.pk,
        "turn_index": turn.turn_index,
        "mode": turn.mode,
        "status": turn.status,
        "ended_by": turn.failure_code,
        "user_input": turn.user_input,
        "model_alias_override": turn.model_alias_override,
        "roster": turn.roster,
        "routing": turn.routing,
        "created_at": turn.created_at,
        "completed_at": turn.completed_at,
        "usage": {name: getattr(turn, name) for name in USAGE_TOTAL_FIELDS},
        "messages": messages,
        "context_audit": None
        if audit is None
        else {
            "model_context_limit": audit.model_context_limit,
            "input_budget": audit.input_budget,
            "estimated_tokens_before": audit.estimated_tokens_before,
            "estimated_tokens_after": audit.estimated_tokens_after,
            "history_messages_loaded": audit.history_messages_loaded,
            "history_messages_pruned": audit.history_messages_pruned,
            "summary_used": audit.summary_used,
            "summary_triggered": audit.summary_triggered,
            "pruned": audit.pruned,
            "created_at": audit.created_at,
        },
    }


def _message(message: Message) -> dict:
    return {
        "id": message.pk,
        "sequence": message.sequence,
        "role": message.role,
        "agent_key": message.agent_key,
        "agent_name": message.agent_name,
        "agent_id": message.agent_id,
        "model_alias": message.model_alias,
        "content": message.content,
        "status": message.status,
        "error_code": message.error_code,
        "token_estimate": message.token_estimate,
        "created_at": message.created_at,
    }


def _summary(summary: SessionSummary) -> dict:
    return {
        "from_sequence": summary.from_sequence,
        "to_sequence": summary.to_sequence,
        "summary_text": summary.summary_text,
        "key_facts": summary.key_facts,
        "decisions": summary.decisions,
        "open_questions": summary.open_questions,
        "action_items": summary.action_items,
        "valid_json": summary.valid_json,
        "turn_id": summary.turn_id,
        "created_at": summary.created_at,
    }


def _idempotency_keys(user, include_deleted: bool) -> Iterator[dict]:
    keys = IdempotencyKey.objects.filter(user=user).order_by("created_at", "id")
    if not include_deleted:  # a key goes with its turn's chat (one with no turn left stays)
        keys = keys.filter(Q(turn__isnull=True) | SessionQuerySet.alive_q("turn__session__"))
    for key in keys.iterator(CHUNK):
        yield {
            "key": key.key,
            "state": key.state,
            "response_status": key.response_status,
            "turn_id": key.turn_id,
            "created_at": key.created_at,
            "updated_at": key.updated_at,
        }


def _monthly(user) -> Iterator[dict]:
    for month in MonthlyUsage.objects.filter(user=user).order_by("month").iterator(CHUNK):
        yield {
            "month": month.month.strftime("%Y-%m"),
            "credits": month.credits,
            "llm_calls": month.llm_calls,
        }


def _ledger(user, exported: Exported) -> Iterator[dict]:
    rows = (
        LlmCallEvent.objects.filter(user=user)
        .annotate(price_list=F("pricing_version__name"))
        .order_by("created_at", "id")
    )
    for row in rows.iterator(CHUNK):
        exported.ledger_rows += 1
        yield {
            "id": row.pk,
            "created_at": row.created_at,
            "purpose": row.purpose,
            "status": row.status,
            "error_type": row.error_type,
            "model_alias": row.model_alias,
            "provider": row.provider,
            "provider_model": row.provider_model,
            "agent_key": row.agent_key,
            "room_id": row.room_id,
            "session_id": row.session_id,
            "turn_id": row.turn_id,
            "input_tokens_fresh": row.input_tokens_fresh,
            "input_tokens_cached": row.input_tokens_cached,
            "output_tokens": row.output_tokens,
            "total_tokens": row.total_tokens,
            "oe_tokens": row.oe_tokens,
            "credits": row.credits,
            "provider_cost_usd": row.provider_cost_usd,
            "priced": row.priced,
            "price_list": row.price_list,
            "attempts": row.attempts,
            "latency_ms": row.latency_ms,
            "provider_request_id": row.request_id,
        }


def _model_name(entry: LogEntry) -> str | None:
    # Through the id: django-stubs types LogEntry's content type as unknown.
    if entry.content_type_id is None:
        return None
    return ContentType.objects.get_for_id(entry.content_type_id).model


def _history(user, include_deleted: bool, exported: Exported) -> Iterator[dict]:
    """The console's history of the account (its billing profile's too: a cap, a suspension)
    and of the user's agents, rooms, their seats and sessions (who
    acted is said as "you" or "an operator": an operator's name is theirs; the rooms and
    sessions left out of the export, left out here too), then what the user did in the console
    to anything else, without what that was called or said (another person's, or the
    organisation's)."""
    rooms, sessions = Room.objects.filter(owner=user), Session.objects.filter(started_by=user)
    if not include_deleted:
        rooms, sessions = rooms.alive(), sessions.alive()
    own: list[tuple[ContentType, list[str]]] = [
        (ContentType.objects.get_for_model(type(user)), [str(user.pk)]),
    ]
    for model, rows in (
        (BillingProfile, BillingProfile.objects.filter(user=user)),
        (Agent, Agent.objects.filter(owner=user)),
        (Room, rooms),
        (RoomAgent, RoomAgent.objects.filter(room__in=rooms)),
        (Session, sessions),
    ):
        ids = [str(pk) for pk in rows.order_by("pk").values_list("pk", flat=True).iterator(CHUNK)]
        own.append((ContentType.objects.get_for_model(model), ids))
    for content_type, ids in own:
        for start in range(0, len(ids), HISTORY_BATCH):
            entries = LogEntry.objects.filter(
                content_type=content_type, object_id__in=ids[start : start + HISTORY_BATCH]
            ).select_related("content_type")
            for entry in entries.order_by("action_time", "id").iterator(CHUNK):
                exported.history_entries += 1
                yield {
                    "action_time": entry.action_time,
                    "action": _ACTIONS.get(entry.action_flag, str(entry.action_flag)),
                    "object_type": _model_name(entry),
                    "object_id": entry.object_id,
                    "object_repr": entry.object_repr,
                    "change": entry.get_change_message(),
                    "by": "you" if entry.user_id == user.pk else "an operator",
                }
    listed = {(content_type.pk, object_id) for content_type, ids in own for object_id in ids}
    theirs = LogEntry.objects.filter(user=user).select_related("content_type")
    for entry in theirs.order_by("action_time", "id").iterator(CHUNK):
        if (entry.content_type_id, entry.object_id) in listed:
            continue  # listed above
        exported.history_entries += 1
        yield {
            "action_time": entry.action_time,
            "action": _ACTIONS.get(entry.action_flag, str(entry.action_flag)),
            "object_type": _model_name(entry),
            "object_id": entry.object_id,
            "by": "you",
        }
