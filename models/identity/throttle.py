"""The sign-in throttle (OWASP Authentication Cheat Sheet: lockout with back-off).

Each attempt is *reserved* before the password is checked, in one transaction that refuses when
a lock is on and otherwise counts the attempt, so guesses sent concurrently are counted like
guesses sent one after another. A success takes its count back.

Three counters, each with exponential back-off:
- account + address: 5 failures, then 1 minute doubling to 15 minutes;
- address alone: 20 failures (one address spraying many accounts), up to 1 hour;
- account alone: 20 failures from addresses it never signed in from (a distributed attack), up to
  15 minutes. An address the account signed in from before is not held by this lock, so an
  attacker elsewhere cannot keep the owner out; at worst a new address waits 15 minutes.
Attempts refused by a lock are not counted and do not extend it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction


class LoginThrottle(Model):
    key = fields.CharField(max_length=400, primary_key=True)
    failures = fields.IntField(default=0)
    window_started_at = fields.DatetimeField()
    lock_count = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)

    class Meta:
        table = "login_throttle"


class KnownSignInAddress(Model):
    """An address an account signed in from successfully (exempts it from the account-wide lock)."""

    id = fields.UUIDField(primary_key=True)
    subject = fields.CharField(max_length=300)
    address = fields.CharField(max_length=64)
    last_success_at = fields.DatetimeField()

    class Meta:
        table = "known_sign_in_address"
        unique_together = (("subject", "address"),)


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


PAIR_POLICY = ThrottlePolicy(5, timedelta(minutes=15), timedelta(minutes=1), timedelta(minutes=15))
ADDRESS_POLICY = ThrottlePolicy(20, timedelta(minutes=15), timedelta(minutes=1), timedelta(hours=1))
ACCOUNT_POLICY = ThrottlePolicy(20, timedelta(minutes=15), timedelta(minutes=1), timedelta(minutes=15))
# A lock_count older than this is forgotten, so an old incident does not lengthen a new lock.
_LOCK_MEMORY = timedelta(hours=24)


def _address(address: str | None) -> str:
    return (address or "unknown")[:64]


def _keys(subject: str, address: str | None, *, known: bool) -> list[tuple[str, ThrottlePolicy]]:
    keys = [
        (f"pair:{subject}|{_address(address)}", PAIR_POLICY),
        (f"address:{_address(address)}", ADDRESS_POLICY),
    ]
    if not known:
        keys.append((f"account:{subject}", ACCOUNT_POLICY))
    return sorted(keys)  # a fixed order: concurrent reservations lock rows without deadlocking


async def _row_for_update(key: str, now: datetime) -> LoginThrottle:
    row = await LoginThrottle.filter(key=key).select_for_update().first()
    if row is not None:
        return row
    try:
        async with in_transaction():
            await LoginThrottle.create(key=key, failures=0, window_started_at=now)
    except IntegrityError:
        pass  # created concurrently: lock that row instead
    row = await LoginThrottle.filter(key=key).select_for_update().first()
    if row is None:  # pragma: no cover - the row was just created
        raise RuntimeError(f"throttle row {key} vanished")
    return row


def _count(row: LoginThrottle, policy: ThrottlePolicy, now: datetime) -> None:
    if now - row.window_started_at > policy.window:
        row.failures, row.window_started_at = 0, now
    if row.locked_until is not None and now - row.locked_until > _LOCK_MEMORY:
        row.lock_count = 0
    row.failures += 1
    if row.failures >= policy.allowed:
        row.locked_until = now + policy.lock_duration(row.lock_count)
        row.lock_count += 1
        row.failures, row.window_started_at = 0, now


async def reserve_attempt(subject: str, address: str | None, *, now: datetime) -> datetime | None:
    """Count one sign-in attempt before it is checked. Returns when the lock ends if one is on
    (and counts nothing), or None to go ahead. `subject` is e.g. "user:alex@demo.test"."""
    known = await KnownSignInAddress.exists(subject=subject, address=_address(address))
    keys = _keys(subject, address, known=known)
    async with in_transaction():
        rows = [(await _row_for_update(key, now), policy) for key, policy in keys]
        ends = [row.locked_until for row, _ in rows if row.locked_until is not None and row.locked_until > now]
        if ends:
            return max(ends)
        for row, policy in rows:
            _count(row, policy, now)
            await row.save()
    return None


async def attempt_succeeded(subject: str, address: str | None, *, now: datetime) -> None:
    """A successful sign-in: forget the account's failures, remember the address."""
    async with in_transaction():
        await LoginThrottle.filter(key__in=[f"pair:{subject}|{_address(address)}", f"account:{subject}"]).delete()
        # The address keeps its count of others' failures, less this attempt.
        address_row = await LoginThrottle.filter(key=f"address:{_address(address)}").select_for_update().first()
        if address_row is not None and address_row.failures > 0:
            address_row.failures -= 1
            await address_row.save(update_fields=["failures"])
        updated = await KnownSignInAddress.filter(subject=subject, address=_address(address)).update(
            last_success_at=now
        )
        if not updated:
            try:
                async with in_transaction():
                    await KnownSignInAddress.create(subject=subject, address=_address(address), last_success_at=now)
            except IntegrityError:
                pass  # recorded concurrently
