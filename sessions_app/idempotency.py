"""Idempotent turns: `Idempotency-Key` on `POST sessions/{id}/turns` (Stripe's semantics, the
IETF Idempotency-Key draft).

- Two `Idempotency-Key` headers: 400 `invalid_idempotency_key`, as for a key out of shape.
- The same key with the same request (method, path, and what the body means: `turn_meaning`)
  replays the stored status and body: no new turn, no LLM call.
- The same key with another request: 422 `idempotency_key_reused`.
- The same key while the first request runs: 409 `idempotency_key_in_use`.
- A request refused before it started (validation, a refusal, a 409) stores nothing: a retry
  runs afresh; so does one whose claim broke (its database connection dropped), which claimed
  nothing, and one whose turn lost its database connection and ended interrupted (the client
  got a 503 `database_unavailable`), unless the turn had finished before the connection went:
  a retry then gets that turn. Nor does one whose turn `recover_turns` ended while it ran (503
  `turn_interrupted`): a retry runs afresh. One that started and broke otherwise (a bug)
  stores its 500, as any answer.
- A key whose request never finished (its worker died) is taken over by a retry once it is
  older than the stale limit of turns and its session's turn is not in progress. Taking over
  moves the key's `updated_at`, its fencing stamp: the first request, should it still be
  alive, can then neither release the key nor store its answer over the retry's. A key whose
  turn ended (its request died, or has yet to store the answer) is not run again: the retry
  gets that turn, as the first request would have answered it.

A key's `created_at` and `updated_at` go by the database's clock (`TurnState.now`, read with
the session, and `now()` in the statement that stores the answer), as its turn's times do:
written and judged by hosts' clocks, a retry on a host ten minutes ahead took a live request's
key for abandoned and ran its turn a second time, and a key written by a host behind was taken
over by the next retry on any other host.

Keys are per user (one user's key never touches another's turn) and kept at least
`PANTHEON_IDEMPOTENCY_KEY_HOURS` by the database's clock; `manage.py prune_idempotency_keys`
removes older ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from pantheon import exceptions
from sessions_app.models import IdempotencyKey, Turn, TurnFailure, TurnStatus
from sessions_app.selectors import stale_before
from sessions_app.serializers import render_turn
from sessions_app.services import turns_interrupt

_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass(frozen=True)
class Replay:
    """The stored answer of the first request with this key."""

    status: int
    body: Any
    turn_id: UUID | None = None  # the turn the first request ran, if it got that far


def request_fingerprint(*, method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def turn_meaning(validated: Mapping[str, Any]) -> dict[str, Any]:
    """What a turn's body asks for, once validated (TurnCreateSerializer), as the body a client
    would write it in the fewest words: the message as the turn stores it (trimmed), and the
    model alias override only when there is one. `"model_alias_override": ""` (no override, as
    the serializer reads it) is the field left out, `"hello "` is `"hello"`, and a field the
    serializer ignores is no change; another message (other tagged agents) or another override
    is. Fingerprinted in place of the body sent, so that two bodies meaning the same turn are
    the same request. The plainest body, `{"message": "hello"}`, is its own meaning: its
    fingerprint is the one the body sent had before, so keys stored then still match."""
    meaning = {"message": validated["message"]}
    if validated.get("model_alias_override"):
        meaning["model_alias_override"] = validated["model_alias_override"]
    return meaning


def idempotency_key_of(request) -> str | None:
    """The request's `Idempotency-Key`, if it sent one. Django joins a header sent twice into
    one value, "a,b", and a comma is fine in a key: the request would run under a key it never
    sent, neither of its two. Under ASGI the raw headers still tell two from one; a WSGI server
    has joined them before Django sees them."""
    scope = getattr(request, "scope", None)
    if scope is not None:
        sent = sum(name.lower() == b"idempotency-key" for name, _ in scope["headers"])
        if sent > 1:
            raise exceptions.InvalidIdempotencyKey(
                f"Send one Idempotency-Key: this request carries {sent}."
            )
    return request.headers.get("Idempotency-Key")


def idempotency_answer_stored(*, user, key: str | None) -> bool:
    """Whether `user`'s `key` holds a first request's answer (a retry of it replays that answer
    and calls no provider)."""
    if not key or not user or not user.is_authenticated:
        return False
    return IdempotencyKey.objects.filter(
        user=user, key=key, state=IdempotencyKey.State.DONE
    ).exists()


def idempotency_begin(
    *,
    user,
    key: str,
    fingerprint: str,
    now: datetime,
    alike: Collection[str] = (),
    turn_in_progress: bool = False,
) -> IdempotencyKey | Replay:
    """Claim `key` for this request, or say what became of the first request with it.
    `fingerprint` is stored with a new key; a key stored with one of `alike` is this request
    too (a key stored before fingerprints were of a turn's meaning, by the body it was sent
    with). `turn_in_progress`: the session's latest turn is running and not stale; a key still
    running then belongs to a request that is alive, however old the key is (a roundtable
    outlasts the stale limit while it keeps committing steps). `now`: the database's clock
    (`TurnState.now`), by which the key is stamped (made and claimed) and judged abandoned."""
    if not _VALID_KEY.fullmatch(key):
        raise exceptions.InvalidIdempotencyKey()
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(
                user=user, key=key, fingerprint=fingerprint, created_at=now, updated_at=now
            )
    except IntegrityError:
        pass
    record = IdempotencyKey.objects.filter(user=user, key=key).first()
    if record is None:
        # Released by the first request (it was refused) between our insert and this read.
        return idempotency_begin(
            user=user,
            key=key,
            fingerprint=fingerprint,
            now=now,
            alike=alike,
            turn_in_progress=turn_in_progress,
        )
    if record.fingerprint != fingerprint and record.fingerprint not in alike:
        raise exceptions.IdempotencyKeyReused()
    if record.state == IdempotencyKey.State.DONE:
        assert record.response_status is not None
        return Replay(
            status=record.response_status, body=record.response_body, turn_id=record.turn_id
        )
    if turn_in_progress:
        raise exceptions.IdempotencyKeyInUse(turn_id=record.turn_id)
    # A key younger than the stale limit belongs to a request that may be alive (one whose turn
    # completed may be storing its answer, its balance in it), unless its turn was interrupted:
    # its request died with its worker (kill -9) and `recover_turns` or a takeover ended the
    # turn. The retry then runs it afresh at once, not after the stale limit.
    if record.updated_at >= stale_before(now) and not _turn_interrupted(record):
        raise exceptions.IdempotencyKeyInUse(turn_id=record.turn_id)
    ended = _ended_turn(record)
    if ended is not None:
        return ended
    if _take_over(record, now=now):
        return record
    raise exceptions.IdempotencyKeyInUse(turn_id=record.turn_id)


def _turn_interrupted(record: IdempotencyKey) -> bool:
    return (
        record.turn_id is not None
        and Turn.objects.filter(pk=record.turn_id, status=TurnStatus.INTERRUPTED).exists()
    )


def _ended_turn(record: IdempotencyKey) -> Replay | None:
    """The answer of a running key's turn that has ended, stored for the retries after it."""
    if record.turn_id is None:
        return None
    turn = (
        Turn.objects.filter(pk=record.turn_id)
        .exclude(status__in=[TurnStatus.RUNNING, TurnStatus.INTERRUPTED])
        .first()
    )
    if turn is None:  # still running (stale), or interrupted: it never answered
        return None
    body = render_turn(turn, turn.messages.order_by("sequence"))
    idempotency_finish(record=record, status=201, body=body, turn_id=turn.pk)
    return Replay(status=201, body=body, turn_id=turn.pk)


