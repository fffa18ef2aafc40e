"""A second factor: time-based one-time passwords (RFC 6238) and single-use recovery codes.

Enrolment: `start_enrolment` makes a secret (shown once, as itself and as an `otpauth://` URI for
authenticator apps) kept pending until `confirm_enrolment` receives a code from it; then the
factor is on and ten recovery codes are made (shown once, stored as SHA-256: each is 80 random
bits). `disable` takes a code or a recovery code. Enabling or disabling keeps the login asking and
ends the account's other logins (as a password change does).

Sign-in (api.auth.routes): a right password for an account with the factor gets an `mfa_token`
(256 random bits, stored as SHA-256) instead of tokens: it lives `CHALLENGE_LIFETIME`, dies after
`CHALLENGE_TRIES` wrong codes, and is spent by the first right one. A code is accepted within one
30-second step either side of now, and once: the last step accepted is remembered per user and
only later steps are accepted after it (`matching_step`).

The codes themselves, and the box the secret is kept in, are `models.identity.totp_codes`'.
The secret is sealed at rest (`SecretBox`: AES-GCM, a key derived from SECRET_KEY with HKDF, bound
to the user's id); a secret sealed under a retired key still opens while that key is listed in
PREVIOUS_SECRET_KEYS, and is sealed again under the current key at its next accepted code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from tortoise import fields
from tortoise.expressions import F
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.identity import sign_ins, throttle
from models.identity.access import Viewer
from models.identity.accounts import Role, User
from models.identity.bearer_tokens import hash_token, new_token
from models.identity.totp_codes import (
    SecretBox,
    matching_step,
    new_recovery_codes,
    new_secret,
    otpauth_uri,
    recovery_code_hash,
)
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, AuditTrail, denied, record_now, record_system
from models.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound

logger = logging.getLogger("ketafollow.totp")

CHALLENGE_LIFETIME = timedelta(minutes=5)
CHALLENGE_TRIES = 5
# The scope of an access token that may only enrol a second factor (MFA_REQUIRED_ROLES).
ENROLMENT_ONLY_SCOPE = "mfa_enrolment"
ENROL_FIRST = "a second factor is required: enrol with startTotpEnrollment"


class TotpFactor(Model):
    """A user's authenticator secret: pending until confirmed with a code from it."""

    id = fields.UUIDField(primary_key=True)
    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "ketafollow.User", related_name="totp_factor", on_delete=fields.RESTRICT
    )
    sealed_secret = fields.CharField(max_length=200)
    created_at = fields.DatetimeField()
    confirmed_at = fields.DatetimeField(null=True)
    # The last time step (Unix time // 30) a code was accepted for: no code of it or before again.
    last_step = fields.BigIntField(null=True)

    class Meta:
        table = "totp_factor"


class RecoveryCode(Model):
    id = fields.UUIDField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "ketafollow.User", related_name="recovery_codes", on_delete=fields.RESTRICT
    )
    code_hash = fields.CharField(max_length=64)
    created_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "recovery_code"
        unique_together = (("user", "code_hash"),)


class MfaChallenge(Model):
    """A right password waiting for its second factor (the `mfa_token` of a sign-in)."""

    id = fields.UUIDField(primary_key=True)
    token_hash = fields.CharField(max_length=64, unique=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "ketafollow.User", related_name="mfa_challenges", on_delete=fields.RESTRICT
    )
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    # Codes tried (each counted before it is checked): CHALLENGE_TRIES, then it is spent.
    attempts = fields.IntField(default=0)
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "mfa_challenge"


# Policy -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecondFactorPolicy:
    """How secrets are sealed, and the roles that must have a second factor (MFA_REQUIRED_ROLES)."""

    box: SecretBox
    required_roles: frozenset[Role] = field(default_factory=frozenset)

    def required_for(self, role: Role | None) -> bool:
        return role is not None and role in self.required_roles


# Enrolment --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    secret: str
    otpauth_uri: str


