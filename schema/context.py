"""The per-request GraphQL context: built once by the HTTP layer, read by resolvers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from models.access import Viewer
from models.clock import Clock
from models.events import EventBus
from models.passwords import PasswordHashing
from models.policy import DEFAULT_POLICY, ClinicPolicy


@dataclass
class Context:
    clock: Clock
    request_id: str
    max_page_size: int
    viewer: Viewer | None = None
    # The login (refresh-token family) of the access token, when it names one.
    session_id: UUID | None = None
    policy: ClinicPolicy = DEFAULT_POLICY
    client_address: str | None = None
    # Per-request caches (DataLoaders) live here so nothing leaks between requests or viewers.
    loaders: dict[str, Any] = field(default_factory=dict)
    # WebSocket only: the `connection_init` payload (set by Strawberry), and how to check the
    # connection's token again before each operation (set at `connection_init`).
    connection_params: dict[str, Any] | None = None
    reauthenticate: Callable[[], Awaitable[Viewer]] | None = None
    # WebSocket only: spend an operation's rate-limit tokens or raise `RateLimited` (an HTTP
    # request spends its own before any GraphQL runs).
    spend_rate_limit: Callable[[int], Awaitable[None]] | None = None
    transport: Any = None
    # Where subscriptions listen for committed events (api.bus).
    bus: EventBus | None = None
    # Enrolment and accounts (schema.enrolment): where e-mailed links point, how passwords are hashed.
    public_app_url: str = "http://127.0.0.1:8000"
    password_hashing: PasswordHashing | None = None

    def now(self) -> datetime:
        return self.clock.now()
