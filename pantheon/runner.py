"""Which server process runs a turn, and which processes died with turns in hand.

Every turn records the name of the process that runs it (`Turn.worker`). gunicorn's master
names each worker before it forks it, and keeps the names of the workers that exit; the next
worker it forks ends, as it starts, the turns those left running (`pantheon.warmup`). A worker
killed in the middle of turns (SIGKILL, the kernel's out-of-memory killer, gunicorn's own
timeout) so frees their sessions as soon as gunicorn has replaced it, where they were refused
new turns (409) until the stale limit or an operator's `recover_turns`. A worker that stops in
order has ended its turns itself (`pantheon.draining`): its name finds none. A worker killed
before it has checked its predecessors hands them on with its own name; one that cannot reach
the database as it starts keeps trying in the background.

A whole host that dies takes its master with it: its turns wait for the stale limit, as before.

Plain Python: the gunicorn master imports it (`gunicorn.conf.py`).
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from pantheon.config import whole_number

# Where the master keeps the workers that exited since it last forked one: name → when.
_EXITED = "pantheon_exited_workers"
# The most names it keeps (the newest): a crash loop hands names on until a worker lives to
# check them.
_MOST_KEPT = 100

# This process's name, with the pid it was made for (a process forked later makes its own).
_name: tuple[int, str] | None = None
_predecessors: tuple[str, ...] = ()


def worker_name(pid: int, token: str) -> str:
    """A name no other process takes: the host, the pid (as gunicorn's log names the worker)
    and a random token (a pid is reused once the system wraps around)."""
    return f"{socket.gethostname()[:64]}:{pid}:{token}"


def this_process() -> str:
    """The name of this process, as its turns record it."""
    global _name
    pid = os.getpid()
    if _name is None or _name[0] != pid:
        _name = (pid, worker_name(pid, secrets.token_hex(4)))
    return _name[1]


def predecessors() -> tuple[str, ...]:
    """The workers of this host that exited before this one started (gunicorn only)."""
    return _predecessors


# --- gunicorn's hooks (gunicorn.conf.py) --------------------------------------------------------


def guarded(hook: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """`hook`, never raising into gunicorn: an exception in a hook of its master reaches its
    main loop, which stops the server, every worker and turn with it. Logged instead; the worst
    left is a worker's turns waiting for the stale limit, as before these hooks."""

    @functools.wraps(hook)
    def never_raising(server: Any, worker: Any) -> None:
        try:
            hook(server, worker)
        except Exception:
            server.log.exception("pantheon: gunicorn's %s hook failed", hook.__name__)

    return never_raising


def before_fork(server: Any, worker: Any) -> None:
    """In the master: the new worker's token, and the names of the workers gone before it
    within the stale limit (the turns of one gone longer are stale: the next turn of each
    session takes them over anyway)."""
    worker.pantheon_token = secrets.token_hex(4)
    exited = _exited(server)
    recent = time.monotonic() - stale_seconds()
    for name in [name for name, when in exited.items() if when < recent]:
        del exited[name]
    worker.pantheon_inherited = dict(exited)
    worker.pantheon_predecessors = tuple(exited)
    worker.pantheon_forked_at = time.monotonic()
    exited.clear()


def after_fork(server: Any, worker: Any) -> None:
    """In the new worker, before the application loads: take its name and its predecessors."""
    global _name, _predecessors
    _name = (os.getpid(), worker_name(worker.pid, worker.pantheon_token))
    _predecessors = worker.pantheon_predecessors


def after_exit(server: Any, worker: Any) -> None:
    """In the master, once a worker has exited, in order or not: the next worker checks it.
    Killed before it could have checked the workers it was given (within its warm-up, or while
    it waited for the database, up to the stale limit), it hands them on too, with the time
    each exited: an out-of-memory killer may strike twice. A name checked twice finds nothing
    the second time."""
    token = getattr(worker, "pantheon_token", None)
    if token is None:
        # Forked before these hooks were read (a SIGHUP from the code before them reloads
        # this file under workers it forked): its turns record no name, none to hand on.
        return
    exited = _exited(server)
    now = time.monotonic()
    if now - worker.pantheon_forked_at < stale_seconds():
        for name, when in worker.pantheon_inherited.items():
            exited.setdefault(name, when)
    exited[worker_name(worker.pid, token)] = now
    for name in sorted(exited, key=exited.__getitem__)[:-_MOST_KEPT]:
        del exited[name]  # the oldest


def _exited(server: Any) -> dict[str, float]:
    if not hasattr(server, _EXITED):
        setattr(server, _EXITED, {})
    return getattr(server, _EXITED)


def stale_seconds() -> float:
    """`PANTHEON_TURN_STALE_SECONDS`, read as the settings read it (the master has no Django)."""
    return whole_number("PANTHEON_TURN_STALE_SECONDS", 600, minimum=1)
