"""Rate-limit helpers: settings with a fresh bucket prefix, a GraphQL post, the 429 it must be."""

from __future__ import annotations

import uuid
from dataclasses import replace

import httpx

from api.settings import BucketPolicy, Settings


def limited(settings: Settings, store: str | None, **rates: BucketPolicy) -> Settings:
    """Settings with these rates and a key prefix of their own: every test's demo clinic has the
    same user ids, so buckets must not carry over from one test to the next in Redis."""
    prefix = f"{settings.rate_limit_key_prefix}{uuid.uuid4().hex[:8]}:"
    return replace(settings, rate_limit_url=store, rate_limit_key_prefix=prefix, **rates)


async def post(http: httpx.AsyncClient, query: str, token: str, variables: dict[str, object] | None = None):
    return await http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers={"Authorization": f"Bearer {token}"}
    )


def assert_rate_limited(response: httpx.Response, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": retry_after}
    assert "rate limit exceeded" in error["message"]
