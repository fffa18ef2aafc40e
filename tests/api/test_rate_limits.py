"""Rate limits: a bucket per user, per EHR client and per anonymous address, counted per GraphQL
root field, refilled over time, shared by replicas through Redis; 429 with Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from httpx_ws import aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.applications import Starlette

from api.app import create_app
from api.database import use_database
from api.settings import BucketPolicy, Settings
from models.identity.password_reset import PasswordReset
from models.kernel.clock import ManualClock
from models.reports.checkins import CheckIn
from tests.conftest import REDIS_URL, UNREACHED, Tokens, redis_answers
from tests.support.clinical import SUBMIT_CHECK_IN
from tests.support.rate_limits import assert_rate_limited, limited, post
from tests.support.sockets import ME


@pytest.fixture(params=["in-process", "redis"])
def store(request: pytest.FixtureRequest) -> str | None:
    """Where the buckets live: each behaviour is checked on both."""
    if request.param == "redis" and not redis_answers():
        pytest.skip("no Redis on 127.0.0.1:6379 (CI has one)")
    return REDIS_URL if request.param == "redis" else None


@asynccontextmanager
async def served(settings: Settings, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_a_user_over_the_limit_gets_429_with_retry_after_and_another_user_is_unaffected(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens, store: str | None
) -> None:
    policy = BucketPolicy(burst=3, per_minute=60)  # one token a second
    async with served(limited(settings, store, user_rate=policy), clock) as http:
        alex, blair = tokens.user("alex@demo.test"), tokens.user("blair@demo.test")
        for _ in range(3):
            assert (await post(http, ME, alex)).status_code == 200
        assert_rate_limited(await post(http, ME, alex), retry_after=1)
        assert (await post(http, ME, blair)).status_code == 200


async def test_each_alias_and_each_root_field_spends_a_token(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens, store: str | None
) -> None:
    policy = BucketPolicy(burst=5, per_minute=60)
    async with served(limited(settings, store, user_rate=policy), clock) as http:
        alex = tokens.user("alex@demo.test")
        first = await post(http, "{ a: me { role } b: me { role } c: me { role } }", alex)
        assert first.status_code == 200
        assert set(first.json()["data"]) == {"a", "b", "c"}
        # Two tokens left: three root fields (two of them reached through a fragment) are refused,
        # and the wait is for the missing one.
        fragment = "{ me { role } ...More } fragment More on Query { instruments { code } unreadMessageCount }"
        assert_rate_limited(await post(http, fragment, alex), retry_after=1)
        assert (await post(http, "{ me { role } instruments { code } }", alex)).status_code == 200
        assert_rate_limited(await post(http, ME, alex), retry_after=1)


async def test_nothing_runs_when_a_request_is_refused(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens, store: str | None
) -> None:
    policy = BucketPolicy(burst=1, per_minute=60)
    check_in = {"input": {"recordedAt": clock.now().isoformat(), "pain": 3}}
    alex_check_ins = CheckIn.filter(patient__user__email="alex@demo.test")
    with use_database(app.state.database):
        before = await alex_check_ins.count()
    async with served(limited(settings, store, user_rate=policy), clock) as http:
        alex = tokens.user("alex@demo.test")
        assert (await post(http, SUBMIT_CHECK_IN, alex, check_in)).status_code == 200
        assert_rate_limited(await post(http, SUBMIT_CHECK_IN, alex, check_in), retry_after=1)
    with use_database(app.state.database):
        assert await alex_check_ins.count() == before + 1


async def test_the_bucket_refills_with_time(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens, store: str | None
) -> None:
    policy = BucketPolicy(burst=2, per_minute=6)  # a token every 10 seconds
    async with served(limited(settings, store, user_rate=policy), clock) as http:
        alex = tokens.fresh("alex@demo.test")
        for _ in range(2):
            assert (await post(http, ME, str(alex))).status_code == 200
        assert_rate_limited(await post(http, ME, str(alex)), retry_after=10)
        clock.advance(timedelta(seconds=4))
        assert_rate_limited(await post(http, ME, str(alex)), retry_after=6)
        clock.advance(timedelta(seconds=6))
        assert (await post(http, ME, str(alex))).status_code == 200
        assert_rate_limited(await post(http, ME, str(alex)), retry_after=10)
        clock.advance(timedelta(minutes=5))  # refills up to the burst, no further
        for _ in range(2):
            assert (await post(http, ME, str(alex))).status_code == 200
        assert (await post(http, ME, str(alex))).status_code == 429


async def test_an_ehr_client_has_its_own_budget(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens, store: str | None
) -> None:
    rates = {"user_rate": BucketPolicy(burst=1, per_minute=60), "client_rate": BucketPolicy(burst=4, per_minute=60)}
    changes = "{ changes(first: 10) { pageInfo { endCursor hasNextPage } } }"
    async with served(limited(settings, store, **rates), clock) as http:
        ehr = tokens.client("demo-ehr")
        for _ in range(4):
            assert (await post(http, changes, ehr)).status_code == 200
        refused = await post(http, changes, ehr)
        assert_rate_limited(refused, retry_after=1)
        assert "this client" in refused.json()["errors"][0]["message"]


async def test_anonymous_requests_are_limited_per_address_and_health_checks_never(
    app: Starlette, settings: Settings, clock: ManualClock, store: str | None
) -> None:
    policy = BucketPolicy(burst=2, per_minute=2)
    async with served(limited(settings, store, anonymous_rate=policy), clock) as http:
        assert (await http.post("/graphql", json={"query": ME})).status_code == 401
        bad_token = {"Authorization": "Bearer not-a-token"}
        assert (await http.post("/graphql", json={"query": ME}, headers=bad_token)).status_code == 401
        # The token endpoint answers in its own (OAuth2) shape.
        refused = await http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": "x"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "30"
        assert refused.json()["error"] == "rate_limited"
        assert_rate_limited(await http.post("/graphql", json={"query": ME}), retry_after=30)
        for _ in range(5):
            assert (await http.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/auth/activate", {"token": "not-a-token", "password": "lantern harbour quiet"}),
        ("/auth/password-reset", {"email": "blair@demo.test"}),
        ("/auth/password-reset/confirm", {"token": "not-a-token", "password": "lantern harbour quiet"}),
    ],
)
async def test_activation_and_password_reset_spend_the_addresss_budget(
    app: Starlette, settings: Settings, clock: ManualClock, store: str | None, path: str, form: dict[str, str]
) -> None:
    policy = BucketPolicy(burst=1, per_minute=1)
    async with served(limited(settings, store, anonymous_rate=policy), clock) as http:
        first = await http.post(path, data=form)
        assert first.status_code in {202, 400}, first.text  # answered: an unknown token, a reset recorded
        refused = await http.post(path, data=form)
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "60"
    assert refused.json()["error"] == "rate_limited"
    with use_database(app.state.database):  # the refused request recorded nothing
        assert await PasswordReset.all().count() == (1 if path == "/auth/password-reset" else 0)


async def test_signed_in_users_do_not_spend_their_addresss_budget(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    # A clinic behind one address: its staff's requests count per person, not per address.
    rates = {"anonymous_rate": BucketPolicy(burst=1, per_minute=1), "user_rate": UNREACHED}
    async with served(limited(settings, None, **rates), clock) as http:
        for email in ("dr.rivera@demo.test", "alex@demo.test", "dr.rivera@demo.test"):
            assert (await post(http, ME, tokens.user(email))).status_code == 200
        assert (await http.post("/graphql", json={"query": ME})).status_code == 401
        assert (await http.post("/graphql", json={"query": ME})).status_code == 429


async def test_a_batch_is_refused_and_costs_one_request(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    policy = BucketPolicy(burst=2, per_minute=60)
    async with served(limited(settings, None, user_rate=policy), clock) as http:
        alex = {"Authorization": f"Bearer {tokens.user('alex@demo.test')}"}
        batch = [{"query": "{ a: me { role } b: me { role } c: me { role } }"}] * 3
        assert (await http.post("/graphql", json=batch, headers=alex)).status_code == 400
        assert (await http.post("/graphql", json={"query": ME}, headers=alex)).status_code == 200
        assert (await http.post("/graphql", json={"query": ME}, headers=alex)).status_code == 429


async def test_replicas_on_one_redis_share_the_budget_and_never_overspend_it(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    if not redis_answers():
        pytest.skip("no Redis on 127.0.0.1:6379 (CI has one)")
    shared = limited(settings, REDIS_URL, user_rate=BucketPolicy(burst=6, per_minute=60))
    # What is tested is the budget shared through a Redis that answers. With production's 0.25 s
    # timeouts a busy machine (two suites on two cores) made a call time out and each replica fall
    # back to its own buckets, as it must; that fallback has its own tests (test_rate_limit_faults).
    shared = replace(shared, redis_socket_timeout=2.0, redis_connect_timeout=2.0)
    async with served(shared, clock) as replica_a, served(shared, clock) as replica_b:
        rivera = tokens.user("dr.rivera@demo.test")
        for _ in range(4):
            assert (await post(replica_a, ME, rivera)).status_code == 200
        assert (await post(replica_b, ME, rivera)).status_code == 200
        assert (await post(replica_b, ME, rivera)).status_code == 200
        assert_rate_limited(await post(replica_b, ME, rivera), retry_after=1)
        assert_rate_limited(await post(replica_a, ME, rivera), retry_after=1)

        # Twenty requests at once through both replicas spend exactly the six tokens of a full bucket.
        alex = tokens.user("alex@demo.test")
        answers = await asyncio.gather(*(post(replica, ME, alex) for replica in (replica_a, replica_b) * 10))
        assert sorted(a.status_code for a in answers) == [200] * 6 + [429] * 14


async def test_replicas_without_a_shared_store_each_keep_their_own_budget(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    own = limited(settings, None, user_rate=BucketPolicy(burst=1, per_minute=60))
    async with served(own, clock) as replica_a, served(own, clock) as replica_b:
        rivera = tokens.user("dr.rivera@demo.test")
        assert (await post(replica_a, ME, rivera)).status_code == 200
        assert (await post(replica_a, ME, rivera)).status_code == 429
        assert (await post(replica_b, ME, rivera)).status_code == 200


async def test_operations_on_a_websocket_spend_the_same_budget(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    socket_app = create_app(limited(settings, None, user_rate=BucketPolicy(burst=4, per_minute=60)), clock=clock)
    token = tokens.user("dr.rivera@demo.test")
    async with (
        socket_app.router.lifespan_context(socket_app),
        httpx.AsyncClient(transport=ASGIWebSocketTransport(app=socket_app), base_url="http://testserver") as http,
        aconnect_ws("/graphql", http, subprotocols=["graphql-transport-ws"]) as socket,
    ):
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert (await socket.receive_json())["type"] == "connection_ack"
        three = "{ a: me { role } b: me { role } c: me { role } }"
        answers = []
        for number, query in enumerate((three, three, ME), start=1):
            await socket.send_json({"id": str(number), "type": "subscribe", "payload": {"query": query}})
            answers.append(await socket.receive_json(timeout=5))
            if answers[-1]["type"] == "next":
                assert (await socket.receive_json(timeout=5))["type"] == "complete"
        assert set(answers[0]["payload"]["data"]) == {"a", "b", "c"}
        assert answers[1]["type"] == "error"  # graphql-transport-ws: refused before it ran
        [refused] = answers[1]["payload"]
        assert refused["extensions"] == {"code": "RATE_LIMITED"}
        assert "try again in 2 seconds" in refused["message"]
        assert answers[2]["payload"]["data"] == {"me": {"role": "PROVIDER"}}  # the last token
        subscription = {"query": "subscription { alertRaised { id } }"}
        await socket.send_json({"id": "4", "type": "subscribe", "payload": subscription})
        answer = await socket.receive_json(timeout=5)
        assert answer["type"] == "next"  # a subscription refused at its start: one result, no data
        assert answer["payload"]["data"] is None
        assert [error["extensions"]["code"] for error in answer["payload"]["errors"]] == ["RATE_LIMITED"]
        # The socket's spending is the account's: HTTP finds the bucket empty.
        transport = httpx.ASGITransport(app=socket_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as over_http:
            assert_rate_limited(await post(over_http, ME, token), retry_after=1)
