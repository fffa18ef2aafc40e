"""Health and readiness, and the refusal to serve an unmigrated database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.database import DatabaseNotMigrated, ensure_migrated, open_database, pending_migrations
from api.settings import Environment, Settings
from tests.conftest import ON_POSTGRES


async def test_healthz_answers_while_the_process_is_up(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_database_migrations_and_scheduler(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "scheduler": "running", "bus": "ok", "rate_limits": "ok"},
    }


async def test_every_response_carries_a_request_id_and_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert len(response.headers["x-request-id"]) == 32
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"


CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


@pytest.mark.parametrize(
    ("method", "path", "request_options"),
    [
        ("GET", "/healthz", {}),
        ("POST", "/graphql", {"json": {"query": "{ __typename }"}}),  # 401
        ("POST", "/auth/token", {"data": {"grant_type": "password", "username": "x@y.test", "password": "z"}}),
        ("POST", "/auth/revoke", {"data": {"token": "unknown"}}),
        ("PUT", "/graphql", {}),  # 405
        ("GET", "/nowhere", {}),  # 404
    ],
)
async def test_every_api_answer_carries_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str, request_options: dict[str, Any]
) -> None:
    response = await client.request(method, path, **request_options)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "strict-transport-security" not in response.headers  # only when configured


async def test_an_oversized_body_refused_at_the_door_still_carries_them(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", content=b"x" * 300_000, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_graphiql_in_development_is_not_blocked_by_the_apis_policy(client: httpx.AsyncClient) -> None:
    # The IDE's page loads its scripts; it is served outside production only.
    response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "content-security-policy" not in response.headers
    assert response.headers["x-frame-options"] == "DENY"


async def test_hsts_is_sent_when_configured(settings: Settings) -> None:
    app = create_app(replace(settings, hsts_seconds=31_536_000))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            response = await http.get("/healthz")
    assert response.headers["strict-transport-security"] == "max-age=31536000"


async def test_the_request_id_is_always_the_servers_own(client: httpx.AsyncClient) -> None:
    # A client must not choose the id written into audit rows; its own id is only logged beside.
    response = await client.get("/healthz", headers={"X-Request-ID": "portal-abc12345"})
    assert response.headers["x-request-id"] != "portal-abc12345"
    assert len(response.headers["x-request-id"]) == 32


async def test_the_app_refuses_to_start_on_an_unmigrated_database_and_names_the_fix(
    empty_database_url: str,
) -> None:
    app = create_app(Settings(env=Environment.TEST, database_url=empty_database_url))
    with pytest.raises(DatabaseNotMigrated, match="ketafollow migrate"):
        async with app.router.lifespan_context(app):
            pass


async def test_a_migrated_database_has_nothing_pending(settings: Settings) -> None:
    async with open_database(settings):
        assert await pending_migrations() == []
        await ensure_migrated()


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite PRAGMAs")
async def test_sqlite_runs_in_wal_mode_with_foreign_keys_on(settings: Settings) -> None:
    async with open_database(settings) as context:
        connection = context.db()
        _, journal = await connection.execute_query("PRAGMA journal_mode")
        _, foreign_keys = await connection.execute_query("PRAGMA foreign_keys")
        _, busy = await connection.execute_query("PRAGMA busy_timeout")
    assert journal[0][0] == "wal"
    assert foreign_keys[0][0] == 1
    assert busy[0][0] >= 5000


INVARIANT_INDEXES = {
    "data_sharing_consent_one_active",
    "treatment_plan_one_current",
    "dosing_session_one_in_progress",
    "alert_one_active_per_rule",
    "domain_event_resource_version",
    "device_one_active_per_token",
}


async def test_the_migrations_leave_every_invariant_index_and_the_audit_guard_in_place(settings: Settings) -> None:
    # A later migration that rebuilds a table (SQLite does, to alter a column) must recreate these.
    async with open_database(settings) as context:
        connection = context.db()
        if ON_POSTGRES:
            _, rows = await connection.execute_query("SELECT indexname FROM pg_indexes")
            _, triggers = await connection.execute_query("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        else:
            _, rows = await connection.execute_query("SELECT name FROM sqlite_master WHERE type = 'index'")
            _, triggers = await connection.execute_query("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    assert {row[0] for row in rows} >= INVARIANT_INDEXES
    assert {row[0] for row in triggers} & {"audit_event_no_update", "audit_event_no_change"}
    if ON_POSTGRES:  # the change feed's commit-order guard (models.ehr.changes)
        assert "domain_event_xid" in {row[0] for row in triggers}
        assert "domain_event_feed_order" in {row[0] for row in rows}
