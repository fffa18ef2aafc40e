"""What the home-screen benchmark needs around its measurement (bench.bench_home): a minimal
keep-alive HTTP/1.1 client, the server's CPU time from /proc, and a PostgreSQL database of its own.

The client is hand-written so that the load generator costs little CPU on a two-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg


def raw_request(path: str, body: dict[str, Any], token: str) -> bytes:
    content = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): less disturbed by neighbours on
    a shared machine than req/s, which counts the time the server waited for a core."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str | None]:
    """`BENCH_HOME_DATABASE_URL` (an existing empty database), else a new database on the server
    of `BENCH_POSTGRES_URL` (dropped afterwards), else None when PostgreSQL does not answer."""
    given = os.environ.get("BENCH_HOME_DATABASE_URL")
    if given:
        yield given
        return
    server_url = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    try:
        server = await asyncio.wait_for(asyncpg.connect(server_url), timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as failure:
        print(f"PostgreSQL left out ({type(failure).__name__}: {failure})")
        yield None
        return
    await server.close()
    async with scratch_postgres_database(server_url, "ketafollow_bench") as url:
        yield url


@contextlib.asynccontextmanager
async def scratch_postgres_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database on the server of `server_url` (which names its maintenance
    database), dropped afterwards whatever happened."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    server = await asyncpg.connect(server_url)
    try:
        await server.execute(f'CREATE DATABASE "{name}"')
    finally:
        await server.close()
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        server = await asyncpg.connect(server_url)
        try:
            await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await server.close()
