"""WebSocket connections: who holds them, how many, and the protocol handler that enforces it.

- Upgrades and `connection_init`s spend from a bucket per client address (`RATE_LIMIT_SOCKET_*`):
  an empty bucket refuses the upgrade with 429 (or 403 where the server cannot send a status) and
  closes an init with 4429, before any token is read.
- A socket has `SOCKET_INIT_TIMEOUT_SECONDS` to send `connection_init`, or is closed with 4408.
- A viewer holds at most `SOCKETS_PER_VIEWER` signed-in sockets on this replica (the next one is
  closed with 4429), a socket at most `SUBSCRIPTIONS_PER_SOCKET` operations at once, and a viewer
  at most `SUBSCRIPTIONS_PER_VIEWER` live subscriptions (refused with `RATE_LIMITED`).
- Refused socket sign-ins (bad token, rate limited) are not audited one by one: each address gets
  one audit row per `SOCKET_SIGN_IN_AUDIT_WINDOW_SECONDS` window that had any, with the count and
  the reasons (written when the window has passed, or when the server stops).
- A socket whose login ends (api.logins) or whose token expires is closed with 4401.
- A `connection_init` whose sign-in cannot reach the database (or runs past REQUEST_TIMEOUT_SECONDS)
  is closed with 1013, "try again later" (docs/operations.md).

Caps and the sign-in audit are per replica; the rate limit is shared when it lives in Redis.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from graphql import GraphQLError
from strawberry.asgi import GraphQL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage, SubscribeMessage

from api.settings import Settings
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, AuditTrail, record_now
from models.kernel.clock import Clock
from models.kernel.faults import is_backend_unavailable
from schema.context import Context
from schema.errors import RateLimited

logger = logging.getLogger("ketafollow.sockets")

# graphql-transport-ws close codes (4400-4499 are the protocol's own).
SIGN_IN_REFUSED = 4403
LOGIN_OVER = 4401  # the token expired or its login ended: reconnect with a fresh token
TOO_MANY = 4429
# RFC 6455: the service cannot sign the socket in now (a backend did not answer): reconnect later.
TRY_AGAIN_LATER = 1013
# A WebSocket close reason is at most 123 bytes.
_MAX_REASON_BYTES = 123
# Keep at most this many (address, window) counts in memory; past it, write them out early.
_MAX_PENDING_WINDOWS = 10_000


Key = TypeVar("Key", str, uuid.UUID)


def close_reason(text: str) -> str:
    return text.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")


@dataclass(frozen=True)
class Refusal:
    """Why a `connection_init` is refused: the close code and its reason."""

    code: int
    reason: str


@dataclass(eq=False)
class OpenSocket:
    """A signed-in socket: whose, under which login, and how to end it."""

    viewer_key: str
    session_id: uuid.UUID | None
    end: Callable[[int, str], Awaitable[None]]
    expiry: asyncio.Task[None] | None = None


class SocketRegistry:
    """This replica's signed-in sockets, by viewer and by login, and each viewer's subscriptions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._by_viewer: dict[str, set[OpenSocket]] = collections.defaultdict(set)
        self._by_login: dict[uuid.UUID, set[OpenSocket]] = collections.defaultdict(set)
        self._subscriptions: collections.Counter[str] = collections.Counter()

    def admit(self, socket: OpenSocket) -> Refusal | None:
        held = self._by_viewer[socket.viewer_key]
        if len(held) >= self.settings.max_sockets_per_viewer:
            if not held:
                del self._by_viewer[socket.viewer_key]
            limit = self.settings.max_sockets_per_viewer
            return Refusal(TOO_MANY, f"too many open sockets for this account (at most {limit}): close one first")
        held.add(socket)
        if socket.session_id is not None:
            self._by_login[socket.session_id].add(socket)
        return None

    def release(self, socket: OpenSocket) -> None:
        if socket.expiry is not None:
            socket.expiry.cancel()
        _discard(self._by_viewer, socket.viewer_key, socket)
        if socket.session_id is not None:
            _discard(self._by_login, socket.session_id, socket)

    def open_count(self, viewer_key: str) -> int:
        return len(self._by_viewer.get(viewer_key, ()))

    @contextlib.asynccontextmanager
    async def subscription(self, viewer_key: str) -> AsyncIterator[None]:
        """Hold one of the viewer's live subscriptions while the stream runs."""
        limit = self.settings.max_subscriptions_per_viewer
        if self._subscriptions[viewer_key] >= limit:
            raise RateLimited(f"too many live subscriptions for this account (at most {limit}): end one first")
        self._subscriptions[viewer_key] += 1
        try:
            yield
        finally:
            self._subscriptions[viewer_key] -= 1
            if self._subscriptions[viewer_key] <= 0:
                del self._subscriptions[viewer_key]

    async def close_logins(self, session_ids: list[uuid.UUID]) -> None:
        """The logins ended: close their sockets on this replica (4401)."""
        for session_id in session_ids:
            for socket in list(self._by_login.get(session_id, ())):
                await socket.end(LOGIN_OVER, "the login has ended: sign in again")


def _discard(index: dict[Key, set[OpenSocket]], key: Key, socket: OpenSocket) -> None:
    held = index.get(key)
    if held is not None:
        held.discard(socket)
        if not held:
            del index[key]


@dataclass
class _Window:
    first_at: datetime
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)


