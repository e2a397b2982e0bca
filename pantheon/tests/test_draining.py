"""A stopping worker's wait for the work detached from its requests (`pantheon.draining`), and
its heartbeat to gunicorn meanwhile. The whole of it against a live server and PostgreSQL is
`sessions_app/tests/test_turn_drain.py`."""

import asyncio
import time
from email.utils import parsedate_to_datetime

import pytest
from uvicorn.config import Config
from uvicorn.server import Server

from pantheon import draining
from pantheon.testing.servers import free_port
from pantheon.workers import DrainingServer


@pytest.fixture(autouse=True)
def _not_stopping_after(monkeypatch):
    """A drain marks the process stopping (`draining.stopping`); the tests after these run in
    a process that is not."""
    monkeypatch.setattr(draining, "_stopping", False)


def run(coroutine):
    return asyncio.run(coroutine)


async def _ends_after(seconds: float, log: list) -> str:
    try:
        await asyncio.sleep(seconds)
        log.append("ended")
        return "done"
    except asyncio.CancelledError:
        await asyncio.sleep(0)  # its clean-up may await (a database section)
        log.append("cancelled, cleaned up")
        raise


@pytest.mark.parametrize(
    ("graceful", "expected"),
    [(30, (25.0, 2.5)), (8, (4.0, 2.0)), (2, (1.0, 0.5))],
)
def test_the_drain_and_its_wind_down_end_inside_gunicorns_graceful_timeout(graceful, expected):
    assert draining.drain_seconds(graceful) == expected
    assert sum(expected) < graceful


def test_work_that_ends_within_the_drain_ends_as_usual():
    log: list = []

    async def scenario():
        task = draining.detach(_ends_after(0.2, log))
        cancelled = await draining.drain(seconds=5, wind_down=1)
        return cancelled, task.result()

    assert run(scenario()) == (0, "done")
    assert log == ["ended"] and draining.running() == 0


def test_work_past_the_drain_is_cancelled_and_records_its_ending():
    log: list = []

    async def scenario():
        slow = draining.detach(_ends_after(60, log))
        quick = draining.detach(_ends_after(0.1, log))
        cancelled = await draining.drain(seconds=0.5, wind_down=1)
        return cancelled, slow.cancelled(), quick.result()

    assert run(scenario()) == (1, True, "done")
    assert log == ["ended", "cancelled, cleaned up"] and draining.running() == 0


def test_the_warning_names_the_turns_the_drain_cancels(caplog):
    """It said "3 detached task(s) still running after 25 s are cancelled", naming no turn:
    the logs did not say which turns a deploy interrupted."""
    log: list = []

    async def turn(key: str) -> None:
        with draining.stoppable(key, lambda: None):
            await _ends_after(60, log)

    async def scenario():
        draining.detach(turn("7b7c0d4e-turn-b"))
        draining.detach(turn("1f0a9e2c-turn-a"))
        draining.detach(_ends_after(60, log))  # detached work that is no turn
        await asyncio.sleep(0)
        return await draining.drain(seconds=0.2, wind_down=1)

    with caplog.at_level("WARNING", logger="pantheon.draining"):
        assert run(scenario()) == 3
    assert caplog.messages[-1].endswith("are cancelled (turns 1f0a9e2c-turn-a, 7b7c0d4e-turn-b)")


def test_a_second_signal_cuts_the_wait_short():
    log: list = []

    async def scenario():
        draining.detach(_ends_after(60, log))
        await asyncio.sleep(0)  # under way
        loop = asyncio.get_running_loop()
        started = loop.time()
        cancelled = await draining.drain(seconds=30, wind_down=1, give_up=lambda: True)
        return cancelled, loop.time() - started

    cancelled, took = run(scenario())
    assert cancelled == 1 and took < 5  # not the 30 s drain
    assert log == ["cancelled, cleaned up"]


def test_a_draining_worker_keeps_telling_gunicorn_it_is_alive(monkeypatch):
    """uvicorn's main loop notifies gunicorn; it has ended when the drain runs. A master that
    goes on (SIGHUP) kills a worker silent for GUNICORN_TIMEOUT, cutting a longer drain short."""
    notified: list = []

    async def notify():
        notified.append(asyncio.get_running_loop().time())

    monkeypatch.setattr("pantheon.workers.HEARTBEAT_SECONDS", 0.1)
    closed: list = []

    async def uvicorns_own_shutdown(self, sockets=None):  # no connections open
        closed.append(True)

    monkeypatch.setattr(Server, "shutdown", uvicorns_own_shutdown)
    log: list = []

    async def scenario():
        server = DrainingServer(
            Config(app=None, callback_notify=notify), drain_seconds=5, wind_down_seconds=1
        )
        draining.detach(_ends_after(0.6, log))
        await server.shutdown()

    run(scenario())
    assert closed == [True]
    assert log == ["ended"]  # drained, not cancelled
    assert len(notified) >= 4  # throughout the 0.6 s drain, not once


async def _hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def test_a_connection_accepted_as_the_worker_stops_gets_its_answer():
    """A client that connected just before the worker stopped accepting, and sent its request
    just after: uvicorn's shutdown closed such a connection at once (no request under way),
    and the client got no answer, at every deploy and reload under traffic."""
    port = free_port()

    async def scenario() -> bytes:
        server = DrainingServer(
            Config(app=_hello, host="127.0.0.1", port=port, lifespan="off", log_level="error"),
            drain_seconds=1,
            wind_down_seconds=0.5,
        )
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)  # accepted
        server.should_exit = True
        while any(listening.is_serving() for listening in server.servers):
            await asyncio.sleep(0.005)  # the worker no longer accepts
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await serving
        return answer

    answer = run(scenario())
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"\r\nhello\r\n" in answer


def test_a_reloads_old_worker_dates_its_answers_when_it_writes_them():
    """The old worker of a reload serves new requests while the new ones warm up (seconds):
    their `Date` header stayed the time it was told to stop (uvicorn's main loop, which set it
    every second, had ended): 4 s old at the end of a measured 4.7 s handoff, as old as it
    was long."""
    port = free_port()
    handed_over = asyncio.Event()

    async def hand_over(give_up):
        await handed_over.wait()

    async def scenario() -> tuple[float, float]:
        server = DrainingServer(
            Config(app=_hello, host="127.0.0.1", port=port, lifespan="off", log_level="error"),
            drain_seconds=1,
            wind_down_seconds=0.5,
            hand_over=hand_over,
        )
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        server.should_exit = True  # the reload's SIGTERM: it goes on taking requests
        await asyncio.sleep(3.5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        asked = time.time()
        writer.close()
        handed_over.set()
        await serving
        [date] = [
            line.split(b":", 1)[1].strip()
            for line in answer.split(b"\r\n")
            if line.lower().startswith(b"date:")
        ]
        return parsedate_to_datetime(date.decode()).timestamp(), asked

    dated, asked = run(scenario())
    # A whole second, set once a second (as uvicorn's main loop does): under 2 s old.
    assert asked - dated < 2.2, asked - dated
