"""Apple Push Notification service: HTTP/2, token-based authentication (a provider JWT signed
ES256 with the team's .p8 key, `kid` = key id, `iss` = team id), one request per device.

Apple refuses provider tokens older than an hour and throttles ones renewed more often than every
20 minutes, so the token is reused and renewed after `TOKEN_LIFETIME`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt

from models.kernel.clock import Clock
from models.notifications.notifications import OutgoingNotification
from models.notifications.push.payloads import apns_payload
from models.notifications.push.results import Outcome, PushResult, retryable

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
TOKEN_LIFETIME = timedelta(minutes=50)
# 400 reasons that mean this device's token is wrong (not our request): Apple's documented list.
_INVALID_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"})
# An alert nobody could see for a day is stale: APNs drops it instead of storing it longer.
_EXPIRY = timedelta(days=1)


@dataclass(frozen=True)
class ApnsCredentials:
    key_id: str  # the 10-character id of the .p8 key
    team_id: str  # the 10-character Apple developer team id
    topic: str  # the app's bundle id
    private_key: str = ""  # PEM (the .p8 file's content)
    url: str = PRODUCTION_URL

    def __repr__(self) -> str:  # never log the key
        return (
            f"ApnsCredentials(key_id={self.key_id!r}, team_id={self.team_id!r}, topic={self.topic!r}, url={self.url!r})"
        )


class ApnsTransport:
    def __init__(self, credentials: ApnsCredentials, clock: Clock, *, timeout: float = 10.0) -> None:
        self.credentials = credentials
        self.clock = clock
        # APNs speaks only HTTP/2 (over TLS, negotiated by ALPN; prior knowledge on plain http).
        self.client = httpx.AsyncClient(base_url=credentials.url, http1=False, http2=True, timeout=timeout)
        self._token: tuple[str, datetime] | None = None

    def provider_token(self) -> str:
        now = self.clock.now()
        if self._token is None or now - self._token[1] >= TOKEN_LIFETIME or now < self._token[1]:
            claims = {"iss": self.credentials.team_id, "iat": int(now.timestamp())}
            token = jwt.encode(
                claims, self.credentials.private_key, algorithm="ES256", headers={"kid": self.credentials.key_id}
            )
            self._token = (token, now)
        return self._token[0]

    async def send(self, device_token: str, notification: OutgoingNotification) -> PushResult:
        now = self.clock.now()
        headers = {
            "authorization": f"bearer {self.provider_token()}",
            "apns-topic": self.credentials.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-collapse-id": notification.collapse_key,
            "apns-expiration": str(int((now + _EXPIRY).timestamp())),
        }
        try:
            response = await self.client.post(
                f"/3/device/{device_token}", json=apns_payload(notification), headers=headers
            )
        except httpx.HTTPError as error:
            return PushResult(Outcome.RETRY, f"APNs unreachable: {type(error).__name__}")
        reason = _reason(response)
        if response.status_code == 200:
            return PushResult(Outcome.DELIVERED, provider_message_id=response.headers.get("apns-id"))
        if response.status_code == 410 or (response.status_code == 400 and reason in _INVALID_TOKEN_REASONS):
            return PushResult(Outcome.INVALID_TOKEN, f"APNs {response.status_code} {reason}")
        if response.status_code == 403 and reason == "ExpiredProviderToken":
            self._token = None  # sign a new one for the retry
            return PushResult(Outcome.RETRY, "APNs ExpiredProviderToken")
        if (result := retryable(response, now, f"APNs {reason}")) is not None:
            return result
        return PushResult(Outcome.FAILED, f"APNs {response.status_code} {reason}")

    async def aclose(self) -> None:
        await self.client.aclose()


def _reason(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""
