"""A gunicorn worker whose master is gone stops as at a deploy.

gunicorn's own workers check, as they wait for requests, that the process that forked them is
still their parent, and exit when it is not; uvicorn's worker never looks. A master killed
(SIGKILL, the kernel's OOM killer) left its workers serving on, for ever: nothing replaced one
that died, nothing stopped one that hung, a reload or a stop reached none of them, and the
listening socket they held made the master a supervisor started again fail to bind ("Connection
in use", exit 1), the host serving the old workers' code until someone killed them by hand.

Each worker now looks at its parent every `LOOK_SECONDS` (a thread of its own, started once the
worker is ready: gunicorn's `post_worker_init`). Once it is gone, the worker signals itself
SIGTERM, the master's signal at a stop: its turns get the graceful timeout to end and those
still running then end `interrupted` (`pantheon.draining`), their clients told so. As the
master would have, it is killed if that takes longer than the graceful timeout and a margin.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

# How often a worker looks at its parent (gunicorn's workers look about once a second).
LOOK_SECONDS = 1.0
# Past the graceful timeout, how long a worker that stopped itself has before it kills itself,
# as its master would have.
KILL_MARGIN_SECONDS = 5.0


def watch_master(worker: Any) -> threading.Thread:
    """Start watching `worker`'s master (gunicorn's `post_worker_init`)."""
    watcher = threading.Thread(
        target=_watch, args=(worker,), name="pantheon-master-watch", daemon=True
    )
    watcher.start()
    return watcher


def master_gone(worker: Any) -> bool:
    """Whether the process that forked `worker` is no longer its parent."""
    return os.getppid() != worker.ppid


def _watch(worker: Any) -> None:
    while not master_gone(worker):
        time.sleep(LOOK_SECONDS)
    worker.log.warning(
        "the gunicorn master (pid %s) is gone: worker %s stops as at a deploy, its turns "
        "given %ss to end",
        worker.ppid,
        os.getpid(),
        worker.cfg.graceful_timeout,
    )
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(worker.cfg.graceful_timeout + KILL_MARGIN_SECONDS)
    worker.log.error(
        "worker %s, its master gone, did not stop within the graceful timeout: killed",
        os.getpid(),
    )
    os.kill(os.getpid(), signal.SIGKILL)
