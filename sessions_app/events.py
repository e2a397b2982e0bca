"""A turn's events, as Server-Sent Events: live from the turn engine, or replayed from the
database by any host, at any time, with the same ids.

The events of a turn, in order: `turn_started`, `routing` (orchestrator), then per answer
`step_started`, `step_delta`s, `step_completed`, and last `turn_completed` or `turn_failed`.

Ids are integers that order the events within their turn and are derived from what the turn
stored, so a replay numbers them exactly as the live stream did. A step's deltas are numbered
by the characters of its text: the delta that ends at character c of step k has id B_k + c,
where B_k is the id of the step's `step_started`. Deltas of a step may therefore be replayed
coalesced (the stored text in deltas of REPLAY_DELTA_CHARS characters, `step_deltas`, rather
than as the provider's pieces) and a client that resumes with `Last-Event-ID` in the middle of
a step gets exactly the rest of its text. The turn's last event (`turn_completed`
or `turn_failed`) always has the id TURN_ENDED_ID, after any id a step can take: a client that
saw part of a step that then broke off still gets it, live or replayed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.db.models import BooleanField, ExpressionWrapper, F, OuterRef, Subquery
from django.db.models.functions import Length, Now

from pantheon import exceptions
from sessions_app.models import (
    Message,
    MessageRole,
    SessionQuerySet,
    Turn,
    TurnFailure,
    TurnStatus,
    TurnStreamChunk,
)
from sessions_app.serializers import RoutingSerializer, render_message, render_turn
from usage.models import CallPurpose, CallStatus, LlmCallEvent

TURN_STARTED_ID = 1
ROUTING_ID = 2
FIRST_STEP_ID = 3
TURN_ENDED_ID = 2**53 - 1  # the largest integer a JavaScript client reads exactly
# The most characters a replayed delta holds (at most about 4 KB of UTF-8, 6 KB of escapes).
REPLAY_DELTA_CHARS = 1024


@dataclass(frozen=True)
class TurnEvent:
    id: int
    name: str
    data: Any

    def sse(self) -> str:
        payload = json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)
        return f"id: {self.id}\nevent: {self.name}\ndata: {payload}\n\n"


class StepClock:
    """The ids of a turn's steps: each step takes its `step_started` id, one id per character
    of its text (the deltas), and one for `step_completed`."""

    def __init__(self) -> None:
        self.base = FIRST_STEP_ID

    def started(self) -> int:
        return self.base

    def delta(self, end: int) -> int:
        return self.base + end

    def completed(self, length: int) -> int:
        return self.base + length + 1

    def advance(self, length: int) -> None:
        self.base += length + 2


def turn_started(turn: Turn) -> TurnEvent:
    return TurnEvent(
        TURN_STARTED_ID,
        "turn_started",
        {
            "turn_id": str(turn.pk),
            "session_id": str(turn.session_id),
            "turn_index": turn.turn_index,
            "mode": turn.mode,
        },
    )


def routing(turn: Turn) -> TurnEvent:
    # As the turn's body renders it (a turn routed before a field was recorded reads its default).
    return TurnEvent(ROUTING_ID, "routing", RoutingSerializer(turn.routing).data)


def step_started(clock: StepClock, *, sequence: int, agent: dict[str, str | None]) -> TurnEvent:
    return TurnEvent(clock.started(), "step_started", {"sequence": sequence, **agent})


def step_delta(clock: StepClock, *, sequence: int, text: str, start: int) -> TurnEvent:
    """The text of a step from character `start` on, ending where `text` ends."""
    return TurnEvent(
        clock.delta(start + len(text)), "step_delta", {"sequence": sequence, "text": text}
    )


def step_deltas(clock: StepClock, *, sequence: int, text: str) -> Iterator[TurnEvent]:
    """A step's stored text, replayed: deltas of at most REPLAY_DELTA_CHARS characters each,
    ending at the multiples of it (and at its end), so that every replay, from any host, cuts it
    alike. A client on a slow link that drops gets some of them whole before it drops, and its
    reconnect (`Last-Event-ID`) resumes after them: one delta of the whole text, which it had
    to get in one connection, could never arrive over such a link."""
    for start in range(0, len(text), REPLAY_DELTA_CHARS):
        piece = text[start : start + REPLAY_DELTA_CHARS]
        yield step_delta(clock, sequence=sequence, text=piece, start=start)


def step_completed(clock: StepClock, message: dict[str, Any]) -> TurnEvent:
    return TurnEvent(clock.completed(len(message["content"])), "step_completed", message)


def turn_ended(turn: Turn, body: dict[str, Any]) -> TurnEvent:
    if turn.status in (TurnStatus.COMPLETED, TurnStatus.PARTIAL):
        return TurnEvent(TURN_ENDED_ID, "turn_completed", body)
    # Ended from outside its steps: by what ended it (turns before `failure_code` have none).
    return turn_failed(code=turn.failure_code or f"turn_{turn.status}", body=body)


def turn_failed(*, code: str, body: dict[str, Any] | None) -> TurnEvent:
    return TurnEvent(
        TURN_ENDED_ID,
        "turn_failed",
        {"code": code, "message": _FAILURES.get(code, code), "turn": body},
    )


_FAILURES = {
    "turn_failed": "Every agent failed to answer.",
    "turn_interrupted": "The turn was interrupted: its server restarted, or it stopped making "
    "progress.",
    "turn_conflict": "The turn was taken over by a later request after it stalled.",
    # What the request that ran it answers too (a 409).
    "turn_cancelled": exceptions.TurnCancelled.default_message,
    "server_error": "The turn failed on the server.",
    "database_unavailable": "The turn lost its database connection (the database restarted or "
    "failed over): it ended interrupted. Post it again; with the same Idempotency-Key it runs "
    "afresh.",
}


def after(events: Iterable[TurnEvent], last_event_id: int) -> Iterator[TurnEvent]:
    """The events a client that has seen `last_event_id` has not, a delta it saw in part
    reduced to the rest of its text."""
    for event in events:
        if event.id <= last_event_id:
            continue
        if event.name == "step_delta":
            text = event.data["text"]
            start = event.id - len(text)  # the id just before its first character
            if last_event_id > start:
                seen = last_event_id - start
                event = TurnEvent(event.id, event.name, {**event.data, "text": text[seen:]})
        yield event


# --- replay from the database -------------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    events: list[TurnEvent]
    finished: bool
    # What the replay was built from (`turn_mark`): while it holds, the replay is current.
    mark: tuple
    # An ended turn whose ending waits for its bill (`settling`): read again at each poll.
    settling: bool = False


@dataclass(frozen=True)
class Mark:
    """A turn's progress (`Replay.mark`) and whether its session is still there."""

    progress: tuple
    session_alive: bool

    @property
    def running(self) -> bool:
        return self.progress[0] == TurnStatus.RUNNING


