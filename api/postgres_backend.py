"""Tortoise's asyncpg backend, with a bound on every wait (docs/operations.md).

- `statement_timeout` (a server setting of each connection): PostgreSQL cancels a statement that
  runs longer (a lock held elsewhere, a slow plan); and `command_timeout` a second later on the
  client, since a server that has stopped answering cancels nothing.
- Connecting (`timeout`): a new connection is given up after `DB_CONNECT_TIMEOUT_SECONDS`.
- Taking a connection from the pool is given up after `DB_POOL_TIMEOUT_SECONDS` (Tortoise waits
  for ever): every connection held by requests stuck on a hung server must not queue the rest.
- A transaction whose BEGIN fails gives its connection back (Tortoise keeps it, and a hang would
  drain the pool).
- Closing the pool waits `close_timeout`, then terminates its connections.

A wait that runs out raises `DBConnectionError` or `TimeoutError`, which api.faults answers 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import PoolConnectionWrapper, TransactionContext, TransactionContextPooled
from tortoise.connection import get_connections
from tortoise.exceptions import DBConnectionError


class BoundedPoolConnection(PoolConnectionWrapper[Any]):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        await self.ensure_connection()
        client: Any = self.client
        self.connection = await _acquire(client)
        return self.connection


class BoundedTransactionContext(TransactionContextPooled):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        await self.ensure_connection()
        parent: Any = self.client._parent
        self.client._connection = await _acquire(parent)
        self.token = get_connections().set(self.connection_name, self.client)
        try:
            await self.client.begin()
        except BaseException:
            get_connections().reset(self.token)
            if parent._pool:
                await parent._pool.release(self.client._connection)
            raise
        return self.client


async def _acquire(client: BoundedAsyncpgClient) -> Any:
    try:
        pool: Any = client._pool
        async with asyncio.timeout(client.pool_timeout):
            return await pool.acquire()
    except TimeoutError as error:
        raise DBConnectionError(f"no database connection became free within {client.pool_timeout:g} s") from error


class BoundedAsyncpgClient(AsyncpgDBClient):
    def __init__(self, *, pool_timeout: float = 3.0, close_timeout: float = 3.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_timeout = float(pool_timeout)
        self.close_timeout = float(close_timeout)

    def acquire_connection(self) -> BoundedPoolConnection:
        return BoundedPoolConnection(self, self._pool_init_lock)

    def _in_transaction(self) -> TransactionContext:
        return BoundedTransactionContext(TransactionWrapper(self), self._pool_init_lock)

    async def _close(self) -> None:
        if self._pool:
            try:
                await asyncio.wait_for(self._pool.close(), self.close_timeout)
            except TimeoutError:
                self._pool.terminate()
            self._pool = None


client_class = BoundedAsyncpgClient
