"""`POST /auth/activate`, `/auth/password-reset` and `/auth/password-reset/confirm`: the sign-in
flows that happen before a user has a token (PRODUCT.md, "Exact shapes for enrolment").

Form-encoded like `/auth/token`, with its error shape, and rate limited per address like it (the
anonymous bucket of api.rate_limit). A link token that is unknown, used or expired is
`invalid_grant`; a weak password is `invalid_request` with the reason in `error_description`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth.passwords import hash_password
from api.auth.routes import NO_STORE, OAuthError, _form, _required, _token_response, _trail, user_token_scopes
from api.auth.tokens import issue_access_token
from api.settings import Settings
from models.identity import enrolment, password_reset, sign_ins
from models.kernel.clock import Clock

# The same body for every address, known or not.
RESET_ACCEPTED = {"status": "accepted", "detail": "if the address has an active account, a link is on its way"}


def _link_refused(error: enrolment.InvalidLinkToken | enrolment.WeakPassword) -> OAuthError:
    if isinstance(error, enrolment.WeakPassword):
        return OAuthError("invalid_request", error.message)
    return OAuthError("invalid_grant", "the link is invalid, already used or expired")


async def activate_endpoint(request: Request) -> Response:
    """Set the invitee's own password; answers like a password grant (a new login's tokens)."""
    settings: Settings = request.app.state.settings
    now = request.app.state.clock.now()
    try:
        form = await _form(request)
        token, password = _required(form, "token"), _required(form, "password")
        try:
            user = await enrolment.activate(
                token, password, now=now, hash_password=hash_password, trail=_trail(request, "Activate")
            )
        except (enrolment.InvalidLinkToken, enrolment.WeakPassword) as error:
            raise _link_refused(error) from error
    except OAuthError as error:
        return error.response()
    refresh = await sign_ins.start_session(
        user.id, now=now, idle_ttl=settings.refresh_token_idle_ttl, absolute_ttl=settings.refresh_token_absolute_ttl,
        user_agent=request.headers.get("user-agent"),
    )  # fmt: skip
    scopes = await user_token_scopes(user.id, user.role, settings)  # MFA_REQUIRED_ROLES: enrol first
    access = issue_access_token(
        settings, subject_kind="user", subject_id=user.id, now=now, session_id=refresh.family_id, scopes=scopes
    )
    return _token_response(access, settings, refresh_token=refresh.token, scope=" ".join(sorted(scopes)))


async def password_reset_endpoint(request: Request) -> Response:
    """Always 202 with the same body: the request is recorded, a job mails active accounts."""
    clock: Clock = request.app.state.clock
    try:
        form = await _form(request)
        email = _required(form, "email")
    except OAuthError as error:
        return error.response()
    await password_reset.request_password_reset(email, now=clock.now(), trail=_trail(request, "PasswordReset"))
    return JSONResponse(RESET_ACCEPTED, status_code=202, headers=NO_STORE)


async def password_reset_confirm_endpoint(request: Request) -> Response:
    """Set a new password from a reset link: 204, and every login of the account ends."""
    clock: Clock = request.app.state.clock
    try:
        form = await _form(request)
        token, password = _required(form, "token"), _required(form, "password")
        try:
            await password_reset.confirm_password_reset(
                token, password, now=clock.now(), hash_password=hash_password,
                trail=_trail(request, "PasswordResetConfirm"),
            )  # fmt: skip
        except (enrolment.InvalidLinkToken, enrolment.WeakPassword) as error:
            raise _link_refused(error) from error
    except OAuthError as error:
        return error.response()
    return Response(status_code=204, headers=NO_STORE)
