"""A provider portal on another origin may call the API; no other site's page may read it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.settings import Settings
from models.kernel.clock import ManualClock
from tests.conftest import Tokens

PORTAL = "https://portal.example.org"
ELSEWHERE = "https://evil.example.net"
ME = {"query": "{ me { role } }"}


@pytest.fixture
async def portal_client(settings: Settings, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(replace(settings, cors_allowed_origins=(PORTAL,), cors_max_age=900), clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


def preflight(origin: str, method: str = "POST", headers: str = "authorization, content-type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def test_a_preflight_from_the_portal_is_allowed_and_cached(portal_client: httpx.AsyncClient) -> None:
    response = await portal_client.options("/graphql", headers=preflight(PORTAL))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == PORTAL
    assert response.headers["access-control-allow-methods"] == "POST"
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert response.headers["access-control-max-age"] == "900"
    assert "access-control-allow-credentials" not in response.headers  # bearer tokens, never cookies


@pytest.mark.parametrize(
    ("headers", "failure"),
    [
        (preflight(ELSEWHERE), "origin"),
        (preflight(PORTAL.replace("https", "http")), "origin"),
        (preflight(PORTAL, method="DELETE"), "method"),
        (preflight(PORTAL, headers="authorization, x-forwarded-for"), "headers"),
    ],
)
async def test_a_preflight_for_anything_else_is_refused(
    portal_client: httpx.AsyncClient, headers: dict[str, str], failure: str
) -> None:
    response = await portal_client.options("/graphql", headers=headers)
    assert response.status_code == 400
    assert failure in response.text
    if failure == "origin":
        assert "access-control-allow-origin" not in response.headers


async def test_the_portal_reads_answers_and_their_request_id_and_retry_after(
    app: Starlette, portal_client: httpx.AsyncClient, tokens: Tokens
) -> None:
    headers = {"Origin": PORTAL, "Authorization": f"Bearer {tokens.user('dr.rivera@demo.test')}"}
    response = await portal_client.post("/graphql", json=ME, headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == PORTAL
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"retry-after", "x-request-id"}
    assert "Origin" in response.headers["vary"]


async def test_a_post_from_another_origin_gets_no_allow_origin(
    app: Starlette, portal_client: httpx.AsyncClient, tokens: Tokens
) -> None:
    headers = {"Origin": ELSEWHERE, "Authorization": f"Bearer {tokens.user('dr.rivera@demo.test')}"}
    response = await portal_client.post("/graphql", json=ME, headers=headers)
    assert "access-control-allow-origin" not in response.headers  # the browser withholds the answer


async def test_without_configured_origins_no_origin_is_allowed(client: httpx.AsyncClient) -> None:
    response = await client.options("/graphql", headers=preflight(PORTAL))
    assert "access-control-allow-origin" not in response.headers
    posted = await client.post("/graphql", json=ME, headers={"Origin": PORTAL})
    assert "access-control-allow-origin" not in posted.headers
