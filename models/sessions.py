"""Sign-in sessions: rotating refresh tokens and the login throttle.

Refresh tokens are opaque random strings; only their SHA-256 is stored (they carry 256 bits of
entropy, so a fast hash is enough and lets us look them up). One family per login; every use
rotates the token; a rotated token presented again means it was copied, so the whole family is
revoked (OAuth 2.0 Security BCP, refresh token rotation). Rotation claims the token with a
conditional UPDATE, so of two concurrent refreshes exactly one wins.

The throttle (OWASP authentication guidance) counts failures per account and per client
address, locks with exponential back-off, and caps the account lock so that an attacker can
delay, but never permanently lock out, the account's owner.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.accounts import User


class RefreshToken(Model):
    id = fields.UUIDField(primary_key=True)
    family_id = fields.UUIDField(db_index=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "ketafollow.User", related_name="refresh_tokens", on_delete=fields.RESTRICT
    )
    token_hash = fields.CharField(max_length=64, unique=True)
    issued_at = fields.DatetimeField()
    idle_expires_at = fields.DatetimeField()
    family_expires_at = fields.DatetimeField()
    rotated_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    revoke_reason = fields.CharField(max_length=32, null=True)

    class Meta:
        table = "refresh_token"


class RefreshRefusal(StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"


class RefreshRefused(Exception):
    """The refresh token cannot be used; `family_revoked` when this refusal ended the login."""

    def __init__(
        self, reason: RefreshRefusal, *, user_id: uuid.UUID | None = None, family_revoked: bool = False
    ):
        super().__init__(reason.value)
        self.reason = reason
        self.user_id = user_id
        self.family_revoked = family_revoked


@dataclass(frozen=True)
class IssuedRefreshToken:
    token: str
    user_id: uuid.UUID
    family_id: uuid.UUID


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_session(
    user_id: uuid.UUID, *, now: datetime, idle_ttl: timedelta, absolute_ttl: timedelta
) -> IssuedRefreshToken:
    """A new login: a new token family."""
    token = secrets.token_urlsafe(32)
    family_id = uuid.uuid4()
    await RefreshToken.create(
        family_id=family_id,
        user_id=user_id,
        token_hash=hash_token(token),
        issued_at=now,
        idle_expires_at=min(now + idle_ttl, now + absolute_ttl),
        family_expires_at=now + absolute_ttl,
    )
    return IssuedRefreshToken(token=token, user_id=user_id, family_id=family_id)


async def revoke_family(family_id: uuid.UUID, *, now: datetime, reason: str) -> None:
    await RefreshToken.filter(family_id=family_id, revoked_at=None).update(
        revoked_at=now, revoke_reason=reason
    )


async def rotate_refresh_token(token: str, *, now: datetime, idle_ttl: timedelta) -> IssuedRefreshToken:
    """Spend `token` and return its successor, or raise `RefreshRefused`."""
    stored = await RefreshToken.get_or_none(token_hash=hash_token(token))
    if stored is None:
        raise RefreshRefused(RefreshRefusal.UNKNOWN)
    user_id: uuid.UUID = stored.user_id  # type: ignore[attr-defined]
    if stored.revoked_at is not None:
        raise RefreshRefused(RefreshRefusal.REVOKED, user_id=user_id)
    if stored.rotated_at is not None:
        await revoke_family(stored.family_id, now=now, reason=RefreshRefusal.REUSED.value)
        raise RefreshRefused(RefreshRefusal.REUSED, user_id=user_id, family_revoked=True)
    if now >= stored.idle_expires_at or now >= stored.family_expires_at:
        raise RefreshRefused(RefreshRefusal.EXPIRED, user_id=user_id)
    successor = secrets.token_urlsafe(32)
    async with in_transaction():
        claimed = await RefreshToken.filter(id=stored.id, rotated_at=None, revoked_at=None).update(
            rotated_at=now
        )
        if claimed == 1:
            await RefreshToken.create(
                family_id=stored.family_id,
                user_id=user_id,
                token_hash=hash_token(successor),
                issued_at=now,
                idle_expires_at=min(now + idle_ttl, stored.family_expires_at),
                family_expires_at=stored.family_expires_at,
            )
    if claimed != 1:
        # Another request spent it first: from here this is indistinguishable from a stolen copy.
        await revoke_family(stored.family_id, now=now, reason=RefreshRefusal.REUSED.value)
        raise RefreshRefused(RefreshRefusal.REUSED, user_id=user_id, family_revoked=True)
    return IssuedRefreshToken(token=successor, user_id=user_id, family_id=stored.family_id)


async def revoke_session(token: str, *, now: datetime) -> uuid.UUID | None:
    """Log out: revoke the family of `token`. Returns the user, or None for an unknown token."""
    stored = await RefreshToken.get_or_none(token_hash=hash_token(token))
    if stored is None:
        return None
    await revoke_family(stored.family_id, now=now, reason="logout")
    user_id: uuid.UUID = stored.user_id  # type: ignore[attr-defined]
    return user_id


class LoginThrottle(Model):
    key = fields.CharField(max_length=300, primary_key=True)
    failures = fields.IntField(default=0)
    window_started_at = fields.DatetimeField()
    lock_count = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)

    class Meta:
        table = "login_throttle"


@dataclass(frozen=True)
class ThrottlePolicy:
    """`allowed` failures within `window`, then a lock of `first_lock` doubling up to `longest_lock`."""

    allowed: int
    window: timedelta
    first_lock: timedelta
    longest_lock: timedelta

    def lock_duration(self, lock_count: int) -> timedelta:
        doubled: timedelta = self.first_lock * 2 ** min(lock_count, 20)
        return min(doubled, self.longest_lock)


# The account lock is capped at 15 minutes: its owner always gets back in within that time.
ACCOUNT_POLICY = ThrottlePolicy(
    allowed=5,
    window=timedelta(minutes=15),
    first_lock=timedelta(minutes=1),
    longest_lock=timedelta(minutes=15),
)
# An address is nobody's account: it may be locked for longer.
ADDRESS_POLICY = ThrottlePolicy(
    allowed=20, window=timedelta(minutes=15), first_lock=timedelta(minutes=1), longest_lock=timedelta(hours=1)
)
# A lock_count older than this is forgotten, so an old incident does not lengthen a new lock.
_LOCK_MEMORY = timedelta(hours=24)


def account_key(email: str) -> str:
    return f"account:{email.strip().lower()}"


def address_key(address: str | None) -> str:
    return f"address:{address or 'unknown'}"


async def locked_until(keys: list[str], *, now: datetime) -> datetime | None:
    """When the latest active lock on any of `keys` ends, or None if none is locked."""
    locks = await LoginThrottle.filter(key__in=keys, locked_until__gt=now)
    ends = [lock.locked_until for lock in locks if lock.locked_until is not None]
    return max(ends) if ends else None


async def record_failure(key: str, policy: ThrottlePolicy, *, now: datetime) -> None:
    """Count a failed sign-in against `key`; lock it when the policy says so."""
    async with in_transaction():
        row = await LoginThrottle.filter(key=key).select_for_update().first()
        if row is None:
            try:
                async with in_transaction():
                    await LoginThrottle.create(key=key, failures=0, window_started_at=now)
            except IntegrityError:
                pass  # created concurrently: count against that row
            row = await LoginThrottle.filter(key=key).select_for_update().first()
            assert row is not None
        if now - row.window_started_at > policy.window:
            row.failures, row.window_started_at = 0, now
        if row.locked_until is not None and now - row.locked_until > _LOCK_MEMORY:
            row.lock_count = 0
        row.failures += 1
        if row.failures >= policy.allowed:
            row.locked_until = now + policy.lock_duration(row.lock_count)
            row.lock_count += 1
            row.failures, row.window_started_at = 0, now
        await row.save()


async def clear_failures(key: str) -> None:
    """A successful sign-in forgets the account's failures (not the address's)."""
    await LoginThrottle.filter(key=key).delete()
