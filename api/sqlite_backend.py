"""Tortoise's SQLite backend, with write transactions that take the write lock when they begin.

SQLite's default (deferred) transaction reads first and asks for the write lock at its first
write; if another connection (a second process on the same file: a worker, a replica) wrote in
between, SQLite answers "database is locked" at once, without waiting (to avoid a deadlock).
`BEGIN IMMEDIATE` takes the write lock up front, so concurrent writers queue on the busy timeout
instead of failing. Readers are not affected (WAL mode).
"""

from __future__ import annotations

import sqlite3

from tortoise.backends.base.client import NestedTransactionContext, TransactionContext
from tortoise.backends.sqlite.client import SqliteClient, SqliteTransactionContext, SqliteTransactionWrapper
from tortoise.exceptions import TransactionManagementError


class ImmediateTransactionWrapper(SqliteTransactionWrapper):
    async def begin(self) -> None:
        try:
            await self._connection.commit()
            await self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise TransactionManagementError(error) from error

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(ImmediateTransactionWrapper(self))


class ImmediateSqliteClient(SqliteClient):
    def _in_transaction(self) -> TransactionContext:
        return SqliteTransactionContext(ImmediateTransactionWrapper(self), self._lock)


client_class = ImmediateSqliteClient
