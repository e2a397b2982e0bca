"""Each gunicorn worker on a CPU of its own (PIN_WORKERS, `pantheon.pinning`)."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from django.db import connection

from pantheon import pinning
from pantheon.testing.servers import AppServer, postgres_url, process_tree

USABLE = pinning.usable_cpus()
two_cpus = pytest.mark.skipif(len(USABLE) < 2, reason="needs two CPUs to spread workers over")


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message, *args) -> None:
        self.lines.append(("info", message % args))

    def warning(self, message, *args) -> None:
        self.lines.append(("warning", message % args))


def _server(*cpus):
    """A stand-in for gunicorn's arbiter with live workers on these CPUs (None: unpinned)."""
    workers = {1000 + n: SimpleNamespace(pantheon_cpu=cpu) for n, cpu in enumerate(cpus)}
    return SimpleNamespace(WORKERS=workers, log=_Log())


def test_a_new_worker_takes_the_cpu_the_fewest_of_its_instance_are_on():
    assert pinning.choose_cpu([0, 1, 2, 3], []) == 0
    assert pinning.choose_cpu([0, 1, 2, 3], [0, 1]) == 2
    assert pinning.choose_cpu([0, 1], [0, 1, 0]) == 1
    # A worker that was not pinned counts on no CPU.
    assert pinning.choose_cpu([0, 1], [None, 0]) == 1
    # Only CPUs the server may use: a container's cpuset of 2 and 5.
    assert pinning.choose_cpu([2, 5], [2]) == 5


def test_among_cpus_its_instance_uses_alike_it_takes_the_one_fewest_processes_are_bound_to():
    # Another instance's worker is bound to CPU 0: this instance's first worker goes to 1.
    assert pinning.choose_cpu([0, 1], [], Counter({0: 1})) == 1
    # Its own workers come first: with one on 1 already, the next goes to 0 all the same.
    assert pinning.choose_cpu([0, 1], [1], Counter({0: 3})) == 0


def _process(proc, pid, *, cmdline: bytes, allowed: str) -> None:
    entry = proc / str(pid)
    entry.mkdir()
    (entry / "cmdline").write_bytes(cmdline)
    (entry / "status").write_text(f"Name:\tx\nCpus_allowed:\tf\nCpus_allowed_list:\t{allowed}\n")


def test_the_processes_bound_to_one_cpu_are_counted_kernel_threads_and_our_workers_left_out(
    tmp_path,
):
    _process(tmp_path, 10, cmdline=b"gunicorn: worker\0", allowed="1")
    _process(tmp_path, 11, cmdline=b"gunicorn: worker\0", allowed="1")
    _process(tmp_path, 12, cmdline=b"postgres\0", allowed="0-3")  # free to run anywhere
    _process(tmp_path, 13, cmdline=b"", allowed="0")  # a kernel thread (each CPU has its own)
    _process(tmp_path, 14, cmdline=b"gunicorn: worker\0", allowed="2")  # the instance's own
    (tmp_path / "self").mkdir()  # not a process

    assert pinning.bound_processes(skip=[14], proc=tmp_path) == Counter({1: 2})
    assert pinning.bound_processes(proc=tmp_path / "gone") == Counter()


