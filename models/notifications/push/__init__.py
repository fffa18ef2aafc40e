"""Push notifications to the phones users registered (models.notifications.devices), through APNs and FCM.

`PushSender` is an outbox sender (models.notifications.notifications.Sender): the outbox has already applied
quiet hours, the lease and the retries. Per notification it sends once to every active device of
the recipient that has not received it yet, records each acceptance, deactivates devices whose
token the service declared invalid, and, if any device must be tried again, raises so the outbox
retries later (honouring `Retry-After`): the devices already served are skipped then.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Protocol

from models.kernel.clock import Clock
from models.notifications import devices
from models.notifications.devices import Platform
from models.notifications.notifications import DeliveryDeferred, OutgoingNotification
from models.notifications.push.results import Outcome, PushResult

logger = logging.getLogger("ketafollow.notifications")


class Transport(Protocol):
    async def send(self, device_token: str, notification: OutgoingNotification) -> PushResult: ...

    async def aclose(self) -> None: ...


class PushSender:
    def __init__(self, transports: dict[Platform, Transport], clock: Clock) -> None:
        self.transports = transports
        self.clock = clock

    async def __call__(self, notification: OutgoingNotification) -> None:
        pending = await devices.devices_awaiting(notification.id, notification.recipient_id, now=self.clock.now())
        unfinished: list[PushResult] = []
        for device in pending:
            transport = self.transports.get(device.platform)
            if transport is None:
                logger.warning("no push service configured for %s devices (device %s)", device.platform, device.id)
                continue
            result = await transport.send(device.push_token, notification)
            now = self.clock.now()
            if result.outcome is Outcome.DELIVERED:
                await devices.record_delivery(
                    notification.id, device.id, provider_message_id=result.provider_message_id, now=now
                )
            elif result.outcome is Outcome.INVALID_TOKEN:
                logger.info("device %s deactivated: %s", device.id, result.detail)
                await devices.deactivate_invalid_token(device.id, now=now)
            else:
                unfinished.append(result)
        if unfinished:
            waits = [result.retry_after for result in unfinished if result.retry_after is not None]
            detail = "; ".join(sorted({result.detail for result in unfinished}))
            raise DeliveryDeferred(f"{len(unfinished)} device(s) to retry: {detail}", retry_after=_longest(waits))

    async def aclose(self) -> None:
        for transport in self.transports.values():
            await transport.aclose()


def _longest(waits: list[timedelta]) -> timedelta | None:
    return max(waits) if waits else None
