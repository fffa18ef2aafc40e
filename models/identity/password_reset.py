"""Password reset by e-mail, and password change (PRODUCT.md capability 11).

No account oracle: `POST /auth/password-reset` only *records* the request, the same one row for
any address, and answers at once; a job later looks the address up and, for an active account
that has not asked too often, mails a link. So the answer, and the work done before it, are the
same whether or not the account exists; unknown, deactivated and not yet activated accounts get
no e-mail. The link's token is 256 random bits stored as SHA-256, valid 30 minutes, single use;
a newer link voids the older ones. Setting the new password ends every login of the account.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from tortoise import fields
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.identity import sign_ins, throttle
from models.identity.access import Viewer
from models.identity.accounts import User
from models.identity.bearer_tokens import hash_token, new_token
from models.identity.enrolment import InvalidLinkToken, PasswordHasher, WeakPassword, personal_names
from models.identity.passwords import PasswordHashing, password_problem
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, AuditTrail, denied, record_now, record_system
from models.kernel.errors import Forbidden, InvalidInput
from models.notifications.mail import queue_mail

RESET_LIFETIME = timedelta(minutes=30)
# Per account: at most this many links an hour, whoever asks for them (the rest are dropped).
RESETS_PER_HOUR = 3
BATCH = 100
RESET_SUBJECT = "Reset your ketafollow password"


class PasswordReset(Model):
    id = fields.UUIDField(primary_key=True)
    email = fields.CharField(max_length=254)
    requested_at = fields.DatetimeField()
    client_address = fields.CharField(max_length=64, null=True)
    processed_at = fields.DatetimeField(null=True)
    # Set when a link was mailed: the account, the token's hash, its expiry.
    user: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "ketafollow.User", related_name="password_resets", null=True, on_delete=fields.RESTRICT
    )
    token_hash = fields.CharField(max_length=64, unique=True, null=True)
    expires_at = fields.DatetimeField(null=True)
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "password_reset"
        indexes = (("processed_at", "requested_at"),)


async def request_password_reset(raw_email: str, *, now: datetime, trail: AuditTrail) -> None:
    """Record a reset request (same work for any address); `send_password_resets` answers it."""
    email = raw_email.strip().lower()[:254]
    async with in_transaction():
        await PasswordReset.create(email=email, requested_at=now, client_address=trail.client_address)
        entry = AuditEntry(
            AuditAction.EXECUTE, "PasswordReset", AuditOutcome.SUCCESS, detail=f"asked for {email}"[:200]
        )
        await record_now(None, entry, now=now, trail=trail)


def reset_body(link: str) -> str:
    return (
        "Someone asked to reset the password of your ketafollow account. To choose a new one, open "
        f"this link (it works once, for 30 minutes):\n\n{link}\n\n"
        "If it was not you, ignore this e-mail: your password stays as it is.\n"
    )


async def send_password_resets(*, now: datetime, app_url: str) -> int:
    """Job: answer the recorded requests; mails a link to each active account not asked too often."""
    pending = await PasswordReset.filter(processed_at=None).order_by("requested_at").limit(BATCH)
    mailed = 0
    for request in pending:
        async with in_transaction():
            if await PasswordReset.filter(id=request.id, processed_at=None).update(processed_at=now) != 1:
                continue  # another replica took it
            user = await User.get_or_none(email=request.email, is_active=True)
            if user is None:
                continue
            recent = await PasswordReset.filter(user_id=user.id, processed_at__gte=now - timedelta(hours=1)).count()
            if recent >= RESETS_PER_HOUR:
                await record_system(
                    AuditEntry(AuditAction.EXECUTE, "PasswordReset", AuditOutcome.DENIED, resource_id=str(user.id),
                               detail="too many reset links in an hour: none sent"),
                    now=now,
                )  # fmt: skip
                continue
            token, token_hash = new_token()
            await PasswordReset.filter(user_id=user.id, used_at=None).update(used_at=now)  # older links stop
            await PasswordReset.filter(id=request.id).update(
                user_id=user.id, token_hash=token_hash, expires_at=now + RESET_LIFETIME
            )
            await queue_mail(
                user.email, RESET_SUBJECT, reset_body(f"{app_url.rstrip('/')}/reset?token={token}"), now=now
            )
            mailed += 1
    return mailed


async def confirm_password_reset(
    token: str, password: str, *, now: datetime, hash_password: PasswordHasher, trail: AuditTrail
) -> UUID:
    """Set a new password from a reset link and end every login of the account. Returns the user.

    Raises `InvalidLinkToken` (unknown, used, expired) or `WeakPassword` (the link stays usable).
    """
    reset = await PasswordReset.get_or_none(token_hash=hash_token(token)).select_related("user")
    if reset is None or reset.user is None or reset.used_at is not None or reset.expires_at is None:
        raise InvalidLinkToken
    if now >= reset.expires_at or not reset.user.is_active:
        raise InvalidLinkToken
    user = reset.user
    if problem := password_problem(password, email=user.email, names=await personal_names(user)):
        raise WeakPassword(problem)
    password_hash = await hash_password(password)
    async with in_transaction():
        if await PasswordReset.filter(id=reset.id, used_at=None).update(used_at=now) != 1:
            raise InvalidLinkToken  # spent concurrently
        await User.filter(id=user.id).update(password_hash=password_hash, updated_at=now)
        ended = len(await sign_ins.end_user_logins(user.id, now=now, reason="password reset"))
        entry = AuditEntry(
            AuditAction.UPDATE, "User", AuditOutcome.SUCCESS, resource_id=str(user.id),
            detail=f"{user.email} reset the password by e-mail; {ended} login(s) ended",
        )  # fmt: skip
        await record_now(None, entry, now=now, trail=trail)
    return user.id


async def change_password(
    viewer: Viewer,
    current_password: str,
    new_password: str,
    *,
    now: datetime,
    keep_login: UUID | None,
    hashing: PasswordHashing,
) -> int:
    """Change one's own password: the current one is required (and throttled like a sign-in), the
    login asking (`keep_login`) stays, every other one ends. Returns how many logins ended."""
    if viewer.is_api_client:
        refusal = Forbidden("EHR clients have no password; rotate the client secret instead")
        raise denied(viewer, refusal, AuditAction.UPDATE, "User")
    user = await User.get(id=viewer.id)
    subject = f"user:{user.email}"
    address = viewer.audit.client_address
    if await throttle.reserve_attempt(subject, address, now=now) is not None:
        await record_now(
            viewer, AuditEntry(AuditAction.UPDATE, "User", AuditOutcome.DENIED, resource_id=str(user.id),
                               detail="password change refused: too many wrong passwords"),
            now=now, trail=viewer.audit,
        )  # fmt: skip
        raise InvalidInput("currentPassword", "too many wrong passwords: wait a few minutes and try again")
    if not await hashing.verify(user.password_hash, current_password):
        await record_now(
            viewer, AuditEntry(AuditAction.UPDATE, "User", AuditOutcome.DENIED, resource_id=str(user.id),
                               detail="password change refused: wrong current password"),
            now=now, trail=viewer.audit,
        )  # fmt: skip
        raise InvalidInput("currentPassword", "the current password is wrong")
    await throttle.attempt_succeeded(subject, address, now=now)
    if problem := password_problem(new_password, email=user.email, names=await personal_names(user)):
        raise InvalidInput("newPassword", problem)
    password_hash = await hashing.hash(new_password)
    async with in_transaction():
        await User.filter(id=user.id).update(password_hash=password_hash, updated_at=now)
        ended = len(await sign_ins.end_user_logins(user.id, now=now, reason="password changed", keep=keep_login))
        entry = AuditEntry(
            AuditAction.UPDATE, "User", AuditOutcome.SUCCESS, resource_id=str(user.id),
            detail=f"changed own password; {ended} other login(s) ended",
        )  # fmt: skip
        await record_now(viewer, entry, now=now, trail=viewer.audit)
    return ended
