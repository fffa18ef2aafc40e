"""Per-request DataLoaders: nested fields load in one query per field, never one per row.

Each loader calls a `models/` function with the viewer, so batching never bypasses access rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader
from strawberry.types import Info

from models.identity.access import Viewer
from schema.context import Context
from schema.permissions import viewer_of

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


def loader(
    info: Info[Context, None],
    name: str,
    fetch: Callable[[Viewer, list[Key]], Awaitable[dict[Key, Value]]],
) -> DataLoader[Key, Value | None]:
    """The request's loader called `name`, created on first use."""
    loaders: dict[str, Any] = info.context.loaders
    if name not in loaders:
        viewer = viewer_of(info)

        async def load(keys: list[Key]) -> list[Value | None]:
            found = await fetch(viewer, list(keys))
            return [found.get(key) for key in keys]

        loaders[name] = DataLoader(load_fn=load)
    existing: DataLoader[Key, Value | None] = loaders[name]
    return existing
