"""Which failures mean "a backend is unavailable, try again shortly" rather than a bug.

A database (or Redis) that does not answer (cut, hung past its timeouts, locked by another writer
past the busy timeout, restarting) fails a request through no fault of the request: the client is told
503 with `SERVICE_UNAVAILABLE` (or OAuth2's `temporarily_unavailable`) and retries. Everything
else unexpected stays a 500 (`INTERNAL_ERROR`). Used by api.faults (outside GraphQL) and by
schema.extensions (inside it).
"""

from __future__ import annotations

import sqlite3

import asyncpg  # type: ignore[import-untyped]
import redis.exceptions
from tortoise.exceptions import DBConnectionError

# How long a client is told to wait before retrying (`Retry-After`, seconds).
RETRY_AFTER_SECONDS = 2
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


def unavailable_message(request_id: str | None, *, deadline: float | None = None, stopping: bool = False) -> str:
    """What a client is told when a backend did not answer (or the request ran out of time, or
    the server stopped before it was done)."""
    if stopping:
        why = "this server is stopping and did not finish the request"
    elif deadline is not None:
        why = f"the request took longer than {deadline:g} s and was stopped"
    else:
        why = "a backend of the service did not answer"
    reference = f" Reference: {request_id}" if request_id else ""
    return (
        f"The service is temporarily unavailable ({why}); try again in a few seconds, with the same "
        f"idempotency key for a write.{reference}"
    )


class BackendUnavailable(Exception):
    """A backend did not answer while a patient's request was screened (CLINICAL.md §0): the
    screen could not keep its record nor raise its alerts, but the advice its findings call for
    (crisis resources, safety instructions) needs no database, and still goes to the patient with
    the answer that says to retry (schema.extensions)."""

    def __init__(self, advice: dict[str, str]) -> None:
        super().__init__("a backend did not answer while the request was screened")
        self.advice = advice


def advice_in(error: BaseException) -> dict[str, str]:
    """The patient's advice carried by `error` or what it wraps (BackendUnavailable), if any."""
    current: BaseException | None = error
    for _ in range(10):
        if current is None:
            break
        if isinstance(current, BackendUnavailable):
            return dict(current.advice)
        current = current.__cause__ or current.__context__
    return {}


# asyncpg's errors for a server that went away, refuses connections for now, or cancelled a
# statement (statement_timeout, an administrator, a shutdown).
_POSTGRES_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# redis-py's own (not the built-in ConnectionError or TimeoutError): a Redis cut, hung or loading.
_REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
# A closed or closing pool or connection (the server went away under it, or the process stops).
_CLOSED_WORDS = ("closed", "closing", "connection was lost", "terminated")
# SQLite's words for another connection holding the lock past the busy timeout, or a file it
# cannot reach.
_SQLITE_UNAVAILABLE_WORDS = ("database is locked", "database is busy", "unable to open database", "disk i/o error")


def is_backend_unavailable(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says a backend did not answer, rather than a bug."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        if _unavailable(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _unavailable(error: BaseException) -> bool:
    # TimeoutError (asyncio's too) and ConnectionError are OSErrors: a socket, a deadline, a refusal.
    if isinstance(error, (OSError, DBConnectionError, BackendUnavailable, *_POSTGRES_UNAVAILABLE, *_REDIS_UNAVAILABLE)):
        return True
    text = str(error).lower()
    if isinstance(error, asyncpg.InterfaceError):
        return any(word in text for word in _CLOSED_WORDS)
    if isinstance(error, sqlite3.OperationalError) or type(error).__module__.startswith("tortoise"):
        return any(word in text for word in _SQLITE_UNAVAILABLE_WORDS)
    return False