def idempotency_settle_interrupted(
    *, record: IdempotencyKey, turn_id, failure: TurnFailure = TurnFailure.INTERRUPTED
) -> bool:
    """The request stopped with its worker (`pantheon.draining`) while its turn ran, or lost
    its database connection mid-turn (`pantheon.db.connection_lost`). A turn that ended on its
    own at that moment (its last commit won, or went through before the connection dropped)
    keeps its answer for the retries, so none runs it again; an interrupted one frees the key,
    so a retry runs afresh. A turn still `running` (its failure could not be written: the
    database was away then, and is back now) is ended first, `interrupted` with `failure`: its
    request was its only runner, and a retry would otherwise meet it as a turn in progress
    (409) until the stale limit. Returns whether the turn had ended on its own."""
    with transaction.atomic():
        if turn_id is not None:
            turns_interrupt(turns=Turn.objects.filter(pk=turn_id), failure=failure)
        record.turn_id = turn_id
        if _ended_turn(record) is not None:
            return True
        idempotency_release(record=record)
        return False


def idempotency_link(turn: Turn, *, record: IdempotencyKey) -> None:
    """Name the turn the key's request claimed (with the claim): a retry that finds the key
    running after that turn ended answers with it instead of running it again."""
    _still_ours(record).update(turn=turn)


def _take_over(record: IdempotencyKey, *, now: datetime) -> bool:
    """A running key whose request never finished: the first retry to get here runs it again."""
    taken = _still_ours(record).update(updated_at=now, turn=None)
    record.updated_at, record.turn_id = now, None
    return bool(taken)


def _still_ours(record: IdempotencyKey):
    """The key as this request claimed it: not taken over by a retry since."""
    return IdempotencyKey.objects.filter(
        pk=record.pk, state=IdempotencyKey.State.RUNNING, updated_at=record.updated_at
    )


def idempotency_finish(*, record: IdempotencyKey, status: int, body: Any, turn_id=None) -> None:
    """Store the answer that retries with this key will get."""
    _still_ours(record).update(
        state=IdempotencyKey.State.DONE,
        response_status=status,
        response_body=body,
        turn_id=turn_id,
        updated_at=Now(),
    )


def idempotency_release(*, record: IdempotencyKey) -> None:
    """The request was refused before it started: forget the key, so a retry runs afresh."""
    _still_ours(record).delete()


def idempotency_keys_prune(*, older_than_hours: float, dry_run: bool = False) -> int:
    """Delete the keys made more than `older_than_hours` ago by the database's clock, the one
    they are stamped by: by the pruning host's, one an hour ahead deleted keys an hour short of
    their promised lifetime, and a retry within it ran its turn a second time."""
    old = IdempotencyKey.objects.filter(created_at__lt=Now() - timedelta(hours=older_than_hours))
    if dry_run:
        return old.count()
    deleted, _ = old.delete()
    return deleted
