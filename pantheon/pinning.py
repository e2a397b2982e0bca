"""Each gunicorn worker on a CPU of its own (`PIN_WORKERS`, on by default).

A worker runs its Python under one GIL: it uses one core at a time, however many it may run on.
Its event loop and the threads of its database sections (`pantheon.db`) hand that lock to each
other a hundred times a turn, at every round trip to PostgreSQL. Left to the kernel, those
threads run on different cores, and each handoff wakes a thread on the other core, which then
finds the interpreter's state in the first core's cache: measured with `bench/cpu_ab.py` on two
cores, a worker on one CPU spent 12-26 % less CPU a turn than the same worker free to use both,
and was as fast to answer (`bench/serving.py`). nginx (`worker_cpu_affinity auto`) and uWSGI
(`--cpu-affinity`) place their workers the same way.

The master spreads its workers over the CPUs it may use itself (its affinity, a container's
cpuset): a new worker takes the CPU that the fewest of the instance's live workers are on, then
the one the fewest processes of the machine are bound to alone (another instance's workers:
two instances on one machine do not both start on CPU 0), then the lowest. With one CPU to use,
or `PIN_WORKERS=false`, the kernel places the workers as before.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# Set by `before_fork` on the worker object, which the forked worker inherits.
_ATTRIBUTE = "pantheon_cpu"


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order; empty where the OS does not say."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return []
    return sorted(getaffinity(0))


def choose_cpu(
    usable: Sequence[int], ours: Iterable[int | None], others: Counter[int] | None = None
) -> int:
    """The CPU for a new worker: the least used by the instance's live workers (`ours`, their
    CPUs: None for one not pinned), then by the machine's other processes bound to one CPU
    (`others`), then the lowest."""
    mine = Counter(cpu for cpu in ours if cpu is not None)
    theirs = others or Counter()
    return min(usable, key=lambda cpu: (mine[cpu], theirs[cpu], cpu))


def bound_processes(skip: Iterable[int] = (), proc: Path = Path("/proc")) -> Counter[int]:
    """How many of the machine's user processes are bound to each single CPU (Linux's
    `Cpus_allowed_list` of one CPU), less the pids in `skip`. Kernel threads (no command line)
    are left out: each CPU has its own, as many as the others. Empty where /proc cannot be
    read."""
    counts: Counter[int] = Counter()
    skipped = {str(pid) for pid in skip}
    try:
        entries = list(proc.iterdir())
    except OSError:
        return counts
    for entry in entries:
        if not entry.name.isdigit() or entry.name in skipped:
            continue
        try:
            if not (entry / "cmdline").read_bytes():
                continue
            status = (entry / "status").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                allowed = line.partition(":")[2].strip()
                if allowed.isdigit():
                    counts[int(allowed)] += 1
                break
    return counts


def before_fork(server: Any, worker: Any, *, enabled: bool) -> None:
    """In the master: the CPU the new worker will run on (None: wherever the kernel puts it)."""
    setattr(worker, _ATTRIBUTE, None)
    usable = usable_cpus()
    if not enabled or len(usable) < 2:
        return
    live = list(server.WORKERS.items())
    ours = [getattr(each, _ATTRIBUTE, None) for _, each in live]
    others = bound_processes(skip=[pid for pid, _ in live])
    setattr(worker, _ATTRIBUTE, choose_cpu(usable, ours, others))


def after_fork(server: Any, worker: Any) -> None:
    """In the new worker, before it starts a thread (they inherit its CPU): move to its CPU."""
    cpu = getattr(worker, _ATTRIBUTE, None)
    if cpu is None:
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as refused:  # the CPU went offline, or out of the cpuset, since the fork
        setattr(worker, _ATTRIBUTE, None)
        server.log.warning(
            "pantheon: worker %s stays unpinned: CPU %d: %s", worker.pid, cpu, refused
        )
        return
    server.log.info("pantheon: worker %s runs on CPU %d (PIN_WORKERS)", worker.pid, cpu)