def turn_mark(turn_id) -> Mark | None:
    """A turn's progress in one indexed read: its status, when it last stored a step, and where
    the last saved chunk of the text it is streaming ends. Every write a replay shows moves
    one of them (a step's commit moves `progress_at`, a stream save adds a chunk further on, an
    ending the status). With it, whether its session was deleted (or its room): the answers
    went with it."""
    row = (
        Turn.objects.filter(pk=turn_id)
        .annotate(
            streamed=Subquery(_last_chunk(OuterRef("pk")).values("end")[:1]),
            session_alive=ExpressionWrapper(
                SessionQuerySet.alive_q("session__"), output_field=BooleanField()
            ),
        )
        .values_list("status", "progress_at", "streamed", "session_alive")
        .first()
    )
    if row is None:
        return None
    *progress, session_alive = row
    return Mark(progress=tuple(progress), session_alive=session_alive)


def turn_replay(turn: Turn) -> Replay:
    """Every event of `turn` so far, rebuilt from what it stored: its row, its messages, the
    pending ledger row of a call in flight and the text streamed so far for it, rendered as the
    API renders them."""
    turn.refresh_from_db()
    messages = list(Message.objects.filter(turn=turn).order_by("sequence"))
    events = [turn_started(turn)]
    if turn.routing is not None:
        events.append(routing(turn))
    clock = StepClock()
    answers = [message for message in messages if message.role == MessageRole.ASSISTANT]
    for message in answers:
        body = render_message(message)
        events.append(step_started(clock, sequence=message.sequence, agent=_agent_of(message)))
        events.extend(step_deltas(clock, sequence=message.sequence, text=message.content))
        events.append(step_completed(clock, body))
        clock.advance(len(message.content))
    if turn.status != TurnStatus.RUNNING:
        if settling(turn):
            return Replay(events=events, finished=False, mark=(), settling=True)
        events.append(turn_ended(turn, render_turn(turn, messages)))
        return Replay(events=events, finished=True, mark=(turn.status, turn.progress_at, None))
    # Read after the turn's row: a step that commits in between moves `progress_at` past the
    # mark, so the next poll rebuilds rather than trusting a replay that mixes the two.
    chunks = list(TurnStreamChunk.objects.filter(turn=turn).order_by("sequence", "start"))
    events.extend(
        _step_in_flight(
            turn, clock, next_sequence=_next_sequence(messages), streamed=_text_of(chunks)
        )
    )
    mark = (turn.status, turn.progress_at, _end_of(chunks[-1]) if chunks else None)
    return Replay(events=events, finished=False, mark=mark)


# How long a cancelled turn's ending waits for the worker that ran it to bill the words its
# stream had given: that worker is told at once in its own process, elsewhere at its next save.
SETTLE_SECONDS = 5.0


