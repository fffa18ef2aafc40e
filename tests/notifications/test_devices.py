"""Registering phones for push notifications, through GraphQL as the apps do."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette

from api.auth.tokens import issue_access_token
from api.database import use_database
from api.settings import Settings
from jobs.sessions import end_expired_login_devices
from models.identity.accounts import User
from models.kernel.clock import ManualClock
from models.notifications.devices import DeactivationReason, Device, devices_awaiting
from seeds.demo import DEMO_PASSWORD
from tests.conftest import Tokens, job_env
from tests.support.graphql import gql

IOS_TOKEN = "a1" * 32
ANDROID_TOKEN = "fcm-token:APA91bH-example_token-1234567890"

REGISTER = """
mutation Register($input: RegisterDeviceInput!) {
  registerDevice(input: $input) {
    result { __typename ... on Device { id platform appVersion locale active lastSeenAt }
             ... on Error { message } ... on ValidationError { field } }
  }
}
"""
UNREGISTER = """
mutation Unregister($id: ID!) {
  unregisterDevice(input: { deviceId: $id }) {
    result { __typename ... on Device { id active deactivatedAt } ... on Error { message } }
  }
}
"""


def device_input(token: str = IOS_TOKEN, **changes: Any) -> dict[str, Any]:
    return {"platform": "IOS", "pushToken": token, "appVersion": "2.4.1 (381)", "locale": "en-US", **changes}


async def register(client: httpx.AsyncClient, signed_in: object, **changes: Any) -> dict[str, Any]:
    body = await gql(client, REGISTER, {"input": device_input(**changes)}, token=signed_in)
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["registerDevice"]["result"]
    return result


async def devices_with_token(app: Starlette, push_token: str) -> list[Device]:
    with use_database(app.state.database):
        return await Device.filter(push_token=push_token).order_by("created_at").prefetch_related("user")


async def test_a_patient_registers_a_phone_and_registering_it_again_is_the_same_device(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = tokens.fresh("alex@demo.test")
    first = await register(client, alex)
    assert first["__typename"] == "Device"
    assert (first["platform"], first["appVersion"], first["locale"], first["active"]) == (
        "IOS",
        "2.4.1 (381)",
        "en-US",
        True,
    )
    clock.advance(timedelta(hours=3))
    again = await register(client, alex, appVersion="2.5.0", locale="es_US")
    assert again["id"] == first["id"]
    assert (again["appVersion"], again["locale"]) == ("2.5.0", "es-US")
    assert again["lastSeenAt"] > first["lastSeenAt"]
    assert len(await devices_with_token(app, IOS_TOKEN)) == 1


async def test_a_user_may_have_several_devices_and_unregister_one(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    provider = tokens.fresh("dr.rivera@demo.test")
    phone = await register(client, provider)
    tablet = await register(client, provider, platform="ANDROID", token=ANDROID_TOKEN)
    assert phone["id"] != tablet["id"]
    body = await gql(client, UNREGISTER, {"id": phone["id"]}, token=provider)
    assert body["data"]["unregisterDevice"]["result"]["active"] is False
    again = await gql(client, UNREGISTER, {"id": phone["id"]}, token=provider)  # idempotent
    assert again["data"]["unregisterDevice"]["result"] == body["data"]["unregisterDevice"]["result"]
    [android] = await devices_with_token(app, ANDROID_TOKEN)
    [ios] = await devices_with_token(app, IOS_TOKEN)
    assert android.is_active
    assert (ios.is_active, ios.deactivation_reason) == (False, DeactivationReason.UNREGISTERED)


async def test_a_token_registered_by_another_account_is_taken_from_it(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    alex_device = await register(client, tokens.fresh("alex@demo.test"))
    blair_device = await register(client, tokens.fresh("blair@demo.test"))
    assert blair_device["id"] != alex_device["id"]
    old, new = await devices_with_token(app, IOS_TOKEN)
    assert (old.user.email, old.is_active, old.deactivation_reason) == (
        "alex@demo.test",
        False,
        DeactivationReason.TAKEN_BY_ANOTHER_REGISTRATION,
    )
    assert (new.user.email, new.is_active) == ("blair@demo.test", True)
    # Alex can no longer reach the device Blair now holds, nor unregister hers.
    body = await gql(client, UNREGISTER, {"id": blair_device["id"]}, token=tokens.fresh("alex@demo.test"))
    assert body["data"]["unregisterDevice"]["result"]["__typename"] == "NotFound"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"token": ""}, "pushToken", "must not be empty"),
        ({"token": "   "}, "pushToken", "must not be empty"),
        ({"token": "ab" * 513}, "pushToken", "at most 1024 characters"),
        ({"token": "not hex at all"}, "pushToken", "must be hexadecimal"),
        ({"platform": "ANDROID", "token": "has spaces in it"}, "pushToken", "must be an FCM token"),
        ({"locale": "English please"}, "locale", "language tag"),
        ({"locale": ""}, "locale", "language tag"),
        ({"appVersion": ""}, "appVersion", "appVersion must be"),
        ({"appVersion": "1" * 33}, "appVersion", "appVersion must be"),
    ],
)
async def test_bad_registrations_are_refused_naming_the_field(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, changes: dict[str, Any], field: str, words: str
) -> None:
    result = await register(client, tokens.fresh("alex@demo.test"), **changes)
    assert result["__typename"] == "ValidationError"
    assert result["field"] == field
    assert words in result["message"]
    with use_database(app.state.database):
        assert await Device.all().count() == 0


async def test_an_unknown_platform_is_refused_by_the_schema_naming_it(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    body = await gql(
        client, REGISTER, {"input": device_input(platform="WINDOWS")}, token=tokens.fresh("alex@demo.test")
    )
    assert body["data"] is None
    assert "'WINDOWS'" in body["errors"][0]["message"]
    assert "DevicePlatform" in body["errors"][0]["message"]


async def test_logging_out_unregisters_the_device_of_that_login_only(client: httpx.AsyncClient, app: Starlette) -> None:
    logins = []
    for _ in range(2):  # the same person signed in on a phone and on a tablet
        response = await client.post(
            "/auth/token", data={"grant_type": "password", "username": "alex@demo.test", "password": DEMO_PASSWORD}
        )
        logins.append(response.json())
    phone = await register(client, logins[0]["access_token"])
    tablet = await register(client, logins[1]["access_token"], platform="ANDROID", token=ANDROID_TOKEN)
    assert phone["active"] and tablet["active"]
    response = await client.post("/auth/revoke", data={"token": logins[0]["refresh_token"]})
    assert response.status_code == 200
    [ios] = await devices_with_token(app, IOS_TOKEN)
    [android] = await devices_with_token(app, ANDROID_TOKEN)
    assert (ios.is_active, ios.deactivation_reason) == (False, DeactivationReason.SESSION_ENDED)
    assert android.is_active


async def test_an_access_token_that_outlived_its_logout_cannot_register_a_device(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    response = await client.post(
        "/auth/token", data={"grant_type": "password", "username": "alex@demo.test", "password": DEMO_PASSWORD}
    )
    login = response.json()
    await client.post("/auth/revoke", data={"token": login["refresh_token"]})
    # Refused before any GraphQL runs: the login behind the token has ended (api.logins).
    body = await gql(client, REGISTER, {"input": device_input()}, token=login["access_token"], expect_status=401)
    assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert "sign in again" in body["errors"][0]["message"]
    assert await devices_with_token(app, IOS_TOKEN) == []


async def sign_in(client: httpx.AsyncClient, email: str = "alex@demo.test") -> dict[str, Any]:
    response = await client.post(
        "/auth/token", data={"grant_type": "password", "username": email, "password": DEMO_PASSWORD}
    )
    assert response.status_code == 200, response.text
    login: dict[str, Any] = response.json()
    return login


async def refresh(client: httpx.AsyncClient, login: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
    )
    assert response.status_code == 200, response.text
    renewed: dict[str, Any] = response.json()
    return renewed


async def test_a_login_that_expired_stops_the_pushes_to_its_phone_and_only_its(
    client: httpx.AsyncClient, app: Starlette, clock: ManualClock
) -> None:
    phone_login, tablet_login = await sign_in(client), await sign_in(client)
    await register(client, phone_login["access_token"])
    await register(client, tablet_login["access_token"], platform="ANDROID", token=ANDROID_TOKEN)
    clock.advance(timedelta(hours=11))
    await refresh(client, tablet_login)  # the tablet is in use; the phone was put away
    clock.advance(timedelta(hours=2))  # the phone's login is now idle past its 12 hours
    with use_database(app.state.database):
        assert await end_expired_login_devices(job_env(clock)) == 1
    [ios] = await devices_with_token(app, IOS_TOKEN)
    [android] = await devices_with_token(app, ANDROID_TOKEN)
    assert (ios.is_active, ios.deactivation_reason, ios.deactivated_at) == (
        False,
        DeactivationReason.SESSION_ENDED,
        clock.now(),
    )
    assert android.is_active


async def test_a_push_finds_a_login_that_expired_before_the_job_did_and_skips_its_phone(
    client: httpx.AsyncClient, app: Starlette, clock: ManualClock
) -> None:
    await register(client, (await sign_in(client))["access_token"])
    clock.advance(timedelta(hours=12, minutes=1))
    with use_database(app.state.database):
        alex = await User.get(email="alex@demo.test")
        assert await devices_awaiting(uuid.uuid4(), alex.id, now=clock.now()) == []
    [ios] = await devices_with_token(app, IOS_TOKEN)
    assert (ios.is_active, ios.deactivation_reason) == (False, DeactivationReason.SESSION_ENDED)


async def test_an_access_token_that_outlived_its_expired_login_cannot_register_a_device(
    client: httpx.AsyncClient, app: Starlette, clock: ManualClock, settings: Settings
) -> None:
    login = await sign_in(client)
    clock.advance(timedelta(hours=12, minutes=1))
    # A valid access token of that login, as one issued at its last moment would still be.
    session_id = uuid.UUID(jwt.decode(login["access_token"], options={"verify_signature": False})["sid"])
    with use_database(app.state.database):
        alex = await User.get(email="alex@demo.test")
    token = issue_access_token(
        settings, subject_kind="user", subject_id=alex.id, now=clock.now(), session_id=session_id
    )
    body = await gql(client, REGISTER, {"input": device_input()}, token=token)
    assert body["data"] is None
    # Refused by the device rule (or, where each request checks its login, at sign-in): no device.
    assert body["errors"][0]["extensions"]["code"] in {"FORBIDDEN", "UNAUTHENTICATED"}
    assert await devices_with_token(app, IOS_TOKEN) == []


async def test_two_accounts_registering_one_token_at_once_leave_one_active_device(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    results = await asyncio.gather(
        *(register(client, tokens.fresh(email)) for email in ("alex@demo.test", "blair@demo.test") * 3)
    )
    assert {result["__typename"] for result in results} == {"Device"}
    registrations = await devices_with_token(app, IOS_TOKEN)
    assert len([device for device in registrations if device.is_active]) == 1