class RefusedSocketSignIns:
    """Counts refused socket sign-ins per address and window; one audit row per pair."""

    def __init__(self, window: timedelta, clock: Clock) -> None:
        self.window = window
        self.clock = clock
        self._pending: dict[tuple[str, int], _Window] = {}

    def _window_of(self, moment: datetime) -> int:
        return int(moment.timestamp() // self.window.total_seconds())

    def count(self, address: str | None, reason: str) -> None:
        now = self.clock.now()
        key = (address or "unknown", self._window_of(now))
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Window(first_at=now)
        pending.reasons[reason] += 1

    async def flush(self, *, everything: bool = False) -> int:
        """Write one row per (address, window) that has passed (all of them with `everything`,
        or when too many are kept); returns how many were written. A row that cannot be written
        now is kept for the next time (and logged): refusing a socket never waits on it."""
        current = self._window_of(self.clock.now())
        flood = len(self._pending) > _MAX_PENDING_WINDOWS
        due = [key for key in self._pending if everything or flood or key[1] < current]
        written = 0
        for key in due:
            pending = self._pending[key]
            try:
                await record_now(
                    None,
                    AuditEntry(
                        AuditAction.EXECUTE, "Authenticate", AuditOutcome.DENIED, detail=self._detail(key, pending)
                    ),
                    now=pending.first_at,
                    trail=AuditTrail(client_address=key[0][:64], operation="SocketSignIn"),
                )
            except Exception:
                logger.exception("could not write the refused socket sign-ins of a window; retrying later")
                break
            del self._pending[key]
            written += 1
        return written

    def _detail(self, key: tuple[str, int], pending: _Window) -> str:
        seconds = self.window.total_seconds()
        start = datetime.fromtimestamp(key[1] * seconds, UTC)
        end = start + self.window
        total = sum(pending.reasons.values())
        reasons = "; ".join(f"{count} {reason}" for reason, count in pending.reasons.most_common())
        text = (
            f"{total} refused socket sign-in{'s' if total != 1 else ''} from this address "
            f"{start:%Y-%m-%dT%H:%M:%SZ} to {end:%H:%M:%SZ}: {reasons}"
        )
        return text[:200]

    async def flush_now_and_then(self) -> None:
        """Write the windows that have passed every few seconds (a task of the app's lifespan)."""
        pause = min(5.0, self.window.total_seconds() / 4)
        while True:
            await asyncio.sleep(pause)
            await self.flush()


class _OperationScoped:
    """The schema as a socket's operations see it: each runs with a context of its own."""

    def __init__(self, schema: Any) -> None:
        self._schema = schema

    async def stream(self, query: str | None, *, context_value: Context, **arguments: Any) -> Any:
        return await self._schema.stream(query, context_value=context_value.for_operation(), **arguments)


class SocketProtocol(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with our sign-in (`SocketEndpoint.sign_in_socket`), per-operation
    contexts, coded refusals for too many operations, and a way to end the socket from outside."""

    view: SocketEndpoint

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        self.schema = _OperationScoped(self.schema)  # type: ignore[assignment]
        self.open_socket: OpenSocket | None = None
        self._ended = False

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self.connection_timed_out:
            return  # pragma: no cover - the socket is being closed
        if self.connection_init_timeout_task:
            self.connection_init_timeout_task.cancel()
        payload = message.get("payload", {})
        if not isinstance(payload, dict):
            await self.websocket.close(code=4400, reason="Invalid connection init payload")
            return
        if self.connection_init_received:
            await self.websocket.close(code=TOO_MANY, reason="Too many initialisation requests")
            return
        self.connection_init_received = True
        self.context.connection_params = payload
        try:
            # The sign-in reads the database: bounded like an HTTP request (api.faults).
            async with asyncio.timeout(self.view.settings.request_timeout):
                outcome = await self.view.sign_in_socket(self.context, self)
        except Exception as error:
            if not is_backend_unavailable(error):  # a deadline that bit is a TimeoutError, an OSError
                raise
            logger.error("a socket sign-in failed: a backend is unavailable", exc_info=error)
            outcome = Refusal(TRY_AGAIN_LATER, "service temporarily unavailable: reconnect in a few seconds")
        if isinstance(outcome, Refusal):
            await self.websocket.close(code=outcome.code, reason=close_reason(outcome.reason))
            return
        self.open_socket = outcome
        await self.send_message({"type": "connection_ack"})
        self.connection_acknowledged = True

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and limit is not None
            and message.get("id") not in self.operations
            and len(self.operations) >= limit
        ):
            refusal = GraphQLError(
                f"too many operations at once on this socket (at most {limit}): complete one first",
                extensions={"code": RateLimited.code},
            )
            await self.send_message({"id": message["id"], "type": "error", "payload": [refusal.formatted]})
            return
        await super().handle_subscribe(message)

    async def end(self, code: int, reason: str) -> None:
        """Stop every operation and close the socket (its login ended, its token expired)."""
        if self._ended:
            return
        self._ended = True
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        with contextlib.suppress(RuntimeError, OSError):
            await self.websocket.close(code=code, reason=close_reason(reason))

    async def shutdown(self) -> None:
        try:
            await super().shutdown()
        finally:
            if self.open_socket is not None:
                self.view.sockets.release(self.open_socket)
                self.open_socket = None


class SocketEndpoint(GraphQL[Context, None]):
    """What `SocketProtocol` needs of the GraphQL endpoint (`api.graphql_view.GraphQLEndpoint`, which
    imports this module): its settings, its socket registry and its sign-in."""

    graphql_transport_ws_handler_class = SocketProtocol
    settings: Settings
    sockets: SocketRegistry

    @abstractmethod
    async def sign_in_socket(self, context: Context, protocol: SocketProtocol) -> OpenSocket | Refusal:
        """graphql-transport-ws `connection_init`: an open socket for the signed-in viewer, or why not."""
