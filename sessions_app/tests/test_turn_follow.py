"""Following a running turn from the database (`GET turns/{id}/events` on any host): each poll
gives what the client has not seen, a poll while the turn stores nothing costs one read, and
the followers of a turn in one process share one poll."""

import asyncio
import gc
import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token

from pantheon import draining
from pantheon.db import database
from rooms.services import room_delete
from sessions_app import events, following
from sessions_app.models import Message, Turn, TurnFailure, TurnStatus, TurnStreamChunk
from sessions_app.services import session_delete
from sessions_app.tests.conftest import direct_turn_in_flight
from usage.models import CallPurpose, CallStatus, LlmCallEvent
from usage.services import usage_call_open

pytestmark = pytest.mark.django_db


@pytest.fixture
def running_turn(owner, make_agent, make_session):
    """A direct turn whose agent call is in flight: the turn, the user's message and the call's
    pending ledger row, as the claim commits them."""
    agent = make_agent(owner, "ada")
    return _in_flight(owner, agent, make_session(owner, agent=agent))


def _in_flight(owner, agent, session) -> Turn:
    turn = direct_turn_in_flight(owner, agent, session)
    usage_call_open(
        user=owner,
        model_alias=agent.model_alias,
        pricing=None,
        purpose=CallPurpose.AGENT,
        session_id=session.pk,
        turn_id=turn.pk,
        agent_key=agent.agent_key,
    )
    return turn


def _stream(turn: Turn, text: str) -> None:
    """The text so far of the step in flight saved, as its saves append it (its new words)."""
    saved = "".join(
        TurnStreamChunk.objects.filter(turn=turn).order_by("start").values_list("text", flat=True)
    )
    assert text.startswith(saved)
    TurnStreamChunk.objects.create(turn=turn, sequence=2, start=len(saved), text=text[len(saved) :])


def _answer(turn: Turn, content: str) -> None:
    """The agent's answer as the step stores it."""
    Message.objects.create(
        session=turn.session,
        turn=turn,
        sequence=2,
        role="assistant",
        agent_key="ada",
        agent_name=turn.roster[0]["name"],
        model_alias=turn.roster[0]["model_alias"],
        content=content,
    )


def _names(news: list) -> list[str]:
    return [event.name for event in news]


def test_a_follower_gets_each_event_once_and_an_idle_poll_costs_one_read(
    running_turn, django_assert_num_queries
):
    follower = events.TurnFollower(running_turn)

    news, finished = follower.poll()
    assert _names(news) == ["turn_started", "step_started"] and not finished

    # The provider is thinking: nothing stored, nothing sent, one indexed read.
    with django_assert_num_queries(1):
        assert follower.poll() == ([], False)

    _stream(running_turn, "Hel")
    news, _ = follower.poll()
    assert [(event.name, event.data["text"]) for event in news] == [("step_delta", "Hel")]
    _stream(running_turn, "Hello")
    news, _ = follower.poll()
    assert [event.data["text"] for event in news] == ["lo"]
    with django_assert_num_queries(1):
        assert follower.poll() == ([], False)

    # The step commits its message and the turn ends: the rest of the text, then the end.
    _answer(running_turn, "Hello there")
    TurnStreamChunk.objects.filter(turn=running_turn).delete()
    assert Turn.objects.filter(pk=running_turn.pk).end(TurnStatus.COMPLETED) == 1
    news, finished = follower.poll()
    assert _names(news) == ["step_delta", "step_completed", "turn_completed"] and finished
    assert news[0].data["text"] == " there"
    assert news[-1].data["status"] == "completed"


def test_a_step_stored_without_streaming_is_seen_at_the_next_poll(running_turn):
    """A JSON turn saves no stream: its step's commit alone (progress_at) must wake a follower."""
    follower = events.TurnFollower(running_turn)
    follower.poll()
    _answer(running_turn, "Done.")
    LlmCallEvent.objects.filter(turn=running_turn).update(status=CallStatus.SUCCESS)
    Turn.objects.filter(pk=running_turn.pk).update(progress_at=timezone.now())

    news, finished = follower.poll()
    assert _names(news) == ["step_delta", "step_completed"] and not finished


def test_a_follower_resumes_after_the_last_event_id_it_was_given(running_turn):
    _stream(running_turn, "Hello")
    first = events.TurnFollower(running_turn)
    delta = next(event for event in first.poll()[0] if event.name == "step_delta")

    resumed = events.TurnFollower(running_turn, last_event_id=delta.id - 2)
    news, _ = resumed.poll()
    assert [(event.name, event.data["text"]) for event in news] == [("step_delta", "lo")]


