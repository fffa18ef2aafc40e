"""Push notifications through the real APNs and FCM senders, against local fake services.

The fakes (tests/support/push_fakes.py) are the only stand-ins: the app, the database, the outbox, the
scheduler's jobs and the HTTP clients are the real ones, driven by the manual clock.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from strawberry import relay

from api.app import create_app, job_environment
from api.database import use_database
from api.settings import Settings
from jobs import surveys as survey_jobs
from jobs.environment import JobEnvironment
from models.identity.accounts import Patient, User
from models.kernel.clock import ManualClock
from models.messaging.messaging import MessageThread
from models.notifications import notifications
from models.notifications.devices import DeactivationReason, Device
from models.notifications.notifications import MESSAGES, Notification, NotificationStatus, OutgoingNotification
from models.notifications.push import PushSender
from models.notifications.push.payloads import apns_payload, fcm_message
from models.outcomes import opioids
from models.reports import side_effects
from models.surveys.survey_records import SurveyAssignment
from seeds.loader import INSTRUMENTS
from tests.conftest import Tokens, start_logins
from tests.support.clinical import complete, start
from tests.support.graphql import gql
from tests.support.push_fakes import FakeApns, FakeFcm, Scripted, unregistered_fcm

IOS_TOKEN = "c0ffee" * 10 + "abcd"
ANDROID_TOKEN = "dGVzdC1hbmRyb2lk:APA91b-phone_1"
REGISTER = """
mutation Register($input: RegisterDeviceInput!) {
  registerDevice(input: $input) { result { __typename ... on Device { id } ... on Error { message } } }
}
"""
SEND_MESSAGE = """
mutation Send($input: SendMessageInput!) { sendMessage(input: $input) { result { __typename } } }
"""
# A message full of health information: none of it may reach a push.
PRIVATE_MESSAGE = "My PHQ-9 score was 19 and I took oxycodone 10 mg after the ketamine; nausea since."


@dataclass
class Push:
    app: Starlette
    client: httpx.AsyncClient
    settings: Settings
    tokens: Tokens
    apns: FakeApns
    fcm: FakeFcm
    env: JobEnvironment


def push_settings(database_url: str, environment: dict[str, str]) -> Settings:
    base = {"KETAFOLLOW_ENV": "test", "DATABASE_URL": database_url, "RUN_SCHEDULER": "false"}
    return Settings.from_env({**base, **environment}, env_file=None)


@pytest.fixture
async def push(database_url: str, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Push]:
    apns, fcm = FakeApns(clock), FakeFcm(clock)
    async with apns.serving(), fcm.serving():
        settings = push_settings(database_url, {**apns.environment(tmp_path), **fcm.environment(tmp_path)})
        app = create_app(settings, clock=clock)
        async with app.router.lifespan_context(app):
            with use_database(app.state.database):
                users = {user.email: user.id for user in await User.all()}
                logins = await start_logins(users, clock.now())
            tokens = Tokens(settings, clock, users, {}, logins)
            env = job_environment(settings, clock)  # what the app's scheduler runs its jobs with
            assert isinstance(env.sender, PushSender)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Push(app, client, settings, tokens, apns, fcm, env)
            await env.sender.aclose()


async def register_phones(push: Push, email: str = "alex@demo.test") -> None:
    token = push.tokens.fresh(email)
    for platform, push_token in (("IOS", IOS_TOKEN), ("ANDROID", ANDROID_TOKEN)):
        body = await gql(
            push.client,
            REGISTER,
            {"input": {"platform": platform, "pushToken": push_token, "appVersion": "3.0.0", "locale": "en-US"}},
            token=token,
        )
        assert body["data"]["registerDevice"]["result"]["__typename"] == "Device", body


async def run_survey_jobs(push: Push) -> None:
    with use_database(push.app.state.database):
        await survey_jobs.expire_overdue_surveys(push.env)
        await survey_jobs.open_due_surveys(push.env)
        await survey_jobs.send_survey_reminders(push.env)
        await survey_jobs.deliver_notifications(push.env)


async def deliver(push: Push) -> int:
    with use_database(push.app.state.database):
        return await survey_jobs.deliver_notifications(push.env)


def health_words() -> list[str]:
    """What a push must never contain: instruments, drugs, symptoms, and this clinic's therapy."""
    words = ["ketamine", "score", "severity", "mg", "pain", "mood", "depress", "anxiety", "suicid", "dose"]
    for path in INSTRUMENTS.glob("*.json"):
        definition = json.loads(path.read_text())
        words += [definition["code"], definition["title"]]
    words += list(opioids.CATALOGUE)
    words += [entry.label for entry in side_effects.CATALOGUE.values()] + list(side_effects.CATALOGUE)
    return words