@two_cpus
def test_a_real_process_bound_to_one_cpu_is_read_as_such(tmp_path):
    """Linux's own /proc entry of a process that bound itself to one CPU, as the master reads
    every process's (here alone, in a directory of its own)."""
    cpu = USABLE[-1]
    bound = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os, sys; os.sched_setaffinity(0, {{{cpu}}}); print(flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        bound.stdout.readline()  # bound by now
        (tmp_path / str(bound.pid)).symlink_to(f"/proc/{bound.pid}")
        (tmp_path / str(os.getpid())).symlink_to(f"/proc/{os.getpid()}")  # free to run anywhere
        assert pinning.bound_processes(proc=tmp_path) == Counter({cpu: 1})
        assert pinning.bound_processes(skip=[bound.pid], proc=tmp_path) == Counter()
    finally:
        bound.stdin.close()
        bound.wait(30)


def test_the_master_chooses_no_cpu_when_told_not_to_or_with_one_to_use(monkeypatch):
    worker = SimpleNamespace()
    pinning.before_fork(_server(), worker, enabled=False)
    assert worker.pantheon_cpu is None

    monkeypatch.setattr(pinning, "usable_cpus", lambda: [3])
    pinning.before_fork(_server(), worker, enabled=True)
    assert worker.pantheon_cpu is None

    monkeypatch.setattr(pinning, "usable_cpus", lambda: [0, 1, 2])
    monkeypatch.setattr(pinning, "bound_processes", lambda skip: Counter({2: 1}))
    pinning.before_fork(_server(0), worker, enabled=True)
    assert worker.pantheon_cpu == 1


def _pinned_child(cpu, answer) -> None:
    server = _server()
    pinning.after_fork(server, SimpleNamespace(pid=os.getpid(), pantheon_cpu=cpu))
    answer.send((sorted(os.sched_getaffinity(0)), server.log.lines))


def _after_fork_in_a_child(cpu):
    """`after_fork` run in a forked process (it binds the process that runs it): its pid, the
    CPUs it may run on after it, and what it logged."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_pinned_child, args=(cpu, send))
    child.start()
    try:
        assert receive.poll(30)
        return (child.pid, *receive.recv())
    finally:
        child.join(30)


@two_cpus
def test_the_worker_binds_itself_to_its_cpu_and_says_so():
    pid, cpus, said = _after_fork_in_a_child(USABLE[-1])
    assert cpus == [USABLE[-1]]
    assert said == [("info", f"pantheon: worker {pid} runs on CPU {USABLE[-1]} (PIN_WORKERS)")]


@two_cpus
def test_a_worker_whose_cpu_cannot_be_had_runs_unpinned_and_says_why():
    pid, cpus, said = _after_fork_in_a_child(4096)  # no such CPU
    assert cpus == USABLE
    [(level, line)] = said
    assert level == "warning" and line.startswith(
        f"pantheon: worker {pid} stays unpinned: CPU 4096"
    )


def _worker_cpus(server: AppServer) -> dict[int, list[int]]:
    workers = [pid for pid in process_tree(server.process.pid) if pid != server.process.pid]
    return {pid: sorted(os.sched_getaffinity(pid)) for pid in workers}


def _wait_for_workers(server: AppServer, count: int, *, besides=()) -> dict[int, list[int]]:
    deadline = time.monotonic() + 60
    while True:
        workers = {pid: cpus for pid, cpus in _worker_cpus(server).items() if pid not in besides}
        if len(workers) == count or time.monotonic() > deadline:
            return workers
        time.sleep(0.2)


@two_cpus
def test_gunicorns_workers_each_run_on_a_cpu_of_their_own_and_a_replacement_takes_the_freed_one(
    db,
):
    # The test database, which the server reads from outside the test's transaction (nothing
    # of it is needed but its tables).
    with AppServer(database_url=postgres_url(connection.settings_dict), workers=2) as server:
        first = _wait_for_workers(server, 2)
        master = sorted(os.sched_getaffinity(server.process.pid))
        (killed, killed_cpus), (kept, kept_cpus) = sorted(first.items())
        os.kill(killed, signal.SIGKILL)
        after = _wait_for_workers(server, 2, besides={killed})
    assert master == USABLE  # the master itself runs anywhere
    assert len(killed_cpus) == len(kept_cpus) == 1 and killed_cpus != kept_cpus
    assert after[kept] == kept_cpus
    [(replacement, cpus)] = [(pid, cpus) for pid, cpus in after.items() if pid != kept]
    assert cpus == killed_cpus, (replacement, cpus)


@two_cpus
def test_with_pin_workers_off_the_workers_run_anywhere(db):
    with AppServer(
        database_url=postgres_url(connection.settings_dict), workers=2, env={"PIN_WORKERS": "off"}
    ) as server:
        workers = _wait_for_workers(server, 2)
    assert list(workers.values()) == [USABLE, USABLE]
