"""Idempotent writes (ARCHITECTURE.md decision 5, PRODUCT.md "retry any write without duplicates").

A key is scoped to (viewer, operation). The first request with a key runs and its outcome is
stored in the same transaction as its writes; a retry with the same key and the same input gets
that outcome back and writes nothing; the same key with another input is refused. A unique
constraint settles concurrent retries: the loser's transaction rolls back entirely and it answers
with the winner's outcome, also when what the winner wrote made the loser refuse (a survey already
answered, a session already completed).

Only outcomes that wrote something are stored: a success, or a safety refusal (which may have
raised alerts). Invalid input writes nothing and is not stored, so the corrected request may
reuse its key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.queryset import QuerySetSingle
from tortoise.transactions import in_transaction

from models.identity.access import Viewer
from models.kernel.errors import DomainError, InvalidInput
from models.kernel.prepared import prepared, prepared_read

MAX_KEY_LENGTH = 128


class IdempotencyKey(Model):
    id = fields.UUIDField(primary_key=True)
    viewer_id = fields.UUIDField()
    operation = fields.CharField(max_length=64)
    key = fields.CharField(max_length=MAX_KEY_LENGTH)
    request_hash = fields.CharField(max_length=64)
    response: dict[str, Any] = fields.JSONField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "idempotency_key"
        unique_together = (("viewer_id", "operation", "key"),)


class IdempotencyConflict(DomainError):
    """The key was already used for a different request."""


class StoredRefusal(DomainError):
    """A refusal that was stored under a key; `kind` and `details` let the API rebuild it."""

    def __init__(self, message: str, kind: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details


@dataclass(frozen=True)
class Outcome:
    """What a write produced: the id of its main record and any advice for the client; `record`,
    the record itself as the write made it (the answer needs no read-back), when it was made by
    this request (never stored with the key: a replay has only the id)."""

    resource_id: UUID
    advice: dict[str, Any] = field(default_factory=dict)
    record: object | None = field(default=None, compare=False, repr=False)


Written = TypeVar("Written")


async def answered_record(outcome: Outcome, kind: type[Written], read: Callable[[], Awaitable[Written]]) -> Written:
    """The record a write answers with: as this request made it (its read audited with its
    creation: `record_created(returned=True)`), or, for a retry answered from the key, `read`."""
    if isinstance(outcome.record, kind):
        return outcome.record
    return await read()


# Inputs added to an operation after keys were first stored: left out of the fingerprint while
# unset, so a request retried across the upgrade still matches the key it was first sent with.
ADDED_LATER = frozenset({"recorded_at"})
# The key itself, and input problems found by the API (a request with problems is refused, never stored).
NOT_THE_REQUEST = frozenset({"idempotency_key", "problems"})


def request_fields(data: object) -> dict[str, Any]:
    """A write's input (a dataclass) as it is fingerprinted: every field but the key itself."""
    return {
        name: value
        for name, value in vars(data).items()
        if name not in NOT_THE_REQUEST and not (name in ADDED_LATER and value is None)
    }


def fingerprint(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


async def run_once(
    viewer: Viewer,
    operation: str,
    key: str | None,
    request: dict[str, Any],
    write: Callable[[], Awaitable[Outcome]],
    *,
    now: datetime,
) -> Outcome:
    """Run `write` at most once per key; see the module docstring.

    `write` raises `StoredRefusal` for refusals whose side effects must be kept and replayed.
    """
    if key is None:
        return await write()
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidInput("idempotencyKey", f"idempotencyKey must be 1 to {MAX_KEY_LENGTH} characters")
    request_hash = fingerprint(request)
    stored = await _stored(viewer, operation, key)
    if stored is not None:
        return _replay(stored, request_hash)
    try:
        async with in_transaction():
            refusal: StoredRefusal | None = None
            try:
                outcome = await write()
                response: dict[str, Any] = {"id": str(outcome.resource_id), "advice": outcome.advice}
            except StoredRefusal as refused:
                refusal = refused
                response = {"refusal": {"kind": refused.kind, "message": refused.message, "details": refused.details}}
            await IdempotencyKey.create(
                viewer_id=viewer.id,
                operation=operation,
                key=key,
                request_hash=request_hash,
                response=response,
                created_at=now,
            )
    except IntegrityError:
        # A concurrent retry with the same key committed first: everything above rolled back.
        winner = await _stored(viewer, operation, key)
        if winner is None:
            raise
        return _replay(winner, request_hash)
    except DomainError:
        # A concurrent request with this key may have committed first, changing what this one
        # found (the survey it answers is answered now): the first outcome is the key's answer.
        winner = await _stored(viewer, operation, key)
        if winner is None:
            raise
        return _replay(winner, request_hash)
    if refusal is not None:
        raise refusal
    return outcome


async def _stored(viewer: Viewer, operation: str, key: str) -> IdempotencyKey | None:
    stored: IdempotencyKey | None = await prepared(_stored_key, viewer_id=viewer.id, operation=operation, key=key)
    return stored


@prepared_read(IdempotencyKey)
def _stored_key(viewer_id: UUID, operation: str, key: str) -> QuerySetSingle[IdempotencyKey | None]:
    return IdempotencyKey.get_or_none(viewer_id=viewer_id, operation=operation, key=key)


def _replay(stored: IdempotencyKey, request_hash: str) -> Outcome:
    if stored.request_hash != request_hash:
        raise IdempotencyConflict("this idempotencyKey was already used for a different request")
    response = stored.response
    if "refusal" in response:
        refusal = response["refusal"]
        raise StoredRefusal(refusal["message"], refusal["kind"], refusal["details"])
    return Outcome(resource_id=UUID(response["id"]), advice=response.get("advice", {}))
