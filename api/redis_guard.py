"""Redis for the rate limits and the login checks: a Redis that hangs costs milliseconds, not seconds.

Every request asks it (its bucket; whether its login is still active), so a call must never wait
long, and must never be refused for want of a connection while Redis answers:

- a reply, a connection, and a free connection of the pool each come within
  `REDIS_SOCKET_TIMEOUT_SECONDS` / `REDIS_CONNECT_TIMEOUT_SECONDS` (0.25 s by default), with no
  retry (one failed call is reported, not repeated);
- the pool holds up to `REDIS_MAX_CONNECTIONS` (512) connections and a request that finds them all
  busy waits its turn (within the same timeout) rather than failing;
- a circuit breaker (api.breaker) stops calling after three failures in a row: for a cool-down of
  1 s, doubling to 5 s while Redis stays away, calls fail at once without touching it; then one
  trial call, and the first answer closes it.

A call that fails, or that the breaker refuses, raises `RedisUnavailable`: the caller does without
Redis (the rate limits in this process, the login check in the database). The first failure logs
a warning, the first answer after it an info line: one line per transition, not one per request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from api.breaker import CircuitBreaker
from api.settings import Settings
from models.kernel.clock import Clock

T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis did not answer in time, failed, or the breaker is open (the message says which)."""


class GuardedRedis:
    """One store's Redis client, behind its own circuit breaker."""

    def __init__(
        self, url: str, settings: Settings, clock: Clock, *, logger: logging.Logger, lost: str, back: str
    ) -> None:
        socket_timeout = settings.redis_socket_timeout
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.redis_max_connections,
            timeout=socket_timeout,  # waiting for a free connection
            socket_timeout=socket_timeout,
            socket_connect_timeout=settings.redis_connect_timeout,
        )
        self.client = aioredis.Redis.from_pool(pool)
        self.breaker = CircuitBreaker(clock)
        self._logger = logger
        self._lost = lost
        self._back = back
        # Calls that went to Redis (the breaker let them through): what tests count.
        self.calls = 0
        self.degraded = False

    @property
    def status(self) -> str:
        """For `/readyz`: "ok", or "degraded" from a failed call until the next answer."""
        return "degraded" if self.degraded else "ok"

    async def run(self, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        permit = self.breaker.allow()
        if permit is None:
            raise RedisUnavailable("circuit open")
        self.calls += 1
        try:
            result = await call(self.client)
        except (RedisError, OSError) as error:  # TimeoutError is an OSError
            self.breaker.failed(permit)
            if not self.degraded:
                self.degraded = True
                self._logger.warning(self._lost, type(error).__name__)
            raise RedisUnavailable(type(error).__name__) from error
        except BaseException:
            self.breaker.abandoned(permit)
            raise
        self.breaker.succeeded(permit)
        if self.degraded:
            self.degraded = False
            self._logger.info(self._back)
        return result

    async def close(self) -> None:
        await self.client.aclose()


def shared_redis(
    settings: Settings, clock: Clock, *, logger: logging.Logger, lost: str, back: str
) -> GuardedRedis | None:
    """The guarded client of a store the replicas share through `RATE_LIMIT_URL` (the rate limits,
    the login checks), or None when that is unset and each replica keeps its own."""
    if not settings.rate_limit_url:
        return None
    return GuardedRedis(settings.rate_limit_url, settings, clock, logger=logger, lost=lost, back=back)
