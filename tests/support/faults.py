"""Helpers of the fault tests: a free port, writes held by a lock in the database, a write to retry."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

from tests.conftest import ON_POSTGRES

SEND = """
mutation Send($input: SendMessageInput!) {
  sendMessage(input: $input) {
    result { __typename ... on Message { id number } ... on Error { message } }
    crisisResources
  }
}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def writes_held(database_url: str, table: str) -> AsyncIterator[None]:
    """Another connection holds the write lock: the whole file on SQLite, `table` on PostgreSQL
    (reads still go through)."""
    if ON_POSTGRES:
        connection = await asyncpg.connect(database_url.replace("postgres://", "postgresql://", 1))
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE')
        try:
            yield
        finally:
            await transaction.rollback()
            await connection.close()
        return
    parts = urlsplit(database_url)
    holder = sqlite3.connect(parts.netloc + parts.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()
