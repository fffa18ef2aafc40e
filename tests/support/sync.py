"""An EHR client syncing the change feed the way a real one does, for tests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette
from tortoise.connection import get_connection

from api.database import use_database
from tests.conftest import ON_POSTGRES
from tests.support.graphql import gql

CHANGES = """
query($after: String, $first: Int, $types: [ResourceType!]) {
  changes(after: $after, first: $first, resourceTypes: $types) {
    edges { cursor node { sequence resourceType resourceId action version occurredAt resource } }
    pageInfo { endCursor hasNextPage }
  }
}
"""


Key = tuple[str, str]


class SyncingClient:
    """An EHR's copy of our data, kept by paging through the feed from its last cursor."""

    def __init__(
        self, app: Starlette, client: httpx.AsyncClient, token: str, *, page: int = 50, types: list[str] | None = None
    ):
        self.app, self.client, self.token, self.page, self.types = app, client, token, page, types
        self.copy: dict[Key, dict[str, Any]] = {}
        self.cursor: str | None = None
        self.received: list[tuple[Key, int, int]] = []  # (resource, sequence, version) in order
        self.pages = 0

    async def pull(self) -> bool:
        """One page; True when the feed said there is more."""
        variables = {"after": self.cursor, "first": self.page, "types": self.types}
        body = await gql(self.client, CHANGES, variables, token=self.token)
        assert "errors" not in body, body
        connection = body["data"]["changes"]
        for edge in connection["edges"]:
            change = edge["node"]
            key = (change["resourceType"], change["resourceId"])
            self.received.append((key, change["sequence"], change["version"]))
            if change["action"] == "DELETED":
                self.copy.pop(key, None)
            else:
                self.copy[key] = change["resource"]
        self.cursor = connection["pageInfo"]["endCursor"] or self.cursor
        self.pages += 1
        return bool(connection["pageInfo"]["hasNextPage"])

    async def catch_up(self) -> None:
        """Pull until the feed is drained of every write made so far (on PostgreSQL the feed
        holds changes back while any older transaction of the cluster is still open)."""
        await feed_settled(self.app)
        while await self.pull():
            pass


async def feed_settled(app: Starlette) -> None:
    if not ON_POSTGRES:
        return
    sql = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint > coalesce(max(xid), 0) FROM domain_event"
    for _ in range(600):
        with use_database(app.state.database):
            _, rows = await get_connection("default").execute_query(sql)
        if rows[0][0]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("a transaction of the cluster stayed open for 30 s")
