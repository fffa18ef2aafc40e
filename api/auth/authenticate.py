"""From a bearer access token to the request's `Viewer`, or a refusal that says why.

A user's access token names its login (`sid`); the login must still be active (api.logins: a
cached lookup). A user token without one is refused: this server has always put it in the tokens
it issues to users, and a token no logout could stop is not one to honour. EHR clients have no
login (client credentials, no refresh token): theirs name the secret they were issued under
(`cred`) and stop when the client is deactivated or its secret rotated.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from api.auth.tokens import InvalidToken, decode_access_token
from api.settings import Settings
from models.identity.access import Viewer, load_client_viewer, load_user_viewer
from models.identity.totp import ENROLMENT_ONLY_SCOPE
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, AuditTrail, record_now

if TYPE_CHECKING:
    from api.logins import LoginGate


class NotAuthenticated(Exception):
    """No usable credentials; `message` is safe to show (it never repeats what the caller sent)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


LOGIN_ENDED = "the login has ended; sign in again"
NO_LOGIN = "the token names no login; sign in again"


SIGN_IN_FIRST = "sign in first: send 'Authorization: Bearer <access token>' from POST /auth/token"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header (scheme case-insensitive, RFC 6750)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@dataclass(frozen=True)
class Authenticated:
    viewer: Viewer
    expires_at: datetime
    session_id: uuid.UUID | None = None  # the login the token belongs to (devices register under it)


async def authenticate(
    settings: Settings,
    token: str | None,
    *,
    now: datetime,
    trail: AuditTrail,
    logins: LoginGate,
    audit_refusal: bool = True,
) -> Authenticated:
    """The viewer a token stands for. Invalid tokens are refused and audited (they may be attacks),
    one row each unless `audit_refusal` is off (socket sign-ins: api.sockets counts them instead)."""
    if token is None:
        raise NotAuthenticated(SIGN_IN_FIRST)
    try:
        claims = decode_access_token(settings, token, now=now)
        if claims.subject_kind == "user":
            if claims.session_id is None:
                raise InvalidToken(NO_LOGIN)
            if not await logins.is_active(claims.session_id):
                raise InvalidToken(LOGIN_ENDED)
            viewer = await load_user_viewer(claims.subject_id, trail)
            if viewer is not None and ENROLMENT_ONLY_SCOPE in claims.scopes:
                # Enrol-only (MFA_REQUIRED_ROLES): schema.second_factor lets it do nothing else.
                viewer = replace(viewer, scopes=frozenset({ENROLMENT_ONLY_SCOPE}))
        else:
            viewer = await load_client_viewer(claims.subject_id, claims.scopes, claims.credential, trail)
        if viewer is None:
            raise InvalidToken("the account is no longer active")
    except InvalidToken as error:
        if audit_refusal:
            await record_now(
                None,
                AuditEntry(AuditAction.EXECUTE, "Authenticate", AuditOutcome.DENIED, detail=str(error)[:200]),
                now=now,
                trail=trail,
            )
        raise NotAuthenticated(f"invalid access token: {error}") from error
    return Authenticated(viewer, claims.expires_at, claims.session_id)
