"""What a push service answered about one device, in the terms the sender acts on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

import httpx


class Outcome(StrEnum):
    DELIVERED = "DELIVERED"  # accepted: record it, never send it to this device again
    INVALID_TOKEN = "INVALID_TOKEN"  # noqa: S105 - the app was removed or the token expired: deactivate
    RETRY = "RETRY"  # throttled or unavailable: try again later (after `retry_after` if given)
    FAILED = "FAILED"  # refused for another reason (credentials, payload): retry with back-off


@dataclass(frozen=True)
class PushResult:
    outcome: Outcome
    detail: str = ""
    provider_message_id: str | None = None
    retry_after: timedelta | None = None


def retry_after(response: httpx.Response, now: datetime) -> timedelta | None:
    """`Retry-After` as seconds or as an HTTP date (RFC 9110 §10.2.3); None if absent or bad."""
    raw = response.headers.get("retry-after", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return timedelta(seconds=int(raw))
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(moment - now, timedelta(0)) if moment.tzinfo else None


def retryable(response: httpx.Response, now: datetime, detail: str) -> PushResult | None:
    """429 and 5xx are the service's own trouble: a RETRY honouring `Retry-After`."""
    if response.status_code == 429 or response.status_code >= 500:
        return PushResult(
            Outcome.RETRY, f"{response.status_code} {detail}".strip(), retry_after=retry_after(response, now)
        )
    return None
