"""Argon2id password (and client secret) hashing, always off the event loop.

Hashing is deliberately slow; run inline it would stall every other request of the process.
"""

from __future__ import annotations

import asyncio
import secrets
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from models.identity.passwords import PasswordHashing

# RFC 9106's second recommended option (64 MiB, 3 passes), with 2 lanes for a 2-core host.
_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=2, type=Type.ID)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, password)


@cache
def _unmatchable_hash() -> str:
    return _HASHER.hash(secrets.token_urlsafe(32))


async def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; a malformed stored hash is treated as no match.

    With no stored hash (no such account) a real verification still runs and fails, so the
    answer takes the same time whether or not the account exists.
    """
    stored = password_hash if password_hash is not None else _unmatchable_hash()

    def verify() -> bool:
        try:
            return _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def needs_rehash(password_hash: str) -> bool:
    """True when the stored hash was made with other parameters than today's."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


ARGON2 = PasswordHashing(hash=hash_password, verify=verify_password)
