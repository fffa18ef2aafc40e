"""GraphQL over WebSocket for tests: open a socket on the ASGI app, sign in, subscribe, and what
a closed or refused socket looks like; replicas sharing a database for the login tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.applications import Starlette

from api.app import create_app
from api.settings import Settings
from models.kernel.clock import ManualClock
from seeds.demo import DEMO_PASSWORD
from tests.conftest import REDIS_URL, redis_answers

PROTOCOL = "graphql-transport-ws"


ME = "{ me { role } }"


@dataclass
class Served:
    app: Starlette
    url: str
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return f"{self.url}/graphql"


@asynccontextmanager
async def served(settings: Settings, clock: ManualClock) -> AsyncIterator[Served]:
    """The app behind uvicorn on a free loopback port: TCP, HTTP and WebSocket frames."""
    app = create_app(settings, clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(250):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield Served(app, url, http)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)


@asynccontextmanager
async def socket(server: Served, token: str | None = None) -> AsyncIterator[AsyncWebSocketSession]:
    """A socket; signed in (acknowledged) when a token is given."""
    async with aconnect_ws(server.ws_url, server.http, subprotocols=[PROTOCOL]) as ws:
        if token is not None:
            await ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
            assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
        yield ws


async def closed(ws: AsyncWebSocketSession) -> WebSocketDisconnect:
    """The close the server sends next (any message before it fails the test)."""
    try:
        message = await ws.receive_json(timeout=5)
    except WebSocketDisconnect as ended:
        return ended
    raise AssertionError(f"expected the socket to close, got {message}")


async def subscribe(ws: AsyncWebSocketSession, query: str, operation_id: str = "1", **variables: Any) -> None:
    await ws.send_json({"id": operation_id, "type": "subscribe", "payload": {"query": query, "variables": variables}})


async def sign_in(server: Served, email: str) -> dict[str, str]:
    response = await server.http.post(
        "/auth/token", data={"grant_type": "password", "username": email, "password": DEMO_PASSWORD}
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


async def refresh(server: Served, refresh_token: str) -> httpx.Response:
    return await server.http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token})


async def me(server: Served, access_token: str) -> httpx.Response:
    return await server.http.post("/graphql", json={"query": ME}, headers=bearer(access_token))


def assert_refused_as_ended(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["errors"] == [
        {
            "message": "invalid access token: the login has ended; sign in again",
            "extensions": {"code": "UNAUTHENTICATED"},
        }
    ]


def replica_settings(settings: Settings, store: str) -> Settings:
    """Settings for replicas sharing login answers and rate limits through `store` ("in-process":
    nothing shared but the database; "redis": the Redis at 127.0.0.1:6379, skipped without it),
    under a key prefix of the test's own."""
    if store == "redis" and not redis_answers():
        pytest.skip("no Redis on 127.0.0.1:6379 (CI has one)")
    prefix = f"{settings.rate_limit_key_prefix}{uuid.uuid4().hex[:8]}:"
    return replace(settings, rate_limit_url=REDIS_URL if store == "redis" else None, rate_limit_key_prefix=prefix)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def socket_to(app: Starlette) -> AsyncIterator[AsyncWebSocketSession]:
    # Opened inside the test (not a fixture): the transport's task group must close in its own task.
    async with (
        httpx.AsyncClient(transport=ASGIWebSocketTransport(app=app), base_url="http://testserver") as http,
        aconnect_ws("/graphql", http, subprotocols=[PROTOCOL]) as socket,
    ):
        yield socket
