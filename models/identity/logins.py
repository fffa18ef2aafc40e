"""A user's own logins: see them, end one, end all but this one (PRODUCT.md capability 11).

A login is a refresh-token family (models.identity.sign_ins): created at sign-in with the browser's or
app's user agent, touched at every refresh. Ending one revokes its family: its refresh tokens
stop and its devices get no more pushes.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from models.identity import sign_ins
from models.identity.access import Viewer
from models.identity.sign_in_records import SessionFamily
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, denied, record_now
from models.kernel.errors import Forbidden, NotFound


def _user_of(viewer: Viewer) -> UUID:
    if viewer.is_api_client:
        refusal = Forbidden("EHR clients have no logins: they sign in with client credentials")
        raise denied(viewer, refusal, AuditAction.UPDATE, "Login")
    return viewer.id


async def list_logins(viewer: Viewer, *, now: datetime) -> list[SessionFamily]:
    """The viewer's active logins, the most recently used first."""
    user_id = _user_of(viewer)
    return list(
        await SessionFamily.filter(user_id=user_id, revoked_at=None, expires_at__gt=now).order_by("-last_used_at", "id")
    )


async def _end(viewer: Viewer, family_ids: list[UUID], *, now: datetime, reason: str) -> int:
    for family_id in family_ids:
        await sign_ins.revoke_family(family_id, now=now, reason=reason)
    if family_ids:
        one = str(family_ids[0]) if len(family_ids) == 1 else None
        detail = f"ended {len(family_ids)} own login(s)"
        entry = AuditEntry(AuditAction.UPDATE, "Login", AuditOutcome.SUCCESS, resource_id=one, detail=detail)
        await record_now(viewer, entry, now=now, trail=viewer.audit)
    return len(family_ids)


async def end_login(viewer: Viewer, login_id: UUID, *, now: datetime) -> int:
    """Sign one of one's own logins out (another's looks missing). Returns how many ended (0 or 1)."""
    user_id = _user_of(viewer)
    family = await SessionFamily.get_or_none(id=login_id, user_id=user_id)
    if family is None:
        raise NotFound("login")
    if family.revoked_at is not None:
        return 0
    return await _end(viewer, [family.id], now=now, reason="ended by user")


async def end_other_logins(viewer: Viewer, current: UUID | None, *, now: datetime) -> int:
    """Sign out everywhere but here (`current`, the login of the request). Returns how many ended."""
    user_id = _user_of(viewer)
    live = SessionFamily.filter(user_id=user_id, revoked_at=None)
    if current is not None:
        live = live.exclude(id=current)
    family_ids: list[UUID] = list(await live.values_list("id", flat=True))  # type: ignore[arg-type]
    return await _end(viewer, family_ids, now=now, reason="ended by user")
