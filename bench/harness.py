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
import sys
import tempfile
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
async def postgres_database(given_variable: str = "BENCH_HOME_DATABASE_URL") -> AsyncIterator[str | None]:
    """The database the environment variable `given_variable` names (an existing empty one), else
    a new database on the server of `BENCH_POSTGRES_URL` (dropped afterwards), else None when
    PostgreSQL does not answer."""
    given = os.environ.get(given_variable)
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


async def measure_in_child(module: str, label: str, database_url: str) -> Any:
    """`python -m <module> measure <label> <database_url> <out>` in a process of its own (Tortoise
    keeps one database's dialect per process): the JSON the child wrote to `out`."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run.json"
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, "measure", label, database_url, str(out)
        )
        if await child.wait() != 0:
            raise SystemExit(f"the {label} run of {module} failed")
        return json.loads(out.read_text())


async def measure_on_both(module: str, file_name: str, given_variable: str) -> dict[str, Any]:
    """A benchmark's figures on SQLite (`file_name` in a temporary folder) and, when 127.0.0.1:5432
    answers, on a scratch PostgreSQL database (or the one `given_variable` names), each run in a
    process of its own: {"SQLite": ..., "PostgreSQL": ...}."""
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        runs["SQLite"] = await measure_in_child(module, "SQLite", f"sqlite://{Path(folder) / file_name}")
    async with postgres_database(given_variable) as postgres:
        if postgres is not None:
            runs["PostgreSQL"] = await measure_in_child(module, "PostgreSQL", postgres)
    return runs