OPAQUE_LINK = re.compile(r"^(survey|thread)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$|^check-in$")
OPAQUE_KEYS = {"token", "link", "notificationId", "collapse_key", "tag"}


def _values(payload: Any, key: str = "") -> list[tuple[str, str]]:
    if isinstance(payload, dict):
        return [pair for name, value in payload.items() for pair in _values(value, name)]
    return [(key, str(payload))]


def assert_no_health_information(payload: dict[str, Any], patient: Patient, *, shown: str) -> None:
    """Nothing personal or clinical anywhere in the payload: every value is an opaque id or a
    fixed generic text without a single digit (no score, no dose, no count)."""
    assert shown in MESSAGES.values()
    personal = [patient.given_name, patient.family_name, patient.birth_date.isoformat(), patient.phone or "-"]
    forbidden = [*health_words(), *personal, PRIVATE_MESSAGE]
    for key, value in _values(payload):
        if key == "link":
            assert OPAQUE_LINK.match(value), f"link {value!r} is not opaque"
        if key in OPAQUE_KEYS:
            continue
        assert not any(character.isdigit() for character in value), f"{key}={value!r} in push {payload}"
        for word in forbidden:
            pattern = rf"(?<![a-z0-9]){re.escape(word.lower())}(?![a-z0-9])"
            assert not re.search(pattern, value.lower()), f"{word!r} in {key}={value!r} of push {payload}"


async def alex(push: Push) -> Patient:
    with use_database(push.app.state.database):
        return await Patient.get(user__email="alex@demo.test")


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_every_kind_of_push_carries_a_generic_text_and_an_opaque_link_only(kind: str) -> None:
    patient = Patient(given_name="Alex", family_name="Morgan", birth_date=date(1980, 5, 17), phone="+1 555 0100")
    links = {"SURVEY_AVAILABLE": "survey", "SURVEY_REMINDER": "survey", "NEW_MESSAGE": "thread"}
    link = f"{links[kind]}/{uuid.uuid4()}" if kind in links else "check-in"
    notification = OutgoingNotification(uuid.uuid4(), uuid.uuid4(), kind, MESSAGES[kind], link)
    ios = apns_payload(notification)
    android = fcm_message(ANDROID_TOKEN, notification)
    assert set(ios) == {"aps", "kind", "link", "notificationId"}
    assert set(android) == {"token", "notification", "data", "android"}
    assert ios["aps"]["alert"] == {"body": MESSAGES[kind]} == android["notification"]
    assert android["data"] == {"kind": kind, "link": link, "notificationId": str(notification.id)}
    assert_no_health_information(ios, patient, shown=ios["aps"]["alert"]["body"])
    assert_no_health_information(android, patient, shown=android["notification"]["body"])


