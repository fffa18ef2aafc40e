"""Rate limits: a token bucket per user, per EHR client, and per address of anonymous requests.

Each GraphQL root field spends one token (`schema.cost`), any other request one; health checks
spend none (load balancers poll them). An empty bucket answers 429 with `Retry-After` before
anything else runs: no database read, no audit row, no GraphQL. Sign-in keeps its own, stricter
throttle (models.identity.throttle) behind this one.

The caller is told apart by a *verified* access token (a forged one cannot spend someone else's
budget); a request without one spends its address's budget. Buckets live in this process, or in
Redis (`RATE_LIMIT_URL`, by default the event bus's) so every replica spends from the same one;
there a Lua script reads, refills and spends in one step, so concurrent requests on several
replicas cannot all spend the last token.

A Redis outage degrades the sharing, never the protection: while Redis fails, hangs or its circuit
breaker is open (api.redis_guard), each replica spends from buckets of its own under the same
limits, and goes back to Redis once it answers. No request is ever let through unlimited: those
buckets count what the replica spent through Redis too, so an outage does not refill them.

Time comes from the app's clock (tests move it by hand); in Redis the replicas' clocks are
compared, and a bucket never refills backwards when one replica is a little behind another.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth.authenticate import bearer_token
from api.auth.tokens import InvalidToken, decode_access_token
from api.middleware import send_json_error
from api.redis_guard import GuardedRedis, RedisUnavailable, shared_redis
from api.settings import BucketPolicy, Settings
from models.identity.access import Viewer
from models.kernel.clock import Clock
from schema.cost import request_cost

logger = logging.getLogger("ketafollow.rate_limit")

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})
# Forget in-process buckets that are full again once there are this many (addresses come and go):
# a forgotten full bucket and a new one are the same.
_SWEEP_AT = 10_000


@dataclass(frozen=True)
class Bucket:
    """One caller's budget: `key` (e.g. "user:<id>") under `policy`."""

    key: str
    policy: BucketPolicy
    kind: str  # "user", "client" or "address": named in the refusal


class BucketStore(Protocol):
    async def spend(self, bucket: Bucket, cost: int, now: datetime) -> float:
        """Spend `cost` tokens if the bucket holds them and return 0, or spend nothing and
        return the seconds until it will."""

    @property
    def status(self) -> str:
        """For `/readyz`: "ok", or "degraded" while a shared store is replaced by this process."""

    async def close(self) -> None: ...


class InProcessBuckets:
    """Buckets in this process's memory: one replica's own budget."""

    def __init__(self) -> None:
        # key -> (tokens, when they were counted, when the bucket is full again), in seconds
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self._sweep_at = _SWEEP_AT

    @property
    def status(self) -> str:
        return "ok"

    async def spend(self, bucket: Bucket, cost: int, now: datetime) -> float:
        return self.take(bucket, cost, now)

    def take(self, bucket: Bucket, cost: int, now: datetime, *, granted: bool = False) -> float:
        """Spend `cost` tokens if the bucket holds them: 0, else the seconds until it does.
        `granted`: another store (Redis) already allowed this spending; count it whatever the
        bucket holds (never below empty) so that this replica's buckets know what it spent."""
        policy, at = bucket.policy, now.timestamp()
        tokens, last, _ = self._buckets.get(bucket.key, (float(policy.burst), at, at))
        tokens = min(float(policy.burst), tokens + max(0.0, at - last) * policy.per_second)
        last = max(last, at)
        wait = 0.0
        if tokens >= cost or granted:
            tokens = max(0.0, tokens - cost)
        else:
            wait = (cost - tokens) / policy.per_second
        self._buckets[bucket.key] = (tokens, last, last + (policy.burst - tokens) / policy.per_second)
        if len(self._buckets) >= self._sweep_at:
            self._buckets = {key: state for key, state in self._buckets.items() if state[2] > at}
            # Many callers still spending: sweep again only once there are twice as many.
            self._sweep_at = max(_SWEEP_AT, 2 * len(self._buckets))
        return wait

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1]: the bucket; ARGV: burst, tokens per millisecond, now in ms, cost.
# Returns 0 when spent, else the milliseconds until the bucket holds `cost`.
_SPEND = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 60000)
return wait
"""


class RedisBuckets:
    """Buckets in Redis, shared by every replica configured with the same URL and prefix; while
    Redis cannot answer, this replica's own buckets under the same policies (see the module)."""

    def __init__(self, redis: GuardedRedis, prefix: str) -> None:
        self.redis = redis
        self._script = redis.client.register_script(_SPEND)
        self._prefix = prefix
        self._own = InProcessBuckets()

    @property
    def status(self) -> str:
        return self.redis.status

    async def spend(self, bucket: Bucket, cost: int, now: datetime) -> float:
        policy = bucket.policy
        args = [policy.burst, policy.per_second / 1000, int(now.timestamp() * 1000), cost]
        keys = [self._prefix + bucket.key]
        try:
            wait_ms = await self.redis.run(lambda client: self._script(keys=keys, args=args, client=client))
        except RedisUnavailable:
            return self._own.take(bucket, cost, now)
        if not wait_ms:
            # What Redis allowed is counted here too: when Redis stops answering, this replica's
            # own buckets go on from what it spent, rather than from a full burst.
            self._own.take(bucket, cost, now, granted=True)
        return int(wait_ms) / 1000

    async def close(self) -> None:
        await self.redis.close()
        await self._own.close()


