"""A TCP proxy on 127.0.0.1 that a test can cut: the database going away, as a server sees it.

`cut()` closes every connection it carries and stops listening, so a new connection is refused
(PostgreSQL stopped, a failover's old primary gone). `hang()` closes them too but takes new
connections and never answers them (a stuck proxy or pooler, a host that accepts and stalls);
those stay stalled after `restore()`, which carries new connections again on the same port.
`cut_once_sent(...)` cuts one connection just as PostgreSQL has what it must answer (a COMMIT
that goes through on a connection lost before its client hears so).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Mapping

from pantheon.testing.servers import postgres_url


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._hanging = False
        self._trap: tuple[bytes, ...] = ()
        self._passed_on = True
        self._away = False

    @classmethod
    def in_front_of(cls, settings_dict: Mapping) -> TcpProxy:
        """A proxy to the PostgreSQL server of Django's `settings_dict`."""
        return cls(settings_dict.get("HOST") or "127.0.0.1", int(settings_dict.get("PORT") or 5432))

    def database_url(self, settings_dict: Mapping) -> str:
        """A DATABASE_URL for the database of `settings_dict`, reached through this proxy."""
        return postgres_url({**settings_dict, "HOST": "127.0.0.1", "PORT": self.port})

    def start(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> None:
        self._run(self._cut())

    def hang(self) -> None:
        self._run(self._hang())

    def restore(self) -> None:
        self._run(self._listen())

    def cut_once_sent(self, *markers: bytes, passed_on: bool = True, away: bool = False) -> None:
        """The first connection on which the client sends each of `markers` in this order (a
        statement's text, then `COMMIT`, say) is cut as the last is sent. `passed_on`: the
        server gets what held it and runs it, and its answer never reaches the client, which
        finds the connection gone; otherwise the server never gets it. One connection, once;
        every other is carried as before, unless `away`: then the proxy is cut at that moment
        (`cut()`), as if the database went away with the answer."""
        self._trap = markers
        self._passed_on = passed_on
        self._away = away

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        self._hanging = False
        if self._server is None:
            self._server = await asyncio.start_server(
                self._carry, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _hang(self) -> None:
        await self._cut()
        await self._listen()
        self._hanging = True

    async def _carry(self, client_reader, client_writer) -> None:
        if self._hanging:  # read what comes and answer nothing, for as long as the peer waits
            with contextlib.suppress(OSError):
                while await client_reader.read(65536):
                    pass
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(
            self._pipe(client_reader, server_writer, client=client_writer),
            self._pipe(server_reader, client_writer),
        )
        self._writers.difference_update((client_writer, server_writer))

    def _trapped(self, data: bytes, seen: int) -> int:
        """How many of the trap's markers a connection has sent, with `data` (`seen` before)."""
        for marker in self._trap[seen:]:
            at = data.find(marker)
            if at < 0:
                break
            seen += 1
            data = data[at + len(marker) :]
        return seen

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client: asyncio.StreamWriter | None = None,
    ) -> None:
        """Carries one direction; `client` when it is the client's, which the trap watches."""
        seen = 0
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if client is not None and self._trap:
                    seen = self._trapped(data, seen)
                    if seen == len(self._trap):
                        # No await from here: no answer is carried back meanwhile. The server
                        # gets what was written (close() sends it first), then EOF.
                        self._trap = ()
                        if self._passed_on:
                            writer.write(data)
                        client.transport.abort()
                        writer.close()
                        if self._away:
                            await writer.wait_closed()
                            await self._cut()
                        return
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.transport.abort()