async def test_a_survey_that_becomes_available_is_pushed_once_to_each_phone_with_no_health_information(
    push: Push, clock: ManualClock
) -> None:
    await register_phones(push)
    token = push.tokens.fresh("alex@demo.test")
    session = (await start(push.client, token, clock.now()))["result"]
    clock.advance(timedelta(hours=2, minutes=30))
    await complete(push.client, token, session["id"])
    clock.advance(timedelta(hours=1, minutes=59))
    await run_survey_jobs(push)
    assert (push.apns.received, push.fcm.received) == ([], [])
    clock.advance(timedelta(minutes=1))  # the post-session check opens (CLINICAL.md §6)
    await run_survey_jobs(push)
    await run_survey_jobs(push)  # nothing is sent twice
    [ios] = push.apns.received
    [android] = push.fcm.received
    with use_database(push.app.state.database):
        post = await SurveyAssignment.get(
            patient__user__email="alex@demo.test", instrument="POST-SESSION", available_at=clock.now()
        )
    assert (ios.device_token, ios.http_version) == (IOS_TOKEN, "2")
    assert ios.body["aps"]["alert"]["body"] == "A check-in is ready for you."
    assert ios.body["link"] == android.body["message"]["data"]["link"] == f"survey/{post.id}"
    assert android.body["message"]["token"] == ANDROID_TOKEN
    patient = await alex(push)
    assert_no_health_information(ios.body, patient, shown=ios.body["aps"]["alert"]["body"])
    assert_no_health_information(
        android.body["message"], patient, shown=android.body["message"]["notification"]["body"]
    )

    # Nobody answers: the reminder replaces the announcement on the phone (one collapse key).
    clock.advance(timedelta(hours=3))
    await run_survey_jobs(push)
    assert [r.body["aps"]["alert"]["body"] for r in push.apns.received] == [
        "A check-in is ready for you.",
        "Reminder: a check-in is waiting for you.",
    ]
    collapse_ids = {r.headers["apns-collapse-id"] for r in push.apns.received}
    android_keys = {r.body["message"]["android"]["collapse_key"] for r in push.fcm.received}
    android_tags = {r.body["message"]["android"]["notification"]["tag"] for r in push.fcm.received}
    assert len(push.fcm.received) == 2
    assert len(collapse_ids) == 1 and collapse_ids == android_keys == android_tags
    assert post.id.hex not in next(iter(collapse_ids))  # opaque
    for received in push.apns.received:
        assert_no_health_information(received.body, patient, shown=received.body["aps"]["alert"]["body"])


async def test_a_new_message_is_pushed_without_its_words(push: Push, clock: ManualClock) -> None:
    await register_phones(push)
    with use_database(push.app.state.database):
        thread = await MessageThread.get(patient__user__email="alex@demo.test")
    body = await gql(
        push.client,
        SEND_MESSAGE,
        {"input": {"threadId": str(relay.GlobalID("MessageThread", str(thread.id))), "body": PRIVATE_MESSAGE}},
        token=push.tokens.fresh("dr.rivera@demo.test"),
    )
    assert body["data"]["sendMessage"]["result"]["__typename"] == "Message"
    assert await deliver(push) >= 1
    to_alex = [r for r in push.apns.received if r.device_token == IOS_TOKEN]
    assert [r.body["aps"]["alert"]["body"] for r in to_alex] == ["You have a new message."]
    assert_no_health_information(to_alex[0].body, await alex(push), shown="You have a new message.")
    assert_no_health_information(
        push.fcm.received[0].body["message"], await alex(push), shown="You have a new message."
    )


async def queue_notification(push: Push, body: str = "see you Tuesday") -> uuid.UUID:
    """A new message for Alex through the API; returns the outbox row it queued."""
    with use_database(push.app.state.database):
        thread = await MessageThread.get(patient__user__email="alex@demo.test")
    await gql(
        push.client,
        SEND_MESSAGE,
        {"input": {"threadId": str(relay.GlobalID("MessageThread", str(thread.id))), "body": body}},
        token=push.tokens.fresh("dr.rivera@demo.test"),
    )
    with use_database(push.app.state.database):
        alex_user = await User.get(email="alex@demo.test")
        row = await Notification.get(recipient_id=alex_user.id, kind="NEW_MESSAGE", status=NotificationStatus.PENDING)
    return row.id


async def test_a_token_the_services_call_unregistered_deactivates_its_device(push: Push, clock: ManualClock) -> None:
    await register_phones(push)
    push.apns.script[IOS_TOKEN] = [Scripted(410, {"reason": "Unregistered", "timestamp": 1795600000000})]
    push.fcm.script[ANDROID_TOKEN] = [unregistered_fcm()]
    notification = await queue_notification(push)
    await deliver(push)
    with use_database(push.app.state.database):
        phones = await Device.filter(user__email="alex@demo.test").order_by("platform")
        row = await Notification.get(id=notification)
    assert [(d.platform.value, d.is_active, d.deactivation_reason) for d in phones] == [
        ("ANDROID", False, DeactivationReason.TOKEN_INVALID),
        ("IOS", False, DeactivationReason.TOKEN_INVALID),
    ]
    assert row.status is NotificationStatus.SENT  # nothing left to try
    clock.advance(timedelta(hours=1))
    await queue_notification(push, "one more thing")
    await deliver(push)
    assert (len(push.apns.received), len(push.fcm.received)) == (1, 1)  # no pushes to dead tokens