def _user_of(viewer: Viewer, action: AuditAction) -> UUID:
    if viewer.is_api_client:
        refusal = Forbidden("EHR clients have no second factor: they sign in with client credentials")
        raise denied(viewer, refusal, action, "TotpFactor")
    return viewer.id


async def _audit(viewer: Viewer, action: AuditAction, outcome: AuditOutcome, detail: str, *, now: datetime) -> None:
    entry = AuditEntry(action, "TotpFactor", outcome, resource_id=str(viewer.id), detail=detail[:200])
    await record_now(viewer, entry, now=now, trail=viewer.audit)


async def has_second_factor(user_id: UUID) -> bool:
    return await TotpFactor.exists(user_id=user_id, confirmed_at__isnull=False)


async def start_enrolment(viewer: Viewer, *, now: datetime, policy: SecondFactorPolicy) -> Enrolment:
    """A new pending secret (a previous pending one is replaced); refused while one is on."""
    user_id = _user_of(viewer, AuditAction.CREATE)
    user = await User.get(id=user_id)
    secret = new_secret()
    async with in_transaction():
        current = await TotpFactor.filter(user_id=user_id).select_for_update().first()
        if current is not None and current.confirmed_at is not None:
            await _audit(viewer, AuditAction.CREATE, AuditOutcome.DENIED, "enrolment refused: already on", now=now)
            raise Conflict("a second factor is already on: turn it off with disableTotp first")
        if current is not None:
            await current.delete()
        await TotpFactor.create(user_id=user_id, sealed_secret=policy.box.seal(secret, user_id), created_at=now)
        await _audit(viewer, AuditAction.CREATE, AuditOutcome.SUCCESS, "second factor enrolment started", now=now)
    return Enrolment(secret=secret, otpauth_uri=otpauth_uri(secret, user.email))


async def _throttled(subject: str, viewer: Viewer, action: AuditAction, *, now: datetime) -> None:
    if await throttle.reserve_attempt(subject, viewer.audit.client_address, now=now) is not None:
        await _audit(viewer, action, AuditOutcome.DENIED, "second factor code throttled", now=now)
        raise InvalidInput("code", "too many wrong codes: wait a few minutes and try again")


async def confirm_enrolment(
    viewer: Viewer, code: str, *, now: datetime, policy: SecondFactorPolicy, keep_login: UUID | None
) -> list[str]:
    """Turn the pending factor on with a code from it. Returns the recovery codes (shown once)."""
    user_id = _user_of(viewer, AuditAction.UPDATE)
    pending = await TotpFactor.get_or_none(user_id=user_id)
    if pending is None or pending.confirmed_at is not None:
        await _audit(viewer, AuditAction.UPDATE, AuditOutcome.DENIED, "confirmation refused: nothing pending", now=now)
        raise InvalidInput("code", "no enrolment is pending: start one with startTotpEnrollment")
    subject = f"mfa:{viewer.label}"
    await _throttled(subject, viewer, AuditAction.UPDATE, now=now)
    secret, _ = policy.box.open(pending.sealed_secret, user_id)
    step = matching_step(secret, code, now, last_step=None)
    if step is None:
        await _audit(viewer, AuditAction.UPDATE, AuditOutcome.DENIED, "confirmation refused: wrong code", now=now)
        raise InvalidInput("code", "the code is wrong: enter the 6 digits your authenticator app shows now")
    await throttle.attempt_succeeded(subject, viewer.audit.client_address, now=now)
    codes = new_recovery_codes()
    async with in_transaction():
        if not await TotpFactor.filter(id=pending.id, confirmed_at=None).update(confirmed_at=now, last_step=step):
            raise InvalidInput("code", "no enrolment is pending: start one with startTotpEnrollment")
        await RecoveryCode.filter(user_id=user_id).delete()
        await RecoveryCode.bulk_create(
            [RecoveryCode(user_id=user_id, code_hash=recovery_code_hash(one), created_at=now) for one in codes]
        )
        ended = await sign_ins.end_user_logins(user_id, now=now, reason="second factor turned on", keep=keep_login)
        await _audit(viewer, AuditAction.UPDATE, AuditOutcome.SUCCESS,
                     f"second factor turned on; {len(ended)} other login(s) ended", now=now)  # fmt: skip
    return codes


