"""A reload's old workers go on taking requests until its new workers are ready
(`pantheon.handoff`): the numbers the master shares with them, and the old worker's wait. The
whole of it against a live server is `sessions_app/tests/test_reload_handoff.py`."""

import asyncio
import logging
import os
import signal
from types import SimpleNamespace

import pytest
from uvicorn.config import Config
from uvicorn.server import Server

from pantheon import draining, handoff
from pantheon.workers import DrainingServer


@pytest.fixture(autouse=True)
def _not_stopping_after(monkeypatch):
    monkeypatch.setattr(draining, "_stopping", False)


def _fork(master) -> SimpleNamespace:
    """A worker as gunicorn forks it: numbered after the master's last (`worker_age`)."""
    master.worker_age += 1
    worker = SimpleNamespace(age=master.worker_age)
    handoff.before_fork(master, worker)
    return worker


def _master_and_workers(count: int):
    master = SimpleNamespace(worker_age=0, num_workers=count)
    return master, [_fork(master) for _ in range(count)]


def _reload(master) -> list[SimpleNamespace]:
    """gunicorn's reload: the hook, then its new workers forked."""
    handoff.on_reload(master)
    return [_fork(master) for _ in range(master.num_workers)]


def test_an_old_worker_waits_until_every_new_worker_of_the_reload_is_ready():
    master, old = _master_and_workers(2)
    shared = handoff.shared(master)
    assert not shared.successors_pending(old[0].age)  # no reload: a shutdown stops it at once
    new = _reload(master)
    assert all(shared.successors_pending(worker.age) for worker in old)
    handoff.when_worker_ready(new[0])
    assert shared.successors_pending(old[0].age)  # one of two ready
    handoff.when_worker_ready(new[1])
    assert not any(shared.successors_pending(worker.age) for worker in old)
    # The new workers themselves, stopped later (fewer workers, a shutdown), wait for nothing.
    assert not any(shared.successors_pending(worker.age) for worker in new)


def test_workers_ready_before_the_reload_do_not_count_for_it():
    master, old = _master_and_workers(1)
    handoff.when_worker_ready(old[0])
    _reload(master)
    assert handoff.shared(master).successors_pending(old[0].age)


def test_a_second_reload_waits_for_its_own_new_workers():
    master, first = _master_and_workers(1)
    second = _reload(master)
    handoff.when_worker_ready(second[0])
    third = _reload(master)  # before the second's worker stopped
    assert handoff.shared(master).successors_pending(second[0].age)
    handoff.when_worker_ready(third[0])
    assert not handoff.shared(master).successors_pending(second[0].age)
    assert not handoff.shared(master).successors_pending(first[0].age)


def test_the_numbers_are_shared_with_forked_workers():
    """The master writes the reload, a forked worker its readiness, each seen by the other."""
    master, [old] = _master_and_workers(1)
    [new] = _reload(master)
    child = os.fork()
    if child == 0:  # the new worker
        handoff.when_worker_ready(new)
        os._exit(0)
    os.waitpid(child, 0)
    assert not handoff.shared(master).successors_pending(old.age)


def test_the_wait_ends_when_the_new_workers_are_ready(caplog):
    master, [old] = _master_and_workers(1)
    [new] = _reload(master)

    async def scenario():
        waiting = asyncio.ensure_future(handoff.wait_for_successors(old, lambda: False))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # still taking requests
        handoff.when_worker_ready(new)
        await asyncio.wait_for(waiting, 1)

    with caplog.at_level(logging.INFO, "pantheon.handoff"):
        asyncio.run(scenario())
    assert "until the new workers were ready" in caplog.text


def test_the_wait_is_bounded(monkeypatch, caplog):
    monkeypatch.setattr(handoff, "HANDOFF_SECONDS", 0.2)
    master, [old] = _master_and_workers(1)
    _reload(master)  # whose worker never gets ready
    with caplog.at_level(logging.WARNING, "pantheon.handoff"):
        asyncio.run(asyncio.wait_for(handoff.wait_for_successors(old, lambda: False), 2))
    assert "were not ready after" in caplog.text


def test_a_second_signal_stops_the_wait_and_the_worker_stops(monkeypatch):
    """A shutdown during a reload (the master's SIGTERM to every worker) or gunicorn's quick
    stop: the old worker stops waiting for new workers that will never be ready."""
    master, [old] = _master_and_workers(1)
    _reload(master)
    closed: list = []

    async def uvicorns_own_shutdown(self, sockets=None):
        closed.append(True)

    monkeypatch.setattr(Server, "shutdown", uvicorns_own_shutdown)

    async def scenario():
        server = DrainingServer(
            Config(app=None),
            drain_seconds=5,
            wind_down_seconds=1,
            hand_over=lambda give_up: handoff.wait_for_successors(old, give_up),
        )
        server.handle_exit(signal.SIGTERM, None)  # the reload's
        stopping = asyncio.ensure_future(server.shutdown())
        await asyncio.sleep(0.3)
        assert closed == []  # still accepting
        server.handle_exit(signal.SIGTERM, None)  # the shutdown's
        await asyncio.wait_for(stopping, 2)

    asyncio.run(scenario())
    assert closed == [True]


def test_a_wait_cut_short_does_not_say_the_new_workers_were_ready(caplog):
    """A second signal (gunicorn's master sends one once its reload has waited
    `graceful_timeout`) ends the wait with the new worker still loading: the line said "until
    the new workers were ready", and an operator read a handoff that had left a gap."""
    master, [old] = _master_and_workers(1)
    _reload(master)  # whose worker is not ready yet
    told: list = []

    async def scenario():
        waiting = asyncio.ensure_future(handoff.wait_for_successors(old, lambda: bool(told)))
        await asyncio.sleep(0.2)
        told.append(True)
        await asyncio.wait_for(waiting, 1)

    with caplog.at_level(logging.INFO, "pantheon.handoff"):
        asyncio.run(scenario())
    assert "until the new workers were ready" not in caplog.text
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "told to stop again before the new workers were ready" in record.getMessage()
