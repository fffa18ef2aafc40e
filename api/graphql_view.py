"""The `/graphql` endpoint: Strawberry's ASGI view with our authentication, context and transport rules.

Every operation needs a valid access token: `Authorization: Bearer …` over HTTP (without one the
answer is 401 `UNAUTHENTICATED` before any GraphQL runs), or the `connection_init` payload over
WebSocket (checked again before every operation on the socket, which is closed with 4401 when the
token expires). GET is refused for operations (no queries in URLs, which end up in logs and
caches; no CSRF by link), only `application/json` POST bodies are read (a form post from another
site is refused), batches are off, and GraphiQL is served only outside production.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError

from api.auth.authenticate import NotAuthenticated, authenticate, bearer_token
from api.auth.passwords import ARGON2
from api.rate_limit import RateLimiter, refusal_message
from api.settings import Settings
from models.access import Viewer
from models.audit import AuditTrail
from models.clock import Clock
from schema import build_schema
from schema.context import Context
from schema.errors import RateLimited, Unauthenticated

TOKEN_EXPIRED = 4401


def _trail(scope: Scope, client_address: str | None) -> AuditTrail:
    return AuditTrail(request_id=scope.get("state", {}).get("request_id"), client_address=client_address)


def _connection_token(params: Any) -> str | None:
    if not isinstance(params, dict):
        return None
    raw = params.get("Authorization") or params.get("authorization")
    if isinstance(raw, str):
        return bearer_token(raw)
    token = params.get("token")
    return token if isinstance(token, str) else None


class GraphQLEndpoint(GraphQL[Context, None]):
    def __init__(self, settings: Settings, clock: Clock, limiter: RateLimiter) -> None:
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
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            try:
                await super().__call__(scope, receive, send)
            finally:
                if (timer := scope.get("state", {}).get("expiry_timer")) is not None:
                    timer.cancel()
            return
        if scope["type"] == "http" and scope.get("method") == "POST":
            request = Request(scope, receive)
            address = request.client.host if request.client else None
            try:
                authenticated = await authenticate(
                    self.settings,
                    bearer_token(request.headers.get("authorization")),
                    now=self.clock.now(),
                    trail=_trail(scope, address),
                )
            except NotAuthenticated as refusal:
                await self._unauthenticated(refusal.message)(scope, receive, send)
                return
            scope.setdefault("state", {})["viewer"] = authenticated.viewer
            scope["state"]["session_id"] = authenticated.session_id
        await super().__call__(scope, receive, send)

    @staticmethod
    def _unauthenticated(message: str) -> Response:
        return JSONResponse(
            {"data": None, "errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="ketafollow"'},
        )

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket | Any) -> Context:
        context = Context(
            clock=self.clock,
            request_id=request.scope.get("state", {}).get("request_id", ""),
            max_page_size=self.settings.max_page_size,
            policy=self.settings.clinic_policy,
            bus=request.app.state.bus,
            viewer=request.scope.get("state", {}).get("viewer"),
            session_id=request.scope.get("state", {}).get("session_id"),
            client_address=request.client.host if request.client else None,
            public_app_url=self.settings.mail.public_app_url,
            password_hashing=ARGON2,
        )
        if isinstance(request, WebSocket):
            context.transport = request
            context.spend_rate_limit = lambda cost: self._spend_on_socket(context, cost)
        return context

    async def _spend_on_socket(self, context: Context, cost: int) -> None:
        """An operation on a socket spends its viewer's tokens as the same request over HTTP would
        (HTTP requests spend theirs in `api.rate_limit.RateLimitMiddleware`, before GraphQL)."""
        if context.viewer is None:
            return  # no operation runs before `connection_init` is accepted
        bucket = self.limiter.bucket_for_viewer(context.viewer)
        retry_after = await self.limiter.spend(bucket, cost)
        if retry_after:
            raise RateLimited(refusal_message(bucket, retry_after))

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        """graphql-transport-ws: the access token comes in `connection_init`, or the socket closes."""
        token = _connection_token(context.connection_params)

        async def reauthenticate() -> Viewer:
            try:
                authenticated = await authenticate(
                    self.settings, token, now=self.clock.now(), trail=self._ws_trail(context)
                )
            except NotAuthenticated as refusal:
                raise Unauthenticated(refusal.message) from refusal
            return authenticated.viewer

        try:
            authenticated = await authenticate(
                self.settings, token, now=self.clock.now(), trail=self._ws_trail(context)
            )
        except NotAuthenticated as refusal:
            raise ConnectionRejectionError({"message": refusal.message, "code": "UNAUTHENTICATED"}) from refusal
        context.viewer = authenticated.viewer
        context.session_id = authenticated.session_id
        context.reauthenticate = reauthenticate
        websocket = context.transport
        if isinstance(websocket, WebSocket):
            delay = (authenticated.expires_at - self.clock.now()).total_seconds()
            timer = asyncio.get_running_loop().create_task(self._close_when_expired(websocket, delay))
            websocket.scope.setdefault("state", {})["expiry_timer"] = timer
        return None

    @staticmethod
    def _ws_trail(context: Context) -> AuditTrail:
        return AuditTrail(request_id=context.request_id, client_address=context.client_address)

    @staticmethod
    async def _close_when_expired(websocket: WebSocket, delay: float) -> None:
        await asyncio.sleep(max(delay, 0))
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(TOKEN_EXPIRED, "access token expired: reconnect with a new one")