async def disable(
    viewer: Viewer, code: str, *, now: datetime, policy: SecondFactorPolicy, keep_login: UUID | None
) -> None:
    """Turn the factor off with a code or a recovery code (not for the roles that require it)."""
    user_id = _user_of(viewer, AuditAction.DELETE)
    if policy.required_for(viewer.role):
        refusal = Forbidden(f"a second factor is required for the {viewer.role_name} role: it cannot be turned off")
        raise denied(viewer, refusal, AuditAction.DELETE, "TotpFactor", resource_id=str(user_id))
    factor = await TotpFactor.get_or_none(user_id=user_id, confirmed_at__isnull=False)
    if factor is None:
        await _audit(viewer, AuditAction.DELETE, AuditOutcome.DENIED, "turning off refused: not on", now=now)
        raise InvalidInput("code", "no second factor is on")
    subject = f"mfa:{viewer.label}"
    await _throttled(subject, viewer, AuditAction.DELETE, now=now)
    if not await _redeem(factor, code, None, now=now, policy=policy) and not await _redeem(
        factor, None, code, now=now, policy=policy
    ):
        await _audit(viewer, AuditAction.DELETE, AuditOutcome.DENIED, "turning off refused: wrong code", now=now)
        raise InvalidInput("code", "the code is wrong: enter a code from your authenticator app or a recovery code")
    await throttle.attempt_succeeded(subject, viewer.audit.client_address, now=now)
    async with in_transaction():
        await _remove(user_id)
        ended = await sign_ins.end_user_logins(user_id, now=now, reason="second factor turned off", keep=keep_login)
        await _audit(viewer, AuditAction.DELETE, AuditOutcome.SUCCESS,
                     f"second factor turned off; {len(ended)} other login(s) ended", now=now)  # fmt: skip


async def _remove(user_id: UUID) -> None:
    await TotpFactor.filter(user_id=user_id).delete()
    await RecoveryCode.filter(user_id=user_id).delete()
    await MfaChallenge.filter(user_id=user_id, used_at=None).delete()


async def reset(email: str, *, now: datetime) -> int:
    """An administrator's reset for a lost phone (`ketafollow reset-totp`): the factor, its recovery
    codes and pending sign-ins go, and every login of the account ends. Returns the logins ended."""
    user = await User.get_or_none(email=email.strip().lower())
    if user is None:
        raise NotFound("user")
    async with in_transaction():
        had = await TotpFactor.filter(user_id=user.id).exists()
        await _remove(user.id)
        ended = await sign_ins.end_user_logins(user.id, now=now, reason="second factor reset")
        entry = AuditEntry(
            AuditAction.DELETE, "TotpFactor", AuditOutcome.SUCCESS, resource_id=str(user.id),
            detail=f"second factor of {user.email} reset by an administrator ({'on' if had else 'none'} before); "
            f"{len(ended)} login(s) ended",
        )  # fmt: skip
        await record_system(entry, now=now)
    return len(ended)


# Sign-in ----------------------------------------------------------------------------------------


