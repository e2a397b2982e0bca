"""A gated database section's trip to its request's thread and back (`pantheon.db._hop_to`):
what asgiref's wrapper gave a section, it still gets."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

from asgiref.sync import ThreadSensitiveContext, async_to_sync
from django.utils import translation

from pantheon import db
from pantheon.db import database
from pantheon.threads import own_thread


def _request_thread() -> ThreadSensitiveContext:
    """A request served as in production: its own warm thread, given by its executor."""
    return ThreadSensitiveContext(executor=ThreadPoolExecutor(max_workers=1))


def test_a_section_runs_on_its_requests_own_thread_and_returns_its_result(settings):
    settings.PANTHEON_DB_SECTIONS = 2

    async def main() -> tuple[int, int]:
        async with own_thread():
            first = await database(threading.get_ident)()
            second = await database(threading.get_ident)()
        return first, second

    first, second = asyncio.run(main())
    assert first == second  # one request, one thread
    assert first != threading.get_ident()  # not the event loop's


def test_a_sections_error_reaches_its_request_and_frees_its_place(settings):
    settings.PANTHEON_DB_SECTIONS = 1

    def fails() -> None:
        raise LookupError("no such row")

    async def main() -> str:
        async with _request_thread():
            try:
                await database(fails)()
            except LookupError as error:
                caught = str(error)
            assert await asyncio.wait_for(database(str.upper)("next"), 2) == "NEXT"
        return caught

    assert asyncio.run(main()) == "no such row"
    assert db._inside_section.get() is False


def test_what_a_section_binds_reaches_the_request_on_its_own_thread(settings):
    settings.PANTHEON_DB_SECTIONS = 2
    bound: ContextVar[str | None] = ContextVar("bound", default=None)
    seen: ContextVar[str | None] = ContextVar("seen", default="request's")

    async def main() -> tuple[str | None, str | None]:
        async with _request_thread():
            read = await database(seen.get)()
            await database(bound.set)("turn 7")
            return read, bound.get()

    assert asyncio.run(main()) == ("request's", "turn 7")


def test_a_section_sees_the_requests_language_and_the_request_the_sections(settings):
    """Django's per-request state kept in asgiref `Local`s (the active language, the URLconf,
    the script prefix) is seen by the section, and what the section activates by the request
    after it, as through asgiref's own wrapper."""
    settings.PANTHEON_DB_SECTIONS = 2

    async def main() -> tuple[str, str]:
        async with _request_thread():
            translation.activate("de")
            inside = await database(translation.get_language)()
            await database(translation.activate)("fr")
            after = translation.get_language()
            translation.deactivate()
            return inside, after

    assert asyncio.run(main()) == ("de", "fr")


def test_async_code_a_section_calls_back_into_runs_on_the_requests_event_loop(settings):
    settings.PANTHEON_DB_SECTIONS = 1
    loops: list[asyncio.AbstractEventLoop] = []

    async def where() -> str:
        loops.append(asyncio.get_running_loop())
        return await database(str.upper)("nested")

    def outer() -> str:
        return async_to_sync(where)()

    async def main() -> str:
        loops.append(asyncio.get_running_loop())
        async with _request_thread():
            return await database(outer)()

    results: list[str] = []
    runner = threading.Thread(target=lambda: results.append(asyncio.run(main())), daemon=True)
    runner.start()
    runner.join(5)
    assert not runner.is_alive() and results == ["NESTED"]
    assert loops[0] is loops[1]


def test_a_request_cancelled_mid_section_lets_it_finish_before_the_next_runs(settings):
    settings.PANTHEON_DB_SECTIONS = 1
    finished = threading.Event()
    queued_ran = threading.Event()

    def slow() -> None:
        time.sleep(0.1)
        finished.set()

    async def main() -> bool:
        async with _request_thread():
            request = asyncio.create_task(database(slow)())
            await asyncio.sleep(0.02)
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
            assert request.cancelled()
        # Its thread is still at work: another request's section waits for its place, then runs.
        async with _request_thread():
            return await asyncio.wait_for(database(finished.is_set)(), 2)

    async def cancelled_while_queued_on_its_thread() -> None:
        async with _request_thread():
            settings.PANTHEON_DB_SECTIONS = 2
            first = asyncio.create_task(database(time.sleep)(0.1))
            second = asyncio.create_task(database(queued_ran.set)())
            await asyncio.sleep(0.02)
            second.cancel()  # queued behind the first on the request's one thread
            await asyncio.gather(first, second, return_exceptions=True)
            await asyncio.wait_for(database(str)(), 2)

    assert asyncio.run(main()) is True
    asyncio.run(cancelled_while_queued_on_its_thread())
    assert queued_ran.is_set()  # the section ran all the same, as a section always has
    assert finished.is_set()


def test_the_asgiref_its_hop_was_read_against_is_installed():
    """The hop reads asgiref's internals (`SyncToAsync.context_to_thread_executor`,
    `ThreadSensitiveContext._exited`, `_Storage`): another asgiref may keep them otherwise, and
    the tests above would not all see it. Read them again, then update the version."""
    from importlib.metadata import version

    assert version("asgiref") == db.ASGIREF_READ_AGAINST


def test_a_section_raising_stop_iteration_fails_its_request_instead_of_hanging_it(settings):
    """`next()` on an empty iterator inside a section: an asyncio future refuses StopIteration
    (TypeError in the loop's callback), which left the request waiting forever."""
    settings.PANTHEON_DB_SECTIONS = 1

    def first_of_none() -> int:
        return next(iter([]))

    async def main() -> tuple[str, str]:
        async with _request_thread():
            try:
                await asyncio.wait_for(database(first_of_none)(), 2)
            except RuntimeError as error:
                caught = type(error.__cause__).__name__
            after = await asyncio.wait_for(database(str.upper)("next"), 2)
        return caught, after

    assert asyncio.run(main()) == ("StopIteration", "NEXT")


def test_an_ungated_section_raising_stop_iteration_fails_its_request_too(settings):
    settings.PANTHEON_DB_SECTIONS = 0

    def first_of_none() -> int:
        return next(iter([]))

    async def main() -> str:
        try:
            await asyncio.wait_for(database(first_of_none)(), 2)
        except RuntimeError as error:
            return type(error.__cause__).__name__
        return "returned"

    assert asyncio.run(main()) == "StopIteration"
