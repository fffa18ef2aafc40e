"""`POST /auth/token` (RFC 6749: password, refresh_token, client_credentials) and `POST /auth/revoke`.

Errors use the OAuth2 shape `{"error": …, "error_description": …}`. Sign-in failures say nothing
about which part was wrong (no account oracle), cost the same time whether or not the account
exists, and are throttled per account and per client address (models.identity.throttle).

Browsers' requests from other sites are refused before anything is counted (`_refuse_other_sites`):
a page elsewhere could otherwise make a clinic workstation send failed sign-ins until the clinic's
address is locked out. A name typed at a failed sign-in that matches no account (perhaps the
password, typed in the wrong box) is never stored: the audit row says "an unknown account" and the
throttle keeps a keyed hash of it (`_subject`).

The three grants, the second-factor step and the revocation share the throttle, the audit rows and
the error shape, and are read together when the sign-in is reviewed: they stay in one module,
a little over our usual 400 lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth.passwords import hash_password, needs_rehash, verify_password
from api.auth.tokens import issue_access_token
from api.logins import LoginGate
from api.settings import Settings, origin_of
from models.identity import sign_ins, throttle, totp
from models.identity.access import Viewer, load_user_viewer
from models.identity.accounts import CLIENT_ID_PATTERN, ApiClient, Role, User, client_credential, normalise_email
from models.identity.totp import ENROLMENT_ONLY_SCOPE, SecondFactorPolicy
from models.identity.totp_codes import SecretBox
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, AuditTrail, record_now
from models.kernel.clock import Clock
from models.kernel.errors import InvalidInput

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
DEMO_DOMAIN = "@demo.test"
DEMO_CLIENTS = frozenset({"demo-ehr"})


MFA_OTP_GRANT = "urn:ketafollow:grant-type:mfa-otp"


class OAuthError(Exception):
    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "error_description": self.description, **self.extra},
            status_code=self.status,
            headers={**NO_STORE, **self.headers},
        )


def second_factor_policy(settings: Settings) -> SecondFactorPolicy:
    """How TOTP secrets are sealed (keys from SECRET_KEY and PREVIOUS_SECRET_KEYS) and who needs one."""
    return SecondFactorPolicy(
        box=SecretBox(settings.signing_keys, settings.secret_key_id), required_roles=settings.mfa_required_roles
    )


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send the parameters as application/x-www-form-urlencoded")
    try:
        parsed = parse_qs((await request.body()).decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as error:
        raise OAuthError("invalid_request", "the body is not valid UTF-8") from error
    repeated = sorted(name for name, values in parsed.items() if len(values) > 1)
    if repeated:
        raise OAuthError("invalid_request", f"parameters must not be repeated: {', '.join(repeated)}")
    return {name: values[0] for name, values in parsed.items()}


def _refuse_other_sites(request: Request, settings: Settings) -> None:
    """Refuse a browser's request sent by a page of another site (a form post or a script: no
    preflight guards a form-encoded POST). Browsers say where a request comes from: `Sec-Fetch-Site`
    (`cross-site`), and `Origin`, which must then be one of CORS_ALLOWED_ORIGINS (the portal) or
    the API's own. Apps and EHR servers send neither and are not concerned."""
    origin = request.headers.get("origin")
    allowed = "*" in settings.cors_allowed_origins or (
        origin is not None and origin_of(origin) in settings.cors_allowed_origins
    )
    if allowed:
        return
    if request.headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        raise OAuthError("invalid_request", "requests from another site's page are refused", status=403)
    if origin is not None and not _same_origin(origin, request.headers.get("host", "")):
        raise OAuthError("invalid_request", f"requests from the origin {origin[:100]!r} are refused", status=403)


