"""Redis faults: a Redis that is down, hung, or comes back degrades the sharing of the rate limits,
never the protection; each call costs at most a short timeout until the circuit breaker opens, and
then nothing. Work is counted (calls that reached Redis), never timed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta

import httpx
import pytest
from redis import asyncio as aioredis
from starlette.applications import Starlette

from api.app import create_app
from api.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, Permit
from api.database import use_database
from api.rate_limit import Bucket, InProcessBuckets, RedisBuckets, make_bucket_store
from api.settings import DEFAULT_USER_RATE, BucketPolicy, Settings
from models.kernel.clock import ManualClock
from tests.conftest import REDIS_URL, START, Tokens, redis_answers
from tests.support.rate_limits import assert_rate_limited, limited, post
from tests.support.sockets import ME

# ------------------------------------------------------------------ the breaker, on a hand-moved clock


def failing(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        permit = breaker.allow()
        assert permit is not None
        breaker.failed(permit)


def test_the_breaker_opens_after_three_failures_in_a_row_and_refuses_calls_while_it_cools_down() -> None:
    clock = ManualClock(START)
    breaker = CircuitBreaker(clock)
    failing(breaker, 2)
    assert breaker.state == CLOSED
    permit = breaker.allow()
    assert permit == Permit(trial=False)
    breaker.succeeded(permit)  # an answer in between: the count starts again
    failing(breaker, 2)
    assert breaker.state == CLOSED
    failing(breaker, 1)
    assert breaker.state == OPEN
    assert breaker.allow() is None
    clock.advance(timedelta(milliseconds=999))
    assert breaker.allow() is None


def test_after_the_cool_down_one_trial_goes_through_and_an_answer_closes_the_breaker() -> None:
    clock = ManualClock(START)
    breaker = CircuitBreaker(clock)
    failing(breaker, 3)
    clock.advance(timedelta(seconds=1))
    assert breaker.state == HALF_OPEN
    trial = breaker.allow()
    assert trial == Permit(trial=True)
    assert breaker.allow() is None  # one trial at a time: the others still fail fast
    assert breaker.allow() is None
    breaker.succeeded(trial)
    assert breaker.state == CLOSED
    assert breaker.allow() == Permit(trial=False)


def test_a_failed_trial_opens_the_breaker_again_for_twice_as_long_up_to_five_seconds() -> None:
    clock = ManualClock(START)
    breaker = CircuitBreaker(clock)
    failing(breaker, 3)
    cool_downs = []
    for _ in range(5):
        clock.advance(breaker.cool_down)
        trial = breaker.allow()
        assert trial is not None
        assert trial.trial
        breaker.failed(trial)
        assert breaker.state == OPEN
        cool_downs.append(breaker.cool_down.total_seconds())
        clock.advance(breaker.cool_down - timedelta(milliseconds=1))
        assert breaker.allow() is None
        clock.advance(timedelta(milliseconds=1) - breaker.cool_down)
    assert cool_downs == [2, 4, 5, 5, 5]
    clock.advance(breaker.cool_down)
    trial = breaker.allow()
    assert trial is not None
    breaker.succeeded(trial)
    failing(breaker, 3)  # the next outage starts from the first cool-down again
    assert breaker.cool_down == timedelta(seconds=1)


def test_calls_let_through_before_it_opened_do_not_count_again_and_a_cancelled_trial_frees_its_place() -> None:
    clock = ManualClock(START)
    breaker = CircuitBreaker(clock)
    in_flight = [breaker.allow() for _ in range(5)]  # five calls started while it was closed
    for permit in in_flight:
        assert permit is not None
        breaker.failed(permit)
    assert breaker.state == OPEN
    assert breaker.cool_down == timedelta(seconds=1)  # the two late failures did not back it off
    clock.advance(timedelta(seconds=1))
    trial = breaker.allow()
    assert trial is not None
    breaker.abandoned(trial)  # cancelled before Redis answered: proves nothing
    assert breaker.state == HALF_OPEN
    assert breaker.allow() == Permit(trial=True)


def test_a_clock_set_back_ends_the_cool_down_instead_of_stretching_it() -> None:
    clock = ManualClock(START)
    breaker = CircuitBreaker(clock)
    failing(breaker, 3)
    clock.advance(timedelta(hours=-1))
    assert breaker.allow() == Permit(trial=True)


def test_a_replicas_own_buckets_count_what_redis_allowed_and_never_go_below_empty() -> None:
    own, now = InProcessBuckets(), START
    bucket = Bucket("user:x", BucketPolicy(burst=3, per_minute=60), "user")
    for _ in range(4):  # Redis allowed four (other replicas' refills): counted, not refused
        assert own.take(bucket, 1, now, granted=True) == 0
    assert own.take(bucket, 1, now) == 1.0  # empty, not in debt: one second to the next token
    assert own.take(bucket, 1, now + timedelta(seconds=1)) == 0


# ------------------------------------------------------------------ Redis that is not there, hangs, comes back


@asynccontextmanager
async def serve(settings: Settings, clock: ManualClock) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield app, http


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def limits_redis(app: Starlette) -> RedisBuckets:
    store = app.state.limiter.store
    assert isinstance(store, RedisBuckets)
    return store


async def readiness(http: httpx.AsyncClient) -> tuple[int, str]:
    response = await http.get("/readyz")
    return response.status_code, response.json()["checks"]["rate_limits"]


def transitions(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "ketafollow.rate_limit"]


async def test_with_redis_unreachable_the_replica_still_refuses_the_61st_request_and_stops_calling_redis(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = limited(settings, f"redis://127.0.0.1:{closed_port()}/0", user_rate=DEFAULT_USER_RATE)
    async with serve(nowhere, clock) as (server, http):
        assert await readiness(http) == (200, "ok")
        alex = tokens.user("alex@demo.test")
        for _ in range(DEFAULT_USER_RATE.burst):
            assert (await post(http, ME, alex)).status_code == 200
        assert_rate_limited(await post(http, ME, alex), retry_after=1)
        # Three refused connections opened the breaker; the other 58 requests never called Redis.
        limits = limits_redis(server)
        assert limits.redis.calls == 3
        assert limits.redis.breaker.state == OPEN
        # The login checks did without Redis too (the database answered, the answer is cached).
        assert server.state.logins.store.redis.calls <= 3
        # Still ready: the replica serves, under its own limits.
        assert await readiness(http) == (200, "degraded")
        assert (await http.get("/readyz")).json()["status"] == "ready"
    assert transitions(caplog) == [
        (
            "WARNING",
            "rate limit store unreachable (ConnectionError): each replica enforces the limits on its own "
            "until it answers",
        )
    ]


@dataclass
class HungRedis:
    """A TCP server that accepts connections, reads what it is sent and never answers."""

    port: int = 0
    accepted: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass


@asynccontextmanager
async def hung_redis() -> AsyncIterator[HungRedis]:
    hung = HungRedis()
    server = await asyncio.start_server(hung.hold, "127.0.0.1", 0)
    hung.port = server.sockets[0].getsockname()[1]
    try:
        yield hung
    finally:
        server.close()
        for writer in hung.writers:
            writer.close()
        await server.wait_closed()


async def test_a_hung_redis_costs_a_short_timeout_per_call_until_the_breaker_opens_then_nothing(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    async with hung_redis() as hung:
        quick = replace(
            limited(settings, hung.url, user_rate=BucketPolicy(burst=5, per_minute=60)),
            redis_socket_timeout=0.05,
        )
        async with serve(quick, clock) as (server, http):
            alex = tokens.fresh("alex@demo.test")
            for _ in range(5):
                assert (await post(http, ME, str(alex))).status_code == 200
            assert_rate_limited(await post(http, ME, str(alex)), retry_after=1)
            limits = limits_redis(server).redis
            assert limits.calls == 3  # three timeouts, then the breaker answered at once
            assert limits.breaker.state == OPEN
            # Each call reached the hung server once: no retry behind the count's back.
            assert hung.accepted == limits.calls + server.state.logins.store.redis.calls
            # After the cool-down, one trial: it hangs too, and the breaker stays away twice as long.
            clock.advance(timedelta(seconds=1))
            assert (await post(http, ME, str(alex))).status_code == 200  # one token refilled here
            assert limits.calls == 4
            assert limits.breaker.cool_down == timedelta(seconds=2)
            clock.advance(timedelta(seconds=1))
            assert (await post(http, ME, str(alex))).status_code == 200
            assert_rate_limited(await post(http, ME, str(alex)), retry_after=1)
            assert limits.calls == 4
            assert hung.accepted == limits.calls + server.state.logins.store.redis.calls
            assert await readiness(http) == (200, "degraded")
    assert [level for level, _ in transitions(caplog)] == ["WARNING"]
    assert "(TimeoutError)" in transitions(caplog)[0][1]


async def test_a_login_ended_while_redis_is_unreachable_is_still_refused_on_every_replica(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = limited(settings, f"redis://127.0.0.1:{closed_port()}/0")
    async with serve(nowhere, clock) as (replica_a, http_a), serve(nowhere, clock) as (replica_b, http_b):
        rivera = tokens.fresh("dr.rivera@demo.test")
        assert (await post(http_b, ME, str(rivera))).status_code == 200  # "active", cached on B
        with use_database(replica_a.state.database):
            assert await replica_a.state.logins.end_login(tokens.logins["dr.rivera@demo.test"], reason="logout")
        assert_refused_as_ended(await post(http_a, ME, str(rivera)))
        clock.advance(settings.login_check_ttl)  # B's cached answer has run out: the database says "ended"
        assert_refused_as_ended(await post(http_b, ME, str(rivera)))
        assert_refused_as_ended(await post(http_b, ME, str(rivera)))
        assert replica_b.state.logins.store.redis.calls <= 3
    lost = "login store unreachable (ConnectionError): login checks ask the database until it answers"
    assert [r.getMessage() for r in caplog.records if r.name == "ketafollow.logins"] == [lost, lost]  # a replica each


def assert_refused_as_ended(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert "the login has ended" in response.json()["errors"][0]["message"]


# ------------------------------------------------------------------ the real Redis (skipped without one)


needs_redis = pytest.mark.skipif(not redis_answers(), reason="no Redis on 127.0.0.1:6379 (CI has one)")


@needs_redis
@pytest.mark.parametrize(
    "max_connections",
    [
        512,  # the default: a connection each
        8,  # a pool much smaller than the crowd: requests queue for a connection, none is refused
    ],
)
async def test_150_spends_at_once_on_one_bucket_are_all_answered_by_redis(
    settings: Settings, clock: ManualClock, max_connections: int
) -> None:
    # Timeouts generous for a test machine shared with other work: 150 new connections at once
    # can keep its event loop busier than the default 0.25 s (then some spends fall back, and
    # this test is about the pool, not the timeout).
    shared = replace(
        limited(settings, REDIS_URL),
        redis_max_connections=max_connections,
        redis_socket_timeout=2.0,
        redis_connect_timeout=2.0,
    )
    store = make_bucket_store(shared, clock)
    assert isinstance(store, RedisBuckets)
    bucket = Bucket(f"user:{uuid.uuid4()}", BucketPolicy(burst=100, per_minute=60), "user")
    try:
        waits = await asyncio.gather(*(store.spend(bucket, 1, clock.now()) for _ in range(150)))
        assert sum(1 for wait in waits if wait == 0) == 100
        assert store.redis.calls == 150
        assert store.status == "ok"  # not one fell back to this process's buckets
        tokens_left = await store.redis.client.hget(shared.rate_limit_key_prefix + bucket.key, "tokens")
        assert float(tokens_left) == 0
    finally:
        await store.close()


class Proxy:
    """A TCP proxy in front of the real Redis, which a test can cut (every connection dropped,
    none accepted) and restore on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}


