"""Is the login behind an access token still active? Asked by every request and every socket event.

A login is a sign-in session family (models.identity.sign_ins); access tokens of users name theirs (`sid`).
The answer comes from one lookup by primary key, then is kept for `LOGIN_CHECK_CACHE_SECONDS`
(3 s by default, at most 5) in this process and, when the rate limits live in Redis, in that Redis
too, so a replica that has not asked yet learns it without the database. Cached, the check costs
no statement and no round trip.

Ending a login (`LoginGate.end_login`, `LoginGate.end_user_logins`) writes the revocation and a
`Login.ended` event in one transaction, then, at once in this process: its access tokens are
refused, the shared store says "ended" (never overwritten by a replica that read "active" a moment
before: those writes only add a missing key), and its sockets are closed with 4401. Other replicas
hear the event through the event bus and close their sockets too; until they do, their cached
answer is at most `LOGIN_CHECK_CACHE_SECONDS` old. An ended login never becomes active again.

The shared store only keeps, for seconds, answers the database gave. When its Redis
fails, hangs or its circuit breaker is open (api.redis_guard: a hung Redis costs a request at most
the short Redis timeout, then nothing), the check asks the database and the answers stay in this
process: an ended login is refused all the same.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from redis import asyncio as aioredis

from api.redis_guard import GuardedRedis, RedisUnavailable, shared_redis
from api.settings import Settings
from models.identity import sign_ins
from models.kernel.clock import Clock

logger = logging.getLogger("ketafollow.logins")

# How long an "ended" answer is kept: past it, every access token of the login has expired anyway.
_TOKEN_LEEWAY = timedelta(seconds=30)
# Forget expired answers once this many are kept (logins come and go).
_SWEEP_AT = 10_000


class LoginStore(Protocol):
    """Where replicas share answers (Redis), or nowhere (one process)."""

    async def get(self, session_id: uuid.UUID) -> tuple[bool, float] | None:
        """(active, for how many more seconds the answer holds), or None (not known here)."""

    async def remember_active(self, session_id: uuid.UUID, seconds: float) -> None:
        """Keep "active" for `seconds`, unless an answer is already there (it may be "ended")."""

    async def remember_ended(self, session_id: uuid.UUID, seconds: float) -> None: ...

    async def close(self) -> None: ...


class NoSharedStore:
    """One process: its own cache is all there is."""

    async def get(self, session_id: uuid.UUID) -> tuple[bool, float] | None:
        return None

    async def remember_active(self, session_id: uuid.UUID, seconds: float) -> None:
        return None

    async def remember_ended(self, session_id: uuid.UUID, seconds: float) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisLoginStore:
    """Answers in the rate limits' Redis, under their key prefix."""

    def __init__(self, redis: GuardedRedis, prefix: str) -> None:
        self.redis = redis
        self._prefix = f"{prefix}login:"

    async def get(self, session_id: uuid.UUID) -> tuple[bool, float] | None:
        key = f"{self._prefix}{session_id}"

        async def read(client: aioredis.Redis) -> list[object]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                return await pipe.execute()

        try:
            value, milliseconds = await self.redis.run(read)
        except RedisUnavailable:
            return None  # the database answers
        if value is None or not isinstance(milliseconds, int) or milliseconds <= 0:
            return None
        return value == b"1", milliseconds / 1000

    async def remember_active(self, session_id: uuid.UUID, seconds: float) -> None:
        if seconds > 0:
            await self._set(session_id, b"1", seconds, only_if_missing=True)

    async def remember_ended(self, session_id: uuid.UUID, seconds: float) -> None:
        await self._set(session_id, b"0", seconds, only_if_missing=False)

    async def _set(self, session_id: uuid.UUID, value: bytes, seconds: float, *, only_if_missing: bool) -> None:
        milliseconds = max(1, int(seconds * 1000))
        key = f"{self._prefix}{session_id}"
        with contextlib.suppress(RedisUnavailable):  # the answer is kept in this process only
            await self.redis.run(lambda client: client.set(key, value, px=milliseconds, nx=only_if_missing))

    async def close(self) -> None:
        await self.redis.close()


