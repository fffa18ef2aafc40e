"""Notifications to people, through an outbox: written in the transaction of what caused them,
delivered later by a job through a pluggable sender (ARCHITECTURE.md decision 2).

A notification carries no health information: a kind ("a survey is ready"), a deep-link id and
the recipient. Delivery claims a row with a lease, so replicas never send one twice at once;
failures retry with exponential back-off and give up after `MAX_ATTEMPTS`. A receiver that must
never see a duplicate (a crash between sending and recording) dedups on the notification id.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.queryset import ExistsQuery
from tortoise.transactions import in_transaction

from models.kernel.policy import ClinicPolicy
from models.kernel.prepared import prepared, prepared_read
from models.notifications.quiet_hours import after_quiet_hours

MAX_ATTEMPTS = 8
LEASE = timedelta(minutes=2)
BATCH = 200
MAX_RETRY_AFTER = timedelta(hours=1)


class NotificationStatus(StrEnum):
    PENDING = "PENDING"
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # what it announced is no longer true (e.g. the survey was answered)


class Notification(Model):
    id = fields.UUIDField(primary_key=True)
    recipient_id = fields.UUIDField(db_index=True)
    kind = fields.CharField(max_length=40)
    link = fields.CharField(max_length=200)
    dedup_key = fields.CharField(max_length=200, unique=True)
    status = fields.CharEnumField(NotificationStatus, max_length=16, default=NotificationStatus.PENDING)
    created_at = fields.DatetimeField()
    not_before = fields.DatetimeField()
    # Set unless the notification may break quiet hours (a safety check): retries respect them.
    quiet_hours_zone = fields.CharField(max_length=64, null=True)
    attempts = fields.IntField(default=0)
    lease_until = fields.DatetimeField(null=True)
    sent_at = fields.DatetimeField(null=True)
    last_error = fields.CharField(max_length=300, null=True)

    class Meta:
        table = "notification"
        indexes = (("status", "not_before"),)


# What the recipient's device shows: never a diagnosis, a score, a name or a drug.
MESSAGES = {
    "SURVEY_AVAILABLE": "A check-in is ready for you.",
    "SURVEY_REMINDER": "Reminder: a check-in is waiting for you.",
    "CHECK_IN_REMINDER": "Time for your daily check-in.",
    "NEW_MESSAGE": "You have a new message.",
}


@dataclass(frozen=True)
class OutgoingNotification:
    id: UUID
    recipient_id: UUID
    kind: str
    text: str
    link: str

    @property
    def collapse_key(self) -> str:
        """What a phone shows once however often it arrives: everything about one deep link
        (a survey's announcement and its reminders, a thread's new messages). Opaque and short
        (APNs allows 64 bytes), so it says nothing of what it links to."""
        return hashlib.sha256(self.link.encode()).hexdigest()[:32]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "recipient": str(self.recipient_id),
            "kind": self.kind,
            "text": self.text,
            "link": self.link,
        }


Sender = Callable[[OutgoingNotification], Awaitable[None]]


class DeliveryDeferred(Exception):
    """A sender could not deliver now and was told when to try again (e.g. HTTP 429 with
    `Retry-After`): the outbox retries no earlier than `retry_after`, quiet hours still apply."""

    def __init__(self, message: str, *, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def enqueue(
    recipient_id: UUID,
    kind: str,
    link: str,
    *,
    dedup_key: str,
    now: datetime,
    not_before: datetime,
    quiet_hours_zone: str | None = None,
) -> None:
    """Queue one notification (inside the caller's transaction); the same `dedup_key` queues once."""
    if kind not in MESSAGES:
        raise ValueError(f"unknown notification kind {kind}")
    if await prepared(_queued, dedup_key=dedup_key):
        return
    try:
        async with in_transaction():
            await Notification.create(
                recipient_id=recipient_id,
                kind=kind,
                link=link,
                dedup_key=dedup_key,
                created_at=now,
                not_before=not_before,
                quiet_hours_zone=quiet_hours_zone,
            )
    except IntegrityError:
        pass  # queued concurrently


@prepared_read(Notification)
def _queued(dedup_key: str) -> ExistsQuery:
    return Notification.filter(dedup_key=dedup_key).exists()


async def cancel_pending(*, prefixes: list[str]) -> int:
    """Withdraw queued notifications whose dedup key starts with one of `prefixes`."""
    withdrawn = 0
    for prefix in prefixes:
        withdrawn += await Notification.filter(dedup_key__startswith=prefix, status=NotificationStatus.PENDING).update(
            status=NotificationStatus.CANCELLED
        )
    return withdrawn


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min … capped at 1 hour."""
    delay: timedelta = timedelta(seconds=30) * 2 ** max(attempts - 1, 0)
    return min(delay, timedelta(hours=1))


async def claim_due(outbox: type[Model], *, now: datetime, batch: int) -> AsyncIterator[Any]:
    """The rows of an outbox (notifications, e-mails) that are due, each as this worker claims it
    with a lease.

    The lease is taken from the time of each claim (the job's `now` plus the time the batch has
    taken so far), and the batch stops before a lease could run out under a slow sender, so two
    replicas never hold the same row at once. A row another worker claimed first is skipped.
    """
    started = time.monotonic()
    due: list[Any] = (
        await outbox.filter(
            Q(status=NotificationStatus.PENDING) | Q(status=NotificationStatus.SENDING, lease_until__lt=now),
            not_before__lte=now,
        )
        .order_by("not_before")
        .limit(batch)
    )
    for row in due:
        elapsed = timedelta(seconds=time.monotonic() - started)
        if elapsed > LEASE / 2:
            return  # the rest waits for the next run
        claimed_at = now + elapsed
        claimed = await outbox.filter(
            Q(status=NotificationStatus.PENDING) | Q(status=NotificationStatus.SENDING, lease_until__lt=claimed_at),
            id=row.id,
            attempts=row.attempts,
        ).update(status=NotificationStatus.SENDING, lease_until=claimed_at + LEASE, attempts=row.attempts + 1)
        if claimed == 1:
            yield row


async def deliver_due(sender: Sender, *, now: datetime, policy: ClinicPolicy) -> int:
    """Job: send the notifications that are due (`claim_due`), retrying failures with back-off
    outside the patient's quiet hours. Returns how many were sent."""
    sent = 0
    async for row in claim_due(Notification, now=now, batch=BATCH):
        outgoing = OutgoingNotification(row.id, row.recipient_id, row.kind, MESSAGES[row.kind], row.link)
        try:
            await sender(outgoing)
        except Exception as error:  # the sender's failure is data: retry later
            attempts = row.attempts + 1
            status = NotificationStatus.FAILED if attempts >= MAX_ATTEMPTS else NotificationStatus.PENDING
            delay = retry_delay(attempts)
            if isinstance(error, DeliveryDeferred) and error.retry_after is not None:
                delay = min(error.retry_after, MAX_RETRY_AFTER)  # the receiver said when
            retry_at = now + delay
            if row.quiet_hours_zone:
                retry_at = after_quiet_hours(retry_at, row.quiet_hours_zone, policy.quiet_hours)
            await Notification.filter(id=row.id).update(
                status=status, lease_until=None, not_before=retry_at, last_error=str(error)[:300]
            )
            continue
        await Notification.filter(id=row.id).update(status=NotificationStatus.SENT, sent_at=now, lease_until=None)
        sent += 1
    return sent
