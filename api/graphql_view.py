"""The `/graphql` endpoint: Strawberry's ASGI view with our authentication, context and transport rules.

Every operation needs a valid access token whose login is still active: `Authorization: Bearer …`
over HTTP (without one the answer is 401 `UNAUTHENTICATED` before any GraphQL runs), or the
`connection_init` payload over WebSocket (checked again before every operation and every event
on the socket, which is closed with 4401 when the token expires or its login ends; api.sockets
has the socket limits). GET is refused for operations (no queries in URLs, which end up in logs
and caches; no CSRF by link), only `application/json` POST bodies are read (a form post from another
site is refused), batches are off, and GraphiQL is served only outside production.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from api.auth.authenticate import NotAuthenticated, authenticate, bearer_token
from api.auth.passwords import ARGON2
from api.auth.routes import second_factor_policy
from api.logins import LoginGate
from api.rate_limit import RateLimiter, refusal_message
from api.settings import Settings
from api.sockets import (
    LOGIN_OVER,
    SIGN_IN_REFUSED,
    TOO_MANY,
    OpenSocket,
    Refusal,
    RefusedSocketSignIns,
    SocketEndpoint,
    SocketProtocol,
    SocketRegistry,
    close_reason,
)
from models.identity.access import Viewer
from models.kernel.audit import AuditTrail
from models.kernel.clock import Clock
from models.kernel.faults import RETRY_AFTER_SECONDS
from schema import build_schema
from schema.context import Context
from schema.errors import RateLimited, Unauthenticated
from schema.extensions import only_unavailable
from schema.pagination import CursorCodec

TOKEN_EXPIRED = LOGIN_OVER


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


def _address(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


class GraphQLEndpoint(SocketEndpoint):
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        limiter: RateLimiter,
        logins: LoginGate,
        sockets: SocketRegistry,
        refused_sign_ins: RefusedSocketSignIns,
    ) -> None:
        schema = build_schema(
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_aliases,
            max_tokens=settings.max_tokens,
            max_cost=settings.max_query_cost,
            max_page_size=settings.max_page_size,
            introspection=settings.introspection_enabled,
        )
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphql_ide_enabled else None,
            allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=settings.socket_init_timeout,
            max_subscriptions_per_connection=settings.max_subscriptions_per_socket,
        )
        self.settings = settings
        self.clock = clock
        self.limiter = limiter
        self.logins = logins
        self.sockets = sockets
        self.refused_sign_ins = refused_sign_ins
        self.cursors = CursorCodec([settings.secret_key, *settings.previous_secret_keys.values()])
        # Made once: its keys are derived from the secret keys (HKDF), which do not change while serving.
        self.second_factor = second_factor_policy(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            address = _address(scope)
            bucket = self.limiter.bucket_for_socket_address(address)
            retry_after = await self.limiter.spend(bucket, 1)
            if retry_after:
                self.refused_sign_ins.count(address, "rate limited")
                await self._refuse_upgrade(scope, receive, send, refusal_message(bucket, retry_after))
                await self.refused_sign_ins.flush()
                return
            await super().__call__(scope, receive, send)
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
                    logins=self.logins,
                )
            except NotAuthenticated as refusal:
                await self._unauthenticated(refusal.message)(scope, receive, send)
                return
            scope.setdefault("state", {})["viewer"] = authenticated.viewer
            scope["state"]["session_id"] = authenticated.session_id
        await super().__call__(scope, receive, send)

    @staticmethod
    async def _refuse_upgrade(scope: Scope, receive: Receive, send: Send, message: str) -> None:
        """Accepted, then closed with 4429 and the refusal (with its wait) as the reason: a browser
        sees a close code and reason, never the status of a refused handshake."""
        websocket = WebSocket(scope, receive, send)
        offered = scope.get("subprotocols") or []
        await websocket.accept(
            subprotocol=GRAPHQL_TRANSPORT_WS_PROTOCOL if GRAPHQL_TRANSPORT_WS_PROTOCOL in offered else None
        )
        await websocket.close(code=TOO_MANY, reason=close_reason(message))

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        """An operation that failed only on a backend (every error SERVICE_UNAVAILABLE, no root
        field answered) is answered 503 with Retry-After, like a failure outside GraphQL (api.faults)."""
        response = super().create_response(response_data, sub_response)
        data = response_data.get("data") if isinstance(response_data, dict) else {}
        nothing = data is None or (isinstance(data, dict) and all(value is None for value in data.values()))
        if nothing and isinstance(response_data, dict) and only_unavailable(response_data.get("errors")):
            response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

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
            cursors=self.cursors,
            policy=self.settings.clinic_policy,
            bus=request.app.state.bus,
            viewer=request.scope.get("state", {}).get("viewer"),
            session_id=request.scope.get("state", {}).get("session_id"),
            client_address=request.client.host if request.client else None,
            public_app_url=self.settings.mail.public_app_url,
            password_hashing=ARGON2,
            logins_ended=request.app.state.logins.ended,
            second_factor=self.second_factor,
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

    async def sign_in_socket(self, context: Context, protocol: SocketProtocol) -> OpenSocket | Refusal:
        """graphql-transport-ws `connection_init`: the address's rate limit, then the access token
        (and its login), then the viewer's socket cap. Refused sign-ins are counted per address
        and window (api.sockets), not audited one by one."""
        address = context.client_address
        retry_after = await self.limiter.spend(self.limiter.bucket_for_socket_address(address), 1)
        if retry_after:
            return await self._refused_sign_in(
                address,
                "rate limited",
                Refusal(TOO_MANY, f"rate limit exceeded: too many socket sign-ins from this address; "
                        f"try again in {retry_after} s"),
            )  # fmt: skip
        token = _connection_token(context.connection_params)
        try:
            authenticated = await authenticate(
                self.settings,
                token,
                now=self.clock.now(),
                trail=context.new_trail(),
                logins=self.logins,
                audit_refusal=False,
            )
        except NotAuthenticated as refusal:
            why = "no access token" if token is None else refusal.message
            return await self._refused_sign_in(address, why, Refusal(SIGN_IN_REFUSED, refusal.message))
        viewer = authenticated.viewer
        socket = OpenSocket(
            viewer_key=self.limiter.bucket_for_viewer(viewer).key,
            session_id=authenticated.session_id,
            end=protocol.end,
        )
        if (cap := self.sockets.admit(socket)) is not None:
            return cap

        async def reauthenticate(trail: AuditTrail) -> Viewer:
            try:
                again = await authenticate(self.settings, token, now=self.clock.now(), trail=trail, logins=self.logins)
            except NotAuthenticated as refusal:
                raise Unauthenticated(refusal.message) from refusal
            return again.viewer

        context.viewer = viewer
        context.session_id = authenticated.session_id
        context.reauthenticate = reauthenticate
        context.claim_subscription = lambda: self.sockets.subscription(socket.viewer_key)
        delay = (authenticated.expires_at - self.clock.now()).total_seconds()
        socket.expiry = asyncio.get_running_loop().create_task(self._close_when_expired(protocol, delay))
        return socket

    async def _refused_sign_in(self, address: str | None, why: str, refusal: Refusal) -> Refusal:
        self.refused_sign_ins.count(address, why)
        await self.refused_sign_ins.flush()
        return refusal

    @staticmethod
    async def _close_when_expired(protocol: SocketProtocol, delay: float) -> None:
        await asyncio.sleep(max(delay, 0))
        await protocol.end(TOKEN_EXPIRED, "access token expired: reconnect with a new one")
