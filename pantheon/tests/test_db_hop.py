"""A gated database section's trip to its request's thread and back (`pantheon.db._hop_to`):
what asgiref's wrapper gave a section, it still gets."""

import asyncio
import logging
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


def test_a_section_raising_a_base_exception_hands_it_to_its_request_and_frees_its_place(settings):
    """A section's thread that ends in a BaseException that is no Exception (a GeneratorExit,
    say) still lands: its request gets it, and the next section runs."""
    settings.PANTHEON_DB_SECTIONS = 1

    class Halt(BaseException):
        pass

    def halts() -> None:
        raise Halt("halted inside")

    async def main() -> tuple[str, str]:
        async with _request_thread():
            try:
                await asyncio.wait_for(database(halts)(), 2)
            except Halt as error:
                caught = str(error)
            after = await asyncio.wait_for(database(str.upper)("next"), 2)
        return caught, after

    assert asyncio.run(main()) == ("halted inside", "NEXT")


def test_a_section_on_a_shut_down_thread_fails_and_frees_its_place(settings):
    """The request's executor shut down (a drain) before its section is handed to it: the
    request fails at once, and the next request's section still gets the one place."""
    settings.PANTHEON_DB_SECTIONS = 1

    async def main() -> tuple[str, str]:
        gone = ThreadPoolExecutor(max_workers=1)
        gone.shutdown()
        async with ThreadSensitiveContext(executor=gone):
            try:
                await asyncio.wait_for(database(str.upper)("first"), 2)
            except RuntimeError:
                caught = "refused"
        async with _request_thread():
            after = await asyncio.wait_for(database(str.upper)("next"), 2)
        return caught, after

    assert asyncio.run(main()) == ("refused", "NEXT")


def test_a_task_outliving_its_request_never_runs_on_the_thread_the_request_gave_back(settings):
    """A detached task still holding its finished request's context: its section must not be
    handed to that request's executor, which the pool gives to the next request."""
    settings.PANTHEON_DB_SECTIONS = 1
    executor = ThreadPoolExecutor(max_workers=1)

    async def main() -> str:
        async with ThreadSensitiveContext(executor=executor):
            ready = asyncio.Event()
            go = asyncio.Event()

            async def detached() -> int:
                ready.set()
                await go.wait()
                return await database(threading.get_ident)()

            task = asyncio.get_running_loop().create_task(detached())
            await ready.wait()
        request_thread = executor.submit(threading.get_ident).result()
        go.set()
        try:
            ran_on = await asyncio.wait_for(task, 2)
        except RuntimeError:
            return "refused"
        return "the next request's thread" if ran_on == request_thread else "another thread"

    assert asyncio.run(main()) == "refused"
    executor.shutdown()


def test_a_request_cancelled_mid_section_leaves_no_error_in_the_log(settings, caplog):
    """Its section's outcome lands after its awaiter is gone: dropped quietly, no
    'Exception in callback' for an operator to chase."""
    settings.PANTHEON_DB_SECTIONS = 1
    started = threading.Event()
    finish = threading.Event()

    def slow() -> str:
        started.set()
        finish.wait(5)
        return "done"

    async def main() -> str:
        async with _request_thread():
            request = asyncio.get_running_loop().create_task(database(slow)())
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
            request.cancel()
            finish.set()
            return await asyncio.wait_for(database(str.upper)("next"), 2)

    assert asyncio.run(main()) == "NEXT"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