def _same_origin(origin: str, host: str) -> bool:
    """Whether `Origin` names this API as the browser reached it (its `Host`); schemes are not
    compared, as a proxy in front may end TLS."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if not parts.hostname or origin == "null":
        return False
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    named = parts.hostname.lower() + (f":{port}" if port is not None and port != default else "")
    return named == host.strip().lower().removesuffix(":443").removesuffix(":80")


def _subject(settings: Settings, kind: str, name: str, known: bool) -> str:
    """The throttle's key for sign-ins with `name`: the name when it is an account's, else a keyed
    hash, so a password typed in the user-name box is never stored (the counting is the same)."""
    if known:
        return f"{kind}:{name}"
    digest = hmac.new(settings.secret_key.encode(), f"{kind}:{name}".encode(), hashlib.sha256).hexdigest()
    return f"{kind}:unknown:{digest}"


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise OAuthError("invalid_request", f"the {name} parameter is required")
    return value


def _logins(request: Request) -> LoginGate:
    logins: LoginGate = request.app.state.logins
    return logins


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _trail(request: Request, operation: str) -> AuditTrail:
    return AuditTrail(
        request_id=request.scope.get("state", {}).get("request_id"),
        client_address=_address(request),
        operation=operation,
    )


def _token_response(access_token: str, settings: Settings, *, refresh_token: str | None, scope: str | None) -> Response:
    body: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": int(settings.access_token_ttl.total_seconds()),
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    if scope:
        body["scope"] = scope
    return JSONResponse(body, headers=NO_STORE)


async def _audit(viewer: Viewer | None, trail: AuditTrail, now: datetime, outcome: AuditOutcome, detail: str) -> None:
    await record_now(
        viewer,
        AuditEntry(AuditAction.EXECUTE, trail.operation or "Login", outcome, detail=detail[:200]),
        now=now,
        trail=trail,
    )


async def _reserve_attempt(subject: str, named: str, request: Request, trail: AuditTrail, now: datetime) -> None:
    """Count the attempt before checking it (so concurrent guesses count), or refuse with 429."""
    until = await throttle.reserve_attempt(subject, _address(request), now=now)
    if until is None:
        return
    wait = max(1, math.ceil((until - now).total_seconds()))
    await _audit(None, trail, now, AuditOutcome.DENIED, f"throttled: {named}")
    raise OAuthError(
        "too_many_attempts",
        f"too many failed attempts; try again in {wait} seconds",
        status=429,
        headers={"Retry-After": str(wait)},
    )


async def _password_grant(request: Request, form: dict[str, str], settings: Settings, now: datetime) -> Response:
    raw_email, password = _required(form, "username"), _required(form, "password")
    trail = _trail(request, "Login")
    try:
        email = normalise_email(raw_email)
    except InvalidInput:
        email = raw_email.strip().lower()[:254]
    account = await User.get_or_none(email=email)
    subject = _subject(settings, "user", email, known=account is not None)
    named = email if account is not None else "an unknown account"
    await _reserve_attempt(subject, named, request, trail, now)
    user = account if account is not None and account.is_active else None
    matches = await verify_password(user.password_hash if user else None, password)
    demo_refused = not settings.demo_logins_enabled and email.endswith(DEMO_DOMAIN)
    viewer = await load_user_viewer(user.id, trail) if user and matches and not demo_refused else None
    if user is None or viewer is None:
        await _audit(None, trail, now, AuditOutcome.DENIED, f"wrong credentials for {named}")
        raise OAuthError("invalid_grant", "the e-mail address or the password is wrong")
    await throttle.attempt_succeeded(subject, _address(request), now=now)
    if needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
        await user.save(update_fields=["password_hash", "updated_at"])
    if await totp.has_second_factor(user.id):
        mfa_token = await totp.start_challenge(user.id, now=now)
        await _audit(viewer, trail, now, AuditOutcome.SUCCESS, "password accepted; second factor asked")
        raise OAuthError(
            "mfa_required",
            f"send a code from your authenticator app (grant_type={MFA_OTP_GRANT}, mfa_token, otp or recovery_code)",
            extra={"mfa_token": mfa_token},
        )
    return await _start_login(request, viewer, settings, now, detail="signed in")


async def _start_login(request: Request, viewer: Viewer, settings: Settings, now: datetime, *, detail: str) -> Response:
    """A new login for a user who proved who they are: tokens, enrol-only when their role needs a
    second factor they have not set up."""
    refresh = await sign_ins.start_session(
        viewer.id,
        now=now,
        idle_ttl=settings.refresh_token_idle_ttl,
        absolute_ttl=settings.refresh_token_absolute_ttl,
        user_agent=request.headers.get("user-agent"),
    )
    scopes = await user_token_scopes(viewer.id, viewer.role, settings)
    restricted = "; enrol-only: the role needs a second factor" if scopes else ""
    await _audit(viewer, viewer.audit, now, AuditOutcome.SUCCESS, detail + restricted)
    access = issue_access_token(
        settings, subject_kind="user", subject_id=viewer.id, now=now, session_id=refresh.family_id, scopes=scopes
    )
    return _token_response(access, settings, refresh_token=refresh.token, scope=" ".join(sorted(scopes)))


async def user_token_scopes(user_id: UUID, role: Role | None, settings: Settings) -> frozenset[str]:
    """The scopes of a user's access token: enrol-only when MFA_REQUIRED_ROLES names their role and
    they have no second factor yet, else none (everything their role allows). Asked at every
    sign-in, activation and refresh."""
    if role in settings.mfa_required_roles and not await totp.has_second_factor(user_id):
        return frozenset({ENROLMENT_ONLY_SCOPE})
    return frozenset()


async def _mfa_otp_grant(request: Request, form: dict[str, str], settings: Settings, now: datetime) -> Response:
    """The second step of a sign-in with a second factor: the `mfa_token` and a code."""
    token = _required(form, "mfa_token")
    otp, recovery_code = form.get("otp") or None, form.get("recovery_code") or None
    if (otp is None) == (recovery_code is None):
        raise OAuthError("invalid_request", "send either the otp parameter or the recovery_code parameter")
    trail = _trail(request, "LoginSecondFactor")
    try:
        challenge = await totp.open_challenge(token, now=now)
    except totp.ChallengeRefused as refused:
        await totp.record_sign_in_step(refused.user_id, trail, AuditOutcome.DENIED, refused.reason, now=now)
        raise OAuthError("invalid_grant", "the mfa_token is unknown, expired or used up; sign in again") from refused
    user = await User.get(id=challenge.user_id)  # type: ignore[attr-defined]
    subject = _subject(settings, "mfa", user.email, known=True)
    await _reserve_attempt(subject, user.email, request, trail, now)
    try:
        user_id = await totp.answer_challenge(
            challenge, otp, recovery_code, now=now, policy=second_factor_policy(settings)
        )
    except totp.ChallengeRefused as refused:
        ended = "; the mfa_token is used up" if refused.spent else ""
        await totp.record_sign_in_step(refused.user_id, trail, AuditOutcome.DENIED, refused.reason + ended, now=now)
        advice = "sign in again" if refused.spent else "try again with the current code"
        raise OAuthError("invalid_grant", f"the code is wrong or already used; {advice}") from refused
    await throttle.attempt_succeeded(subject, _address(request), now=now)
    viewer = await load_user_viewer(user_id, trail)
    if viewer is None or (not settings.demo_logins_enabled and user.email.endswith(DEMO_DOMAIN)):
        await totp.record_sign_in_step(user_id, trail, AuditOutcome.DENIED, "account inactive", now=now)
        raise OAuthError("invalid_grant", "the account is no longer active")
    used = "a recovery code" if recovery_code is not None else "a code"
    if recovery_code is not None:
        used += f" ({await totp.unused_recovery_codes(user_id)} left)"
    return await _start_login(request, viewer, settings, now, detail=f"signed in with {used}")


async def _refresh_grant(request: Request, form: dict[str, str], settings: Settings, now: datetime) -> Response:
    token = _required(form, "refresh_token")
    trail = _trail(request, "TokenRefresh")
    try:
        rotated = await sign_ins.rotate_refresh_token(
            token, now=now, idle_ttl=settings.refresh_token_idle_ttl, user_agent=request.headers.get("user-agent")
        )
    except sign_ins.RefreshRefused as refused:
        if refused.family_revoked and refused.family_id is not None:  # reuse: its tokens and sockets stop now
            await _logins(request).ended([refused.family_id])
        viewer = await load_user_viewer(refused.user_id, trail) if refused.user_id else None
        ended = "; the login was ended (token reuse)" if refused.family_revoked else ""
        await _audit(viewer, trail, now, AuditOutcome.DENIED, f"refresh token {refused.reason.value}{ended}")
        if refused.reason is sign_ins.RefreshRefusal.CONCURRENT:
            advice = "the refresh token was already used by a concurrent request: use the one it received"
        else:
            advice = f"the refresh token is {refused.reason.value}; sign in again"
        raise OAuthError("invalid_grant", advice) from refused
    viewer = await load_user_viewer(rotated.user_id, trail)
    if viewer is None:
        await _logins(request).end_login(rotated.family_id, reason="account inactive")
        raise OAuthError("invalid_grant", "the account is no longer active")
    scopes = await user_token_scopes(viewer.id, viewer.role, settings)  # enrol-only until a factor is on
    access = issue_access_token(
        settings, subject_kind="user", subject_id=rotated.user_id, now=now, session_id=rotated.family_id, scopes=scopes
    )
    return _token_response(access, settings, refresh_token=rotated.token, scope=" ".join(sorted(scopes)))


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str, bool]:
    """(client_id, client_secret, sent_with_basic): HTTP Basic (RFC 6749 §2.3.1) or the form, not both."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        if "client_secret" in form:
            raise OAuthError("invalid_request", "send client credentials one way only")
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise OAuthError("invalid_client", "malformed Basic credentials", status=401) from error
        client_id, separator, secret = decoded.partition(":")
        if not separator:
            raise OAuthError("invalid_client", "malformed Basic credentials", status=401)
        return unquote(client_id), unquote(secret), True
    return _required(form, "client_id"), _required(form, "client_secret"), False


