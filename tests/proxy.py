"""A TCP proxy for fault injection: forwards 127.0.0.1:<port> to a server, and can blackhole
traffic (stop forwarding without closing any socket, as a network partition or a frozen peer
does) and heal again (what was held back is then delivered, as TCP retransmission would)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Runs on its own event loop thread; every method may be called from any thread."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        # A host that is a directory is a Unix socket directory (as libpq reads it).
        self.unix_path = (
            f"{target_host}/.s.PGSQL.{target_port}" if target_host.startswith("/") else None
        )
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._flows: list[asyncio.Event] = []  # one per connection: set while it forwards
        self._new_frozen = False
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10), "the proxy did not start"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port)
        )
        ready.set()
        self.loop.run_forever()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.run_until_complete(self._server.wait_closed())
        self.loop.close()

    @classmethod
    def for_dsn(cls, dsn: str) -> TcpProxy:
        """A proxy in front of the server ``dsn`` points at (TCP or Unix socket)."""
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
        return cls(int(params.get("port") or 5432), str(params.get("host") or "127.0.0.1"))

    def dsn(self, dsn: str) -> str:
        """``dsn`` pointed at this proxy instead of the server."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params: dict[str, Any] = conninfo_to_dict(dsn)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flowing = asyncio.Event()
        if not self._new_frozen:
            flowing.set()
        self._flows.append(flowing)
        try:
            if self.unix_path is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        with contextlib.suppress(asyncio.CancelledError):  # the proxy closes
            await asyncio.gather(
                self._pump(reader, up_writer, flowing),
                self._pump(up_reader, writer, flowing),
                return_exceptions=True,
            )

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
    ) -> None:
        try:
            while True:
                await flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await flowing.wait()  # read during a partition: held until it heals
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def _call(self, fn: Any) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(10)

    def blackhole(self, *, new_connections: bool = True) -> None:
        """Stop forwarding on every open connection (and on new ones, unless told not to)."""

        def apply() -> None:
            self._new_frozen = new_connections
            for flow in self._flows:
                flow.clear()

        self._call(apply)

    def heal(self) -> None:
        def apply() -> None:
            self._new_frozen = False
            for flow in self._flows:
                flow.set()

        self._call(apply)

    def close(self) -> None:
        def apply() -> None:
            if self._server is not None:
                self._server.close()
            for writer in self._writers:
                writer.close()
            for flow in self._flows:
                flow.set()

        self._call(apply)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
