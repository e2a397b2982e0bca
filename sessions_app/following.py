"""Clients following a running turn (`GET turns/{id}/events`) share one poll of the database per
turn and process.

The first follower of a running turn starts its `TurnWatch`: a task that polls the turn every
`PANTHEON_SSE_POLL_SECONDS` (one indexed read while the turn stores nothing, a rebuild of its
events when it does: `events.TurnPoll`) and keeps the latest replay, one turn's events. Later
followers in the process join it. Each follower reads that replay at its own pace from its own
Last-Event-ID (`events.after`) and sends its own heartbeats, so a slow client holds up no other
and gets what a poll of its own would have given it. The watch stops polling once the turn has
ended (its followers still read its last replay) or when its last follower leaves (the client
hung up: its stream is closed or cancelled).

Nothing is shared beyond the process: another host's followers have a watch of their own,
polling the same rows (PostgreSQL stays the only shared state).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from pantheon import draining, exceptions, logging_context
from pantheon.capacity import PROCESS
from pantheon.db import database
from pantheon.threads import own_thread
from sessions_app import events
from sessions_app.models import Turn

logger = logging.getLogger(__name__)

HEARTBEAT = ": heartbeat\n\n"
# How often a waiting follower looks whether its worker is stopping.
_LOOK_SECONDS = 1.0


class TurnWatch:
    """One running turn followed in this process: one poller, any number of followers. Used
    from its event loop's thread only."""

    def __init__(self, turn: Turn, *, watches: dict) -> None:
        self.turn = turn
        self.replay: events.Replay | None = None  # the latest poll's, None before the first
        self.error: BaseException | None = None  # what stopped the poller, other than an end
        self.followers = 0
        self._watches = watches  # the loop's watches, which this one leaves when it stops
        self._news = asyncio.Event()
        self._poller = asyncio.get_running_loop().create_task(self._poll_until_ended())

    @property
    def polling(self) -> bool:
        return not self._poller.done()

    def leave(self) -> None:
        self.followers -= 1
        if self.followers <= 0:
            self._poller.cancel()
            self._forget()

    async def changed(self, seen: events.Replay | None, timeout: float) -> bool:
        """Whether the replay is no longer `seen` (or the poller stopped), waiting for it up to
        `timeout` seconds."""
        if self.replay is not seen or not self.polling:
            return True
        news = self._news
        try:
            async with asyncio.timeout(timeout):
                await news.wait()
        except TimeoutError:
            return False
        return True

    def _publish(self) -> None:
        news, self._news = self._news, asyncio.Event()
        news.set()

    def _forget(self) -> None:
        if self._watches.get(self.turn.pk) is self:
            del self._watches[self.turn.pk]

    async def _poll_until_ended(self) -> None:
        # Its log lines name the turn, not the request of the follower that came first; its
        # sections run on a thread of its own, not on that request's (it may leave first).
        with logging_context.request_scope(session_id=self.turn.session_id, turn_id=self.turn.pk):
            try:
                async with own_thread():
                    await self._poll(events.TurnPoll(self.turn))
            except Exception as exc:
                # Its followers' streams break off with it, as each one's own poll's did.
                logger.exception("turn %s: following it failed", self.turn.pk)
                self.error = exc
            finally:
                self._forget()
                self._publish()

    async def _poll(self, source: events.TurnPoll) -> None:
        poll = database(source.poll, queue_as_new=True)
        while True:
            try:
                replay = await poll()
            except DatabaseError as exc:
                # Its connection dropped, say: nothing of it was given out; the turn goes on
                # without its followers, so look again at the next poll.
                logger.warning(
                    "turn %s: a replay's poll failed (%s); polling again", self.turn.pk, exc
                )
                replay = None
            if replay is not None:
                self.replay = replay
                self._publish()
                if replay.finished:
                    return
            await asyncio.sleep(settings.PANTHEON_SSE_POLL_SECONDS)


# The turns followed in this process, by event loop (one per worker; tests run several).
_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict] = weakref.WeakKeyDictionary()


def _join(turn: Turn) -> TurnWatch:
    watches = _watches.setdefault(asyncio.get_running_loop(), {})
    watch = watches.get(turn.pk)
    if watch is None:
        watch = watches[turn.pk] = TurnWatch(turn, watches=watches)
    watch.followers += 1
    return watch


@dataclass(eq=False)
class FollowPlace:
    """One follow stream's place among its user's; `taken` once a newer follow of the same turn
    took it over (its stream ends at its next look)."""

    turn_id: Any
    taken: asyncio.Event = field(default_factory=asyncio.Event)