def make_login_store(settings: Settings, clock: Clock) -> LoginStore:
    redis = shared_redis(
        settings,
        clock,
        logger=logger,
        lost="login store unreachable (%s): login checks ask the database until it answers",
        back="login store answers again: login checks shared through Redis",
    )
    return NoSharedStore() if redis is None else RedisLoginStore(redis, settings.rate_limit_key_prefix)


LoginsEnded = Callable[[list[uuid.UUID]], Awaitable[None]]


class LoginGate:
    """The per-process cache of login answers, and the one way to end logins (see the module)."""

    def __init__(self, settings: Settings, clock: Clock, store: LoginStore) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        # session id -> (active, until when the answer holds, as a timestamp)
        self._answers: dict[uuid.UUID, tuple[bool, float]] = {}
        # Ended here or heard of: kept apart, so an "active" read racing the end cannot replace it.
        self._ended: dict[uuid.UUID, float] = {}
        self._listeners: list[LoginsEnded] = []

    @property
    def _ttl(self) -> float:
        return self.settings.login_check_ttl.total_seconds()

    @property
    def _ended_ttl(self) -> float:
        return (self.settings.access_token_ttl + _TOKEN_LEEWAY).total_seconds()

    def on_ended(self, listener: LoginsEnded) -> None:
        """Call `listener` with the logins this process learns have ended (to close their sockets)."""
        self._listeners.append(listener)

    async def is_active(self, session_id: uuid.UUID) -> bool:
        now = self.clock.now()
        at = now.timestamp()
        if self._ended.get(session_id, 0.0) > at:
            return False
        cached = self._answers.get(session_id)
        if cached is not None and cached[1] > at:
            return cached[0]
        shared = await self.store.get(session_id)
        if shared is not None:
            active, holds_for = shared
        else:
            state = await sign_ins.login_state(session_id, now=now)
            active = state.active
            holds_for = self._active_ttl(state, now) if active else self._ended_ttl
            if active:
                await self.store.remember_active(session_id, holds_for)
            else:
                await self.store.remember_ended(session_id, holds_for)
        self._remember(session_id, active, at, holds_for)
        return active

    def _active_ttl(self, state: sign_ins.LoginState, now: datetime) -> float:
        ttl = self._ttl
        if state.expires_at is not None:
            ttl = min(ttl, (state.expires_at - now).total_seconds())
        return max(ttl, 0.0)

    def _remember(self, session_id: uuid.UUID, active: bool, at: float, holds_for: float) -> None:
        """Keep an answer no longer than it holds (an "active" one read from the shared store has
        already spent part of its time there), and never longer than the cache time."""
        holds_for = min(holds_for, self._ttl) if active else holds_for
        if holds_for <= 0:
            return  # no cache: ask every time
        self._answers[session_id] = (active, at + holds_for)
        if len(self._answers) >= _SWEEP_AT:
            self._answers = {key: value for key, value in self._answers.items() if value[1] > at}
            self._ended = {key: until for key, until in self._ended.items() if until > at}

    async def ended(self, session_ids: Iterable[uuid.UUID]) -> None:
        """These logins have ended (here or, heard through the bus, elsewhere): refuse their tokens
        from now on, tell the other replicas through the shared store, close their sockets here."""
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return
        until = self.clock.now().timestamp() + self._ended_ttl
        for session_id in ids:
            self._ended[session_id] = until
            self._answers.pop(session_id, None)
            await self.store.remember_ended(session_id, self._ended_ttl)
        for listener in self._listeners:
            await listener(ids)

    async def end_login(self, session_id: uuid.UUID, *, reason: str) -> bool:
        """End one login (logout, "end this login"): False if it had already ended."""
        ended = await sign_ins.revoke_family(session_id, now=self.clock.now(), reason=reason)
        await self.ended([session_id])
        return ended

    async def end_user_logins(self, user_id: uuid.UUID, *, reason: str, keep: uuid.UUID | None = None) -> int:
        """End every login of a user (deactivation, a password change), or all but `keep`
        ("sign out all others"); returns how many were ended."""
        ended = await sign_ins.end_user_logins(user_id, now=self.clock.now(), reason=reason, keep=keep)
        await self.ended(ended)
        return len(ended)

    async def close(self) -> None:
        await self.store.close()