def test_a_save_retried_at_the_same_start_wakes_a_follower(running_turn):
    """A save whose insert committed but whose answer was lost is retried by the next with more
    words, at the same start (the one upsert `_StreamedStep.save` makes): the chunk is rewritten
    longer. The mark (where the last chunk started) did not move, so a follower on another host
    got none of those words until the next save or the step's commit."""
    _stream(running_turn, "Hel")
    follower = events.TurnFollower(running_turn)
    assert "".join(e.data["text"] for e in follower.poll()[0] if e.name == "step_delta") == "Hel"

    TurnStreamChunk.objects.bulk_create(
        [TurnStreamChunk(turn=running_turn, sequence=2, start=0, text="Hello")],
        update_conflicts=True,
        unique_fields=["turn", "sequence", "start"],
        update_fields=["text"],
    )
    news, _ = follower.poll()
    assert [(event.name, event.data["text"]) for event in news] == [("step_delta", "lo")]


def test_a_long_step_in_flight_is_followed_in_bounded_deltas_from_its_saved_chunks(
    running_turn, django_assert_num_queries
):
    """The saves' chunks (three here, of 1,500 characters each) make the step's text so far; a
    follower that joins gets it in deltas of at most 1,024 characters, one that resumes in the
    middle of one the rest, and an idle poll is still one read."""
    text = "".join(f"{index:05d}" for index in range(900))  # 4,500 characters, none alike
    for end in (1500, 3000, 4500):
        _stream(running_turn, text[:end])

    follower = events.TurnFollower(running_turn)
    news, _ = follower.poll()
    deltas = [event for event in news if event.name == "step_delta"]
    assert [len(event.data["text"]) for event in deltas] == [1024] * 4 + [404]
    assert "".join(event.data["text"] for event in deltas) == text
    with django_assert_num_queries(1):
        assert follower.poll() == ([], False)

    resumed = events.TurnFollower(running_turn, last_event_id=deltas[1].id - 24)
    news, _ = resumed.poll()
    assert text[:2024] + "".join(event.data["text"] for event in news) == text


def test_a_follower_of_a_deleted_session_hears_its_turn_end_as_cancelled(running_turn):
    """The delete ends the running turn as a cancel does (`turn_cancelled`): the follower's
    stream ends with that `turn_failed`, as the poster's does. Before, the turn ran on (and was
    billed) and the follower's stream was cut with no end event."""
    follower = events.TurnFollower(running_turn)
    follower.poll()
    session_delete(session=running_turn.session)

    news, finished = follower.poll()
    assert _names(news) == ["turn_failed"] and finished
    assert (news[0].data["code"], news[0].data["turn"]["status"]) == (
        "turn_cancelled",
        "interrupted",
    )
    assert Turn.objects.get(pk=running_turn.pk).status == TurnStatus.INTERRUPTED


def test_a_follower_of_a_session_in_a_deleted_room_hears_its_turn_end_as_cancelled(
    owner, make_agent, make_room, make_session
):
    agent = make_agent(owner, "ada")
    room = make_room(owner, agents=[agent])
    turn = _in_flight(owner, agent, make_session(owner, room=room))
    follower = events.TurnFollower(turn)
    follower.poll()
    _stream(turn, "Hel")
    assert _names(follower.poll()[0]) == ["step_delta"]

    room_delete(room=room)
    assert follower.poll() == ([], False)  # its worker bills "Hel" first
    TurnStreamChunk.objects.filter(turn=turn).delete()  # as the worker does once it has
    news, finished = follower.poll()
    assert _names(news) == ["turn_failed"] and finished
    assert news[0].data["code"] == "turn_cancelled"


def test_a_turn_still_running_in_a_deleted_session_is_followed_no_further(running_turn):
    """A turn that runs on in a deleted session (claimed as the delete committed: the delete
    could not see it) gives its followers nothing more; their streams end."""
    follower = events.TurnFollower(running_turn)
    follower.poll()
    type(running_turn.session).objects.filter(pk=running_turn.session_id).update(
        deleted_at=timezone.now()
    )
    _stream(running_turn, "Hello")

    assert follower.poll() == ([], True)
    assert Turn.objects.get(pk=running_turn.pk).status == TurnStatus.RUNNING


