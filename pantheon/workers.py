"""The gunicorn worker class that serves Pantheon's ASGI application (`gunicorn.conf.py`)."""

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import signal
import sys
from collections.abc import Awaitable, Callable
from email.utils import formatdate

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from pantheon import draining, handoff
from pantheon.capacity import PROCESS

# How often a draining worker tells gunicorn it is alive (gunicorn's timeout is whole seconds).
HEARTBEAT_SECONDS = 1.0
# How long a stopping worker that no longer accepts waits for the requests of connections it
# accepted a moment before (a client sends its request as soon as it is connected).
ACCEPTED_GRACE_SECONDS = 0.25

# glibc's mallopt parameter for the most malloc arenas (M_ARENA_MAX).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> None:
    """Bound glibc's malloc arenas. Every thread that allocates may otherwise get an arena of
    its own (up to 8 per core), and Django runs each request's database work in a thread: the
    freed memory they keep adds up in the worker's RSS. No-op off glibc."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or arenas <= 0:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(libc_name).mallopt(_M_ARENA_MAX, arenas)


class DrainingServer(Server):
    """uvicorn's server, whose shutdown also waits for the turns running detached from their
    requests (a client that hung up), then ends those still running before gunicorn kills the
    worker (`pantheon.draining`). uvicorn waits for open connections only: the worker exited
    under such turns at once, and under turns with a client at `graceful_timeout`, with all of
    them left `running`."""

    def __init__(
        self,
        config: Config,
        *,
        drain_seconds: float,
        wind_down_seconds: float,
        hand_over: Callable[[Callable[[], bool]], Awaitable[None]] | None = None,
    ):
        super().__init__(config)
        self.drain_seconds, self.wind_down_seconds = drain_seconds, wind_down_seconds
        # Before it stops accepting: wait for a reload's new workers (`pantheon.handoff`).
        self.hand_over = hand_over
        # gunicorn's quick shutdown: wait for no turn (`PantheonWorker._stop_quickly`).
        self.quick = False
        # Told to stop more than once (uvicorn forces the exit on a second SIGINT only).
        self.told_again = False

    def handle_exit(self, sig, frame) -> None:
        if self.should_exit:
            self.told_again = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets=None) -> None:
        heartbeat = asyncio.ensure_future(self._keep_notifying())
        dating = asyncio.ensure_future(self._keep_dating())
        try:
            if self.hand_over is not None:
                # Still accepting, and serving as before, turns included.
                await self.hand_over(lambda: self.told_again or self.force_exit or self.quick)
            drained = asyncio.ensure_future(
                draining.drain(
                    seconds=self.drain_seconds,
                    wind_down=self.wind_down_seconds,
                    give_up=lambda: self.force_exit or self.quick,  # a second signal, or quick
                )
            )
            # Stop accepting, and give the connections just accepted the moment their request
            # takes to arrive: uvicorn's shutdown closes at once a connection with no request
            # under way, and a client that connected as the worker stopped got no answer (a
            # disconnect) where it now gets one (a kept-alive connection's next request too).
            listening = getattr(self, "servers", [])  # none if it never started
            for each in listening:
                each.close()
            if listening:
                await asyncio.sleep(ACCEPTED_GRACE_SECONDS)
            # Then waits for the requests open (a turn's ends with its turn).
            await super().shutdown(sockets=sockets)
            await drained
        finally:
            heartbeat.cancel()
            dating.cancel()

    async def _keep_dating(self) -> None:
        """Keep the `Date` header of the answers it still writes the time they are written:
        uvicorn's main loop, which set it every second, has ended, and a reload's old worker
        serves new requests for seconds more (`hand_over`), a drain its open ones."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            date = [(b"date", formatdate(usegmt=True).encode())] if self.config.date_header else []
            self.server_state.default_headers = date + self.config.encoded_headers

    async def _keep_notifying(self) -> None:
        """Tell gunicorn this worker is alive while it drains: uvicorn's main loop, which did,
        has ended, and a master that goes on (SIGHUP) kills a worker silent for
        GUNICORN_TIMEOUT, a drain longer than that cut short."""
        while self.config.callback_notify is not None:
            await self.config.callback_notify()
            await asyncio.sleep(HEARTBEAT_SECONDS)


class PantheonWorker(UvicornWorker):
    # uvloop and httptools: the fast event loop and HTTP parser, here with a deadline to send a
    # request and a timeout to read the answer (`pantheon.protocol`, named by its path: the
    # gunicorn master never loads it). Django has no lifespan events. No proxy headers: uvicorn
    # would take the client's address and scheme from X-Forwarded-For/-Proto of any connection
    # from 127.0.0.1 (gunicorn's forwarded_allow_ips), so a local client could choose its
    # throttle identity. The app reads them itself, as PANTHEON_NUM_PROXIES and
    # SECURE_PROXY_SSL_HEADER say.
    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": "pantheon.protocol:PantheonHttpProtocol",
        "lifespan": "off",
        "proxy_headers": False,
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # gunicorn's `worker_connections` (GUNICORN_WORKER_CONNECTIONS) is the number of
        # requests the app serves at once (`init_process`), refused past it in the API's coded
        # 503. uvicorn's own `limit_concurrency` is no cap on connections: it is checked when a
        # request arrives, against the open connections (idle keep-alive ones and those of the
        # requests in flight alike), and answers a plain-text 503 to every request once they
        # reach it, those the worker has room for too (`pantheon.capacity`).
        self.config.limit_concurrency = None
        # Stopping: turns get most of gunicorn's graceful_timeout to end; then the requests
        # still open (a replay following a turn of another host) are cancelled before the kill.
        self.drain_seconds, self.wind_down_seconds = draining.drain_seconds(
            self.cfg.graceful_timeout
        )
        self.config.timeout_graceful_shutdown = draining.requests_seconds(self.cfg.graceful_timeout)

    def init_process(self) -> None:
        # Before Django and its threads. A value it cannot read has stopped gunicorn already:
        # the settings read it too, and gunicorn.conf.py's collectstatic loads them first.
        # Imported here: the gunicorn master imports this module, and nothing of Django may
        # come with it (pantheon/tests/test_warmup.py).
        from pantheon.config import malloc_arenas

        limit_malloc_arenas(malloc_arenas())
        PROCESS.limit = self.cfg.worker_connections
        super().init_process()

    def _install_quick_stop(self, server: DrainingServer) -> None:
        """gunicorn's quick shutdown (SIGQUIT to the worker, for SIGINT or SIGQUIT to the
        master): the worker stops as at a deploy, but waits for no turn: those running are
        ended `interrupted` at once (their endings recorded, their clients told), then it exits.
        uvicorn's worker only marked itself not alive and served on, new turns included, until
        the master's SIGKILL at `graceful_timeout` left its turns `running` with no worker to
        replace it. A second one stops waiting for the requests still open."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGQUIT, self._stop_quickly, server)

    def _stop_quickly(self, server: DrainingServer) -> None:
        self.alive = False
        if server.quick:
            server.force_exit = True
            return
        # A stop already under way (the worker's own SIGINT: Ctrl-C signals every process of
        # the terminal) stops waiting for turns; its streams still end cleanly.
        server.quick = True
        server.should_exit = True

    async def _serve(self) -> None:
        # UvicornWorker's own, with the server that drains detached turns when it stops.
        self.config.app = self.wsgi
        server = DrainingServer(
            config=self.config,
            drain_seconds=self.drain_seconds,
            wind_down_seconds=self.wind_down_seconds,
            hand_over=functools.partial(handoff.wait_for_successors, self),
        )
        self._install_quick_stop(server)
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