def settling(turn: Turn) -> bool:
    """Whether `turn`, cancelled while an answer streamed, still waits for the worker running
    it to bill the words that had gone out (its saved text goes once they are billed): its
    ending read meanwhile carried the usage without them, so a follower's `turn_failed`
    differed from the poster's. Not past `SETTLE_SECONDS` after its end (a worker gone leaves
    the text behind). Counted by the database's clock, which stamped the ending (`Turn.end`),
    in the read that looks for the text: on the follower's host's own clock, a host ten
    minutes behind kept its followers waiting ten minutes more."""
    if turn.failure_code != TurnFailure.CANCELLED or turn.completed_at is None:
        return False
    settles_from = Now() - timedelta(seconds=SETTLE_SECONDS)
    return TurnStreamChunk.objects.filter(turn=turn, turn__completed_at__gte=settles_from).exists()


def _last_chunk(turn):
    """The turn's last saved chunk, with where it ends (`end`): a save that retries one whose
    answer was lost rewrites that chunk, longer, at the same start (`_StreamedStep.save`), and
    its new words must move the mark as an appended chunk does."""
    return (
        TurnStreamChunk.objects.filter(turn=turn)
        .order_by("-sequence", "-start")
        .annotate(end=F("start") + Length("text"))
    )


def _end_of(chunk: TurnStreamChunk) -> int:
    return chunk.start + len(chunk.text)


def _text_of(chunks: list[TurnStreamChunk]) -> tuple[int, str] | None:
    """(the message, its text so far) of the step the chunks are of, the last one's: the text
    its saves stored, up to a chunk missing (a save that raced a recovery's delete: the turn
    has ended, and its replay reads no chunk)."""
    if not chunks:
        return None
    sequence = chunks[-1].sequence
    text: list[str] = []
    length = 0
    for chunk in chunks:
        if chunk.sequence != sequence:
            continue
        if chunk.start != length:
            break
        text.append(chunk.text)
        length += len(chunk.text)
    return sequence, "".join(text)


class TurnPoll:
    """A turn's replay, kept current by `poll`: while the turn stores nothing new (its provider
    is thinking) a poll costs one indexed read, not a rebuild of the whole turn. One serves
    every client following the turn in a process (`sessions_app.following`)."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.replay: Replay | None = None

    def poll(self) -> Replay | None:
        """The turn's replay if it changed since the last poll, else None. A session's delete
        (or its room's) ends its running turn as a cancel does: the replay then ends with its
        `turn_failed`, as a cancelled turn's. A turn of a deleted session still running (claimed
        as the delete committed) is not followed further: the replay as it was, finished (a
        reconnect is a 404)."""
        if self.replay is not None:
            mark = turn_mark(self.turn.pk)
            if mark is not None and not mark.session_alive and mark.running:
                self.replay = replace(self.replay, finished=True)
                return self.replay
            if mark is not None and mark.progress == self.replay.mark and not self.replay.settling:
                return None
        self.replay = turn_replay(self.turn)
        return self.replay


class TurnFollower:
    """One client following a turn from the database on its own: each `poll` gives the events
    it has not seen."""

    def __init__(self, turn: Turn, *, last_event_id: int = 0) -> None:
        self.source = TurnPoll(turn)
        self.last_event_id = last_event_id

    def poll(self) -> tuple[list[TurnEvent], bool]:
        """(the events after the last one given, whether the turn has ended)."""
        replay = self.source.poll()
        if replay is None:
            return [], False
        news = list(after(replay.events, self.last_event_id))
        if news:
            self.last_event_id = news[-1].id
        return news, replay.finished


def _step_in_flight(
    turn: Turn, clock: StepClock, *, next_sequence: int, streamed: tuple[int, str] | None
) -> list[TurnEvent]:
    call = (
        LlmCallEvent.objects.filter(turn=turn, purpose=CallPurpose.AGENT, status=CallStatus.PENDING)
        .order_by("-created_at")
        .first()
    )
    if call is None:
        return []
    agent = next(
        (entry for entry in turn.roster if entry.get("agent_key") == call.agent_key),
        {"agent_key": call.agent_key, "name": call.agent_key},
    )
    events = [
        step_started(
            clock,
            sequence=next_sequence,
            agent={
                "agent_id": str(agent["agent_id"]) if agent.get("agent_id") else None,
                "agent_key": agent["agent_key"],
                "agent_name": agent.get("name", ""),
                "model_alias": call.model_alias,
            },
        )
    ]
    if streamed is not None and streamed[0] == next_sequence and streamed[1]:
        events.extend(step_deltas(clock, sequence=next_sequence, text=streamed[1]))
    return events


def _agent_of(message: Message) -> dict[str, str | None]:
    return {
        "agent_id": str(message.agent_id) if message.agent_id else None,
        "agent_key": message.agent_key,
        "agent_name": message.agent_name,
        "model_alias": message.model_alias,
    }


def _next_sequence(messages: list[Message]) -> int:
    return (messages[-1].sequence if messages else 0) + 1
