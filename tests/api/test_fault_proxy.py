"""The fault suite's TCP proxy (tests/faults/proxy.py) in front of a loopback echo server: it
forwards both ways, a cut resets connections and refuses new ones until it resumes on the same
port, a hang holds everything back (and accepts new connections) until it resumes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.faults.proxy import FaultProxy, State


class Echo:
    """A loopback server that sends back what it receives and counts connections and bytes."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = b""
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(1024):
                self.received += data
                writer.write(data)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def proxied_echo() -> AsyncIterator[tuple[Echo, FaultProxy]]:
    echo = Echo()
    echo.server = await asyncio.start_server(echo._serve, "127.0.0.1", 0)
    echo.port = echo.server.sockets[0].getsockname()[1]
    proxy = FaultProxy("echo", echo.port)
    await proxy.start()
    try:
        yield echo, proxy
    finally:
        await proxy.close()
        echo.server.close()


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), timeout=5)


async def test_it_forwards_both_ways() -> None:
    async with proxied_echo() as (echo, proxy):
        reader, writer = await connect(proxy)
        assert await exchange(reader, writer, b"PING\r\n") == b"PING\r\n"
        writer.close()
    assert (echo.connections, echo.received, proxy.accepted) == (1, b"PING\r\n", 1)


async def test_a_cut_resets_open_connections_and_refuses_new_ones_until_it_resumes_on_the_same_port() -> None:
    async with proxied_echo() as (echo, proxy):
        reader, writer = await connect(proxy)
        await exchange(reader, writer, b"before")
        port = proxy.port
        await proxy.cut()
        assert proxy.state is State.CUT
        with contextlib.suppress(ConnectionError):  # a reset, or an end of stream
            assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        with pytest.raises(ConnectionRefusedError):
            await connect(proxy)
        await proxy.resume()
        assert proxy.port == port
        reader, writer = await connect(proxy)
        assert await exchange(reader, writer, b"after") == b"after"
        writer.close()
    assert echo.connections == 2
    assert echo.received == b"beforeafter"


async def test_a_hang_holds_everything_back_and_accepts_new_connections_then_lets_it_all_through() -> None:
    async with proxied_echo() as (echo, proxy):
        reader, writer = await connect(proxy)
        await exchange(reader, writer, b"before ")
        proxy.hang()
        writer.write(b"held ")
        late_reader, late_writer = await connect(proxy)  # accepted, as a hung server's kernel does
        late_writer.write(b"late")
        for _ in range(20):  # give the proxy every chance to (wrongly) pass something on
            await asyncio.sleep(0.01)
        assert echo.received == b"before "
        assert echo.connections == 1
        assert proxy.open_connections == 2
        await proxy.resume()
        assert await asyncio.wait_for(reader.readexactly(5), timeout=5) == b"held "
        assert await asyncio.wait_for(late_reader.readexactly(4), timeout=5) == b"late"
        writer.close()
        late_writer.close()
    assert echo.connections == 2
    assert echo.received in {b"before held late", b"before lateheld "}  # the two connections in either order


async def test_a_cut_during_a_hang_drops_what_was_held_back() -> None:
    async with proxied_echo() as (echo, proxy):
        reader, writer = await connect(proxy)
        proxy.hang()
        writer.write(b"never")
        await proxy.cut()
        await proxy.resume()
        reader, writer = await connect(proxy)
        assert await exchange(reader, writer, b"fresh") == b"fresh"
        writer.close()
    assert echo.received == b"fresh"


async def test_it_forwards_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        FaultProxy("elsewhere", 5432, target_host="10.0.0.5")
    with pytest.raises(ValueError, match="loopback only"):
        FaultProxy("by name", 5432, target_host="db.example.org")
