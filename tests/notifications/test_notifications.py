"""The notification webhook sender against a real HTTP receiver on loopback (the edge of the world)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.app import create_app
from api.database import use_database
from api.settings import Settings
from models.kernel.clock import ManualClock, SystemClock
from models.kernel.policy import DEFAULT_POLICY
from models.notifications import notifications
from models.notifications.notifications import Notification, NotificationStatus, OutgoingNotification
from models.notifications.senders import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_webhook,
    webhook_sender,
    webhook_signature,
)

SECRET = "a-webhook-secret-of-more-than-32-chars"


class Receiver:
    """A clinic's push gateway: fails the first `failures` calls, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[dict[str, str], bytes]] = []

    async def receive(self, request: Request) -> Response:
        self.calls.append((dict(request.headers), await request.body()))
        if len(self.calls) <= self.failures:
            return Response(status_code=503)
        return Response(status_code=204)


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/push", receiver.receive, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/push"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def test_a_signed_notification_is_retried_with_back_off_then_sent_once(
    app: Starlette, clock: ManualClock
) -> None:
    receiver = Receiver(failures=1)
    recipient = uuid.uuid4()
    async with serving(receiver) as url:
        send = webhook_sender(url, SECRET, clock)
        with use_database(app.state.database):
            await notifications.enqueue(
                recipient, "NEW_MESSAGE", "thread/abc", dedup_key="test:1", now=clock.now(), not_before=clock.now()
            )
            assert (
                await notifications.deliver_due(send, now=clock.now(), policy=DEFAULT_POLICY) == 0
            )  # 503: kept for later
            row = await Notification.get(dedup_key="test:1")
            assert row.status is NotificationStatus.PENDING
            assert row.not_before == clock.now() + timedelta(seconds=30)
            assert (
                await notifications.deliver_due(send, now=clock.now(), policy=DEFAULT_POLICY) == 0
            )  # not yet due again
            clock.advance(timedelta(seconds=31))
            assert await notifications.deliver_due(send, now=clock.now(), policy=DEFAULT_POLICY) == 1
            assert await notifications.deliver_due(send, now=clock.now(), policy=DEFAULT_POLICY) == 0  # sent once
            assert (await Notification.get(dedup_key="test:1")).status is NotificationStatus.SENT
    assert len(receiver.calls) == 2
    headers, body = receiver.calls[-1]
    assert headers["x-ketafollow-timestamp"] == str(int(clock.now().timestamp()))
    assert verify_webhook(SECRET, headers, body, now=clock.now())
    assert headers["idempotency-key"] == str(row.id)
    assert json.loads(body) == {
        "id": str(row.id),
        "recipient": str(recipient),
        "kind": "NEW_MESSAGE",
        "text": "You have a new message.",
        "link": "thread/abc",
    }


async def test_a_notification_being_sent_as_the_server_stops_is_marked_sent_not_sent_again(
    app: Starlette, settings: Settings
) -> None:
    """A graceful stop (SIGTERM in a rolling deploy) waits for the running jobs. It used to cancel
    them: the push had gone out, the row stayed leased, and the next replica sent it again."""
    clock = SystemClock()  # the scheduler runs on real time, as in `ketafollow serve`
    with use_database(app.state.database):
        await notifications.enqueue(
            uuid.uuid4(), "NEW_MESSAGE", "thread/abc", dedup_key="stop:1", now=clock.now(), not_before=clock.now()
        )
    sending, sent = asyncio.Event(), []

    async def slow_gateway(outgoing: OutgoingNotification) -> None:
        sending.set()
        await asyncio.sleep(0.3)
        sent.append(outgoing.id)

    server = create_app(settings, clock=clock, sender=slow_gateway, jobs_at_start=True)
    async with server.router.lifespan_context(server):
        await asyncio.wait_for(sending.wait(), timeout=10)
    # The server stopped while the gateway was answering.
    with use_database(app.state.database):
        row = await Notification.get(dedup_key="stop:1")
    assert sent == [row.id]
    assert row.status is NotificationStatus.SENT


def test_a_signed_webhook_request_replayed_later_or_altered_fails_verification() -> None:
    sent_at = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    body, stamp = b'{"id":"n1","kind":"NEW_MESSAGE"}', int(sent_at.timestamp())
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: webhook_signature(SECRET, stamp, body)}
    assert verify_webhook(SECRET, headers, body, now=sent_at + timedelta(seconds=20))
    assert not verify_webhook(SECRET, headers, body, now=sent_at + timedelta(minutes=6))  # replayed later
    later = stamp + 3600  # a fresh timestamp on the old signature
    assert not verify_webhook(SECRET, {**headers, TIMESTAMP_HEADER: str(later)}, body, now=sent_at + timedelta(hours=1))
    assert not verify_webhook(SECRET, headers, body.replace(b"n1", b"n2"), now=sent_at)
    assert not verify_webhook(SECRET, {SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}, body, now=sent_at)
    assert not verify_webhook("another-secret-of-more-than-32-chars!", headers, body, now=sent_at)
