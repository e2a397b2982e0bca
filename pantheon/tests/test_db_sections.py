"""Database sections from async code: a bounded number at once, the oldest request's first."""

import asyncio
import threading
import time
from contextvars import ContextVar

from asgiref.sync import ThreadSensitiveContext, async_to_sync

from pantheon import db
from pantheon.db import SectionGate, database


def test_no_more_sections_run_at_once_than_the_gate_has_places():
    gate = SectionGate(2)
    running = peak = 0

    async def section(arrival: float) -> None:
        nonlocal running, peak
        await gate.enter(arrival)
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        gate.leave()

    async def main() -> None:
        await asyncio.gather(*(section(float(n)) for n in range(8)))

    asyncio.run(main())
    assert peak == 2
    assert gate.running == 0 and not gate._waiting


def test_waiting_sections_are_let_in_by_their_requests_arrival_not_their_own():
    """A turn's next section goes before the first sections of requests that came after it."""
    gate = SectionGate(1)
    admitted: list[str] = []

    async def wait(name: str, arrival: float) -> None:
        await gate.enter(arrival)
        admitted.append(name)

    async def main() -> None:
        await gate.enter(0.0)  # a section runs
        waiting = [
            asyncio.create_task(wait("new request", 3.0)),
            asyncio.create_task(wait("newer request", 4.0)),
            asyncio.create_task(wait("next step of an older turn", 1.0)),
        ]
        await asyncio.sleep(0)
        for _ in waiting:
            gate.leave()
            await asyncio.sleep(0)
        await asyncio.gather(*waiting)

    asyncio.run(main())
    assert admitted == ["next step of an older turn", "new request", "newer request"]


def test_a_section_cancelled_while_it_waits_takes_no_place():
    gate = SectionGate(1)

    async def main() -> None:
        await gate.enter(0.0)
        gone = asyncio.create_task(gate.enter(1.0))
        stays = asyncio.create_task(gate.enter(2.0))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        gate.leave()
        await asyncio.wait_for(stays, 1)
        assert gone.cancelled()
        gate.leave()

    asyncio.run(main())
    assert gate.running == 0 and not gate._waiting


def test_database_sections_wait_for_a_place(settings):
    settings.PANTHEON_DB_SECTIONS = 1
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def work() -> None:
        started = time.monotonic()
        time.sleep(0.05)
        with lock:
            spans.append((started, time.monotonic()))

    async def one_request() -> None:
        async with ThreadSensitiveContext():  # each request on its own thread, as served
            await database(work)()

    async def main() -> None:
        await asyncio.gather(*(asyncio.create_task(one_request()) for _ in range(3)))

    asyncio.run(main())
    spans.sort()
    assert len(spans) == 3
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False))


def test_a_request_cancelled_mid_section_gives_its_place_back_when_the_section_ends(settings):
    settings.PANTHEON_DB_SECTIONS = 1
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.1)
        finished.set()

    async def on_its_own_thread(function):
        async with ThreadSensitiveContext():
            return await database(function)()

    async def main() -> None:
        request = asyncio.create_task(on_its_own_thread(slow))
        await asyncio.sleep(0.02)
        request.cancel()
        # The section's thread is still at work: the next section waits for it, then runs.
        assert await asyncio.wait_for(on_its_own_thread(finished.is_set), 2)

    asyncio.run(main())
    assert finished.is_set()


def test_what_a_section_binds_in_its_context_reaches_the_code_that_awaited_it(settings):
    """The log context's ids bound inside a section (the user at authentication, the turn at
    its claim) go on to label the request's later lines, as with a plain sync_to_async."""
    settings.PANTHEON_DB_SECTIONS = 2
    bound: ContextVar[str | None] = ContextVar("bound", default=None)

    async def main() -> str | None:
        async with ThreadSensitiveContext():
            await database(bound.set)("turn 7")
            return bound.get()

    assert asyncio.run(main()) == "turn 7"


def _queue_order(settings, requests) -> list[str]:
    """Hold the one place, let each (name, arrived, queue_as_new) request ask for a section in
    that order, free the place: the order in which their sections ran."""
    settings.PANTHEON_DB_SECTIONS = 1
    ran: list[str] = []
    release = threading.Event()

    async def request(name: str, arrived: float, queue_as_new: bool) -> None:
        token = db._arrival.set(time.monotonic() - arrived)
        try:
            async with ThreadSensitiveContext():
                await database(ran.append, queue_as_new=queue_as_new)(name)
        finally:
            db._arrival.reset(token)

    async def main() -> None:
        async with ThreadSensitiveContext():
            holder = asyncio.create_task(database(release.wait)())
            await asyncio.sleep(0.05)
            waiting = []
            for name, arrived, queue_as_new in requests:
                waiting.append(asyncio.create_task(request(name, arrived, queue_as_new)))
                await asyncio.sleep(0.01)
            release.set()
            await asyncio.wait_for(asyncio.gather(holder, *waiting), 5)

    asyncio.run(main())
    return ran


def test_sections_queue_by_their_requests_arrival(settings):
    order = _queue_order(
        settings,
        [("came 1 s ago", 1.0, False), ("came 9 s ago", 9.0, False), ("came 5 s ago", 5.0, False)],
    )
    assert order == ["came 9 s ago", "came 5 s ago", "came 1 s ago"]


def test_a_long_followers_polls_queue_as_new_work(settings):
    """A client following a turn for minutes polls forever: its polls must not go before newer
    requests, or enough followers would starve them."""
    order = _queue_order(
        settings, [("follower since 60 s", 60.0, True), ("request of 1 s ago", 1.0, False)]
    )
    assert order == ["request of 1 s ago", "follower since 60 s"]


def test_a_section_that_calls_back_into_async_code_does_not_wait_for_its_own_place(settings):
    settings.PANTHEON_DB_SECTIONS = 1
    results: list[str] = []

    def outer() -> str:
        return async_to_sync(database(str.upper))("nested")

    async def main() -> None:
        async with ThreadSensitiveContext():
            results.append(await database(outer)())

    # On a thread of its own: were the gate to wait for itself, this test fails, not hangs.
    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    runner.join(5)
    assert not runner.is_alive() and results == ["NESTED"]


def test_a_section_gets_its_arguments_as_given_and_runs_marked_as_one(settings):
    """Every section runs through one shared wrapper: its own arguments (one named `function`
    too) reach it untouched, on the request's thread, inside the section's mark, gated or not."""
    seen: list[tuple] = []

    def work(first, *rest, function=None, **more):
        seen.append((first, rest, function, more, db._inside_section.get()))
        return threading.get_ident()

    async def main() -> tuple[int, int, int]:
        async with ThreadSensitiveContext():
            settings.PANTHEON_DB_SECTIONS = 0  # ungated
            ungated = await database(work)(1, 2, function="f", x=3)
            settings.PANTHEON_DB_SECTIONS = 2
            gated = await database(work, queue_as_new=True)("a", function=None)
            again = await database(work)("b")
        return ungated, gated, again

    ungated, gated, again = asyncio.run(main())
    assert seen == [
        (1, (2,), "f", {"x": 3}, True),
        ("a", (), None, {}, True),
        ("b", (), None, {}, True),
    ]
    assert ungated == gated == again  # one request, one thread
    assert db._inside_section.get() is False