@needs_redis
async def test_when_redis_comes_back_the_limiter_goes_back_to_the_shared_buckets(
    app: Starlette, settings: Settings, clock: ManualClock, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ketafollow.rate_limit")
    proxy = Proxy()
    await proxy.start()
    try:
        # Cut, the proxy refuses at once; generous timeouts keep a busy test machine from adding
        # a timeout of its own while Redis is there.
        cuttable = replace(
            limited(settings, proxy.url, user_rate=BucketPolicy(burst=5, per_minute=60)),
            redis_socket_timeout=2.0,
            redis_connect_timeout=2.0,
        )
        async with serve(cuttable, clock) as (server, http):
            limits = limits_redis(server).redis
            alex = tokens.fresh("alex@demo.test")
            for _ in range(2):  # from Redis's bucket: three tokens left there
                assert (await post(http, ME, str(alex))).status_code == 200
            assert await readiness(http) == (200, "ok")

            await proxy.cut()
            # This replica's own bucket, under the same limit, knows the two it spent through
            # Redis: three more, then 429 (an outage does not hand out a fresh burst).
            for _ in range(3):
                assert (await post(http, ME, str(alex))).status_code == 200
            assert_rate_limited(await post(http, ME, str(alex)), retry_after=1)
            assert limits.breaker.state == OPEN
            calls_while_cut = limits.calls
            assert await readiness(http) == (200, "degraded")

            await proxy.start()
            clock.advance(timedelta(seconds=1))  # the cool-down; each bucket gains one token
            # Back on Redis's bucket: its three tokens and the one gained (this replica's own
            # would have held one).
            answers = [(await post(http, ME, str(alex))).status_code for _ in range(5)]
            assert answers == [200, 200, 200, 200, 429]
            assert limits.calls == calls_while_cut + 5
            assert limits.breaker.state == CLOSED
            assert await readiness(http) == (200, "ok")
            bucket = f"{cuttable.rate_limit_key_prefix}user:{tokens.user_ids['alex@demo.test']}"
            direct = aioredis.Redis.from_url(REDIS_URL)
            try:
                assert float(await direct.hget(bucket, "tokens")) == 0
            finally:
                await direct.aclose()
    finally:
        with contextlib.suppress(AssertionError):
            await proxy.cut()
    assert [level for level, _ in transitions(caplog)] == ["WARNING", "INFO"]
    assert transitions(caplog)[1][1] == "rate limit store answers again: buckets shared through Redis"
