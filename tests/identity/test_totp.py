"""A second factor (TOTP, RFC 6238) end to end over HTTP: enrolment, sign-in with a code or a
recovery code, replay, skew, the mfa_token's life, turning it off, and roles that require it
(PRODUCT.md capability 11, "Exact shapes for enrolment"); then the pure parts."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from api.settings import Settings, SettingsError
from models.identity import enrolment, totp
from models.identity.access import load_user_viewer
from models.identity.accounts import CareTeam, Role, User
from models.identity.bearer_tokens import hash_token
from models.identity.totp import MfaChallenge, RecoveryCode, TotpFactor
from models.identity.totp_codes import (
    SecretBox,
    code_at,
    matching_step,
    new_recovery_codes,
    recovery_code_hash,
    time_step,
)
from models.kernel.audit import AuditEvent, AuditOutcome, AuditTrail
from models.kernel.clock import ManualClock
from models.notifications.mail import MailMessage
from tests.conftest import client_of, running_app
from tests.support.cli import run
from tests.support.graphql import gql
from tests.support.settings import PRODUCTION_MAIL
from tests.support.sockets import socket_to

DEMO_PASSWORD = "ketafollow-demo"
MFA_GRANT = "urn:ketafollow:grant-type:mfa-otp"
PATIENT, PROVIDER = "alex@demo.test", "dr.rivera@demo.test"

START = """mutation { startTotpEnrollment { result { __typename
  ... on TotpEnrollment { secret otpauthUri } ... on Conflict { message } } } }"""
CONFIRM = """mutation($code: String!) { confirmTotpEnrollment(input: { code: $code }) { result { __typename
  ... on TotpConfirmed { recoveryCodes } ... on ValidationError { field message } } } }"""
DISABLE = """mutation($code: String!) { disableTotp(input: { code: $code }) { result { __typename
  ... on Viewer { name } ... on ValidationError { field message } } } }"""
VIEWER = "{ me { name role scopes } }"
PATIENTS = "{ patients(first: 1) { edges { node { id } } } }"


async def sign_in(client: httpx.AsyncClient, email: str, password: str = DEMO_PASSWORD) -> httpx.Response:
    form = {"grant_type": "password", "username": email, "password": password}
    return await client.post("/auth/token", data=form)


async def answer(client: httpx.AsyncClient, mfa_token: str, **code: str) -> httpx.Response:
    return await client.post("/auth/token", data={"grant_type": MFA_GRANT, "mfa_token": mfa_token, **code})


async def mfa_token(client: httpx.AsyncClient, email: str) -> str:
    response = await sign_in(client, email)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "mfa_required"
    assert response.headers["cache-control"] == "no-store"
    token: str = body["mfa_token"]
    return token


def code_now(secret: str, clock: ManualClock, steps: int = 0) -> str:
    return code_at(secret, time_step(clock.now()) + steps)


async def enrol(client: httpx.AsyncClient, clock: ManualClock, access: str) -> tuple[str, list[str]]:
    """Turn the factor on for the holder of `access`: (the secret, the recovery codes)."""
    started = (await gql(client, START, token=access))["data"]["startTotpEnrollment"]["result"]
    assert started["__typename"] == "TotpEnrollment", started
    secret: str = started["secret"]
    confirmed = (await gql(client, CONFIRM, {"code": code_now(secret, clock)}, token=access))["data"]
    result = confirmed["confirmTotpEnrollment"]["result"]
    assert result["__typename"] == "TotpConfirmed", result
    clock.advance(timedelta(seconds=30))  # the confirming code's step is spent
    return secret, result["recoveryCodes"]


async def tokens_of(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await sign_in(client, email)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def enrolled(client: httpx.AsyncClient, clock: ManualClock) -> tuple[str, list[str]]:
    """alex with the factor on."""
    return await enrol(client, clock, (await tokens_of(client, PATIENT))["access_token"])


async def test_enrol_confirm_then_sign_in_with_password_and_code(client: httpx.AsyncClient, clock: ManualClock) -> None:
    login = await tokens_of(client, PATIENT)
    access = login["access_token"]
    started = (await gql(client, START, token=access))["data"]["startTotpEnrollment"]["result"]
    secret = started["secret"]
    uri = urlsplit(started["otpauthUri"])
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert unquote(uri.path) == f"/ketafollow:{PATIENT}"
    assert parse_qs(uri.query)["issuer"] == ["ketafollow"] and parse_qs(uri.query)["secret"] == [secret]
    stored = await TotpFactor.get(user__email=PATIENT)
    assert secret not in stored.sealed_secret and stored.confirmed_at is None  # sealed at rest, pending

    wrong = (await gql(client, CONFIRM, {"code": "000000"}, token=access))["data"]["confirmTotpEnrollment"]["result"]
    assert wrong["__typename"] == "ValidationError" and wrong["field"] == "code"
    response = await sign_in(client, PATIENT)
    assert response.status_code == 200  # a pending factor asks for nothing yet

    confirmed = await gql(client, CONFIRM, {"code": code_now(secret, clock)}, token=access)
    codes = confirmed["data"]["confirmTotpEnrollment"]["result"]["recoveryCodes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", code) for code in codes)
    stored_hashes = set(await RecoveryCode.filter(user__email=PATIENT).values_list("code_hash", flat=True))
    assert not stored_hashes & set(codes) and len(stored_hashes) == 10  # hashed
    assert (await gql(client, VIEWER, token=access))["data"]["me"]["name"] == PATIENT  # this login stays
    kept = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
    )
    assert kept.status_code == 200 and "scope" not in kept.json()

    clock.advance(timedelta(seconds=30))
    token = await mfa_token(client, PATIENT)
    signed_in = await answer(client, token, otp=code_now(secret, clock))
    assert signed_in.status_code == 200, signed_in.text
    body = signed_in.json()
    assert body["refresh_token"] and "scope" not in body
    assert (await gql(client, VIEWER, token=body["access_token"]))["data"]["me"]["name"] == PATIENT
    again = await answer(client, token, otp=code_now(secret, clock, 1))
    assert again.json()["error"] == "invalid_grant"  # an mfa_token is spent by its right code

    audited = [row.detail for row in await AuditEvent.filter(resource_type="TotpFactor").order_by("occurred_at")]
    assert any("enrolment started" in (detail or "") for detail in audited)
    assert any("wrong code" in (detail or "") for detail in audited)
    assert any("turned on" in (detail or "") for detail in audited)
    logins = await AuditEvent.filter(operation="LoginSecondFactor", outcome=AuditOutcome.SUCCESS).count()
    assert logins == 1


async def test_a_code_is_accepted_once(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    code = code_now(secret, clock)
    assert (await answer(client, await mfa_token(client, PATIENT), otp=code)).status_code == 200
    token = await mfa_token(client, PATIENT)
    replayed = await answer(client, token, otp=code)
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"
    earlier = await answer(client, token, otp=code_now(secret, clock, -1))
    assert earlier.status_code == 400  # a step before the last accepted one: refused too
    assert (await answer(client, token, otp=code_now(secret, clock, 1))).status_code == 200  # the next step's
    denied = await AuditEvent.filter(operation="LoginSecondFactor", outcome=AuditOutcome.DENIED).count()
    assert denied == 2


async def test_a_recovery_code_works_once(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    _, codes = enrolled
    first = await answer(client, await mfa_token(client, PATIENT), recovery_code=codes[0].upper().replace("-", " "))
    assert first.status_code == 200, first.text
    again = await answer(client, await mfa_token(client, PATIENT), recovery_code=codes[0])
    assert again.json()["error"] == "invalid_grant"
    assert (await answer(client, await mfa_token(client, PATIENT), recovery_code=codes[1])).status_code == 200
    assert await RecoveryCode.filter(user__email=PATIENT, used_at__isnull=True).count() == 8
    details = await AuditEvent.filter(operation="LoginSecondFactor").values_list("detail", flat=True)
    assert "signed in with a recovery code (9 left)" in details


async def test_an_mfa_token_dies_after_five_wrong_codes(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    token = await mfa_token(client, PATIENT)
    right = code_now(secret, clock)
    for wrong in ("000000", "123456", "999999", "12345", "abcdef"):
        refused = await answer(client, token, otp=wrong if wrong != right else "111111")
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    dead = await answer(client, token, otp=right)
    assert dead.status_code == 400 and "sign in again" in dead.json()["error_description"]
    assert (await MfaChallenge.get(token_hash=hash_token(token))).attempts == 5
    clock.advance(timedelta(minutes=2))  # the five failures also locked this address out of codes a minute
    assert (await answer(client, await mfa_token(client, PATIENT), otp=code_now(secret, clock))).status_code == 200


async def test_codes_are_throttled_like_passwords(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    for _ in range(5):
        await answer(client, await mfa_token(client, PATIENT), otp="000000")
    locked = await answer(client, await mfa_token(client, PATIENT), otp=code_now(secret, clock))
    assert locked.status_code == 429 and locked.json()["error"] == "too_many_attempts"
    assert int(locked.headers["retry-after"]) > 0


THROTTLED = {
    "__typename": "ValidationError",
    "field": "code",
    "message": "too many wrong codes: wait a few minutes and try again",
}


async def throttled_audit_rows() -> list[tuple[str, str]]:
    rows = await AuditEvent.filter(resource_type="TotpFactor", detail="second factor code throttled").values_list(
        "action", "outcome"
    )
    return [(str(action), str(outcome)) for action, outcome in rows]


async def test_confirming_an_enrolment_is_throttled_after_five_wrong_codes(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    access = (await tokens_of(client, PATIENT))["access_token"]
    secret = (await gql(client, START, token=access))["data"]["startTotpEnrollment"]["result"]["secret"]
    for _ in range(5):
        wrong = (await gql(client, CONFIRM, {"code": "000000"}, token=access))["data"]["confirmTotpEnrollment"]
        assert wrong["result"]["message"].startswith("the code is wrong")
    right = await gql(client, CONFIRM, {"code": code_now(secret, clock)}, token=access)
    assert right["data"]["confirmTotpEnrollment"]["result"] == THROTTLED
    assert (await TotpFactor.get(user__email=PATIENT)).confirmed_at is None  # still pending
    assert await throttled_audit_rows() == [("U", "DENIED")]
    clock.advance(timedelta(minutes=1, seconds=1))
    confirmed = await gql(client, CONFIRM, {"code": code_now(secret, clock)}, token=access)
    assert confirmed["data"]["confirmTotpEnrollment"]["result"]["__typename"] == "TotpConfirmed"


async def test_turning_the_factor_off_is_throttled_after_five_wrong_codes(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, codes = enrolled
    access = (await answer(client, await mfa_token(client, PATIENT), otp=code_now(secret, clock))).json()
    for _ in range(5):
        wrong = await gql(client, DISABLE, {"code": "000000"}, token=access["access_token"])
        assert wrong["data"]["disableTotp"]["result"]["message"].startswith("the code is wrong")
    right = await gql(client, DISABLE, {"code": codes[0]}, token=access["access_token"])
    assert right["data"]["disableTotp"]["result"] == THROTTLED
    assert await TotpFactor.exists(user__email=PATIENT, confirmed_at__isnull=False)  # still on
    assert await RecoveryCode.filter(user__email=PATIENT, used_at__isnull=True).count() == 10  # not spent
    assert await throttled_audit_rows() == [("D", "DENIED")]
    clock.advance(timedelta(minutes=1, seconds=1))
    turned_off = await gql(client, DISABLE, {"code": codes[0]}, token=access["access_token"])
    assert turned_off["data"]["disableTotp"]["result"] == {"__typename": "Viewer", "name": PATIENT}


async def test_an_mfa_token_lives_five_minutes(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    token = await mfa_token(client, PATIENT)
    clock.advance(timedelta(minutes=5))
    expired = await answer(client, token, otp=code_now(secret, clock))
    assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"
    token = await mfa_token(client, PATIENT)
    clock.advance(timedelta(minutes=4, seconds=59))
    assert (await answer(client, token, otp=code_now(secret, clock))).status_code == 200


async def test_one_step_of_clock_skew_either_way_is_accepted_two_are_not(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    clock.advance(timedelta(minutes=5))
    token = await mfa_token(client, PATIENT)
    assert (await answer(client, token, otp=code_now(secret, clock, -2))).status_code == 400
    assert (await answer(client, token, otp=code_now(secret, clock, 2))).status_code == 400
    assert (await answer(client, token, otp=code_now(secret, clock, -1))).status_code == 200
    assert (await answer(client, await mfa_token(client, PATIENT), otp=code_now(secret, clock, 1))).status_code == 200


async def test_the_grant_needs_one_code_and_a_token(client: httpx.AsyncClient, enrolled: tuple[str, list[str]]) -> None:
    token = await mfa_token(client, PATIENT)
    both = await answer(client, token, otp="123456", recovery_code="abcd-efgh-jkmn-pqrs")
    neither = await answer(client, token)
    unknown = await answer(client, "not-a-token", otp="123456")
    assert both.json()["error"] == neither.json()["error"] == "invalid_request"
    assert unknown.json()["error"] == "invalid_grant"


async def test_only_a_right_password_tells_that_a_second_factor_is_on(
    client: httpx.AsyncClient, enrolled: tuple[str, list[str]]
) -> None:
    unknown = await sign_in(client, "nobody@demo.test")
    wrong = await sign_in(client, PATIENT, "not-the-password")
    assert unknown.status_code == wrong.status_code == 400
    assert (
        unknown.json()
        == wrong.json()
        == {
            "error": "invalid_grant",
            "error_description": "the e-mail address or the password is wrong",
        }
    )
    right = await sign_in(client, PATIENT)
    assert right.json()["error"] == "mfa_required" and right.json()["mfa_token"]


async def test_disabling_takes_a_code_and_keeps_this_login(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, codes = enrolled
    other = await answer(client, await mfa_token(client, PATIENT), otp=code_now(secret, clock))
    clock.advance(timedelta(seconds=30))
    this = await answer(client, await mfa_token(client, PATIENT), otp=code_now(secret, clock))
    access = this.json()["access_token"]
    wrong = (await gql(client, DISABLE, {"code": "000000"}, token=access))["data"]["disableTotp"]["result"]
    assert wrong["__typename"] == "ValidationError" and wrong["field"] == "code"
    turned_off = (await gql(client, DISABLE, {"code": codes[3]}, token=access))["data"]["disableTotp"]["result"]
    assert turned_off == {"__typename": "Viewer", "name": PATIENT}
    assert (await gql(client, VIEWER, token=access))["data"]["me"]["name"] == PATIENT
    ended = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": other.json()["refresh_token"]}
    )
    assert ended.status_code == 400  # the other logins end
    assert (await sign_in(client, PATIENT)).status_code == 200  # no second step any more
    assert not await TotpFactor.exists(user__email=PATIENT)
    assert not await RecoveryCode.exists(user__email=PATIENT)
    again = (await gql(client, DISABLE, {"code": "000000"}, token=access))["data"]["disableTotp"]["result"]
    assert again["message"] == "no second factor is on"


async def test_an_enrolment_cannot_replace_a_factor_that_is_on(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    access = (await answer(client, await mfa_token(client, PATIENT), otp=code_now(secret, clock))).json()
    started = (await gql(client, START, token=access["access_token"]))["data"]["startTotpEnrollment"]["result"]
    assert started["__typename"] == "Conflict"
    assert "disableTotp" in started["message"]


@pytest.fixture
async def required_app(settings: Any, clock: ManualClock) -> AsyncIterator[Starlette]:
    """The demo clinic where providers and admins must have a second factor."""
    required = replace(settings, mfa_required_roles=frozenset({Role.PROVIDER, Role.ADMIN}))
    async with running_app(required, clock) as app:
        yield app


@pytest.fixture
async def required_client(required_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(required_app) as http:
        yield http


async def test_a_role_that_requires_a_second_factor_can_only_enrol_until_it_has_one(
    required_client: httpx.AsyncClient, clock: ManualClock
) -> None:
    client = required_client
    login = await tokens_of(client, PROVIDER)
    assert login["scope"] == "mfa_enrolment"
    access = login["access_token"]
    assert (await gql(client, VIEWER, token=access))["data"]["me"]["scopes"] == ["mfa_enrolment"]
    refused = await gql(client, PATIENTS, token=access)
    assert refused["data"] is None
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert refused["errors"][0]["message"] == "a second factor is required: enrol with startTotpEnrollment"
    mixed = await gql(client, "{ me { name } patients(first: 1) { edges { node { id } } } }", token=access)
    assert mixed["data"] is None and mixed["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    end_others = await gql(client, "mutation { endOtherLogins { result { __typename } } }", token=access)
    assert end_others["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    refresh = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
    )
    assert refresh.json()["scope"] == "mfa_enrolment"  # refreshing does not lift it
    refusals = await AuditEvent.filter(resource_type="SecondFactor", outcome=AuditOutcome.DENIED).count()
    assert refusals == 3

    secret, _ = await enrol(client, clock, refresh.json()["access_token"])
    upgraded = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh.json()["refresh_token"]}
    )
    assert upgraded.status_code == 200 and "scope" not in upgraded.json()  # the confirming login, full at refresh
    assert "errors" not in await gql(client, PATIENTS, token=upgraded.json()["access_token"])

    signed_in = await answer(client, await mfa_token(client, PROVIDER), otp=code_now(secret, clock))
    assert "scope" not in signed_in.json()
    full = signed_in.json()["access_token"]
    assert "errors" not in await gql(client, PATIENTS, token=full)
    kept = await gql(client, DISABLE, {"code": code_now(secret, clock, 1)}, token=full)
    assert kept["errors"][0]["extensions"]["code"] == "FORBIDDEN"  # the role requires it
    assert await TotpFactor.exists(user__email=PROVIDER)

    patient = await tokens_of(client, PATIENT)  # patients are not required to have one
    assert "scope" not in patient and "errors" not in await gql(client, VIEWER, token=patient["access_token"])


async def test_an_enrol_only_token_is_refused_over_a_socket_too(
    required_app: Starlette, required_client: httpx.AsyncClient
) -> None:
    access = (await tokens_of(required_client, PROVIDER))["access_token"]
    async with socket_to(required_app) as socket:
        await socket.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {access}"}})
        assert (await socket.receive_json())["type"] == "connection_ack"
        await socket.send_json({"id": "1", "type": "subscribe", "payload": {"query": "{ me { name } }"}})
        assert (await socket.receive_json())["payload"] == {"data": {"me": {"name": PROVIDER}}}
        live = "subscription { alertRaised { id } }"
        for number, query in enumerate((PATIENTS, live), start=2):
            await socket.send_json({"id": str(number), "type": "subscribe", "payload": {"query": query}})
            answer = await socket.receive_json()
            while answer["type"] == "complete":  # the end of the one before
                answer = await socket.receive_json()
            assert answer["id"] == str(number) and answer["type"] in {"next", "error"}, answer
            errors = answer["payload"]["errors"] if answer["type"] == "next" else answer["payload"]
            assert [error["extensions"]["code"] for error in errors] == ["FORBIDDEN"], answer


async def test_an_invited_provider_activates_into_an_enrol_only_login(
    required_client: httpx.AsyncClient, clock: ManualClock
) -> None:
    admin = await load_user_viewer((await User.get(email="admin@demo.test")).id, AuditTrail())
    assert admin is not None
    north = await CareTeam.get(name="North")
    invite = enrolment.ProviderInvite(
        email="dr.new@example.test", given_name="Noor", family_name="Haddad", care_team_ids=(north.id,)
    )
    await enrolment.invite_provider(admin, invite, now=clock.now(), app_url="https://app.clinic.test")
    link = re.search(r"token=([\w-]+)", (await MailMessage.get(recipient="dr.new@example.test")).body)
    assert link is not None
    form = {"token": link.group(1), "password": "lantern harbour quiet"}
    activated = await required_client.post("/auth/activate", data=form)
    assert activated.status_code == 200, activated.text
    assert activated.json()["scope"] == "mfa_enrolment"
    refused = await gql(required_client, PATIENTS, token=activated.json()["access_token"])
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_second_factor_reset_by_an_administrator_ends_every_login(
    client: httpx.AsyncClient, clock: ManualClock, enrolled: tuple[str, list[str]]
) -> None:
    secret, _ = enrolled
    login = (await answer(client, await mfa_token(client, PATIENT), otp=code_now(secret, clock))).json()
    assert await totp.reset(PATIENT, now=clock.now()) == 2  # the enrolling login and this one
    refused = await gql(client, VIEWER, token=login["access_token"], expect_status=401)
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (await sign_in(client, PATIENT)).status_code == 200
    user = await User.get(email=PATIENT)
    reset = AuditEvent.filter(resource_type="TotpFactor", resource_id=str(user.id), detail__contains="reset")
    assert await reset.exists()


async def test_an_administrator_resets_a_lost_phone_from_the_command_line(
    client: httpx.AsyncClient, settings: Any, enrolled: tuple[str, list[str]]
) -> None:
    assert (await sign_in(client, PATIENT)).json()["error"] == "mfa_required"
    result = run("reset-totp", PATIENT.upper(), database_url=settings.database_url)
    assert result.returncode == 0, result.stderr
    assert f"second factor of {PATIENT} reset; 1 login(s) ended" in result.stdout
    assert (await sign_in(client, PATIENT)).status_code == 200
    unknown = run("reset-totp", "nobody@demo.test", database_url=settings.database_url)
    assert unknown.returncode == 1 and "not found" in unknown.stderr


# The pure parts -------------------------------------------------------------------------------


SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_matching_step_accepts_one_step_either_way_and_only_after_the_last(clock: ManualClock) -> None:
    now = time_step(clock.now())
    for offset, accepted in ((-2, False), (-1, True), (0, True), (1, True), (2, False)):
        found = matching_step(SECRET, code_at(SECRET, now + offset), clock.now(), last_step=None)
        assert (found == now + offset) is accepted and (found is None) is not accepted
    assert matching_step(SECRET, code_at(SECRET, now), clock.now(), last_step=now) is None
    assert matching_step(SECRET, code_at(SECRET, now + 1), clock.now(), last_step=now) == now + 1
    spaced = code_at(SECRET, now)
    assert matching_step(SECRET, f"{spaced[:3]} {spaced[3:]}", clock.now(), last_step=None) == now
    for malformed in ("", "12345", "1234567", "abcdef", "\uff11\uff12\uff13\uff14\uff15\uff16"):
        assert matching_step(SECRET, malformed, clock.now(), last_step=None) is None


def test_codes_follow_rfc_6238() -> None:
    # RFC 6238 appendix B (SHA-1, the 20-byte ASCII secret "12345678901234567890"), last 6 digits.
    import base64

    secret = base64.b32encode(b"12345678901234567890").decode()
    assert code_at(secret, 59 // 30) == "287082"
    assert code_at(secret, 1111111109 // 30) == "081804"
    assert code_at(secret, 2000000000 // 30) == "279037"


def test_recovery_codes_are_random_and_their_hash_ignores_case_spaces_and_dashes() -> None:
    codes = new_recovery_codes()
    assert len(set(codes)) == 10
    code = codes[0]
    assert recovery_code_hash(code) == recovery_code_hash(code.upper().replace("-", " "))
    assert recovery_code_hash(code) != recovery_code_hash(codes[1])


def test_a_sealed_secret_opens_for_its_owner_under_a_listed_key_only() -> None:
    owner, other = uuid.uuid4(), uuid.uuid4()
    old = SecretBox({"k1": "first-secret-key"}, "k1")
    sealed = old.seal(SECRET, owner)
    assert SECRET not in sealed and sealed.startswith("v1:k1:")
    assert old.open(sealed, owner) == (SECRET, False)
    with pytest.raises(ValueError, match="does not open"):
        old.open(sealed, other)  # bound to its owner: not copied onto another account
    rotated = SecretBox({"k1": "first-secret-key", "k2": "second-secret-key"}, "k2")
    assert rotated.open(sealed, owner) == (SECRET, True)  # to be sealed again under k2
    with pytest.raises(ValueError, match="key 'k1', which is not configured"):
        SecretBox({"k2": "second-secret-key"}, "k2").open(sealed, owner)
    middle = len(sealed) - 10
    tampered = sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1 :]
    with pytest.raises(ValueError, match="does not open"):
        old.open(tampered, owner)


PRODUCTION = {"KETAFOLLOW_ENV": "production", "SECRET_KEY": "pK3v9QzL1xWc7RtB5nHy2MdJ8sFg4AeU", **PRODUCTION_MAIL}


@pytest.mark.parametrize(
    ("environ", "required"),
    [
        ({}, set()),
        (PRODUCTION, {Role.PROVIDER, Role.ADMIN}),
        ({**PRODUCTION, "MFA_REQUIRED_ROLES": "admin"}, {Role.ADMIN}),
        ({**PRODUCTION, "MFA_REQUIRED_ROLES": "none"}, set()),
        ({"MFA_REQUIRED_ROLES": " patient, PROVIDER ,ADMIN"}, {Role.PATIENT, Role.PROVIDER, Role.ADMIN}),
    ],
)
def test_mfa_required_roles_default_to_staff_in_production_only(environ: dict[str, str], required: set[Role]) -> None:
    assert Settings.from_env(environ, env_file=None).mfa_required_roles == required


def test_an_unknown_role_in_mfa_required_roles_refuses_to_start() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"MFA_REQUIRED_ROLES": "PROVIDER,NURSE"}, env_file=None)
    assert raised.value.problems == ["MFA_REQUIRED_ROLES: 'NURSE' is not a role (PATIENT, PROVIDER, ADMIN)"]
