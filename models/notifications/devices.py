"""Phones that receive push notifications, and which notification reached which phone.

A device is registered by the signed-in app under the login (session family) it runs with, so
logging out ends its pushes. A push token belongs to one account at a time: the phone changed
hands (or users) when another account registers it, and the old registration is deactivated.
Deliveries are recorded per device, so a notification retried after a crash or a partial failure
goes only to the devices that have not received it yet.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Subquery
from tortoise.models import Model
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models.identity.access import Viewer
from models.identity.accounts import Role, User
from models.identity.sign_in_records import SessionFamily, ended_logins
from models.kernel.audit import AuditAction, denied
from models.kernel.base import Entity
from models.kernel.errors import Forbidden, InvalidInput, NotFound

if TYPE_CHECKING:
    from models.notifications.notifications import Notification

MAX_PUSH_TOKEN_LENGTH = 1024
MAX_APP_VERSION_LENGTH = 32
# APNs device tokens are hex; FCM registration tokens are URL-safe base64 with ':' and '-'.
_APNS_TOKEN = re.compile(r"^[0-9A-Fa-f]+$")
_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-.]+$")
# A BCP 47 language tag as phones report it: en, en-US, es-419, zh-Hant-TW (`_` accepted for `-`).
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_APP_VERSION = re.compile(r"^[0-9A-Za-z.+\-_ ()]+$")


class Platform(StrEnum):
    IOS = "IOS"
    ANDROID = "ANDROID"


class DeactivationReason(StrEnum):
    UNREGISTERED = "UNREGISTERED"  # the app asked (unregisterDevice)
    SESSION_ENDED = "SESSION_ENDED"  # its login ended: revoked (logout, token reuse) or expired
    TAKEN_BY_ANOTHER_REGISTRATION = "TAKEN_BY_ANOTHER_REGISTRATION"  # the token was registered again
    TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105 - APNs or FCM said the token is no longer valid


class Device(Entity):
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "ketafollow.User", related_name="devices", on_delete=fields.RESTRICT
    )
    platform = fields.CharEnumField(Platform, max_length=16)
    # Unique among active devices (a partial unique index, migration 0006).
    push_token = fields.CharField(max_length=MAX_PUSH_TOKEN_LENGTH)
    app_version = fields.CharField(max_length=MAX_APP_VERSION_LENGTH)
    locale = fields.CharField(max_length=35)
    session_family: fields.ForeignKeyNullableRelation[SessionFamily] = fields.ForeignKeyField(
        "ketafollow.SessionFamily", related_name="devices", null=True, on_delete=fields.SET_NULL
    )
    is_active = fields.BooleanField(default=True)
    last_seen_at = fields.DatetimeField()
    deactivated_at = fields.DatetimeField(null=True)
    deactivation_reason = fields.CharEnumField(DeactivationReason, max_length=40, null=True)

    class Meta:
        table = "device"
        indexes = (("user_id", "is_active"),)


class DeviceDelivery(Model):
    """One notification pushed to one device (recorded once APNs or FCM accepted it)."""

    id = fields.UUIDField(primary_key=True)
    notification: fields.ForeignKeyRelation[Notification] = fields.ForeignKeyField(
        "ketafollow.Notification", related_name="device_deliveries", on_delete=fields.RESTRICT
    )
    device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "ketafollow.Device", related_name="deliveries", on_delete=fields.RESTRICT
    )
    delivered_at = fields.DatetimeField()
    # What the push service called it (apns-id, or the FCM message name), to trace a complaint.
    provider_message_id = fields.CharField(max_length=200, null=True)

    class Meta:
        table = "device_delivery"
        unique_together = (("notification_id", "device_id"),)


@dataclass(frozen=True)
class NewDevice:
    platform: str
    push_token: str
    app_version: str
    locale: str


def _validated(data: NewDevice) -> tuple[Platform, str, str, str]:
    """The registration's fields, cleaned, or `InvalidInput` naming the first one at fault."""
    try:
        platform = Platform(data.platform)
    except ValueError:
        raise InvalidInput("platform", f"platform must be IOS or ANDROID, got {data.platform!r}") from None
    token = data.push_token.strip()
    if not token:
        raise InvalidInput("pushToken", "pushToken must not be empty")
    if len(token) > MAX_PUSH_TOKEN_LENGTH:
        raise InvalidInput("pushToken", f"pushToken must be at most {MAX_PUSH_TOKEN_LENGTH} characters")
    pattern, shape = (_APNS_TOKEN, "hexadecimal") if platform is Platform.IOS else (_FCM_TOKEN, "an FCM token")
    if not pattern.match(token):
        raise InvalidInput("pushToken", f"pushToken for {platform.value} must be {shape}")
    version = data.app_version.strip()
    if not version or len(version) > MAX_APP_VERSION_LENGTH or not _APP_VERSION.match(version):
        raise InvalidInput(
            "appVersion", f"appVersion must be 1-{MAX_APP_VERSION_LENGTH} characters such as 2.4.1 (381)"
        )
    locale = data.locale.strip()
    if len(locale) > 35 or not _LOCALE.match(locale):
        raise InvalidInput("locale", f"locale must be a language tag such as en-US, got {data.locale!r}")
    return platform, token, version, locale.replace("_", "-")


def _ensure_may_receive_pushes(viewer: Viewer, action: AuditAction) -> None:
    if not (viewer.is_role(Role.PATIENT) or viewer.is_role(Role.PROVIDER)):
        raise denied(
            viewer, Forbidden("only patients and providers register devices for notifications"), action, "Device"
        )


