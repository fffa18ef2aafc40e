"""A loopback TCP proxy between a service and one backend (PostgreSQL, Redis) that the fault suite
breaks on purpose.

- `cut()`: every connection through it is aborted (the service sees a reset) and the port stops
  listening, so new connections are refused, until `resume()` listens again on the same port.
- `hang()`: connections stay open and new ones are accepted, but nothing passes either way (a
  backend that stopped answering, or a network that dropped every packet). `resume()` lets
  what was held back through, in order.

It listens on 127.0.0.1 only and forwards to a loopback address only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress

CHUNK = 65536


class State(enum.StrEnum):
    FLOWING = "flowing"
    CUT = "cut"
    HUNG = "hung"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FaultProxy:
    """`port` is chosen at the first `start()` (0: any free one) and kept across cuts."""

    def __init__(self, name: str, target_port: int, *, target_host: str = "127.0.0.1", port: int = 0) -> None:
        if not _loopback(target_host):
            raise ValueError(f"the fault proxy forwards to loopback only, not {target_host!r}")
        self.name = name
        self.target_host = target_host
        self.target_port = target_port
        self.port = port
        self.state = State.CUT
        self.accepted = 0  # connections accepted since the start
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        """Connections between a client and the proxy that are still open."""
        return len(self._tasks)

    async def start(self) -> None:
        """Listen (again, on the same port) and forward."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]
        self.state = State.FLOWING
        self._flowing.set()

    async def cut(self) -> None:
        """Abort every connection and refuse new ones."""
        self.state = State.CUT
        self._flowing.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._drop_everything()

    def hang(self) -> None:
        """Keep connections open (and accept new ones) but pass nothing."""
        if self.state is State.CUT:
            raise RuntimeError(f"{self.name}: cannot hang a cut proxy (resume it first)")
        self.state = State.HUNG
        self._flowing.clear()

    async def resume(self) -> None:
        """Back to forwarding, after a cut or a hang."""
        await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _drop_everything(self) -> None:
        for transport in list(self._transports):
            transport.abort()  # type: ignore[attr-defined]
        self._transports.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The relay runs in a task of its own that a cut cancels: asyncio's server logs the
        # cancellation of the callback's own task as an error.
        task = asyncio.create_task(self._relay(reader, writer))
        self._tasks.add(task)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._transports.add(writer.transport)
        self.accepted += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # a hung backend accepts, then says nothing
            try:
                upstream_reader, upstream = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                return  # the backend itself refuses: so does the proxy (the client sees a reset)
            self._transports.add(upstream.transport)
            await asyncio.gather(self._pipe(reader, upstream, writer), self._pipe(upstream_reader, writer, upstream))
        finally:
            self._tasks.discard(task)
            for side in (writer, upstream):
                if side is not None:
                    self._transports.discard(side.transport)
                    side.transport.abort()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, source_writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await source.read(CHUNK):
                await self._flowing.wait()  # held back during a hang, passed on at resume
                sink.write(data)
                await sink.drain()
            await self._flowing.wait()  # even an end of stream waits out a hang
            if sink.can_write_eof():
                sink.write_eof()
        except (OSError, ConnectionError):
            # One side reset: so does the other, as a direct connection would.
            sink.transport.abort()
            source_writer.transport.abort()
