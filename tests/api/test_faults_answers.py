"""Clear answers when a backend fails, and a bound on every wait (api.faults, docs/operations.md).

The database fails for real: the running app's connections are closed and pointed where nothing
answers (a PostgreSQL port nobody listens on, a SQLite file in a folder that does not exist), or
another connection holds the write lock (SQLite) or a table's lock (PostgreSQL) past the busy or
statement timeout, or past the request's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import redis.exceptions
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.applications import Starlette
from strawberry import relay
from tortoise.connection import get_connection
from tortoise.exceptions import IntegrityError, OperationalError

from api.database import connection, open_database, use_database
from api.faults import FaultMiddleware
from api.log import _RequestIdFilter
from api.middleware import API_CONTENT_SECURITY_POLICY, RequestContextMiddleware, SecurityHeadersMiddleware
from api.settings import Settings
from models.kernel.clock import ManualClock
from models.kernel.faults import is_backend_unavailable
from models.messaging.messaging import Message, MessageThread
from models.safety.models import SafetyScreening
from seeds.demo import DEMO_PASSWORD
from tests.conftest import ON_POSTGRES, Tokens, running_app, signed_in_tokens
from tests.support.faults import SEND, free_port, writes_held

PROTOCOL = "graphql-transport-ws"
ME = "{ me { role } }"


@contextlib.asynccontextmanager
async def database_cut(app: Starlette, tmp_path: Path) -> AsyncIterator[None]:
    """The app's database goes away: its connections are closed and the next ones fail (a port
    nobody listens on; a file in a folder that does not exist). Restored on leaving."""
    with use_database(app.state.database):
        client: Any = get_connection("default")
    await client.close()
    if ON_POSTGRES:
        saved, client.port = client.port, free_port()
    else:
        saved, client.filename = client.filename, str(tmp_path / "gone" / "database.sqlite3")
    try:
        yield
    finally:
        if ON_POSTGRES:
            client.port = saved
        else:
            client.filename = saved


@contextlib.contextmanager
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture the access lines and errors, each with the request id it was logged under."""
    request_ids = _RequestIdFilter()
    caplog.handler.addFilter(request_ids)
    try:
        with caplog.at_level(logging.INFO):
            yield
    finally:
        caplog.handler.removeFilter(request_ids)