# --- many clients following one turn in one process ---------------------------------------------
#
# In process, through the API: the test's thread serves every database section (`async_to_sync`),
# inside the test's transaction, and moves the turn on between them as its engine would.


@pytest.fixture
def fast_polls(settings):
    settings.PANTHEON_SSE_POLL_SECONDS = 0.01


@pytest.fixture
def token_headers(owner):
    return {"Authorization": f"Token {Token.objects.create(user=owner).key}"}


def _parse(chunk: bytes) -> list[events.TurnEvent]:
    parsed = []
    for block in chunk.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            parsed.append(
                events.TurnEvent(int(fields["id"]), fields["event"], json.loads(fields["data"]))
            )
    return parsed


async def _open(client: AsyncClient, turn: Turn, headers: dict, last_event_id: int | None = None):
    extra = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    response = await client.get(
        f"/api/v1/turns/{turn.pk}/events",
        headers={**headers, **extra, "Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    return response


async def _read(response, into: list) -> None:
    async for chunk in response.streaming_content:
        into.extend(_parse(chunk))


async def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def _finish(turn: Turn, content: str) -> None:
    """The step commits its answer and the turn ends, as the engine's last sections do."""
    _answer(turn, content)
    TurnStreamChunk.objects.filter(turn=turn).delete()
    LlmCallEvent.objects.filter(turn=turn).update(status=CallStatus.SUCCESS)
    assert Turn.objects.filter(pk=turn.pk).end(TurnStatus.COMPLETED) == 1


def _coalesced(received: list[events.TurnEvent]) -> list[tuple]:
    """(id, name, data) of each event, the consecutive deltas of a step as one (a follower may
    get a step's text in more or fewer pieces, depending on when it was saved)."""
    merged: list[tuple] = []
    for event in received:
        if event.name == "step_delta" and merged and merged[-1][1] == "step_delta":
            _, _, data = merged.pop()
            event = events.TurnEvent(
                event.id, event.name, {**data, "text": data["text"] + event.data["text"]}
            )
        merged.append((event.id, event.name, event.data))
    return merged


def _rebuilds(queries: CaptureQueriesContext) -> int:
    """The polls that rebuilt the turn's events: each reads the turn's messages once (a
    request's own look-up of the turn reads them for a list of turns, `turn_id IN`)."""
    return sum(
        query["sql"].startswith("SELECT")
        and 'FROM "sessions_app_message" WHERE "sessions_app_message"."turn_id" = ' in query["sql"]
        for query in queries.captured_queries
    )


@pytest.mark.parametrize("followers", [1, 20])
def test_many_followers_of_a_turn_cost_the_database_what_one_does(
    running_turn, token_headers, fast_polls, followers
):
    """Each follower polled the database on its own: 20 followers of a streaming turn rebuilt
    it 20 times at each save. Now one poll per turn and process serves them all."""
    received: list[list] = [[] for _ in range(followers)]

    def all_got(*names):
        return lambda: all([e.name for e in mine] == list(names) for mine in received)

    async def scenario() -> None:
        client = AsyncClient()
        responses = [await _open(client, running_turn, token_headers) for _ in received]
        readers = [
            asyncio.create_task(_read(response, mine))
            for response, mine in zip(responses, received, strict=True)
        ]
        await _until(all_got("turn_started", "step_started"), "the turn's start")
        await database(_stream)(running_turn, "Hel")
        await _until(all_got("turn_started", "step_started", "step_delta"), "the first save")
        await database(_stream)(running_turn, "Hello")
        await _until(lambda: all(len(mine) == 4 for mine in received), "the second save")
        await database(_finish)(running_turn, "Hello there")
        await asyncio.gather(*readers)
        assert following.watched_turns() == 0

    with CaptureQueriesContext(connection) as queries:
        async_to_sync(scenario)()

    # The start, two saves and the end: what one follower costs, whatever their number.
    assert _rebuilds(queries) == 4
    first = received[0]
    assert [(e.name, e.data.get("text")) for e in first] == [
        ("turn_started", None),
        ("step_started", None),
        ("step_delta", "Hel"),
        ("step_delta", "lo"),
        ("step_delta", " there"),
        ("step_completed", None),
        ("turn_completed", None),
    ]
    assert all(mine == first for mine in received)
    assert first[-1].data["status"] == "completed"


def test_followers_joining_mid_turn_each_get_what_follows_their_last_event_id(
    running_turn, token_headers, fast_polls
):
    received: dict[int, list] = {}

    async def scenario() -> None:
        client = AsyncClient()
        readers = []

        async def join(last_event_id: int | None) -> None:
            mine = received.setdefault(last_event_id or 0, [])
            response = await _open(client, running_turn, token_headers, last_event_id)
            readers.append(asyncio.create_task(_read(response, mine)))

        await join(None)
        await database(_stream)(running_turn, "Hello wor")
        await _until(lambda: len(received[0]) == 3, "the first save")
        started, delta = received[0][1], received[0][2]
        # After the turn's start, after the step's start, in the middle of the delta, after it.
        for last_event_id in (events.TURN_STARTED_ID, started.id, started.id + 2, delta.id):
            await join(last_event_id)
        await _until(lambda: len(received[started.id + 2]) == 1, "the late followers")
        await database(_stream)(running_turn, "Hello world")
        await database(_finish)(running_turn, "Hello world!")
        await asyncio.gather(*readers)

    async_to_sync(scenario)()

    replay = events.turn_replay(Turn.objects.get(pk=running_turn.pk))
    assert replay.finished
    assert received.keys() == {0, 1, 3, 5, 12}
    for last_event_id, mine in received.items():
        expected = list(events.after(replay.events, last_event_id))
        assert _coalesced(mine) == _coalesced(expected), last_event_id
    # It had seen "He" of "Hello wor": the rest of that delta at once, then the rest of the text.
    assert received[5][0].data["text"] == "llo wor"
    assert _coalesced(received[5])[0][2]["text"] == "llo world!"
    assert _coalesced(received[12])[0][2]["text"] == "ld!"


def test_a_follower_that_hangs_up_leaves_the_others_and_the_last_stops_the_poll(
    running_turn, token_headers, fast_polls
):
    """One hangs up while it waits (its request is cancelled), one in the middle of the
    stream (closed, then dropped): the third follows on; when it hangs up too, nothing polls
    the turn any more, though it still runs."""
    received: list[list] = [[], [], []]

    async def scenario() -> None:
        client = AsyncClient()
        responses = [await _open(client, running_turn, token_headers) for _ in received]
        readers = [
            asyncio.create_task(_read(response, mine))
            for response, mine in zip(responses[:2], received[:2], strict=True)
        ]
        stream = responses[2].streaming_content
        received[2].extend(_parse(await anext(stream)))
        await _until(lambda: all(len(mine) == 2 for mine in received[:2]), "the turn's start")
        assert following.watched_turns() == 1

        readers[0].cancel()
        await stream.aclose()
        del stream, responses[2]
        gc.collect()
        await database(_stream)(running_turn, "Hel")
        await _until(lambda: len(received[1]) == 3, "the save")
        assert received[1][-1].data["text"] == "Hel"
        assert following.watched_turns() == 1

        readers[1].cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await _until(lambda: following.watched_turns() == 0, "the last follower to leave")
        await _until(lambda: asyncio.all_tasks() == {asyncio.current_task()}, "the poller to stop")

    async_to_sync(scenario)()
    assert Turn.objects.get(pk=running_turn.pk).status == TurnStatus.RUNNING


def test_a_followers_stream_ends_cancelled_when_its_session_is_deleted_and_a_reconnect_is_a_404(
    running_turn, token_headers, fast_polls
):
    received: list = []

    async def scenario() -> None:
        client = AsyncClient()
        reader = asyncio.create_task(
            _read(await _open(client, running_turn, token_headers), received)
        )
        await _until(lambda: len(received) == 2, "the turn's start")
        await database(session_delete)(session=running_turn.session)
        await database(_stream)(running_turn, "Hello")
        await asyncio.wait_for(reader, 10)  # the stream ended by itself
        await _until(lambda: following.watched_turns() == 0, "the poll to stop")
        again = await client.get(
            f"/api/v1/turns/{running_turn.pk}/events",
            headers={
                **token_headers,
                "Last-Event-ID": str(received[-1].id),
                "Accept": "text/event-stream",
            },
        )
        assert again.status_code == 404

    async_to_sync(scenario)()
    assert [event.name for event in received] == ["turn_started", "step_started", "turn_failed"]
    assert received[-1].data["code"] == "turn_cancelled"
    assert Turn.objects.get(pk=running_turn.pk).status == TurnStatus.INTERRUPTED


def _stop_while_followed(turn, headers, monkeypatch, received: list, meanwhile=None) -> None:
    """A follower of `turn` reads into `received` until its start is in; then its worker
    stops (and `meanwhile(reader)` runs): its stream must end by itself, its poll stop."""

    async def scenario() -> None:
        response = await _open(AsyncClient(), turn, headers)
        reader = asyncio.create_task(_read(response, received))
        await _until(lambda: len(received) == 2, "the turn's start")
        monkeypatch.setattr(draining, "_stopping", True)
        if meanwhile is not None:
            await meanwhile(reader)
        await asyncio.wait_for(reader, 10)  # the stream ended by itself
        await _until(lambda: following.watched_turns() == 0, "the poll to stop")

    async_to_sync(scenario)()


def test_a_stopping_worker_ends_the_stream_of_a_turn_that_streams_on(
    running_turn, token_headers, fast_polls, monkeypatch
):
    """The turn's text grows at every poll (its worker, on another host, is streaming): the
    follower's stream went on past the stop, a new event each time, and held the stopping
    worker until its graceful timeout or the turn's last word."""
    received: list = []

    async def streams_on(reader: asyncio.Task) -> None:
        for word in range(1, 41):  # 2 s of words at a poll each, unless the stream ends
            if reader.done():
                break
            await database(_stream)(running_turn, "word " * word)
            await asyncio.sleep(0.05)

    _stop_while_followed(running_turn, token_headers, monkeypatch, received, streams_on)
    names = [event.name for event in received]
    assert names[:2] == ["turn_started", "step_started"]
    assert names.count("step_delta") <= 2, f"{names.count('step_delta')} deltas after the stop"
    assert Turn.objects.get(pk=running_turn.pk).status == TurnStatus.RUNNING


def test_a_stopping_worker_ends_its_followers_streams_for_them_to_resume_elsewhere(
    running_turn, token_headers, fast_polls, monkeypatch
):
    """A follower of a turn is not the worker's to finish: when the worker stops (a deploy), its
    stream ends, with no end event, and the client resumes on another host from its
    Last-Event-ID. Before, it stayed open until uvicorn cancelled it at the end of the graceful
    timeout, each one logging an ERROR."""
    received: list = []

    _stop_while_followed(running_turn, token_headers, monkeypatch, received)
    assert [event.name for event in received] == ["turn_started", "step_started"]
    assert Turn.objects.get(pk=running_turn.pk).status == TurnStatus.RUNNING


def test_a_cancelled_turns_ending_waits_for_the_bill_of_the_words_it_had_streamed(running_turn):
    """A cancel ends the turn at once; the worker running it bills the words its stream had
    given a moment later. A follower that read the ending in between sent a `turn_failed`
    with the usage before that bill, unlike the poster's (a live test saw it under load). The
    ending now waits while the streamed text is there: the worker deletes it once billed."""
    follower = events.TurnFollower(running_turn)
    follower.poll()
    _stream(running_turn, "Hello there")
    follower.poll()
    ended = Turn.objects.filter(pk=running_turn.pk).end(
        TurnStatus.INTERRUPTED, failure=TurnFailure.CANCELLED
    )
    assert ended == 1

    assert follower.poll() == ([], False)  # the bill has not landed

    # The worker bills the words (the turn's totals follow its rows), then drops the text.
    LlmCallEvent.objects.filter(turn=running_turn).update(
        status=CallStatus.ERROR, output_tokens=2, credits=Decimal("0.25")
    )
    Turn.objects.filter(pk=running_turn.pk).update(output_tokens=2, credits=Decimal("0.25"))
    TurnStreamChunk.objects.filter(turn=running_turn).delete()
    news, finished = follower.poll()

    assert _names(news) == ["turn_failed"] and finished
    assert news[0].data["turn"]["usage"]["credits"] == "0.2500000000"


def test_a_cancelled_turns_ending_waits_no_longer_than_its_settling_time(running_turn):
    """A worker gone before its bill leaves the text behind: the ending goes out once the
    settling time has passed, with the usage as it stands."""
    _stream(running_turn, "Hello")
    long_ago = timezone.now() - timedelta(seconds=events.SETTLE_SECONDS + 1)
    Turn.objects.filter(pk=running_turn.pk).end(
        TurnStatus.INTERRUPTED, failure=TurnFailure.CANCELLED, now=long_ago
    )

    news, finished = events.TurnFollower(running_turn).poll()

    assert _names(news)[-1] == "turn_failed" and finished
