"""Reading the push services' credentials from the environment (part of `api.settings`).

APNs: `APNS_KEY_FILE` (the .p8 key), `APNS_KEY_ID`, `APNS_TEAM_ID`, `APNS_TOPIC` (bundle id) and
optionally `APNS_URL`. FCM: `FCM_SERVICE_ACCOUNT_FILE` (the service-account JSON) and optionally
`FCM_URL`. Each service is on when its file is set; every problem is reported with its variable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from models.notifications.push.apns import PRODUCTION_URL, ApnsCredentials
from models.notifications.push.fcm import DEFAULT_URL, FcmCredentials

_APPLE_ID = re.compile(r"^[A-Z0-9]{10}$")
_BUNDLE_ID = re.compile(r"^[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_APNS_VARIABLES = ("APNS_KEY_FILE", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC")


def _value(values: Mapping[str, str], name: str) -> str:
    return values.get(name, "").strip()


def _service_url(name: str, url: str, production: bool, problems: list[str]) -> None:
    """https, or plain http to this machine outside production (the tests' fake services)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK and not production:
        return
    problems.append(f"{name} must be an https:// URL, got {url!r}")


def _read(name: str, path: str, problems: list[str]) -> str | None:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        problems.append(f"{name}: cannot read {path!r} ({error.__class__.__name__})")
        return None


def _private_key(name: str, pem: str, kind: type, problems: list[str]) -> bool:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        problems.append(f"{name} does not hold an unencrypted PEM private key")
        return False
    if not isinstance(key, kind):
        expected = "an EC P-256 key (.p8)" if kind is ec.EllipticCurvePrivateKey else "an RSA key"
        problems.append(f"{name} must hold {expected}")
        return False
    if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
        problems.append(f"{name} must hold a P-256 key (APNs signs ES256)")
        return False
    return True


def read_apns(values: Mapping[str, str], *, production: bool, problems: list[str]) -> ApnsCredentials | None:
    given = {name: _value(values, name) for name in _APNS_VARIABLES}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        problems.append(f"APNs needs {', '.join(_APNS_VARIABLES)}; missing: {', '.join(missing)}")
        return None
    for name in ("APNS_KEY_ID", "APNS_TEAM_ID"):
        if not _APPLE_ID.match(given[name]):
            problems.append(f"{name} must be 10 upper-case letters or digits, got {given[name]!r}")
    if not _BUNDLE_ID.match(given["APNS_TOPIC"]):
        problems.append(
            f"APNS_TOPIC must be the app's bundle id (e.g. org.clinic.ketafollow), got {given['APNS_TOPIC']!r}"
        )
    url = _value(values, "APNS_URL") or PRODUCTION_URL
    _service_url("APNS_URL", url, production, problems)
    pem = _read("APNS_KEY_FILE", given["APNS_KEY_FILE"], problems)
    if pem is None or not _private_key("APNS_KEY_FILE", pem, ec.EllipticCurvePrivateKey, problems):
        return None
    return ApnsCredentials(
        key_id=given["APNS_KEY_ID"],
        team_id=given["APNS_TEAM_ID"],
        topic=given["APNS_TOPIC"],
        private_key=pem,
        url=url.rstrip("/"),
    )


def read_fcm(values: Mapping[str, str], *, production: bool, problems: list[str]) -> FcmCredentials | None:
    path = _value(values, "FCM_SERVICE_ACCOUNT_FILE")
    url = _value(values, "FCM_URL") or DEFAULT_URL
    if not path:
        if _value(values, "FCM_URL"):
            problems.append("FCM_URL is set without FCM_SERVICE_ACCOUNT_FILE")
        return None
    _service_url("FCM_URL", url, production, problems)
    text = _read("FCM_SERVICE_ACCOUNT_FILE", path, problems)
    if text is None:
        return None
    try:
        account = json.loads(text)
    except ValueError:
        problems.append("FCM_SERVICE_ACCOUNT_FILE is not JSON (download it from the Firebase console)")
        return None
    if not isinstance(account, dict) or account.get("type") != "service_account":
        problems.append('FCM_SERVICE_ACCOUNT_FILE must be a service-account key ("type": "service_account")')
        return None
    fields = ("project_id", "client_email", "private_key_id", "private_key", "token_uri")
    missing = [name for name in fields if not isinstance(account.get(name), str) or not account[name].strip()]
    if missing:
        problems.append(f"FCM_SERVICE_ACCOUNT_FILE lacks {', '.join(missing)}")
        return None
    _service_url("FCM_SERVICE_ACCOUNT_FILE token_uri", account["token_uri"], production, problems)
    if not _private_key("FCM_SERVICE_ACCOUNT_FILE private_key", account["private_key"], rsa.RSAPrivateKey, problems):
        return None
    return FcmCredentials(
        project_id=account["project_id"],
        client_email=account["client_email"],
        private_key_id=account["private_key_id"],
        token_uri=account["token_uri"],
        private_key=account["private_key"],
        url=url.rstrip("/"),
    )
