"""The tables of sign-in sessions: a `SessionFamily` per login and its rotating `RefreshToken`s.

`models.identity.sign_ins` signs in, refreshes and ends logins with them; `models.notifications.devices` (which
`models.identity.sign_ins` calls when a login ends) reads which logins have ended.
"""

from __future__ import annotations

from datetime import datetime

from tortoise import fields
from tortoise.expressions import Q, Subquery
from tortoise.models import Model
from tortoise.queryset import QuerySet

from models.identity.accounts import User

USER_AGENT_LENGTH = 300


class SessionFamily(Model):
    id = fields.UUIDField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "ketafollow.User", related_name="session_families", on_delete=fields.RESTRICT
    )
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    last_used_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)
    revoke_reason = fields.CharField(max_length=32, null=True)
    # What signed in (the User-Agent of the sign-in, then of the latest refresh): `myLogins`.
    user_agent = fields.CharField(max_length=USER_AGENT_LENGTH, null=True)

    class Meta:
        table = "session_family"


class RefreshToken(Model):
    id = fields.UUIDField(primary_key=True)
    family: fields.ForeignKeyRelation[SessionFamily] = fields.ForeignKeyField(
        "ketafollow.SessionFamily", related_name="tokens", on_delete=fields.RESTRICT
    )
    token_hash = fields.CharField(max_length=64, unique=True)
    issued_at = fields.DatetimeField()
    idle_expires_at = fields.DatetimeField()
    rotated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "refresh_token"


def ended_logins(now: datetime) -> QuerySet[SessionFamily]:
    """Logins that can no longer be refreshed: revoked, past their absolute lifetime, or idle past
    the lifetime of their last refresh token (none left unspent and unexpired)."""
    live_tokens = RefreshToken.filter(rotated_at=None, idle_expires_at__gt=now).values("family_id")
    return SessionFamily.filter(Q(revoked_at__isnull=False) | Q(expires_at__lte=now) | ~Q(id__in=Subquery(live_tokens)))
