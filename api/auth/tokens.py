"""Access tokens: short-lived JWTs (HS256, algorithm pinned), with `kid` for key rotation.

Every claim that matters is required and checked: `iss`, `aud`, `exp`, `iat`, `sub`, `jti`, `typ`.
Times are checked against our own clock (not PyJWT's), so tests can move time.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

import jwt

from api.settings import Settings

ALGORITHM = "HS256"
ACCESS_TYPE = "access"
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "sub", "jti", "typ")
# Tolerated difference between replicas' clocks.
_LEEWAY_SECONDS = 30


class InvalidToken(Exception):
    """The token is not one we issued, or no longer valid; the message says which check failed."""


@dataclass(frozen=True)
class AccessClaims:
    subject_kind: str  # "user" or "client"
    subject_id: uuid.UUID
    scopes: frozenset[str]
    token_id: str
    expires_at: datetime
    # The login (refresh-token family) the token was issued under; None for EHR clients.
    session_id: uuid.UUID | None = None
    # EHR clients: the fingerprint of the secret the token was issued under (`cred`), so a
    # rotation stops it (models.identity.accounts.client_credential).
    credential: str | None = None


def issue_access_token(
    settings: Settings,
    *,
    subject_kind: str,
    subject_id: uuid.UUID,
    now: datetime,
    scopes: frozenset[str] = frozenset(),
    session_id: uuid.UUID | None = None,
    credential: str | None = None,
) -> str:
    claims: dict[str, object] = {
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "sub": f"{subject_kind}:{subject_id}",
        "iat": int(now.timestamp()),
        "exp": int((now + settings.access_token_ttl).timestamp()),
        "jti": uuid.uuid4().hex,
        "typ": ACCESS_TYPE,
    }
    if scopes:
        claims["scope"] = " ".join(sorted(scopes))
    if session_id is not None:
        claims["sid"] = str(session_id)
    if credential is not None:
        claims["cred"] = credential
    return jwt.encode(claims, settings.secret_key, algorithm=ALGORITHM, headers={"kid": settings.secret_key_id})


def decode_access_token(settings: Settings, token: str, *, now: datetime) -> AccessClaims:
    """Verify signature, algorithm, key id, issuer, audience, type and times; raise `InvalidToken`."""
    header = _header(token)
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("unexpected signing algorithm")
    key = settings.signing_keys.get(str(header.get("kid")))
    if key is None:
        raise InvalidToken("unknown signing key")
    try:
        claims, issued = _verified(token, key, settings.token_audience, settings.token_issuer)
    except jwt.InvalidAudienceError as error:
        raise InvalidToken("token is for another audience") from error
    except jwt.InvalidIssuerError as error:
        raise InvalidToken("token is from another issuer") from error
    except jwt.MissingRequiredClaimError as error:
        raise InvalidToken(f"token lacks the {error.claim!r} claim") from error
    except jwt.PyJWTError as error:
        raise InvalidToken("token signature or format is invalid") from error
    timestamp = now.timestamp()
    if timestamp >= claims.expires_at.timestamp() + _LEEWAY_SECONDS:
        raise InvalidToken("token has expired")
    if issued > timestamp + _LEEWAY_SECONDS:
        raise InvalidToken("token is issued in the future")
    return claims


@functools.lru_cache(maxsize=2048)
def _header(token: str) -> Mapping[str, object]:
    try:
        return MappingProxyType(jwt.get_unverified_header(token))
    except jwt.PyJWTError as error:
        raise InvalidToken("malformed token") from error


@functools.lru_cache(maxsize=2048)
def _verified(token: str, key: str, audience: str, issuer: str) -> tuple[AccessClaims, int]:
    """The claims of a token whose signature, issuer and audience verify under `key`, and when it
    was issued. Kept for the token's next requests (and the same request's second look: the rate
    limiter, then the authentication), as the answer cannot change for the same token and key;
    times are checked on every call by `decode_access_token`, and a token that fails is not kept
    (the error is raised)."""
    claims = jwt.decode(
        token,
        key,
        algorithms=[ALGORITHM],
        audience=audience,
        issuer=issuer,
        options={
            "require": list(REQUIRED_CLAIMS),
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
        },
    )
    return _claims(claims)


def _claims(claims: Mapping[str, object]) -> tuple[AccessClaims, int]:
    if claims.get("typ") != ACCESS_TYPE:
        raise InvalidToken("not an access token")
    expires, issued = claims.get("exp"), claims.get("iat")
    if not isinstance(expires, int) or not isinstance(issued, int):
        raise InvalidToken("token times are malformed")
    kind, _, raw_id = str(claims.get("sub")).partition(":")
    try:
        subject_id = uuid.UUID(raw_id)
    except ValueError as error:
        raise InvalidToken("token subject is malformed") from error
    if kind not in {"user", "client"}:
        raise InvalidToken("token subject is malformed")
    scope = claims.get("scope", "")
    session_id = None
    if "sid" in claims:
        try:
            session_id = uuid.UUID(str(claims["sid"]))
        except ValueError as error:
            raise InvalidToken("token session is malformed") from error
    credential = claims.get("cred")
    if credential is not None and not isinstance(credential, str):
        raise InvalidToken("token credential is malformed")
    access = AccessClaims(
        credential=credential,
        subject_kind=kind,
        subject_id=subject_id,
        scopes=frozenset(str(scope).split()),
        token_id=str(claims["jti"]),
        expires_at=datetime.fromtimestamp(expires, UTC),
        session_id=session_id,
    )
    return access, issued