async def _client_credentials_grant(
    request: Request, form: dict[str, str], settings: Settings, now: datetime
) -> Response:
    client_id, secret, basic = _client_credentials(request, form)
    trail = _trail(request, "ClientLogin")
    unauthorised = OAuthError(
        "invalid_client",
        "client authentication failed",
        status=401,
        headers={"WWW-Authenticate": 'Basic realm="ketafollow"'} if basic else {},
    )
    if not CLIENT_ID_PATTERN.match(client_id):
        await _audit(None, trail, now, AuditOutcome.DENIED, "malformed client id")
        raise unauthorised
    registered = await ApiClient.get_or_none(client_id=client_id)
    subject = _subject(settings, "client", client_id, known=registered is not None)
    named = f"client {client_id}" if registered is not None else "an unknown client"
    await _reserve_attempt(subject, named, request, trail, now)
    client = registered if registered is not None and registered.is_active else None
    matches = await verify_password(client.secret_hash if client else None, secret)
    demo_refused = not settings.demo_logins_enabled and client_id in DEMO_CLIENTS
    if client is None or not matches or demo_refused:
        await _audit(None, trail, now, AuditOutcome.DENIED, f"wrong credentials for {named}")
        raise unauthorised
    granted = frozenset(client.scopes)
    requested = frozenset(form.get("scope", "").split()) or granted
    if not requested <= granted:
        raise OAuthError("invalid_scope", f"not granted: {' '.join(sorted(requested - granted))}")
    await throttle.attempt_succeeded(subject, _address(request), now=now)
    await record_now(
        None,
        AuditEntry(AuditAction.EXECUTE, "ClientLogin", AuditOutcome.SUCCESS, detail=f"client {client.client_id}"),
        now=now,
        trail=trail,
    )
    access = issue_access_token(
        settings, subject_kind="client", subject_id=client.id, now=now, scopes=requested,
        credential=client_credential(client.secret_hash),
    )  # fmt: skip
    return _token_response(access, settings, refresh_token=None, scope=" ".join(sorted(requested)))


