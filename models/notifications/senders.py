"""Notification senders: the edge of the world. The logging sender is the default; the webhook
sender posts each notification (no health information in it) to a URL the clinic runs, signed
with HMAC-SHA256 so the receiver can trust it, with the notification id to deduplicate on.

The signature covers the time of sending with the body (`X-Ketafollow-Timestamp`, Unix seconds;
`X-Ketafollow-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`), so a
captured request cannot be replayed later: the receiver refuses a timestamp older than a few
minutes (`verify_webhook` does both checks), and deduplicates on `Idempotency-Key` within them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

import httpx

from models.kernel.clock import Clock
from models.notifications.notifications import OutgoingNotification, Sender

logger = logging.getLogger("ketafollow.notifications")

SIGNATURE_HEADER = "x-ketafollow-signature"
TIMESTAMP_HEADER = "x-ketafollow-timestamp"
# How old a signed request a receiver accepts (clocks of the two sides differ a little).
WEBHOOK_TOLERANCE = timedelta(minutes=5)


async def log_notification(notification: OutgoingNotification) -> None:
    """Development default: record that a notification would have gone out (ids only)."""
    logger.info("notification %s (%s) to %s", notification.id, notification.kind, notification.recipient_id)


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Ketafollow-Signature` value of a body sent at `timestamp` (Unix seconds)."""
    signed = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: datetime, tolerance: timedelta = WEBHOOK_TOLERANCE
) -> bool:
    """What a receiver checks: the signature is ours, over this body and this timestamp, and the
    timestamp is recent (a request replayed later is refused). `headers` with lower-case names."""
    raw = headers.get(TIMESTAMP_HEADER, "")
    if not (raw.isascii() and raw.isdecimal()) or len(raw) > 12:
        return False
    if abs(now.timestamp() - int(raw)) > tolerance.total_seconds():
        return False
    return hmac.compare_digest(headers.get(SIGNATURE_HEADER, ""), webhook_signature(secret, int(raw), body))


def webhook_sender(url: str, secret: str, clock: Clock, *, timeout: float = 10.0) -> Sender:
    async def send(notification: OutgoingNotification) -> None:
        body = json.dumps(notification.as_json(), separators=(",", ":")).encode()
        timestamp = int(clock.now().timestamp())
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(
                url,
                content=body,
                headers={
                    "content-type": "application/json",
                    TIMESTAMP_HEADER: str(timestamp),
                    SIGNATURE_HEADER: webhook_signature(secret, timestamp, body),
                    "idempotency-key": str(notification.id),
                },
            )
        response.raise_for_status()

    return send
