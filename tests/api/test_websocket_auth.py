"""The WebSocket endpoint (graphql-transport-ws) wants an access token in `connection_init`."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from httpx_ws import WebSocketDisconnect
from starlette.applications import Starlette

from models.kernel.clock import ManualClock
from tests.conftest import Tokens
from tests.support.sockets import socket_to


async def test_a_socket_without_a_token_is_closed(app: Starlette) -> None:
    async with socket_to(app) as socket:
        await socket.send_json({"type": "connection_init", "payload": {}})
        with pytest.raises(WebSocketDisconnect) as closed:
            await socket.receive_json()
    assert closed.value.code == 4403


async def test_a_socket_with_a_forged_token_is_closed(app: Starlette) -> None:
    async with socket_to(app) as socket:
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": "Bearer not.a.token"}})
        with pytest.raises(WebSocketDisconnect) as closed:
            await socket.receive_json()
    assert closed.value.code == 4403


async def test_a_socket_with_a_valid_token_runs_operations_as_its_viewer(app: Starlette, tokens: Tokens) -> None:
    token = tokens.user("dr.rivera@demo.test")
    async with socket_to(app) as socket:
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert (await socket.receive_json())["type"] == "connection_ack"
        await socket.send_json({"id": "1", "type": "subscribe", "payload": {"query": "{ me { role name } }"}})
        answer = await socket.receive_json()
        assert answer == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"me": {"role": "PROVIDER", "name": "dr.rivera@demo.test"}}},
        }


async def test_an_open_socket_stops_working_when_its_token_expires(
    app: Starlette, tokens: Tokens, clock: ManualClock
) -> None:
    token = tokens.user("dr.rivera@demo.test")
    async with socket_to(app) as socket:
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert (await socket.receive_json())["type"] == "connection_ack"
        clock.advance(timedelta(minutes=16))
        await socket.send_json({"id": "1", "type": "subscribe", "payload": {"query": "{ me { role } }"}})
        answer = await socket.receive_json()
    assert answer["type"] == "next"
    assert answer["payload"] == {
        "data": None,
        "errors": [{"message": "invalid access token: token has expired", "extensions": {"code": "UNAUTHENTICATED"}}],
    }


async def test_a_socket_is_closed_when_its_token_expires(app: Starlette, tokens: Tokens, clock: ManualClock) -> None:
    settings = tokens.settings
    now = int(clock.now().timestamp())
    subject = f"user:{tokens.user_ids['alex@demo.test']}"
    claims = {
        "iss": settings.token_issuer, "aud": settings.token_audience, "sub": subject,
        "iat": now, "exp": now + 1, "jti": "short-lived", "typ": "access",
        "sid": str(tokens.logins["alex@demo.test"]),
    }  # fmt: skip
    token = jwt.encode(claims, settings.secret_key, algorithm="HS256", headers={"kid": settings.secret_key_id})
    async with socket_to(app) as socket:
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert (await socket.receive_json())["type"] == "connection_ack"
        with pytest.raises(WebSocketDisconnect) as closed:
            await socket.receive_json(timeout=5)
    assert closed.value.code == 4401
