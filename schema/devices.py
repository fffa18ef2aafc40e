"""Devices in the API: the apps register the phone they run on for push notifications."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry
from strawberry.types import Info

from models.notifications import devices
from schema.context import Context
from schema.errors import NotFound, ValidationError
from schema.ids import global_id, node_id
from schema.mutations import payload
from schema.permissions import viewer_of


@strawberry.enum(name="DevicePlatform")
class DevicePlatform(Enum):
    IOS = "IOS"
    ANDROID = "ANDROID"


@strawberry.type(name="Device")
class DeviceType:
    id: strawberry.ID
    platform: DevicePlatform
    app_version: str
    locale: str
    active: bool
    registered_at: datetime
    last_seen_at: datetime
    deactivated_at: datetime | None

    @classmethod
    def from_model(cls, device: devices.Device) -> DeviceType:
        return cls(
            id=strawberry.ID(global_id("Device", device.id)),
            platform=DevicePlatform(device.platform.value),
            app_version=device.app_version,
            locale=device.locale,
            active=device.is_active,
            registered_at=device.created_at,
            last_seen_at=device.last_seen_at,
            deactivated_at=device.deactivated_at,
        )


@strawberry.input
class RegisterDeviceInput:
    platform: DevicePlatform
    push_token: str = strawberry.field(description="The APNs device token (hex) or the FCM registration token.")
    app_version: str
    locale: str = strawberry.field(description="A language tag such as en-US.")


@strawberry.input
class UnregisterDeviceInput:
    device_id: strawberry.ID = strawberry.field(description="The id registerDevice returned.")


DeviceResult = Annotated[DeviceType | ValidationError | NotFound, strawberry.union("DeviceResult")]


@strawberry.type(name="DevicePayload")
class DevicePayload:
    result: DeviceResult


@strawberry.type
class DeviceMutation:
    @strawberry.mutation(
        description="Receive push notifications on this phone (call at every app start; the same token is one device)."
    )
    async def register_device(self, info: Info[Context, None], input: RegisterDeviceInput) -> DevicePayload:
        data = devices.NewDevice(input.platform.value, input.push_token, input.app_version, input.locale)
        return await payload(
            DevicePayload,
            lambda: devices.register_device(
                viewer_of(info), data, session_id=info.context.session_id, now=info.context.now()
            ),
            DeviceType.from_model,
        )

    @strawberry.mutation(description="Stop push notifications to one of your devices (logging out does it too).")
    async def unregister_device(self, info: Info[Context, None], input: UnregisterDeviceInput) -> DevicePayload:
        async def call() -> devices.Device:
            device_id = node_id(input.device_id, "Device", "deviceId")
            return await devices.unregister_device(viewer_of(info), device_id, now=info.context.now())

        return await payload(DevicePayload, call, DeviceType.from_model)
