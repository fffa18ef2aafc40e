"""What a push carries: the notification's fixed, generic text and an opaque deep link, nothing
else. Never a name, an instrument, a drug, a score, a symptom or a message's words: a phone shows
pushes on its lock screen and the push services (Apple, Google) see them in transit.

The app opens `link` (e.g. `survey/<id>`) and fetches what it needs over the authenticated API.
"""

from __future__ import annotations

from typing import Any

from models.notifications.notifications import OutgoingNotification


def _data(notification: OutgoingNotification) -> dict[str, str]:
    return {"kind": notification.kind, "link": notification.link, "notificationId": str(notification.id)}


def apns_payload(notification: OutgoingNotification) -> dict[str, Any]:
    """The APNs JSON body (the collapse id travels in the `apns-collapse-id` header)."""
    return {"aps": {"alert": {"body": notification.text}, "sound": "default"}, **_data(notification)}


def fcm_message(device_token: str, notification: OutgoingNotification) -> dict[str, Any]:
    """The FCM HTTP v1 `message`: shown by Android as one notification per collapse key (`tag`),
    and collapsed by FCM while the phone is offline (`collapse_key`)."""
    return {
        "token": device_token,
        "notification": {"body": notification.text},
        "data": _data(notification),
        "android": {
            "priority": "high",
            "collapse_key": notification.collapse_key,
            "notification": {"tag": notification.collapse_key},
        },
    }
