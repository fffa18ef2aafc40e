"""Messaging for tests: send a message, find a patient's thread, subscribe and read the next event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from httpx_ws import AsyncWebSocketSession, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.messaging.messaging import MessageThread
from tests.support.sockets import PROTOCOL

SEND = """
mutation Send($input: SendMessageInput!) {
  sendMessage(input: $input) {
    result { __typename ... on Message { id number body sender { name role } } ... on Error { message } }
    crisisResources
  }
}
"""


async def thread_of(app: Starlette, email: str) -> str:
    with use_database(app.state.database):
        thread = await MessageThread.get(patient__user__email=email)
    return str(relay.GlobalID("MessageThread", str(thread.id)))


@asynccontextmanager
async def subscribed(
    app: Starlette, token: str, query: str, variables: dict[str, Any] | None = None
) -> AsyncIterator[AsyncWebSocketSession]:
    async with (
        httpx.AsyncClient(transport=ASGIWebSocketTransport(app=app), base_url="http://testserver") as http,
        aconnect_ws("/graphql", http, subprotocols=[PROTOCOL]) as socket,
    ):
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert (await socket.receive_json())["type"] == "connection_ack"
        await socket.send_json(
            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables or {}}}
        )
        yield socket


async def next_payload(socket: AsyncWebSocketSession, seconds: float = 5) -> dict[str, Any]:
    message = await socket.receive_json(timeout=seconds)
    assert message["type"] == "next", message
    payload: dict[str, Any] = message["payload"]
    return payload