class ChallengeRefused(Exception):
    """The second step of a sign-in is refused; `spent` when its `mfa_token` can no longer be used."""

    def __init__(self, reason: str, *, user_id: UUID | None = None, spent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_id = user_id
        self.spent = spent


async def start_challenge(user_id: UUID, *, now: datetime) -> str:
    """The `mfa_token` of a right password for an account with a second factor."""
    token, token_hash = new_token()
    await MfaChallenge.create(
        token_hash=token_hash, user_id=user_id, created_at=now, expires_at=now + CHALLENGE_LIFETIME
    )
    return token


async def open_challenge(token: str, *, now: datetime) -> MfaChallenge:
    """The live challenge of `token`, or `ChallengeRefused`."""
    challenge = await MfaChallenge.get_or_none(token_hash=hash_token(token[:200]))
    if challenge is None:
        raise ChallengeRefused("unknown mfa_token", spent=True)
    if challenge.used_at is not None or challenge.attempts >= CHALLENGE_TRIES or now >= challenge.expires_at:
        raise ChallengeRefused("mfa_token expired or used up", user_id=challenge.user_id, spent=True)  # type: ignore[attr-defined]
    return challenge


async def answer_challenge(
    challenge: MfaChallenge, otp: str | None, recovery_code: str | None, *, now: datetime, policy: SecondFactorPolicy
) -> UUID:
    """Check a code for an open challenge: the user on success (the challenge is spent), else
    `ChallengeRefused`. Each try is counted before the code is checked, so tries sent at once
    count like tries sent one after another: the fifth is the last."""
    user_id: UUID = challenge.user_id  # type: ignore[attr-defined]
    counted = await MfaChallenge.filter(
        id=challenge.id, used_at=None, attempts__lt=CHALLENGE_TRIES, expires_at__gt=now
    ).update(attempts=F("attempts") + 1)
    if not counted:
        raise ChallengeRefused("mfa_token expired or used up", user_id=user_id, spent=True)
    factor = await TotpFactor.get_or_none(user_id=user_id, confirmed_at__isnull=False)
    if factor is not None and await _redeem(factor, otp, recovery_code, now=now, policy=policy):
        if not await MfaChallenge.filter(id=challenge.id, used_at=None).update(used_at=now):
            raise ChallengeRefused("mfa_token already used", user_id=user_id, spent=True)
        return user_id
    attempts = await MfaChallenge.filter(id=challenge.id).values_list("attempts", flat=True)
    spent = not attempts or int(attempts[0]) >= CHALLENGE_TRIES  # type: ignore[call-overload]
    kind = "recovery code" if recovery_code is not None else "code"
    raise ChallengeRefused(f"wrong {kind}", user_id=user_id, spent=spent)


async def _redeem(
    factor: TotpFactor, otp: str | None, recovery_code: str | None, *, now: datetime, policy: SecondFactorPolicy
) -> bool:
    """Accept a code once: a TOTP code moves the factor's last step on (only if no one else did
    meanwhile), a recovery code is marked used (only if still unused)."""
    user_id: UUID = factor.user_id  # type: ignore[attr-defined]
    if recovery_code is not None:
        used = await RecoveryCode.filter(
            user_id=user_id, code_hash=recovery_code_hash(recovery_code), used_at=None
        ).update(used_at=now)
        return used == 1
    if otp is None:
        return False
    try:
        secret, reseal = policy.box.open(factor.sealed_secret, user_id)
    except ValueError as error:  # a retired key no longer listed: only a reset helps (module doc)
        logger.error("the second factor of user %s cannot be opened: %s", user_id, error)
        return False
    step = matching_step(secret, otp, now, last_step=factor.last_step)
    if step is None:
        return False
    query = TotpFactor.filter(id=factor.id, confirmed_at__isnull=False)
    query = query.filter(last_step=None) if factor.last_step is None else query.filter(last_step__lt=step)
    changes: dict[str, object] = {"last_step": step}
    if reseal:
        changes["sealed_secret"] = policy.box.seal(secret, user_id)
    return bool(await query.update(**changes))


async def unused_recovery_codes(user_id: UUID) -> int:
    return await RecoveryCode.filter(user_id=user_id, used_at=None).count()


async def record_sign_in_step(
    user_id: UUID | None, trail: AuditTrail, outcome: AuditOutcome, detail: str, *, now: datetime
) -> None:
    """Audit a step of a sign-in with a second factor (the account, when known, as the resource)."""
    entry = AuditEntry(
        AuditAction.EXECUTE, "Login", outcome, resource_id=str(user_id) if user_id else None, detail=detail[:200]
    )
    await record_now(None, entry, now=now, trail=trail)