def make_bucket_store(settings: Settings, clock: Clock) -> BucketStore:
    redis = shared_redis(
        settings,
        clock,
        logger=logger,
        lost="rate limit store unreachable (%s): each replica enforces the limits on its own until it answers",
        back="rate limit store answers again: buckets shared through Redis",
    )
    return InProcessBuckets() if redis is None else RedisBuckets(redis, settings.rate_limit_key_prefix)


class RateLimiter:
    """Chooses the caller's bucket and spends from it; one per app, shared by HTTP and WebSocket."""

    def __init__(self, settings: Settings, clock: Clock, store: BucketStore) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store

    def bucket_for(self, kind: str, subject_id: UUID) -> Bucket:
        if kind == "client":
            return Bucket(f"client:{subject_id}", self.settings.client_rate, "client")
        return Bucket(f"user:{subject_id}", self.settings.user_rate, "user")

    def bucket_for_viewer(self, viewer: Viewer) -> Bucket:
        return self.bucket_for("client" if viewer.is_api_client else "user", viewer.id)

    def bucket_for_address(self, address: str | None) -> Bucket:
        return Bucket(f"address:{address or 'unknown'}", self.settings.anonymous_rate, "address")

    def bucket_for_socket_address(self, address: str | None) -> Bucket:
        """WebSocket upgrades and `connection_init`s from one address (api.sockets)."""
        return Bucket(f"socket:{address or 'unknown'}", self.settings.socket_rate, "address")

    async def spend(self, bucket: Bucket, cost: int) -> int:
        """Spend `cost` tokens (never more than a full bucket holds, so any request can pass):
        0 when spent, else the whole seconds (at least 1) until they are there."""
        wait = await self.store.spend(bucket, min(cost, bucket.policy.burst), self.clock.now())
        return max(1, math.ceil(wait)) if wait > 0 else 0

    @property
    def status(self) -> str:
        """`/readyz`'s rate-limit check: "ok", or "degraded" while Redis is replaced by this
        process's own buckets (the replica still serves, under the same limits)."""
        return self.store.status

    async def close(self) -> None:
        await self.store.close()


def refusal_message(bucket: Bucket, retry_after: int) -> str:
    who = {"user": "this account", "client": "this client", "address": "this address"}[bucket.kind]
    seconds = f"{retry_after} second{'s' if retry_after > 1 else ''}"
    return f"rate limit exceeded: too many requests from {who}; try again in {seconds}"


class RateLimitMiddleware:
    """Spends the caller's tokens for each HTTP request, or answers 429 with `Retry-After`.

    (Operations on a WebSocket spend theirs one by one: see `api.graphql_view`.)"""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter
        self.settings = limiter.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        bucket = self._bucket(scope)
        cost = 1
        if bucket.kind != "address" and scope["path"] == "/graphql" and scope["method"] == "POST":
            body = await _read_body(receive)
            receive = _replay(body, receive)
            cost = self._graphql_cost(body)
        retry_after = await self.limiter.spend(bucket, cost)
        if retry_after:
            await self._refuse(scope, send, bucket, retry_after)
            return
        await self.app(scope, receive, send)

    def _bucket(self, scope: Scope) -> Bucket:
        token = bearer_token(Headers(scope=scope).get("authorization"))
        if token is not None:
            try:
                claims = decode_access_token(self.settings, token, now=self.limiter.clock.now())
            except InvalidToken:
                pass  # refused later, as anonymous: it spends its address's budget
            else:
                return self.limiter.bucket_for(claims.subject_kind, claims.subject_id)
        client = scope.get("client")
        return self.limiter.bucket_for_address(client[0] if client else None)

    def _graphql_cost(self, body: bytes) -> int:
        try:
            request = json.loads(body)
        except ValueError:
            return 1
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            return 1  # refused by the GraphQL view (batches included): one request's worth
        operation_name = request.get("operationName")
        return request_cost(
            request["query"], operation_name if isinstance(operation_name, str) else None, self.settings.max_tokens
        )

    @staticmethod
    async def _refuse(scope: Scope, send: Send, bucket: Bucket, retry_after: int) -> None:
        message = refusal_message(bucket, retry_after)
        body: dict[str, object]
        if scope["path"].startswith("/auth/"):  # the OAuth2 endpoints' own error shape
            body = {"error": "rate_limited", "error_description": message}
        else:
            body = {
                "data": None,
                "errors": [{"message": message, "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after}}],
            }
        await send_json_error(send, 429, body, headers={"retry-after": str(retry_after)})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then waits on the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
