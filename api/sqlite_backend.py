"""Tortoise's SQLite backend, with write transactions that take the write lock when they begin.

SQLite's default (deferred) transaction reads first and asks for the write lock at its first
write; if another connection (a second process on the same file: a worker, a replica) wrote in
between, SQLite answers "database is locked" at once, without waiting (to avoid a deadlock).
`BEGIN IMMEDIATE` takes the write lock up front, so concurrent writers queue on the busy timeout
instead of failing. Readers are not affected (WAL mode).

SQLite hands timestamps back as text, and Tortoise parses each with the pure-Python `iso8601`
package (it prefers `ciso8601`, which is not installed): on the patient's home screen that was
about a hundred parses a request. They are parsed here with the standard library's C parser
(`datetime.fromisoformat`, which reads what Tortoise writes: `isoformat(" ")`), the old parser
kept for any text it does not read.

Tortoise takes the connection's lock before it opens the connection or begins the transaction,
and gives it back only on leaving the block: a BEGIN that fails (the write lock not had within the
busy timeout) or is cancelled (the request's deadline), or a file that cannot be opened, kept the
lock for ever, and every later statement of the process waited on it. Here the lock is given back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import ConnectionWrapper, NestedTransactionContext, TransactionContext
from tortoise.backends.sqlite.client import SqliteClient, SqliteTransactionContext, SqliteTransactionWrapper
from tortoise.connection import get_connections
from tortoise.exceptions import TransactionManagementError
from tortoise.fields import data as field_types

_parse_any_iso8601: Callable[[str], datetime] = field_types.parse_datetime  # type: ignore[attr-defined]


def parse_datetime(value: str) -> datetime:
    """A stored timestamp, parsed in C; the forms `fromisoformat` does not read go to the old parser."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return _parse_any_iso8601(value)


field_types.parse_datetime = parse_datetime  # type: ignore[attr-defined]


class ImmediateTransactionWrapper(SqliteTransactionWrapper):
    async def begin(self) -> None:
        try:
            await self._connection.commit()
            await self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise TransactionManagementError(error) from error

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(ImmediateTransactionWrapper(self))


class ReleasingTransactionContext(SqliteTransactionContext):
    """Tortoise's, but a failed or cancelled start gives the lock back."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        await self._trxlock.acquire()
        try:
            await self.ensure_connection()
            self.token = get_connections().set(self.connection_name, self.connection)
            try:
                await self.connection.begin()
            except BaseException:
                get_connections().reset(self.token)
                raise
        except BaseException:
            self._trxlock.release()
            raise
        return self.connection


class ReleasingConnectionWrapper(ConnectionWrapper[Any]):
    """Tortoise's, but a connection that cannot be opened gives the lock back."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        await self._lock.acquire()
        try:
            await self.ensure_connection()
        except BaseException:
            self._lock.release()
            raise
        return self.connection


class ImmediateSqliteClient(SqliteClient):
    def acquire_connection(self) -> ConnectionWrapper[Any]:
        return ReleasingConnectionWrapper(self._lock, self)

    def _in_transaction(self) -> TransactionContext:
        return ReleasingTransactionContext(ImmediateTransactionWrapper(self), self._lock)


client_class = ImmediateSqliteClient
