"""The per-request GraphQL context: built once by the HTTP layer, read by resolvers.

Over HTTP a context is one request. A WebSocket has one context for the connection, and each
operation on it runs with a copy of its own (`for_operation`): its request id, loaders and audit
trail. Each event a subscription sends is a request of its own again (`next_event`).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from models.identity.access import Viewer
from models.identity.passwords import PasswordHashing
from models.identity.totp import SecondFactorPolicy
from models.kernel.audit import AuditTrail
from models.kernel.clock import Clock
from models.kernel.events import EventBus
from models.kernel.policy import DEFAULT_POLICY, ClinicPolicy
from schema.pagination import CursorCodec


@dataclass
class Context:
    clock: Clock
    request_id: str
    max_page_size: int
    # Seals and opens the cursors of every connection (schema.pagination), keyed from SECRET_KEY.
    cursors: CursorCodec
    viewer: Viewer | None = None
    # The login (refresh-token family) of the access token, when it names one.
    session_id: UUID | None = None
    policy: ClinicPolicy = DEFAULT_POLICY
    client_address: str | None = None
    # Per-request caches (DataLoaders) live here so nothing leaks between requests or viewers.
    loaders: dict[str, Any] = field(default_factory=dict)
    # WebSocket only: the `connection_init` payload (set by Strawberry), and how to check the
    # connection's token again (its login, account, role and teams as they are now), giving the
    # viewer the audit trail passed in (set at `connection_init`).
    connection_params: dict[str, Any] | None = None
    reauthenticate: Callable[[AuditTrail], Awaitable[Viewer]] | None = None
    # WebSocket only: spend an operation's rate-limit tokens or raise `RateLimited` (an HTTP
    # request spends its own before any GraphQL runs).
    spend_rate_limit: Callable[[int], Awaitable[None]] | None = None
    # WebSocket only: hold one of the viewer's live subscriptions, or raise `RateLimited`.
    claim_subscription: Callable[[], AbstractAsyncContextManager[None]] | None = None
    transport: Any = None
    # Where subscriptions listen for committed events (api.bus).
    bus: EventBus | None = None
    # Enrolment and accounts (schema.enrolment): where e-mailed links point, how passwords are hashed.
    public_app_url: str = "http://127.0.0.1:8000"
    password_hashing: PasswordHashing | None = None
    # Logins just ended by this request (a deactivation): refuse their tokens and close their
    # sockets in this process at once (api.logins.LoginGate.ended); other replicas hear the events.
    logins_ended: Callable[[list[UUID]], Awaitable[None]] | None = None
    # A second factor (schema.second_factor): how TOTP secrets are sealed, which roles need one.
    second_factor: SecondFactorPolicy | None = None
    # The operation's name for audit rows (set when it starts executing).
    operation: str | None = None
    # A subscription's event that could not be sent (its audit write failed: the data went out as
    # an error): the stream then ends with that error (schema.messaging), so the client resumes
    # with `since` and receives the event from the outbox instead of losing it.
    undelivered: Exception | None = None
    # WebSocket only: numbers the operations of a connection, or the events of an operation.
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _request_base: str | None = field(default=None, repr=False)

    def now(self) -> datetime:
        return self.clock.now()

    def new_trail(self) -> AuditTrail:
        """An empty audit trail for this request."""
        return AuditTrail(request_id=self.request_id, client_address=self.client_address, operation=self.operation)

    def for_operation(self) -> Context:
        """WebSocket: the context of the next operation on this connection (request id
        `<socket>.<n>`), sharing nothing but the connection: its own loaders and audit trail."""
        request_id = f"{self.request_id}.{next(self._numbers)}"
        operation = replace(
            self, request_id=request_id, loaders={}, _numbers=itertools.count(1), _request_base=request_id
        )
        if self.viewer is not None:
            operation.viewer = replace(self.viewer, audit=operation.new_trail())
        return operation

    def next_event(self) -> None:
        """WebSocket subscription: what follows is the next event, a request of its own (request id
        `<socket>.<operation>.<event>`, empty loaders); the caller sets its viewer."""
        base = self._request_base or self.request_id
        self.request_id = f"{base}.{next(self._numbers)}"
        self.loaders = {}
