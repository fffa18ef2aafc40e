"""The per-request GraphQL context: built once by the HTTP layer, read by resolvers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.access import Viewer
from models.clock import Clock


@dataclass
class Context:
    clock: Clock
    request_id: str
    max_page_size: int
    viewer: Viewer | None = None
    client_address: str | None = None
    # Per-request caches (DataLoaders) live here so nothing leaks between requests or viewers.
    loaders: dict[str, Any] = field(default_factory=dict)
    # Set by Strawberry from a WebSocket's `connection_init` payload.
    connection_params: dict[str, Any] | None = None

    def now(self) -> datetime:
        return self.clock.now()