def assert_answered(response: httpx.Response, status: int, caplog: pytest.LogCaptureFixture) -> str:
    """The answer is JSON with the request id and every security header; the access line shows
    its status; for a 503, Retry-After; the failure was logged once, under the request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    request_id = response.headers["x-request-id"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"] == API_CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    if status == 503:
        assert int(response.headers["retry-after"]) > 0
    access = [r for r in caplog.records if r.name == "ketafollow.access"]
    assert access[-1].getMessage().endswith(f" {status}")
    assert getattr(access[-1], "request_id", None) == request_id
    failures = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("ketafollow") and r.request_id == request_id  # type: ignore[attr-defined]
    ]
    assert len(failures) >= 1, [r.getMessage() for r in caplog.records]
    return request_id


async def test_graphql_answers_503_in_its_shape_when_the_database_is_cut_and_recovers(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    token = tokens.user("dr.rivera@demo.test")
    with logs(caplog):
        async with database_cut(app, tmp_path):
            response = await client.post("/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}"})
        request_id = assert_answered(response, 503, caplog)
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["requestId"] == request_id
    assert "try again" in error["message"]
    # The sign-in check failed outside GraphQL: logged once, by api.faults.
    assert len([r for r in caplog.records if r.name == "ketafollow.faults" and r.request_id == request_id]) == 1  # type: ignore[attr-defined]
    again = await client.post("/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}"})
    assert again.json() == {"data": {"me": {"role": "PROVIDER"}}}


async def test_auth_token_answers_temporarily_unavailable_when_the_database_is_cut(
    app: Starlette, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    form = {"grant_type": "password", "username": "alex@demo.test", "password": DEMO_PASSWORD}
    with logs(caplog):
        async with database_cut(app, tmp_path):
            response = await client.post("/auth/token", data=form)
        assert_answered(response, 503, caplog)
    body = response.json()
    assert body["error"] == "temporarily_unavailable"
    assert "try again" in body["error_description"]
    assert (await client.post("/auth/token", data=form)).status_code == 200


def assert_logged_once_under(error: dict[str, Any], caplog: pytest.LogCaptureFixture) -> str:
    """A socket operation's 503 names its own request id (`<socket>.<operation>`), in the message
    and the extensions, and the failure was logged once, under that id."""
    request_id: str = error["extensions"]["requestId"]
    socket_id, _, operation = request_id.rpartition(".")
    assert len(socket_id) == 32 and operation.isdigit(), request_id
    assert error["message"].endswith(f"Reference: {request_id}")
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR and "unavailable" in r.getMessage()]
    assert [getattr(r, "request_id", None) for r in failures] == [request_id], [r.getMessage() for r in failures]
    return request_id


@contextlib.asynccontextmanager
async def socket_to(app: Starlette) -> AsyncIterator[AsyncWebSocketSession]:
    async with (
        httpx.AsyncClient(transport=ASGIWebSocketTransport(app=app), base_url="http://testserver") as http,
        aconnect_ws("/graphql", http, subprotocols=[PROTOCOL]) as socket,
    ):
        yield socket


async def test_a_socket_sign_in_while_the_database_is_cut_is_closed_with_try_again_later(
    app: Starlette, tokens: Tokens, tmp_path: Path
) -> None:
    token = tokens.user("dr.rivera@demo.test")
    async with database_cut(app, tmp_path), socket_to(app) as socket:
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        with pytest.raises(WebSocketDisconnect) as closed:
            await socket.receive_json(timeout=10)
    assert closed.value.code == 1013
    assert "temporarily unavailable" in (closed.value.reason or "")
    async with socket_to(app) as socket:  # and once it is back, a sign-in is accepted
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert (await socket.receive_json(timeout=10))["type"] == "connection_ack"


async def test_an_operation_on_an_open_socket_while_the_database_is_cut_answers_unavailable_and_the_socket_stays(
    app: Starlette, tokens: Tokens, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tokens.user("dr.rivera@demo.test")
    async with socket_to(app) as socket:
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert (await socket.receive_json(timeout=10))["type"] == "connection_ack"
        with logs(caplog):
            async with database_cut(app, tmp_path):
                await socket.send_json({"id": "1", "type": "subscribe", "payload": {"query": ME}})
                answer = await socket.receive_json(timeout=10)
        assert answer["id"] == "1"
        [error] = answer["payload"] if answer["type"] == "error" else answer["payload"]["errors"]
        assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert_logged_once_under(error, caplog)
        # The socket is still open and serves the next operation.
        while answer["type"] != "complete":
            answer = await socket.receive_json(timeout=10)
        await socket.send_json({"id": "2", "type": "subscribe", "payload": {"query": ME}})
        assert (await socket.receive_json(timeout=10)) == {
            "id": "2",
            "type": "next",
            "payload": {"data": {"me": {"role": "PROVIDER"}}},
        }


async def thread_of(app: Starlette, email: str) -> str:
    with use_database(app.state.database):
        thread = await MessageThread.get(patient__user__email=email)
    return str(relay.GlobalID("MessageThread", str(thread.id)))


async def message_count(app: Starlette) -> int:
    with use_database(app.state.database):
        return await Message.all().count()


async def test_a_request_past_its_deadline_is_cancelled_answered_503_and_writes_nothing(
    settings: Settings, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The database's own bounds are longer than the deadline: the deadline bites first.
    slow = replace(settings, request_timeout=0.5, sqlite_busy_timeout=5, db_statement_timeout=5)
    async with running_app(slow, clock) as app:
        with use_database(app.state.database):
            tokens = await signed_in_tokens(slow, clock)
        thread = await thread_of(app, "alex@demo.test")
        before = await message_count(app)
        sent = {"input": {"threadId": thread, "body": "Feeling fine today", "idempotencyKey": str(uuid.uuid4())}}
        headers = {"Authorization": f"Bearer {tokens.user('alex@demo.test')}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            with logs(caplog):
                async with writes_held(slow.database_url, "message"):
                    response = await client.post("/graphql", json={"query": SEND, "variables": sent}, headers=headers)
                assert_answered(response, 503, caplog)
            [error] = response.json()["errors"]
            assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            assert "0.5 s" in error["message"]
            assert any("deadline" in r.getMessage() for r in caplog.records if r.name == "ketafollow.faults")
            await asyncio.sleep(0.2)  # let a statement the deadline left running in the driver end
            assert await message_count(app) == before  # rolled back: nothing half-written
            # The retry (same key) is written once; the database is usable again (no lock was kept).
            # A retry is retried again on 503, as a client does: on a busy test machine the 0.5 s
            # deadline can also catch a retry.
            for _ in range(2):
                for _attempt in range(20):
                    retried = await client.post("/graphql", json={"query": SEND, "variables": sent}, headers=headers)
                    if retried.status_code != 503:
                        break
                assert retried.json()["data"]["sendMessage"]["result"]["__typename"] == "Message"
        assert await message_count(app) == before + 1


async def test_a_screened_write_the_database_cannot_take_answers_503_with_the_crisis_resources(
    settings: Settings, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """CLINICAL.md §0: when the screen cannot write, the patient is told to retry and still gets
    the crisis resources (worked out without the database)."""
    quick = replace(settings, sqlite_busy_timeout=0.2, db_statement_timeout=0.3)
    async with running_app(quick, clock) as app:
        with use_database(app.state.database):
            tokens = await signed_in_tokens(quick, clock)
        thread = await thread_of(app, "alex@demo.test")
        with use_database(app.state.database):
            screened = await SafetyScreening.all().count()
        sent = {"input": {"threadId": thread, "body": "I can't go on like this", "idempotencyKey": str(uuid.uuid4())}}
        headers = {"Authorization": f"Bearer {tokens.user('alex@demo.test')}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            with logs(caplog):
                async with writes_held(quick.database_url, "safety_screening"):
                    response = await client.post("/graphql", json={"query": SEND, "variables": sent}, headers=headers)
                assert_answered(response, 503, caplog)
            body = response.json()
            assert body["data"] is None
            assert {error["extensions"]["code"] for error in body["errors"]} == {"SERVICE_UNAVAILABLE"}
            advised = [error for error in body["errors"] if "advice" in error["extensions"]]
            assert advised and "988" in advised[0]["extensions"]["advice"]["crisisResources"]
            assert "988" in advised[0]["message"]
            with use_database(app.state.database):
                assert await SafetyScreening.all().count() == screened
            # The retry is screened and raises the alert.
            retried = await client.post("/graphql", json={"query": SEND, "variables": sent}, headers=headers)
            assert "988" in retried.json()["data"]["sendMessage"]["crisisResources"]
        with use_database(app.state.database):
            assert await SafetyScreening.all().count() == screened + 1


async def test_readyz_says_unreachable_when_the_database_is_cut(
    app: Starlette, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    async with database_cut(app, tmp_path):
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unreachable"
    assert (await client.get("/readyz")).status_code == 200


async def test_readyz_says_timeout_when_the_database_does_not_answer_in_time(
    settings: Settings, clock: ManualClock
) -> None:
    """Every connection is taken and held (a database that does not answer): /readyz gives up
    after READY_TIMEOUT_SECONDS and says so."""
    async with running_app(replace(settings, ready_timeout=0.2), clock) as app:
        with use_database(app.state.database):
            client: Any = get_connection("default")
        async with contextlib.AsyncExitStack() as held:
            if ON_POSTGRES:
                for _ in range(client.pool_maxsize):
                    await held.enter_async_context(client.acquire_connection())
            else:
                await client._lock.acquire()
                held.callback(client._lock.release)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                response = await http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"] == "timeout"
        # Recovered once the connections are free: within a few polls (0.2 s per check is tight on
        # a busy machine), never stuck on a check that was cancelled while it waited.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            answers = [(await http.get("/readyz")).status_code for _ in range(5)]
        assert 200 in answers, answers


async def _broken(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("a bug, with a patient's name in it: Alex Morgan")


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/graphql", lambda body: body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"),
        ("/auth/token", lambda body: body["error"] == "server_error"),
    ],
)
async def test_an_unexpected_error_is_a_json_500_in_the_paths_shape_never_text(
    path: str, shape: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = RequestContextMiddleware(SecurityHeadersMiddleware(FaultMiddleware(_broken, request_timeout=5)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        with logs(caplog):
            response = await http.post(path, json={})
            assert_answered(response, 500, caplog)
    assert shape(response.json())
    assert "Alex" not in response.text
    assert "retry-after" not in response.headers


async def test_a_request_past_its_deadline_is_answered_before_it_has_finished_unwinding() -> None:
    """A rollback on a hung database waits for the driver's own timeout: the client does not (the
    fault suite saw 6 s answers with a 3 s deadline). What the request sends later is dropped."""
    unwinding_may_end = asyncio.Event()
    unwound = asyncio.Event()

    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.Event().wait()  # a statement that never returns
        finally:
            await unwinding_may_end.wait()  # the rollback, as slow as the database
            await send({"type": "http.response.start", "status": 200, "headers": []})
            unwound.set()

    app = RequestContextMiddleware(SecurityHeadersMiddleware(FaultMiddleware(stuck, request_timeout=0.2)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await asyncio.wait_for(http.post("/graphql", json={}), timeout=10)
    assert not unwound.is_set()  # answered while the request was still unwinding
    assert response.status_code == 503
    assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    unwinding_may_end.set()
    await asyncio.wait_for(unwound.wait(), timeout=10)  # it unwinds in the background; its answer is dropped


def test_the_postgresql_bounds_reach_the_driver() -> None:
    """The statement, connect and pool timeouts are in what Tortoise opens (api.postgres_backend)."""
    settings = Settings(database_url="postgres://u@db:5432/k", db_statement_timeout=2.5, db_pool_timeout=1.5)
    config = connection(settings.database_url, settings)
    assert config["engine"] == "api.postgres_backend"
    credentials = config["credentials"]
    assert credentials["server_settings"]["statement_timeout"] == "2500"
    assert credentials["command_timeout"] == 3.5
    assert credentials["pool_timeout"] == 1.5
    assert credentials["timeout"] == settings.db_connect_timeout
    migrating = connection(settings.database_url, settings, serving=False)["credentials"]
    assert "statement_timeout" not in (migrating.get("server_settings") or {})
    sqlite = connection("sqlite:///tmp/x.sqlite3", replace(settings, sqlite_busy_timeout=4))
    assert sqlite["credentials"]["busy_timeout"] == "4000"


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL's statement timeout")
async def test_a_statement_past_the_statement_timeout_is_cancelled_by_postgresql(settings: Settings) -> None:
    async with open_database(replace(settings, db_statement_timeout=0.2)):
        with pytest.raises(asyncpg.QueryCanceledError) as failed:
            await get_connection("default").execute_query("SELECT pg_sleep(3)")
    assert is_backend_unavailable(failed.value)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError(), True),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
        (OperationalError(sqlite3.OperationalError("database is locked")), True),
        (redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379"), True),
        # Bugs and refusals stay what they are.
        (OperationalError(sqlite3.OperationalError("no such table: patient")), False),
        (IntegrityError("UNIQUE constraint failed"), False),
        (asyncpg.UndefinedColumnError("column x does not exist"), False),
        (redis.exceptions.ResponseError("WRONGTYPE"), False),
        (ValueError("bad"), False),
    ],
)
def test_which_failures_mean_a_backend_is_unavailable(error: Exception, unavailable: bool) -> None:
    assert is_backend_unavailable(error) is unavailable
    wrapped = RuntimeError("wrapped")  # and what wraps one, as a driver or Tortoise does
    wrapped.__cause__ = error
    assert is_backend_unavailable(wrapped) is unavailable