async def test_a_throttled_push_is_retried_once_after_retry_after_and_only_to_the_device_that_missed_it(
    push: Push, clock: ManualClock
) -> None:
    await register_phones(push)
    push.fcm.script[ANDROID_TOKEN] = [
        Scripted(429, {"error": {"status": "RESOURCE_EXHAUSTED"}}, {"Retry-After": "120"})
    ]
    notification = await queue_notification(push)
    assert await deliver(push) == 0
    with use_database(push.app.state.database):
        row = await Notification.get(id=notification)
    assert row.status is NotificationStatus.PENDING
    assert row.not_before == clock.now() + timedelta(seconds=120)
    assert (len(push.apns.received), len(push.fcm.received)) == (1, 1)
    clock.advance(timedelta(seconds=119))
    assert await deliver(push) == 0
    assert len(push.fcm.received) == 1
    clock.advance(timedelta(seconds=1))
    assert await deliver(push) == 1
    assert await deliver(push) == 0
    # The iPhone had it already: the retry went to the Android phone alone, once.
    assert (len(push.apns.received), len(push.fcm.received)) == (1, 2)
    with use_database(push.app.state.database):
        assert (await Notification.get(id=notification)).status is NotificationStatus.SENT


async def test_credentials_are_signed_cached_and_renewed_before_they_expire(push: Push, clock: ManualClock) -> None:
    await register_phones(push)
    for _ in range(2):
        await queue_notification(push, "one more thing")
        await deliver(push)
        clock.advance(timedelta(minutes=20))
    assert len(set(push.apns.provider_tokens)) == 1  # one provider token for 20 minutes of pushes
    assert push.fcm.token_requests == 1
    clock.advance(timedelta(minutes=11))  # 51 minutes after signing: a new provider token
    await queue_notification(push, "one more thing")
    await deliver(push)
    assert len(set(push.apns.provider_tokens)) == 2
    assert push.fcm.token_requests == 1  # the access token lives an hour, renewed 5 minutes early
    clock.advance(timedelta(minutes=4))
    await queue_notification(push, "one more thing")
    await deliver(push)
    assert push.fcm.token_requests == 2
    assert len(push.apns.received) == len(push.fcm.received) == 4


async def test_a_push_signed_with_another_key_is_refused_and_kept_for_a_retry(
    database_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    apns = FakeApns(clock)
    async with apns.serving():
        settings = push_settings(database_url, apns.environment(tmp_path, key=ec.generate_private_key(ec.SECP256R1())))
        app = create_app(settings, clock=clock)
        async with app.router.lifespan_context(app):
            env = job_environment(settings, clock)
            with use_database(app.state.database):
                alex_user = await User.get(email="alex@demo.test")
                await Device.create(
                    user=alex_user, platform="IOS", push_token=IOS_TOKEN, app_version="3", locale="en",
                    last_seen_at=clock.now(),
                )  # fmt: skip
                await notifications.enqueue(
                    alex_user.id, "NEW_MESSAGE", f"thread/{uuid.uuid4()}", dedup_key="k", now=clock.now(),
                    not_before=clock.now(),
                )  # fmt: skip
                assert await survey_jobs.deliver_notifications(env) == 0
                row = await Notification.get(dedup_key="k")
                device = await Device.get(push_token=IOS_TOKEN)
            assert isinstance(env.sender, PushSender)
            await env.sender.aclose()
    assert apns.received == []  # the fake refused the forged provider token
    assert (row.status, row.last_error) == (
        NotificationStatus.PENDING,
        "1 device(s) to retry: APNs 403 InvalidProviderToken",
    )
    assert device.is_active  # our credentials are wrong, not the phone's token
