"""The arithmetic of a second factor, without the database: time-based one-time passwords
(RFC 6238), single-use recovery codes and the box that seals TOTP secrets at rest.

`models.identity.totp` keeps the factors, the recovery codes and the sign-in challenges, and asks
this module whether a code is right; see its docstring for enrolment and sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ISSUER = "ketafollow"
STEP_SECONDS = 30
DIGITS = 6
# Steps of clock difference accepted either way (RFC 6238 §5.2: one is the usual choice).
SKEW_STEPS = 1
RECOVERY_CODE_COUNT = 10
_CODE = re.compile(r"[0-9]{6}")
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed from paper
_RECOVERY_LENGTH = 16  # 16 of 31 symbols: 79 bits


def time_step(at: datetime) -> int:
    return int(at.timestamp()) // STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def normalise_code(code: str) -> str:
    return code.replace(" ", "").replace("-", "").strip()


def matching_step(secret: str, code: str, at: datetime, *, last_step: int | None) -> int | None:
    """The time step `code` belongs to, within `SKEW_STEPS` of `at` and after `last_step` (a code
    is accepted once), or None."""
    code = normalise_code(code)
    if not _CODE.fullmatch(code):
        return None
    now_step = time_step(at)
    found = None
    for step in range(now_step - SKEW_STEPS, now_step + SKEW_STEPS + 1):
        # Every candidate is compared (constant work), in constant time.
        if hmac.compare_digest(code_at(secret, step), code) and (last_step is None or step > last_step):
            found = step
    return found


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits (RFC 4226 §4's recommendation)


def otpauth_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=email, issuer_name=ISSUER)


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """Codes like `k7mp-2xqa-9hdf-vt3w` (groups of four, for reading off paper)."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append("-".join(raw[index : index + 4] for index in range(0, _RECOVERY_LENGTH, 4)))
    return codes


def recovery_code_hash(code: str) -> str:
    """The stored form: case, spaces and dashes do not matter."""
    return hashlib.sha256(normalise_code(code).lower().encode()).hexdigest()


class SecretBox:
    """Seals secrets with AES-GCM under a key derived from one of the server's secret keys (by
    key id, like access tokens): the current key seals, every listed one opens."""

    _VERSION = "v1"

    def __init__(self, keys: Mapping[str, str], current: str) -> None:
        if current not in keys:
            raise ValueError("the current key id must be one of the keys")
        self._keys = {kid: _derived_key(secret) for kid, secret in keys.items()}
        self._current = current

    def seal(self, secret: str, owner: UUID) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self._keys[self._current]).encrypt(nonce, secret.encode(), owner.bytes)
        return f"{self._VERSION}:{self._current}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, owner: UUID) -> tuple[str, bool]:
        """(the secret, whether it should be sealed again under the current key). Raises
        `ValueError` when it cannot be opened (a key no longer listed, or tampering)."""
        version, kid, body = [*sealed.split(":", 2), "", ""][:3]
        key = self._keys.get(kid)
        if version != self._VERSION or key is None:
            raise ValueError(f"the secret is sealed under key {kid!r}, which is not configured")
        raw = base64.urlsafe_b64decode(body)
        try:
            plain = AESGCM(key).decrypt(raw[:12], raw[12:], owner.bytes)
        except InvalidTag as error:
            raise ValueError("the sealed secret does not open") from error
        return plain.decode(), kid != self._current


def _derived_key(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ketafollow totp secret").derive(secret.encode())
