"""Firebase Cloud Messaging, HTTP v1: a Google service account signs an RS256 JWT assertion that
its token URI exchanges for an OAuth2 access token (RFC 7523), reused until shortly before it
expires; one `messages:send` request per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt

from models.kernel.clock import Clock
from models.notifications.notifications import OutgoingNotification
from models.notifications.push.payloads import fcm_message
from models.notifications.push.results import Outcome, PushResult, retryable

DEFAULT_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = timedelta(hours=1)
# An access token is renewed this long before it expires (clock drift, a slow request).
RENEW_BEFORE = timedelta(minutes=5)


@dataclass(frozen=True)
class FcmCredentials:
    """The fields of a service-account JSON file that the sender uses."""

    project_id: str
    client_email: str
    private_key_id: str
    token_uri: str
    private_key: str = ""  # PEM
    url: str = DEFAULT_URL

    def __repr__(self) -> str:  # never log the key
        return f"FcmCredentials(project_id={self.project_id!r}, client_email={self.client_email!r}, url={self.url!r})"


class AccessTokenRefused(Exception):
    """The token URI did not give an access token; `result` says whether to retry."""

    def __init__(self, result: PushResult) -> None:
        super().__init__(result.detail)
        self.result = result


class FcmTransport:
    def __init__(self, credentials: FcmCredentials, clock: Clock, *, timeout: float = 10.0) -> None:
        self.credentials = credentials
        self.clock = clock
        self.client = httpx.AsyncClient(http2=True, timeout=timeout)
        self._access_token: tuple[str, datetime] | None = None

    def assertion(self, now: datetime) -> str:
        issued = int(now.timestamp())
        claims = {
            "iss": self.credentials.client_email,
            "scope": SCOPE,
            "aud": self.credentials.token_uri,
            "iat": issued,
            "exp": issued + int(ASSERTION_LIFETIME.total_seconds()),
        }
        headers = {"kid": self.credentials.private_key_id}
        return jwt.encode(claims, self.credentials.private_key, algorithm="RS256", headers=headers)

    async def access_token(self) -> str:
        now = self.clock.now()
        if self._access_token is not None and now < self._access_token[1] - RENEW_BEFORE:
            return self._access_token[0]
        try:
            response = await self.client.post(
                self.credentials.token_uri, data={"grant_type": JWT_BEARER, "assertion": self.assertion(now)}
            )
        except httpx.HTTPError as error:
            raise AccessTokenRefused(
                PushResult(Outcome.RETRY, f"FCM token URI unreachable: {type(error).__name__}")
            ) from error
        if (result := retryable(response, now, "FCM token URI")) is not None:
            raise AccessTokenRefused(result)
        body = _json(response)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if response.status_code != 200 or not isinstance(token, str) or not isinstance(lifetime, int):
            error_code = body.get("error", "")
            raise AccessTokenRefused(PushResult(Outcome.FAILED, f"FCM token URI {response.status_code} {error_code}"))
        self._access_token = (token, now + timedelta(seconds=lifetime))
        return token

    async def send(self, device_token: str, notification: OutgoingNotification) -> PushResult:
        now = self.clock.now()
        try:
            access = await self.access_token()
        except AccessTokenRefused as refused:
            return refused.result
        url = f"{self.credentials.url}/v1/projects/{self.credentials.project_id}/messages:send"
        try:
            response = await self.client.post(
                url,
                json={"message": fcm_message(device_token, notification)},
                headers={"authorization": f"Bearer {access}"},
            )
        except httpx.HTTPError as unreachable:
            return PushResult(Outcome.RETRY, f"FCM unreachable: {type(unreachable).__name__}")
        error = _json(response).get("error") or {}
        status, code = str(error.get("status", "")), _fcm_error_code(error)
        if response.status_code == 200:
            return PushResult(Outcome.DELIVERED, provider_message_id=str(_json(response).get("name", "")) or None)
        if code == "UNREGISTERED" or (response.status_code == 404 and status == "NOT_FOUND"):
            return PushResult(Outcome.INVALID_TOKEN, f"FCM {response.status_code} {code or status}")
        if response.status_code == 400 and status == "INVALID_ARGUMENT" and _about_the_token(error):
            return PushResult(Outcome.INVALID_TOKEN, "FCM INVALID_ARGUMENT: registration token")
        if response.status_code == 401:
            self._access_token = None  # revoked or expired early: fetch a new one for the retry
            return PushResult(Outcome.RETRY, "FCM 401 UNAUTHENTICATED")
        if (result := retryable(response, now, f"FCM {code or status}")) is not None:
            return result
        return PushResult(Outcome.FAILED, f"FCM {response.status_code} {code or status}")

    async def aclose(self) -> None:
        await self.client.aclose()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _details(error: dict[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    return [detail for detail in details if isinstance(detail, dict)] if isinstance(details, list) else []


def _fcm_error_code(error: dict[str, Any]) -> str:
    for detail in _details(error):
        if str(detail.get("@type", "")).endswith("google.firebase.fcm.v1.FcmError"):
            return str(detail.get("errorCode", ""))
    return ""


def _about_the_token(error: dict[str, Any]) -> bool:
    """INVALID_ARGUMENT is also FCM's answer to a bad payload: only a complaint about
    `message.token` (or a registration token) means the device's token is wrong."""
    for detail in _details(error):
        violations = detail.get("fieldViolations")
        if isinstance(violations, list) and any(
            isinstance(v, dict) and v.get("field") == "message.token" for v in violations
        ):
            return True
    return "registration token" in str(error.get("message", "")).lower()
