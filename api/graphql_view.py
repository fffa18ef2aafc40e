"""The `/graphql` endpoint: Strawberry's ASGI view with our context and transport rules.

GET is refused for operations (no queries in URLs, which end up in logs and caches; no CSRF by
link), only `application/json` POST bodies are read (a form post from another site is refused),
batches are off, and GraphiQL is served only outside production.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from api.settings import Settings
from models.clock import Clock
from schema import build_schema
from schema.context import Context


class GraphQLEndpoint(GraphQL[Context, None]):
    def __init__(self, settings: Settings, clock: Clock) -> None:
        schema = build_schema(
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_aliases,
            max_tokens=settings.max_tokens,
            introspection=settings.introspection_enabled,
        )
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphql_ide_enabled else None,
            allow_queries_via_get=False,
        )
        self.settings = settings
        self.clock = clock

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | Any
    ) -> Context:
        return Context(
            clock=self.clock,
            request_id=request.scope.get("state", {}).get("request_id", ""),
            max_page_size=self.settings.max_page_size,
            client_address=request.client.host if request.client else None,
        )