GRANTS = {
    "password": _password_grant,
    "refresh_token": _refresh_grant,
    "client_credentials": _client_credentials_grant,
    MFA_OTP_GRANT: _mfa_otp_grant,
}


async def token_endpoint(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    clock: Clock = request.app.state.clock
    try:
        _refuse_other_sites(request, settings)
        form = await _form(request)
        grant = GRANTS.get(_required(form, "grant_type"))
        if grant is None:
            raise OAuthError("unsupported_grant_type", f"supported: {', '.join(GRANTS)}")
        return await grant(request, form, settings, clock.now())
    except OAuthError as error:
        return error.response()


async def revoke_endpoint(request: Request) -> Response:
    """RFC 7009: revoke a refresh token's whole login. Answers 200 even for unknown tokens."""
    clock: Clock = request.app.state.clock
    try:
        _refuse_other_sites(request, request.app.state.settings)
        form = await _form(request)
        token = _required(form, "token")
    except OAuthError as error:
        return error.response()
    now = clock.now()
    trail = _trail(request, "Logout")
    ended = await sign_ins.revoke_session(token, now=now)
    if ended is not None:
        await _logins(request).ended([ended.family_id])  # its access tokens and sockets stop now
        viewer = await load_user_viewer(ended.user_id, trail)
        await _audit(viewer, trail, now, AuditOutcome.SUCCESS, "signed out")
    return Response(status_code=200, headers=NO_STORE)
