"""Issue #16, findings 2, 3 and 4, each attack replayed over real HTTP and WebSocket (uvicorn on a
loopback port) and refused: an ended login stops its access tokens and sockets at once; each event
of a subscription is a request of its own (fresh loaders, its own audit rows, written before it is
sent); sockets are rate limited per address and capped per viewer, and must sign in in time."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from httpx_ws import AsyncWebSocketSession
from starlette.applications import Starlette
from strawberry import relay

from api.auth.tokens import issue_access_token
from api.database import use_database
from api.log import _RequestIdFilter
from api.settings import BucketPolicy, Settings
from models.identity.accounts import Patient
from models.kernel.audit import AuditEvent, AuditOutcome, AuditTrail
from models.kernel.clock import ManualClock
from tests.conftest import Tokens
from tests.support.clinical import REPORT_SIDE_EFFECT
from tests.support.graphql import gql
from tests.support.panel_data import counting_statements
from tests.support.sockets import (
    ME,
    Served,
    assert_refused_as_ended,
    bearer,
    closed,
    me,
    refresh,
    replica_settings,
    served,
    sign_in,
    socket,
    subscribe,
)

RIVERA, ALEX = "dr.rivera@demo.test", "alex@demo.test"
SURVEY = """
mutation Submit($input: SubmitSurveyResponseInput!) {
  submitSurveyResponse(input: $input) { result { __typename ... on SurveyResponse { totalScore } } }
}
"""


async def next_payload(ws: AsyncWebSocketSession) -> dict[str, Any]:
    message = await ws.receive_json(timeout=5)
    assert message["type"] == "next", message
    payload: dict[str, Any] = message["payload"]
    return payload


# ------------------------------------------------------------------ finding 3: an ended login stops


async def test_after_logout_the_old_access_token_is_refused_and_its_socket_closed(
    settings: Settings, clock: ManualClock
) -> None:
    async with served(settings, clock) as server:
        login = await sign_in(server, RIVERA)
        access = login["access_token"]
        assert (await gql(server.http, ME, token=access))["data"] == {"me": {"role": "PROVIDER"}}
        async with socket(server, access) as live:
            await subscribe(live, "subscription { alertRaised { id } }")
            await asyncio.sleep(0.2)  # the subscription listens
            assert (await server.http.post("/auth/revoke", data={"token": login["refresh_token"]})).status_code == 200
            ended = await closed(live)
        assert (ended.code, ended.reason) == (4401, "the login has ended: sign in again")
        # The stolen copy of the access token, still within its 15 minutes, no longer works anywhere.
        assert_refused_as_ended(await me(server, access))
        async with socket(server) as again:
            await again.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {access}"}})
            refused = await closed(again)
        assert (refused.code, refused.reason) == (4403, "invalid access token: the login has ended; sign in again")


async def test_refresh_token_reuse_ends_the_login_its_access_tokens_and_its_sockets(
    settings: Settings, clock: ManualClock
) -> None:
    async with served(settings, clock) as server:
        first = await sign_in(server, RIVERA)
        second = (await refresh(server, first["refresh_token"])).json()
        async with socket(server, second["access_token"]) as live:
            await subscribe(live, "subscription { alertRaised { id } }")
            await asyncio.sleep(0.2)
            clock.advance(timedelta(seconds=6))  # past the grace for concurrent retries: a copied token
            reused = await refresh(server, first["refresh_token"])
            assert reused.json()["error"] == "invalid_grant"
            ended = await closed(live)
        assert ended.code == 4401
        for access in (first["access_token"], second["access_token"]):
            assert_refused_as_ended(await me(server, access))


@pytest.mark.parametrize("store", ["in-process", "redis"])
async def test_a_login_ended_through_one_replica_stops_on_another(
    settings: Settings, clock: ManualClock, store: str
) -> None:
    shared = replica_settings(settings, store)
    async with served(shared, clock) as replica_a, served(shared, clock) as replica_b:
        login = await sign_in(replica_a, RIVERA)
        access = login["access_token"]
        assert (await gql(replica_b.http, ME, token=access))["data"] == {"me": {"role": "PROVIDER"}}  # now cached on B
        async with socket(replica_b, access) as on_b:
            await replica_a.http.post("/auth/revoke", data={"token": login["refresh_token"]})
            # B hears of it through the event bus and closes the socket ...
            assert (await closed(on_b)).code == 4401
        # ... and refuses the token, at the latest once its cached answer is older than the bound.
        clock.advance(settings.login_check_ttl)
        assert_refused_as_ended(await me(replica_b, access))


async def test_ending_all_of_a_users_logins_stops_each_of_them_but_the_one_kept(
    settings: Settings, clock: ManualClock
) -> None:
    """What deactivation, a password change and "sign out all others" call (api.logins)."""
    async with served(settings, clock) as server:
        kept, phone, laptop = [await sign_in(server, RIVERA) for _ in range(3)]
        kept_login = uuid.UUID(jwt.decode(kept["access_token"], options={"verify_signature": False})["sid"])
        async with socket(server, phone["access_token"]) as on_phone:
            with use_database(server.app.state.database):
                ended = await server.app.state.logins.end_user_logins(
                    tokens_user_id(kept["access_token"]), reason="signed out elsewhere", keep=kept_login
                )
            assert (await closed(on_phone)).code == 4401
        assert ended == 2
        for login in (phone, laptop):
            assert_refused_as_ended(await me(server, login["access_token"]))
            assert (await refresh(server, login["refresh_token"])).json()["error"] == "invalid_grant"
        assert (await gql(server.http, ME, token=kept["access_token"]))["data"] == {"me": {"role": "PROVIDER"}}


def tokens_user_id(access_token: str) -> uuid.UUID:
    subject = jwt.decode(access_token, options={"verify_signature": False})["sub"]
    return uuid.UUID(subject.partition(":")[2])


async def test_a_user_token_that_names_no_login_is_refused(
    client: httpx.AsyncClient, settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    token = issue_access_token(settings, subject_kind="user", subject_id=tokens.user_ids[ALEX], now=clock.now())
    response = await client.post("/graphql", json={"query": ME}, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"] == "invalid access token: the token names no login; sign in again"


async def test_a_cached_login_check_costs_no_statement(
    client: httpx.AsyncClient, settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    token = tokens.user(ALEX)

    async def statements() -> int:
        with counting_statements() as counter:
            assert (await client.post("/graphql", json={"query": ME}, headers=bearer(token))).status_code == 200
        return counter.count

    first, cached = await statements(), await statements()
    clock.advance(settings.login_check_ttl)
    assert (first, cached, await statements()) == (cached + 1, first - 1, first)


# ------------------------------------------------------------- finding 2: each event is a request

WATCH = """
subscription Watch { alertRaised { kind patient { givenName outcomes { phq9 { latest } } } } }
"""
RESUMED_WATCH = "subscription Resumed($since: DateTime) { alertRaised(since: $since) { kind patient { givenName } } }"


async def alex_reports(server: Served, alex: str, code: str, clock: ManualClock) -> None:
    report = {"code": code, "grade": "MODERATE", "onsetAt": clock.now().isoformat()}
    body = await gql(server.http, REPORT_SIDE_EFFECT, {"input": report}, token=alex)
    assert body["data"]["reportSideEffect"]["result"]["__typename"] == "SideEffectReport", body


def phq9(total_of_first_eight: int) -> list[dict[str, Any]]:
    """A PHQ-9 whose first eight items add up to the total (each at most 3), item 9 at 0."""
    values = [min(3, max(0, total_of_first_eight - 3 * index)) for index in range(8)] + [0]
    return [{"linkId": str(index + 1), "value": value} for index, value in enumerate(values)]


async def event_rows(app: Starlette, operation: str) -> dict[str, set[tuple[str, str]]]:
    """The audit rows of an operation, by request id: (resource type, outcome) pairs."""
    with use_database(app.state.database):
        rows = await AuditEvent.filter(operation=operation)
    found: dict[str, set[tuple[str, str]]] = {}
    for row in rows:
        found.setdefault(str(row.request_id), set()).add((row.resource_type, row.outcome.value))
    return found


async def test_a_second_event_shows_the_record_as_it_is_now_not_as_the_first_event_loaded_it(
    settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    alex = tokens.user(ALEX)
    async with served(settings, clock) as server, socket(server, tokens.user(RIVERA)) as live:
        await subscribe(live, WATCH)
        await asyncio.sleep(0.2)
        await alex_reports(server, alex, "SHORTNESS_OF_BREATH", clock)
        first = (await next_payload(live))["data"]["alertRaised"]
        answered = await gql(server.http, SURVEY, {"input": {"instrument": "PHQ-9", "answers": phq9(24)}}, token=alex)
        assert answered["data"]["submitSurveyResponse"]["result"]["totalScore"] == 24
        await alex_reports(server, alex, "CHEST_PAIN", clock)
        second = (await next_payload(live))["data"]["alertRaised"]
    assert first["patient"]["outcomes"]["phq9"]["latest"] == 7
    # The bug: loaders that lived as long as the socket answered 7 again here.
    assert second["patient"]["outcomes"]["phq9"]["latest"] == 24


async def test_each_event_is_audited_as_a_request_of_its_own_before_it_is_sent(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    alex = tokens.user(ALEX)
    with use_database(app.state.database):
        alex_id = str(relay.GlobalID("Patient", str((await Patient.get(user__email=ALEX)).id)))
    nested_reads = {("Alert", "SUCCESS"), ("Patient", "SUCCESS"), ("Outcomes", "SUCCESS")}
    async with served(settings, clock) as server, socket(server, tokens.user(RIVERA)) as live:
        await subscribe(live, WATCH)
        await asyncio.sleep(0.2)
        await alex_reports(server, alex, "SHORTNESS_OF_BREATH", clock)
        await next_payload(live)
        # Written before it was sent: the alert and every nested read of it, as one request.
        [(first_event, first_rows)] = (await event_rows(app, "Watch")).items()
        assert nested_reads <= first_rows

        # Another operation on the same socket is a request of its own, with its own trail.
        look = "query Look($id: ID!) { node(id: $id) { ... on Patient { givenName } } }"
        await subscribe(live, look, "2", id=alex_id)
        assert (await next_payload(live))["data"] == {"node": {"givenName": "Alex"}}
        assert (await live.receive_json(timeout=5))["type"] == "complete"
        [(look_request, look_rows)] = (await event_rows(app, "Look")).items()
        assert look_rows == {("Patient", "SUCCESS")}

        await alex_reports(server, alex, "CHEST_PAIN", clock)
        await next_payload(live)
        watched = await event_rows(app, "Watch")
    [second_event] = set(watched) - {first_event}
    assert nested_reads <= watched[second_event]
    assert watched[first_event] == first_rows  # nothing of the second event went into the first's trail
    assert len({first_event, second_event, look_request}) == 3


async def test_an_event_whose_audit_rows_cannot_be_written_is_not_sent(
    settings: Settings,
    clock: ManualClock,
    tokens: Tokens,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    written = AuditTrail.flush

    async def failing(self: AuditTrail, viewer: Any, now: Any) -> None:
        if self.operation == "Watch" and self.pending:
            raise OSError("the audit table is unreachable")
        await written(self, viewer, now)

    monkeypatch.setattr(AuditTrail, "flush", failing)
    since = clock.now()
    caplog.handler.addFilter(_RequestIdFilter())  # as the app's log handler does (api.log)
    with caplog.at_level(logging.ERROR, logger="ketafollow"):
        async with served(settings, clock) as server, socket(server, tokens.user(RIVERA)) as live:
            await subscribe(live, WATCH)
            await asyncio.sleep(0.2)
            await alex_reports(server, tokens.user(ALEX), "SHORTNESS_OF_BREATH", clock)
            payload = await next_payload(live)
            # The stream ends with it (a stream that went on would have lost the event for good)...
            then = [await live.receive_json(timeout=5)]
            while then[-1]["type"] != "complete" and len(then) < 5:
                then.append(await live.receive_json(timeout=5))
            monkeypatch.setattr(AuditTrail, "flush", written)
            # ... and the client, resuming with the time of the last event it saw, receives it.
            await subscribe(live, RESUMED_WATCH, "2", since=since.isoformat())
            resumed = await next_payload(live)
    assert payload["data"] is None
    [error] = payload["errors"]
    # An unreachable backend: the client is told to try again (api.faults, models.kernel.faults).
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    # It names the event's own request id (`<socket>.<operation>.<event>`), the id its failure
    # was logged under; the error that ends the stream names it too.
    request_id = error["extensions"]["requestId"]
    socket_id, operation, event = request_id.split(".")
    assert (len(socket_id), operation, event) == (32, "1", "1"), request_id
    assert error["message"].endswith(f"Reference: {request_id}")
    logged = [r for r in caplog.records if r.name.startswith("ketafollow") and "unavailable" in r.getMessage()]
    assert logged, [r.getMessage() for r in caplog.records]
    assert {getattr(r, "request_id", None) for r in logged} == {request_id}
    assert "Alex" not in str(payload)
    *errors, ended = then
    assert (ended["id"], ended["type"]) == ("1", "complete"), then
    assert all(m["type"] == "next" and m["payload"]["data"] is None for m in errors), then  # nothing of it
    assert {e["extensions"]["requestId"] for m in errors for e in m["payload"]["errors"]} == {request_id}, then
    assert resumed["data"]["alertRaised"]["patient"]["givenName"] == "Alex"


# ------------------------------------------------------------------- finding 4: socket limits


async def test_junk_sign_ins_from_one_address_are_rate_limited_and_audited_as_one_row(
    app: Starlette, settings: Settings, clock: ManualClock
) -> None:
    limited = replace(
        settings,
        socket_rate=BucketPolicy(burst=10, per_minute=1),
        rate_limit_key_prefix=f"{settings.rate_limit_key_prefix}{uuid.uuid4().hex[:8]}:",
    )
    outcomes: list[tuple[int, str]] = []
    async with served(limited, clock) as server:
        for attempt in range(50):
            async with socket(server) as junk:
                await junk.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer junk{attempt}"}})
                refused = await closed(junk)
                outcomes.append((refused.code, refused.reason))
        # Nothing written per attempt: the window is still open.
        with use_database(app.state.database):
            assert not await AuditEvent.filter(resource_type="Authenticate").exists()
    with use_database(app.state.database):  # the server has stopped: it wrote what it counted
        [row] = await AuditEvent.filter(resource_type="Authenticate")
    # Each socket spends one token to open and one to sign in: 5 got as far as their token.
    malformed = (4403, "invalid access token: malformed token")
    limited_upgrade = (4429, "rate limit exceeded: too many requests from this address; try again in 60 seconds")
    assert outcomes == [malformed] * 5 + [limited_upgrade] * 45
    assert (row.outcome, row.operation, row.client_address) == (AuditOutcome.DENIED, "SocketSignIn", "127.0.0.1")
    assert row.detail is not None and row.detail.startswith("50 refused socket sign-ins from this address")
    assert "45 rate limited" in row.detail and "5 invalid access token: malformed token" in row.detail


async def test_a_viewer_cannot_hold_more_sockets_than_the_cap(
    settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    capped = replace(settings, max_sockets_per_viewer=2)
    rivera = tokens.user(RIVERA)
    async with served(capped, clock) as server, socket(server, rivera), socket(server, rivera) as second:
        async with socket(server) as third:
            await third.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {rivera}"}})
            refused = await closed(third)
        assert refused.code == 4429
        assert refused.reason == "too many open sockets for this account (at most 2): close one first"
        async with socket(server, tokens.user(ALEX)):  # another viewer is not held back
            pass
        await second.close()
        await asyncio.sleep(0.2)  # the server has seen it go
        async with socket(server, rivera) as again:
            await subscribe(again, ME)
            assert (await next_payload(again))["data"] == {"me": {"role": "PROVIDER"}}


async def test_subscriptions_are_capped_per_socket_and_per_viewer(
    settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    capped = replace(settings, max_subscriptions_per_socket=2, max_subscriptions_per_viewer=3)
    rivera, alerts = tokens.user(RIVERA), "subscription { alertRaised { id } }"
    async with served(capped, clock) as server, socket(server, rivera) as first, socket(server, rivera) as second:
        for number in ("1", "2", "3"):
            await subscribe(first, alerts, number)
        refused = await first.receive_json(timeout=5)
        await subscribe(second, alerts, "1")
        await asyncio.sleep(0.2)  # the four streams have started (or been refused)
        await subscribe(second, alerts, "2")
        over = await next_payload(second)
    assert refused["id"] == "3" and refused["type"] == "error"
    assert refused["payload"][0]["extensions"] == {"code": "RATE_LIMITED"}
    assert (
        refused["payload"][0]["message"] == "too many operations at once on this socket (at most 2): complete one first"
    )
    assert over["data"] is None
    assert over["errors"][0]["extensions"] == {"code": "RATE_LIMITED"}
    assert over["errors"][0]["message"] == "too many live subscriptions for this account (at most 3): end one first"


async def test_a_socket_that_never_sends_connection_init_is_closed(settings: Settings, clock: ManualClock) -> None:
    hurried = replace(settings, socket_init_timeout=timedelta(milliseconds=300))
    async with served(hurried, clock) as server, socket(server) as silent:
        ended = await closed(silent)
    assert (ended.code, ended.reason) == (4408, "Connection initialisation timeout")
