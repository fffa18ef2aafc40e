"""Notifications to people, through an outbox: written in the transaction of what caused them,
delivered later by a job through a pluggable sender (ARCHITECTURE.md decision 2).

A notification carries no health information: a kind ("a survey is ready"), a deep-link id and
the recipient. Delivery claims a row with a lease, so replicas never send one twice at once;
failures retry with exponential back-off and give up after `MAX_ATTEMPTS`. A receiver that must
never see a duplicate (a crash between sending and recording) dedups on the notification id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

MAX_ATTEMPTS = 8
LEASE = timedelta(minutes=2)
BATCH = 200


class NotificationStatus(StrEnum):
    PENDING = "PENDING"
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"


class Notification(Model):
    id = fields.UUIDField(primary_key=True)
    recipient_id = fields.UUIDField(db_index=True)
    kind = fields.CharField(max_length=40)
    link = fields.CharField(max_length=200)
    dedup_key = fields.CharField(max_length=200, unique=True)
    status = fields.CharEnumField(NotificationStatus, max_length=16, default=NotificationStatus.PENDING)
    created_at = fields.DatetimeField()
    not_before = fields.DatetimeField()
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
}


@dataclass(frozen=True)
class OutgoingNotification:
    id: UUID
    recipient_id: UUID
    kind: str
    text: str
    link: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "recipient": str(self.recipient_id),
            "kind": self.kind,
            "text": self.text,
            "link": self.link,
        }


Sender = Callable[[OutgoingNotification], Awaitable[None]]


async def enqueue(
    recipient_id: UUID, kind: str, link: str, *, dedup_key: str, now: datetime, not_before: datetime
) -> None:
    """Queue one notification (inside the caller's transaction); the same `dedup_key` queues once."""
    if kind not in MESSAGES:
        raise ValueError(f"unknown notification kind {kind}")
    if await Notification.exists(dedup_key=dedup_key):
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
            )
    except IntegrityError:
        pass  # queued concurrently


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min … capped at 1 hour."""
    delay: timedelta = timedelta(seconds=30) * 2 ** max(attempts - 1, 0)
    return min(delay, timedelta(hours=1))


async def deliver_due(sender: Sender, *, now: datetime) -> int:
    """Job: send what is due, each claimed with a lease. Returns how many were sent."""
    due = (
        await Notification.filter(
            Q(status=NotificationStatus.PENDING) | Q(status=NotificationStatus.SENDING, lease_until__lt=now),
            not_before__lte=now,
        )
        .order_by("not_before")
        .limit(BATCH)
    )
    sent = 0
    for row in due:
        claimed = await Notification.filter(
            Q(status=NotificationStatus.PENDING) | Q(status=NotificationStatus.SENDING, lease_until__lt=now),
            id=row.id,
            attempts=row.attempts,
        ).update(status=NotificationStatus.SENDING, lease_until=now + LEASE, attempts=row.attempts + 1)
        if claimed != 1:
            continue
        outgoing = OutgoingNotification(row.id, row.recipient_id, row.kind, MESSAGES[row.kind], row.link)
        try:
            await sender(outgoing)
        except Exception as error:  # the sender's failure is data: retry later
            attempts = row.attempts + 1
            status = NotificationStatus.FAILED if attempts >= MAX_ATTEMPTS else NotificationStatus.PENDING
            await Notification.filter(id=row.id).update(
                status=status, lease_until=None, not_before=now + retry_delay(attempts), last_error=str(error)[:300]
            )
            continue
        await Notification.filter(id=row.id).update(status=NotificationStatus.SENT, sent_at=now, lease_until=None)
        sent += 1
    return sent
