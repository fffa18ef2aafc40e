"""Sign-in sessions: one family per login, rotating refresh tokens.

Refresh tokens are opaque random strings; only their SHA-256 is stored (256 bits of entropy, so a
fast hash suffices and lets us look them up). Every use rotates the token (OAuth 2.0 Security
BCP). The family row is the unit of revocation: logout and reuse detection mark it revoked in
one UPDATE, and a rotation re-checks it in the same transaction that issues the successor, so a
rotation racing a logout can never leave a live token behind.

A rotated token presented again more than `REUSE_GRACE` after its rotation means it was copied:
the whole family is revoked. Inside the grace period it is the loser of two concurrent refreshes
(a phone retrying on a flaky network): it is refused, and the winner's login lives on.

Access tokens name their family (`sid`), and every request checks that it is still active
(`login_state`, through the cache of api.logins). Ending a login appends a `Login.ended` event in
the same transaction, so every replica hears of it through the event bus and closes its sockets.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tortoise.transactions import in_transaction

from models.identity.bearer_tokens import hash_token, new_token
from models.identity.sign_in_records import USER_AGENT_LENGTH, RefreshToken, SessionFamily
from models.kernel.events import Operation, record_event
from models.notifications.devices import end_session_devices

REUSE_GRACE = timedelta(seconds=5)


class RefreshRefusal(StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"
    CONCURRENT = "already used by a concurrent request"


class RefreshRefused(Exception):
    """The refresh token cannot be used; `family_revoked` when this refusal ended the login
    (`family_id`)."""

    def __init__(
        self,
        reason: RefreshRefusal,
        *,
        user_id: uuid.UUID | None = None,
        family_revoked: bool = False,
        family_id: uuid.UUID | None = None,
    ):
        super().__init__(reason.value)
        self.reason = reason
        self.user_id = user_id
        self.family_revoked = family_revoked
        self.family_id = family_id


@dataclass(frozen=True)
class IssuedRefreshToken:
    token: str
    user_id: uuid.UUID
    family_id: uuid.UUID


def _agent(user_agent: str | None) -> str | None:
    return user_agent[:USER_AGENT_LENGTH] if user_agent else None


async def start_session(
    user_id: uuid.UUID,
    *,
    now: datetime,
    idle_ttl: timedelta,
    absolute_ttl: timedelta,
    user_agent: str | None = None,
) -> IssuedRefreshToken:
    """A new login: a new family and its first refresh token."""
    token, token_hash = new_token()
    async with in_transaction():
        family = await SessionFamily.create(
            user_id=user_id,
            created_at=now,
            expires_at=now + absolute_ttl,
            last_used_at=now,
            user_agent=_agent(user_agent),
        )
        await RefreshToken.create(
            family=family,
            token_hash=token_hash,
            issued_at=now,
            idle_expires_at=min(now + idle_ttl, family.expires_at),
        )
    return IssuedRefreshToken(token=token, user_id=user_id, family_id=family.id)


LOGIN_ENDED = "Login.ended"


async def revoke_family(family_id: uuid.UUID, *, now: datetime, reason: str) -> bool:
    """End a login: its refresh tokens stop working, its devices get no more pushes, and every
    replica hears of it (a `Login.ended` event) to refuse its access tokens and close its sockets.
    False when it had already ended (nothing is written then)."""
    async with in_transaction():
        ended = await SessionFamily.filter(id=family_id, revoked_at=None).update(revoked_at=now, revoke_reason=reason)
        if not ended:
            return False
        await end_session_devices(family_id, now=now)
        await _announce_end(family_id, now=now, reason=reason)
    return True


async def _announce_end(family_id: uuid.UUID, *, now: datetime, reason: str) -> None:
    await record_event(
        LOGIN_ENDED,
        resource_type="SessionFamily",
        resource_id=family_id,
        operation=Operation.UPDATED,
        version=1,
        now=now,
        payload={"reason": reason[:32]},
    )


async def end_user_logins(
    user_id: uuid.UUID, *, now: datetime, reason: str, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """End every active login of a user (deactivation, a password change), or all but `keep`
    ("sign out all others"). Returns the logins ended now."""
    query = SessionFamily.filter(user_id=user_id, revoked_at=None)
    if keep is not None:
        query = query.exclude(id=keep)
    ended = []
    for family_id in await query.values_list("id", flat=True):
        if await revoke_family(family_id, now=now, reason=reason):  # type: ignore[arg-type]
            ended.append(family_id)
    return ended  # type: ignore[return-value]


@dataclass(frozen=True)
class LoginState:
    """Whether the login behind an access token may still be used, and until when at most."""

    active: bool
    user_id: uuid.UUID | None
    expires_at: datetime | None


async def login_state(family_id: uuid.UUID, *, now: datetime) -> LoginState:
    """One lookup by primary key: a login is active until it is revoked or reaches its absolute
    lifetime; an unknown one is not."""
    rows = await SessionFamily.filter(id=family_id).values_list("user_id", "revoked_at", "expires_at")
    if not rows:
        return LoginState(active=False, user_id=None, expires_at=None)
    user_id, revoked_at, expires_at = rows[0]
    return LoginState(active=revoked_at is None and now < expires_at, user_id=user_id, expires_at=expires_at)


@dataclass(frozen=True)
class EndedLogin:
    user_id: uuid.UUID
    family_id: uuid.UUID


class _FamilyRevoked(Exception):
    pass


async def rotate_refresh_token(
    token: str, *, now: datetime, idle_ttl: timedelta, user_agent: str | None = None
) -> IssuedRefreshToken:
    """Spend `token` and return its successor, or raise `RefreshRefused`."""
    stored = await RefreshToken.get_or_none(token_hash=hash_token(token)).select_related("family")
    if stored is None:
        raise RefreshRefused(RefreshRefusal.UNKNOWN)
    family = stored.family
    user_id: uuid.UUID = family.user_id  # type: ignore[attr-defined]
    if family.revoked_at is not None:
        raise RefreshRefused(RefreshRefusal.REVOKED, user_id=user_id)
    if stored.rotated_at is not None:
        if now - stored.rotated_at <= REUSE_GRACE:
            raise RefreshRefused(RefreshRefusal.CONCURRENT, user_id=user_id)
        ended = await revoke_family(family.id, now=now, reason=RefreshRefusal.REUSED.value)
        raise RefreshRefused(RefreshRefusal.REUSED, user_id=user_id, family_revoked=ended, family_id=family.id)
    if now >= stored.idle_expires_at or now >= family.expires_at:
        raise RefreshRefused(RefreshRefusal.EXPIRED, user_id=user_id)
    successor, successor_hash = new_token()
    try:
        async with in_transaction():
            claimed = await RefreshToken.filter(id=stored.id, rotated_at=None).update(rotated_at=now)
            if claimed != 1:
                raise RefreshRefused(RefreshRefusal.CONCURRENT, user_id=user_id)
            # Touching the family row serialises with a concurrent revocation of it.
            touched = {"last_used_at": now} | ({"user_agent": _agent(user_agent)} if user_agent else {})
            if await SessionFamily.filter(id=family.id, revoked_at=None).update(**touched) != 1:
                raise _FamilyRevoked
            await RefreshToken.create(
                family_id=family.id,
                token_hash=successor_hash,
                issued_at=now,
                idle_expires_at=min(now + idle_ttl, family.expires_at),
            )
    except _FamilyRevoked:
        raise RefreshRefused(RefreshRefusal.REVOKED, user_id=user_id) from None
    return IssuedRefreshToken(token=successor, user_id=user_id, family_id=family.id)


async def revoke_session(token: str, *, now: datetime) -> EndedLogin | None:
    """Log out: revoke the family of `token` (and unregister its devices). Returns the login, or
    None for an unknown token."""
    stored = await RefreshToken.get_or_none(token_hash=hash_token(token)).select_related("family")
    if stored is None:
        return None
    await revoke_family(stored.family.id, now=now, reason="logout")
    user_id: uuid.UUID = stored.family.user_id  # type: ignore[attr-defined]
    return EndedLogin(user_id=user_id, family_id=stored.family.id)