# Follow streams each user holds open in this process, oldest first (the event loop's thread
# only).
_follows_by_user: defaultdict[int, list[FollowPlace]] = defaultdict(list)


def follow_place(user_id: int, turn_id) -> FollowPlace | None:
    """Take one of the user's places for a follow stream of `turn_id`, given back when its
    request ends, however it ends. Past `PANTHEON_MAX_FOLLOWS_PER_USER`, a follow of a turn the
    user already follows takes the place of their oldest stream of it, which ends: a client
    whose network dropped its streams without a word (heartbeats into a dead connection's
    buffers fail only when TCP gives up, minutes on) reconnects to the turn it followed. Any
    other is refused. A request the ASGI handler does not serve (Django's test client) holds
    none: None."""
    limit = settings.PANTHEON_MAX_FOLLOWS_PER_USER
    if not limit:
        return None
    held = _follows_by_user[user_id]
    oldest = None
    if len(held) >= limit:
        oldest = next((place for place in held if place.turn_id == turn_id), None)
        if oldest is None:
            raise exceptions.TooManyFollows(limit)
    place = FollowPlace(turn_id)
    if not PROCESS.at_end(partial(_give_back, user_id, place)):
        if not held:
            del _follows_by_user[user_id]
        return None
    if oldest is not None:
        held.remove(oldest)
        oldest.taken.set()
    held.append(place)
    return place


def _give_back(user_id: int, place: FollowPlace) -> None:
    held = _follows_by_user.get(user_id)
    if held is None:
        return
    if place in held:  # not when a newer follow took it over
        held.remove(place)
    if not held:
        del _follows_by_user[user_id]


def watched_turns() -> int:
    """How many turns this process (its running event loop) polls for followers."""
    return len(_watches.get(asyncio.get_running_loop(), {}))


async def turn_events(
    turn: Turn,
    *,
    last_event_id: int,
    answer: dict[str, Any] | None = None,
    place: FollowPlace | None = None,
    replay: events.Replay | None = None,
) -> AsyncIterator[str]:
    """A turn's events after `last_event_id` as Server-Sent Events: those of a finished turn
    from one read, those of a running one as it stores them, from its process-wide watch.
    `answer`: the body the request that ran the (finished) turn answered with, which its last
    event carries instead of the turn as read now (an idempotent replay: its `balance`).
    `place`: the follow's (`follow_place`): the stream ends once another follow takes it.
    `replay`: an ended turn's events, read before the stream began (a database lost then is
    the request's 503, not a stream broken off after its headers); without them, the turn is
    followed as a running one is, to its end."""
    if replay is not None and replay.finished:
        replayed = replay.events
        if answer is not None:
            replayed = [*replayed[:-1], events.turn_ended(turn, answer)]
        for event in events.after(replayed, last_event_id):
            yield event.sse()
        return
    watch = _join(turn)
    try:
        async for text in _follow(watch, last_event_id, place):
            yield text
    finally:
        watch.leave()


async def _follow(
    watch: TurnWatch, last_event_id: int, place: FollowPlace | None
) -> AsyncIterator[str]:
    heartbeat = settings.PANTHEON_SSE_HEARTBEAT_SECONDS
    loop = asyncio.get_running_loop()
    seen: events.Replay | None = None
    quiet_until = loop.time() + heartbeat
    while True:
        replay = watch.replay
        if replay is not None and replay is not seen:
            seen = replay
            for event in events.after(replay.events, last_event_id):
                yield event.sse()
                last_event_id = event.id
                quiet_until = loop.time() + heartbeat
            if replay.finished or draining.stopping():
                # Stopping: what it had is sent; the client resumes elsewhere (below), even
                # from a turn that streams on (it would hold the worker to its last word).
                return
            continue  # it may have changed while this follower sent
        if not watch.polling:
            # Stopped before the turn's end: by an error (a bug, a turn gone), told as today's
            # own poll would have, by the stream breaking off.
            raise RuntimeError(f"following turn {watch.turn.pk} stopped") from watch.error
        if place is not None and place.taken.is_set():
            # A newer follow of this turn by its user took its place: the client that opened
            # this one is gone, or will resume from its Last-Event-ID.
            return
        if await watch.changed(seen, timeout=min(quiet_until - loop.time(), _LOOK_SECONDS)):
            continue
        if draining.stopping():
            # The worker is stopping: end the stream before uvicorn cancels it; the client
            # resumes on another host from its Last-Event-ID.
            return
        if loop.time() >= quiet_until:
            yield HEARTBEAT
            quiet_until = loop.time() + heartbeat
