"""Notification senders: the edge of the world. The logging sender is the default; the webhook
sender posts each notification (no health information in it) to a URL the clinic runs, signed
with HMAC-SHA256 so the receiver can trust it, with the notification id to deduplicate on."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import httpx

from models.notifications import OutgoingNotification, Sender

logger = logging.getLogger("ketafollow.notifications")


async def log_notification(notification: OutgoingNotification) -> None:
    """Development default: record that a notification would have gone out (ids only)."""
    logger.info("notification %s (%s) to %s", notification.id, notification.kind, notification.recipient_id)


def webhook_sender(url: str, secret: str, *, timeout: float = 10.0) -> Sender:
    async def send(notification: OutgoingNotification) -> None:
        body = json.dumps(notification.as_json(), separators=(",", ":")).encode()
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(
                url,
                content=body,
                headers={
                    "content-type": "application/json",
                    "x-ketafollow-signature": f"sha256={signature}",
                    "idempotency-key": str(notification.id),
                },
            )
        response.raise_for_status()

    return send
