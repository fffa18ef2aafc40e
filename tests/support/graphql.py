"""A small GraphQL client over the ASGI transport, as the apps would call the API."""

from __future__ import annotations

from typing import Any

import httpx


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: object | None = None,
    expect_status: int = 200,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    assert response.status_code == expect_status, response.text
    body: dict[str, Any] = response.json()
    return body


def error_messages(body: dict[str, Any]) -> list[str]:
    return [error["message"] for error in body.get("errors") or []]