async def register_device(viewer: Viewer, data: NewDevice, *, session_id: UUID | None, now: datetime) -> Device:
    """Register (or refresh) the viewer's phone for pushes; the same token twice is one device.

    A token that is active under another account, or under another platform, is taken from that
    registration, which is deactivated. Apps call this at every start: it refreshes the app
    version, locale, login and `last_seen_at` of the device.
    """
    _ensure_may_receive_pushes(viewer, AuditAction.CREATE)
    platform, token, version, locale = _validated(data)
    if session_id is not None and await _login_has_ended(session_id, now):
        # The access token outlives a logout by minutes: a device must not outlive it.
        refusal = Forbidden("this sign-in has ended: sign in again to receive notifications")
        raise denied(viewer, refusal, AuditAction.CREATE, "Device")
    for _ in range(2):  # should a concurrent registration still win the index: read it then
        try:
            async with in_transaction() as connection:
                if connection.capabilities.dialect == "postgres":
                    # Registrations of one token queue up (SQLite write transactions always do).
                    await connection.execute_query(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [f"device-token:{token}"]
                    )
                return await _register(viewer.id, platform, token, version, locale, session_id, now)
        except IntegrityError:
            continue
    raise InvalidInput("pushToken", "pushToken is being registered by another request; try again")


async def _login_has_ended(session_id: UUID, now: datetime) -> bool:
    return await ended_logins(now).filter(id=session_id).exists()


async def _register(
    user_id: UUID,
    platform: Platform,
    token: str,
    version: str,
    locale: str,
    session_id: UUID | None,
    now: datetime,
) -> Device:
    current = await Device.filter(push_token=token, is_active=True).select_for_update().first()
    if current is not None and current.user_id == user_id and current.platform is platform:  # type: ignore[attr-defined]
        current.app_version, current.locale, current.last_seen_at = version, locale, now
        current.session_family_id = session_id
        await current.save(update_fields=["app_version", "locale", "last_seen_at", "session_family_id", "updated_at"])
        return current
    if current is not None:
        await _deactivate(Device.filter(id=current.id), DeactivationReason.TAKEN_BY_ANOTHER_REGISTRATION, now)
    return await Device.create(
        user_id=user_id,
        platform=platform,
        push_token=token,
        app_version=version,
        locale=locale,
        session_family_id=session_id,
        last_seen_at=now,
    )


async def unregister_device(viewer: Viewer, device_id: UUID, *, now: datetime) -> Device:
    """Stop pushes to one of the viewer's devices (idempotent: an inactive one is returned as is)."""
    _ensure_may_receive_pushes(viewer, AuditAction.UPDATE)
    async with in_transaction():
        device = await Device.filter(id=device_id, user_id=viewer.id).select_for_update().first()
        if device is None:  # another user's or none at all: one answer, audited
            raise denied(viewer, NotFound("device"), AuditAction.UPDATE, "Device", resource_id=device_id)
        if device.is_active:
            await _deactivate(Device.filter(id=device.id), DeactivationReason.UNREGISTERED, now)
            await device.refresh_from_db()
    return device


async def _deactivate(devices: QuerySet[Device], reason: DeactivationReason, now: datetime) -> int:
    changed: int = await devices.filter(is_active=True).update(
        is_active=False, deactivated_at=now, deactivation_reason=reason, updated_at=now
    )
    return changed


async def end_session_devices(session_id: UUID, *, now: datetime) -> int:
    """The login `session_id` ended: its devices get no more pushes (in the caller's transaction)."""
    return await _deactivate(Device.filter(session_family_id=session_id), DeactivationReason.SESSION_ENDED, now)


async def end_expired_login_devices(*, now: datetime, user_id: UUID | None = None) -> int:
    """Devices whose login has ended without a logout (it expired: past its absolute lifetime, or
    idle past its refresh token's) get no more pushes, like those of a login that was revoked: a
    phone whose user stopped using it must not keep showing their notifications. Of `user_id`
    only, or of everyone (the periodic job). Returns how many were deactivated."""
    devices = Device.filter(session_family_id__in=Subquery(ended_logins(now).values("id")))
    if user_id is not None:
        devices = devices.filter(user_id=user_id)
    return await _deactivate(devices, DeactivationReason.SESSION_ENDED, now)


async def deactivate_invalid_token(device_id: UUID, *, now: datetime) -> None:
    """APNs or FCM answered that this device's token is no longer valid."""
    await _deactivate(Device.filter(id=device_id), DeactivationReason.TOKEN_INVALID, now)


async def devices_awaiting(notification_id: UUID, recipient_id: UUID, *, now: datetime) -> list[Device]:
    """The recipient's active devices that have not received this notification yet; a device of a
    login found expired is deactivated first (the periodic job may not have run yet)."""
    await end_expired_login_devices(now=now, user_id=recipient_id)
    delivered = DeviceDelivery.filter(notification_id=notification_id).values_list("device_id", flat=True)
    return (
        await Device.filter(user_id=recipient_id, is_active=True).exclude(id__in=await delivered).order_by("created_at")
    )


async def record_delivery(
    notification_id: UUID, device_id: UUID, *, provider_message_id: str | None, now: datetime
) -> None:
    """The push service accepted the notification for this device: never send it there again."""
    # Already recorded by a replica that held an expired lease on the same notification: fine.
    with contextlib.suppress(IntegrityError):
        await DeviceDelivery.create(
            notification_id=notification_id,
            device_id=device_id,
            delivered_at=now,
            provider_message_id=provider_message_id,
        )
