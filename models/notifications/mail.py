"""E-mail through an outbox (ARCHITECTURE.md decisions 2 and 14).

A message is queued in the transaction of what caused it (an invitation, a password reset) and
sent later by a job, claimed with a lease exactly like a notification (models.notifications.notifications), so
replicas never send one twice at once; failures retry with the same back-off. Each message has
its row id as `Message-ID`, so a receiving server can drop the copy a crash between sending and
recording would produce.

Messages carry no health information: a sentence and one link. The link holds a one-time token,
so the body is erased once the message is sent (the token itself is stored only hashed).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from tortoise import fields
from tortoise.models import Model

from models.notifications.notifications import MAX_ATTEMPTS, NotificationStatus, claim_due, retry_delay

BATCH = 50
logger = logging.getLogger("ketafollow.mail")


class MailMessage(Model):
    id = fields.UUIDField(primary_key=True)
    recipient = fields.CharField(max_length=254)
    subject = fields.CharField(max_length=200)
    body = fields.TextField()
    status = fields.CharEnumField(NotificationStatus, max_length=16, default=NotificationStatus.PENDING)
    created_at = fields.DatetimeField()
    not_before = fields.DatetimeField()
    attempts = fields.IntField(default=0)
    lease_until = fields.DatetimeField(null=True)
    sent_at = fields.DatetimeField(null=True)
    last_error = fields.CharField(max_length=300, null=True)

    class Meta:
        table = "mail_message"
        indexes = (("status", "not_before"),)


@dataclass(frozen=True)
class OutgoingMail:
    id: UUID
    recipient: str
    subject: str
    body: str


MailTransport = Callable[[OutgoingMail], Awaitable[None]]


async def queue_mail(recipient: str, subject: str, body: str, *, now: datetime) -> MailMessage:
    """Queue one e-mail (inside the caller's transaction: it goes out only if that commits)."""
    return await MailMessage.create(recipient=recipient, subject=subject, body=body, created_at=now, not_before=now)


async def deliver_due_mail(transport: MailTransport, *, now: datetime) -> int:
    """Job: send the queued e-mails that are due, each claimed with a lease (`claim_due`, as
    notifications are). Returns how many."""
    sent = 0
    async for row in claim_due(MailMessage, now=now, batch=BATCH):
        try:
            await transport(OutgoingMail(row.id, row.recipient, row.subject, row.body))
        except Exception as error:  # the server's refusal is data: retry later
            attempts = row.attempts + 1
            given_up = attempts >= MAX_ATTEMPTS
            await MailMessage.filter(id=row.id).update(
                status=NotificationStatus.FAILED if given_up else NotificationStatus.PENDING,
                lease_until=None,
                not_before=now + retry_delay(attempts),
                last_error=f"{error.__class__.__name__}: {error}"[:300],
            )
            # The error's class only: an SMTP refusal may quote the recipient (last_error has it all).
            logger.warning(
                "mail %s not sent (attempt %d, %s): %s", row.id, attempts,
                "given up" if given_up else "retried later", error.__class__.__name__,
            )  # fmt: skip
            continue
        await MailMessage.filter(id=row.id).update(
            status=NotificationStatus.SENT, sent_at=now, lease_until=None, body=""
        )
        sent += 1
    return sent
