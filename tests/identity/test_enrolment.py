"""Enrolment without a shell, end to end over HTTP with a real SMTP server in process: invitations,
activation, password reset and change (PRODUCT.md capability 11, "Exact shapes for enrolment")."""

from __future__ import annotations

import email
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from starlette.applications import Starlette
from strawberry import relay

from api.app import job_environment
from api.database import use_database
from api.settings import Settings, SettingsError
from jobs.environment import JobEnvironment
from jobs.mail import MailSettings, SmtpServer, deliver_mail, mail_transport, send_password_resets
from models.identity.accounts import CareTeam, User
from models.identity.enrolment import Invitation
from models.kernel.audit import AuditEvent
from models.kernel.clock import ManualClock
from models.notifications.mail import MailMessage
from models.notifications.notifications import NotificationStatus
from tests.conftest import Tokens, client_of, running_app, signed_in_tokens
from tests.support.panel_data import counting_statements
from tests.support.tls import LOOPBACK, PrivateCa, private_ca

APP_URL = "https://app.clinic.test"
SMTP_USER, SMTP_PASSWORD = "ketafollow", "smtp-s3cret"
NEW_PASSWORD = "lantern harbour quiet"
DEMO_PASSWORD = "ketafollow-demo"


@dataclass
class Inbox:
    """What the in-process SMTP server received, and with which login."""

    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    encrypted: list[bool] = field(default_factory=list)  # per message: did it arrive over TLS?

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=default_policy))  # type: ignore[arg-type]
        self.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        ):
            self.logins.append(data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_server(handler: Inbox, **options: Any) -> Iterator[int]:
    """An SMTP server on 127.0.0.1 delivering to `handler`; its port."""
    port = free_port()
    controller = Controller(handler, hostname=LOOPBACK, port=port, authenticator=handler.authenticate, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    with smtp_server(handler, auth_require_tls=False) as port:
        yield handler, port


@dataclass
class Clinic:
    """The app with e-mail going to the in-process SMTP server, and its jobs to run by hand."""

    app: Starlette
    http: httpx.AsyncClient
    inbox: Inbox
    env: JobEnvironment
    tokens: Tokens

    async def run_mail_jobs(self) -> int:
        with use_database(self.app.state.database):
            await send_password_resets(self.env)
            return await deliver_mail(self.env)

    async def graphql(self, query: str, token: str, **variables: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers={"Authorization": f"Bearer {token}"}
        )
        body: dict[str, Any] = response.json()
        return body

    async def form(self, path: str, **fields: str) -> httpx.Response:
        return await self.http.post(path, data=fields)

    async def sign_in(self, username: str, password: str) -> httpx.Response:
        return await self.form("/auth/token", grant_type="password", username=username, password=password)


def mail_settings(port: int) -> MailSettings:
    server = SmtpServer("127.0.0.1", port, implicit_tls=False, username=SMTP_USER, password=SMTP_PASSWORD)
    return MailSettings(smtp=server, mail_from="no-reply@clinic.test", public_app_url=APP_URL)


@pytest.fixture
async def clinic(settings: Settings, clock: ManualClock, inbox: tuple[Inbox, int]) -> AsyncIterator[Clinic]:
    handler, port = inbox
    configured = replace(settings, mail=mail_settings(port), run_scheduler=False)
    async with running_app(configured, clock) as app, client_of(app) as http:
        with use_database(app.state.database):
            # Blair signs in through /auth/token in the tests of one's own logins: no test login of hers.
            tokens = await signed_in_tokens(configured, clock, except_for=("blair@demo.test",))
        clinic = Clinic(app, http, handler, job_environment(configured, clock), tokens)
        assert await clinic.run_mail_jobs() == 1  # the demo's open invitation (seeds.demo)
        handler.messages.clear()
        handler.logins.clear()
        yield clinic


INVITE_PATIENT = """
mutation($team: ID!, $email: String!) {
  invitePatient(input: { email: $email, givenName: "Robin", familyName: "Quill", birthDate: "1984-03-09",
                         timeZone: "America/New_York", careTeamId: $team }) {
    result { __typename ... on Invitation { id email role expiresAt } ... on Error { message }
             ... on ValidationError { field } }
  }
}
"""
INVITE_PROVIDER = """
mutation($team: ID!) {
  inviteProvider(input: { email: "dr.new@clinic.test", givenName: "Noor", familyName: "Haddad",
                          npi: "1234567802", credentials: "MD", careTeamIds: [$team] }) {
    result { __typename ... on Invitation { id role } ... on Error { message } }
  }
}
"""
RESEND = "mutation($id: ID!) { resendInvitation(input: { invitationId: $id }) { result { __typename } } }"
REVOKE = "mutation($id: ID!) { revokeInvitation(input: { invitationId: $id }) { result { __typename } } }"
ME = "{ me { name role } }"


async def team_id(clinic: Clinic, name: str) -> str:
    with use_database(clinic.app.state.database):
        team = await CareTeam.get(name=name)
    return str(relay.GlobalID("CareTeam", str(team.id)))


def link_in(message: EmailMessage, path: str) -> str:
    body = message.get_content()
    links = re.findall(r"https?://\S+", body)
    assert len(links) == 1, body
    assert links[0].startswith(f"{APP_URL}/{path}?token="), links[0]
    return links[0].partition("?token=")[2]


async def invite_robin(clinic: Clinic, email_address: str = "robin@example.test") -> dict[str, Any]:
    body = await clinic.graphql(
        INVITE_PATIENT, clinic.tokens.user("dr.rivera@demo.test"), team=await team_id(clinic, "North"),
        email=email_address,
    )  # fmt: skip
    result: dict[str, Any] = body["data"]["invitePatient"]["result"]
    return result


async def test_an_invited_patient_chooses_a_password_from_the_emailed_link_and_signs_in(clinic: Clinic) -> None:
    invitation = await invite_robin(clinic)
    assert invitation["__typename"] == "Invitation"
    assert invitation["email"] == "robin@example.test"
    assert invitation["role"] == "PATIENT"
    assert invitation["expiresAt"].startswith("2026-12-02T15:00:00")  # 7 days
    assert await clinic.run_mail_jobs() == 1
    [message] = clinic.inbox.to("robin@example.test")
    assert message["From"] == "no-reply@clinic.test"
    assert clinic.inbox.logins == [SMTP_USER]
    for personal in ("Robin", "Quill", "1984", "North", "ketamine"):
        assert personal not in message.get_content()  # nothing but the link
    token = link_in(message, "activate")

    activated = await clinic.form("/auth/activate", token=token, password=NEW_PASSWORD)
    assert activated.status_code == 200, activated.text
    assert set(activated.json()) == {"access_token", "token_type", "expires_in", "refresh_token"}
    me = await clinic.graphql(ME, activated.json()["access_token"])
    assert me["data"]["me"] == {"name": "robin@example.test", "role": "PATIENT"}
    signed_in = await clinic.sign_in("robin@example.test", NEW_PASSWORD)
    assert signed_in.status_code == 200

    again = await clinic.form("/auth/activate", token=token, password="another fine passphrase")
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


async def test_nobody_signs_in_to_an_invited_account_before_it_is_activated(clinic: Clinic) -> None:
    await invite_robin(clinic)
    for password in ("!invited", NEW_PASSWORD):
        refused = await clinic.sign_in("robin@example.test", password)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")


async def test_a_weak_password_is_refused_with_the_reason_and_the_link_still_works(clinic: Clinic) -> None:
    await invite_robin(clinic)
    await clinic.run_mail_jobs()
    token = link_in(clinic.inbox.to("robin@example.test")[0], "activate")
    for weak, reason in [
        ("short", "at least 12 characters"),
        ("password1234", "too common"),
        ("robin likes the sea", "must not contain your e-mail address"),
        ("quill and parchment", "must not contain your name"),
    ]:
        refused = await clinic.form("/auth/activate", token=token, password=weak)
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_request"
        assert reason in refused.json()["error_description"]
    assert (await clinic.form("/auth/activate", token=token, password=NEW_PASSWORD)).status_code == 200


async def test_a_resent_invitation_voids_the_old_link_and_a_revoked_one_voids_every_link(clinic: Clinic) -> None:
    invitation = await invite_robin(clinic)
    rivera = clinic.tokens.user("dr.rivera@demo.test")
    resent = await clinic.graphql(RESEND, rivera, id=invitation["id"])
    assert resent["data"]["resendInvitation"]["result"]["__typename"] == "Invitation"
    assert await clinic.run_mail_jobs() == 2
    old, new = (link_in(message, "activate") for message in clinic.inbox.to("robin@example.test"))
    refused = await clinic.form("/auth/activate", token=old, password=NEW_PASSWORD)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")

    await clinic.graphql(REVOKE, rivera, id=invitation["id"])
    refused = await clinic.form("/auth/activate", token=new, password=NEW_PASSWORD)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")


async def test_an_invitation_link_expires_after_seven_days(clinic: Clinic, clock: ManualClock) -> None:
    await invite_robin(clinic)
    await clinic.run_mail_jobs()
    token = link_in(clinic.inbox.to("robin@example.test")[0], "activate")
    clock.advance(timedelta(days=7))
    refused = await clinic.form("/auth/activate", token=token, password=NEW_PASSWORD)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize(
    ("inviter", "team", "answer"),
    [
        ("admin@demo.test", "South", "Invitation"),
        ("dr.rivera@demo.test", "North", "Invitation"),
        ("dr.rivera@demo.test", "South", "NotFound"),  # not her team: as if it did not exist
        ("alex@demo.test", "North", "FORBIDDEN"),
    ],
)
async def test_who_may_invite_a_patient_into_which_team(clinic: Clinic, inviter: str, team: str, answer: str) -> None:
    body = await clinic.graphql(
        INVITE_PATIENT, clinic.tokens.user(inviter), team=await team_id(clinic, team), email="robin@example.test"
    )
    if answer == "FORBIDDEN":
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    else:
        assert body["data"]["invitePatient"]["result"]["__typename"] == answer


@pytest.mark.parametrize(("inviter", "allowed"), [("admin@demo.test", True), ("dr.rivera@demo.test", False)])
async def test_only_admins_invite_providers(clinic: Clinic, inviter: str, allowed: bool) -> None:
    body = await clinic.graphql(INVITE_PROVIDER, clinic.tokens.user(inviter), team=await team_id(clinic, "North"))
    if allowed:
        assert body["data"]["inviteProvider"]["result"] == {
            "__typename": "Invitation",
            "id": ANY_ID,
            "role": "PROVIDER",
        }
    else:
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_provider_invited_with_a_registered_npi_is_refused_naming_the_field(clinic: Clinic) -> None:
    query = INVITE_PROVIDER.replace('npi: "1234567802"', 'npi: "1234567893"')  # Dr Rivera's
    body = await clinic.graphql(query, clinic.tokens.user("admin@demo.test"), team=await team_id(clinic, "North"))
    result = body["data"]["inviteProvider"]["result"]
    assert (result["__typename"], result["message"]) == (
        "ValidationError", "a provider with this NPI is already registered",
    )  # fmt: skip


class _AnyId:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and relay.GlobalID.from_id(other).type_name == "Invitation"


ANY_ID = _AnyId()


async def test_a_provider_cannot_resend_an_invitation_of_another_team(clinic: Clinic) -> None:
    body = await clinic.graphql(
        INVITE_PATIENT, clinic.tokens.user("dr.okafor@demo.test"), team=await team_id(clinic, "South"),
        email="sam@example.test",
    )  # fmt: skip
    invitation_id = body["data"]["invitePatient"]["result"]["id"]
    resent = await clinic.graphql(RESEND, clinic.tokens.user("dr.rivera@demo.test"), id=invitation_id)
    assert resent["data"]["resendInvitation"]["result"]["__typename"] == "NotFound"


async def test_inviting_an_address_that_has_an_account_looks_the_same_and_mails_a_notice(clinic: Clinic) -> None:
    answers, work = [], []
    for address in ("new.person@example.test", "alex@demo.test"):
        with use_database(clinic.app.state.database):
            before = (await Invitation.all().count(), await MailMessage.all().count())
        answer = await invite_robin(clinic, address)
        with use_database(clinic.app.state.database):
            after = (await Invitation.all().count(), await MailMessage.all().count())
        answers.append({key: value for key, value in answer.items() if key not in {"id", "email"}})
        work.append((after[0] - before[0], after[1] - before[1]))
    assert answers[0] == answers[1]
    assert work == [(1, 1), (1, 1)]  # one invitation, one e-mail each
    await clinic.run_mail_jobs()
    [notice] = clinic.inbox.to("alex@demo.test")
    assert "already has an account" in notice.get_content()
    assert "token=" not in notice.get_content()
    signed_in = await clinic.sign_in("alex@demo.test", DEMO_PASSWORD)
    assert signed_in.status_code == 200  # the existing account is untouched


async def test_every_invitation_is_in_the_audit_log_with_who_invited_whom(clinic: Clinic) -> None:
    invitation = await invite_robin(clinic)
    with use_database(clinic.app.state.database):
        events = await AuditEvent.filter(
            resource_type="Invitation", resource_id=relay.GlobalID.from_id(invitation["id"]).node_id
        ).values("actor_label", "action", "detail")
    assert events == [
        {"actor_label": "dr.rivera@demo.test", "action": "C", "detail": "invited robin@example.test as PATIENT"}
    ]


# Password reset


async def request_reset(clinic: Clinic, address: str) -> httpx.Response:
    return await clinic.form("/auth/password-reset", email=address)


async def test_a_forgotten_password_is_reset_by_email_and_every_old_login_ends(clinic: Clinic) -> None:
    first = (await clinic.sign_in("blair@demo.test", DEMO_PASSWORD)).json()
    second = (await clinic.sign_in("blair@demo.test", DEMO_PASSWORD)).json()
    accepted = await request_reset(clinic, "Blair@demo.test ")
    assert accepted.status_code == 202
    assert await clinic.run_mail_jobs() == 1
    token = link_in(clinic.inbox.to("blair@demo.test")[0], "reset")

    confirmed = await clinic.form("/auth/password-reset/confirm", token=token, password=NEW_PASSWORD)
    assert confirmed.status_code == 204, confirmed.text
    assert (await clinic.sign_in("blair@demo.test", DEMO_PASSWORD)).json()["error"] == "invalid_grant"
    assert (await clinic.sign_in("blair@demo.test", NEW_PASSWORD)).status_code == 200
    for login in (first, second):
        refreshed = await clinic.form("/auth/token", grant_type="refresh_token", refresh_token=login["refresh_token"])
        assert (refreshed.status_code, refreshed.json()["error"]) == (400, "invalid_grant")
    reused = await clinic.form("/auth/password-reset/confirm", token=token, password="yet another passphrase")
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")


async def test_a_reset_link_lasts_thirty_minutes(clinic: Clinic, clock: ManualClock) -> None:
    await request_reset(clinic, "blair@demo.test")
    await clinic.run_mail_jobs()
    token = link_in(clinic.inbox.to("blair@demo.test")[0], "reset")
    clock.advance(timedelta(minutes=30))
    refused = await clinic.form("/auth/password-reset/confirm", token=token, password=NEW_PASSWORD)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")


async def test_a_weak_new_password_is_refused_with_the_reason(clinic: Clinic) -> None:
    await request_reset(clinic, "blair@demo.test")
    await clinic.run_mail_jobs()
    token = link_in(clinic.inbox.to("blair@demo.test")[0], "reset")
    refused = await clinic.form("/auth/password-reset/confirm", token=token, password="blair blair blair")
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_request",
        "error_description": "the password must not contain your e-mail address",
    }


async def test_a_reset_answers_and_works_the_same_whether_or_not_the_account_exists(clinic: Clinic) -> None:
    """Known, unknown, deactivated and not yet activated addresses: one answer, the same statements."""
    await invite_robin(clinic)
    with use_database(clinic.app.state.database):
        await User.filter(email="devon@demo.test").update(is_active=False)
    await clinic.run_mail_jobs()
    clinic.inbox.messages.clear()
    answers, statements = [], []
    for address in ("blair@demo.test", "nobody@demo.test", "devon@demo.test", "robin@example.test"):
        with counting_statements() as counter:
            response = await request_reset(clinic, address)
        answers.append((response.status_code, response.json()))
        statements.append(counter.count)
    assert len(set(map(str, answers))) == 1
    assert answers[0][0] == 202
    assert len(set(statements)) == 1, statements
    assert await clinic.run_mail_jobs() == 1
    assert [message["To"] for message in clinic.inbox.messages] == ["blair@demo.test"]


async def test_an_account_gets_at_most_three_reset_links_an_hour(clinic: Clinic, clock: ManualClock) -> None:
    for _ in range(5):
        assert (await request_reset(clinic, "blair@demo.test")).status_code == 202
    await clinic.run_mail_jobs()
    assert len(clinic.inbox.to("blair@demo.test")) == 3
    clock.advance(timedelta(hours=1, seconds=1))
    await request_reset(clinic, "blair@demo.test")
    await clinic.run_mail_jobs()
    assert len(clinic.inbox.to("blair@demo.test")) == 4


async def test_a_newer_reset_link_voids_the_older_one(clinic: Clinic) -> None:
    await request_reset(clinic, "blair@demo.test")
    await clinic.run_mail_jobs()
    await request_reset(clinic, "blair@demo.test")
    await clinic.run_mail_jobs()
    older, newer = (link_in(message, "reset") for message in clinic.inbox.to("blair@demo.test"))
    refused = await clinic.form("/auth/password-reset/confirm", token=older, password=NEW_PASSWORD)
    assert refused.json()["error"] == "invalid_grant"
    accepted = await clinic.form("/auth/password-reset/confirm", token=newer, password=NEW_PASSWORD)
    assert accepted.status_code == 204


# Password change

CHANGE = """
mutation($current: String!, $new: String!) {
  changePassword(input: { currentPassword: $current, newPassword: $new }) {
    result { __typename ... on Viewer { name } ... on ValidationError { field message } }
  }
}
"""


async def test_changing_ones_password_keeps_this_login_and_ends_the_others(clinic: Clinic) -> None:
    this = (await clinic.sign_in("blair@demo.test", DEMO_PASSWORD)).json()
    other = (await clinic.sign_in("blair@demo.test", DEMO_PASSWORD)).json()
    body = await clinic.graphql(CHANGE, this["access_token"], current=DEMO_PASSWORD, new=NEW_PASSWORD)
    assert body["data"]["changePassword"]["result"] == {"__typename": "Viewer", "name": "blair@demo.test"}
    kept = await clinic.form("/auth/token", grant_type="refresh_token", refresh_token=this["refresh_token"])
    assert kept.status_code == 200
    ended = await clinic.form("/auth/token", grant_type="refresh_token", refresh_token=other["refresh_token"])
    assert ended.json()["error"] == "invalid_grant"
    assert (await clinic.sign_in("blair@demo.test", NEW_PASSWORD)).status_code == 200


@pytest.mark.parametrize(
    ("current", "new", "field", "message"),
    [
        ("not my password", NEW_PASSWORD, "currentPassword", "the current password is wrong"),
        (DEMO_PASSWORD, "qwerty123456", "newPassword", "the password is too common"),
        (DEMO_PASSWORD, "tiny", "newPassword", "at least 12 characters"),
    ],
)
async def test_a_password_change_is_refused_naming_the_field(
    clinic: Clinic, current: str, new: str, field: str, message: str
) -> None:
    token = (await clinic.sign_in("blair@demo.test", DEMO_PASSWORD)).json()["access_token"]
    body = await clinic.graphql(CHANGE, token, current=current, new=new)
    result = body["data"]["changePassword"]["result"]
    assert result["__typename"] == "ValidationError"
    assert result["field"] == field
    assert message in result["message"]
    assert (await clinic.sign_in("blair@demo.test", DEMO_PASSWORD)).status_code == 200


async def test_wrong_current_passwords_are_throttled_like_sign_ins_and_each_refusal_is_audited(
    clinic: Clinic, clock: ManualClock
) -> None:
    token = (await clinic.sign_in("blair@demo.test", DEMO_PASSWORD)).json()["access_token"]
    for _ in range(5):
        wrong = await clinic.graphql(CHANGE, token, current="not my password", new=NEW_PASSWORD)
        assert wrong["data"]["changePassword"]["result"]["message"] == "the current password is wrong"
    throttled = await clinic.graphql(CHANGE, token, current=DEMO_PASSWORD, new=NEW_PASSWORD)
    assert throttled["data"]["changePassword"]["result"] == {
        "__typename": "ValidationError",
        "field": "currentPassword",
        "message": "too many wrong passwords: wait a few minutes and try again",
    }
    with use_database(clinic.app.state.database):
        blair = await User.get(email="blair@demo.test")
        refusals = await AuditEvent.filter(
            resource_type="User", resource_id=str(blair.id), detail__startswith="password change"
        ).values_list("outcome", "detail")
    assert sorted(refusals) == sorted(
        [("DENIED", "password change refused: wrong current password")] * 5
        + [("DENIED", "password change refused: too many wrong passwords")]
    )
    clock.advance(timedelta(minutes=1, seconds=1))
    changed = await clinic.graphql(CHANGE, token, current=DEMO_PASSWORD, new=NEW_PASSWORD)
    assert changed["data"]["changePassword"]["result"]["__typename"] == "Viewer"
    assert (await clinic.sign_in("blair@demo.test", NEW_PASSWORD)).status_code == 200


# The outbox


async def test_an_email_is_retried_when_the_server_is_down_and_sent_once(
    clinic: Clinic, inbox: tuple[Inbox, int], clock: ManualClock
) -> None:
    await invite_robin(clinic)
    down = replace(clinic.env, mailer=mail_transport(mail_settings(free_port())))
    with use_database(clinic.app.state.database):
        assert await deliver_mail(down) == 0
        [row] = await MailMessage.filter(recipient="robin@example.test")
        assert (row.status, row.attempts, row.not_before) == (
            NotificationStatus.PENDING,
            1,
            clock.now() + timedelta(seconds=30),
        )
        assert await deliver_mail(clinic.env) == 0  # not due yet
        clock.advance(timedelta(seconds=30))
        assert await deliver_mail(clinic.env) == 1
        assert await deliver_mail(clinic.env) == 0
        await row.refresh_from_db()
        assert (row.status, row.body) == (NotificationStatus.SENT, "")  # the link is not kept
    assert len(clinic.inbox.to("robin@example.test")) == 1


# Encryption on the way to the SMTP server: a server whose certificate a private CA signed.


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCa:
    return private_ca(tmp_path)


def smtp_settings(url: str, ca: PrivateCa | None) -> MailSettings:
    environ = {"SMTP_URL": url, "MAIL_FROM": "no-reply@clinic.test", "PUBLIC_APP_URL": APP_URL}
    if ca is not None:
        environ["SMTP_CA_FILE"] = str(ca.ca_file)
    return Settings.from_env(environ, env_file=None).mail


async def deliver_with(clinic: Clinic, mail: MailSettings) -> tuple[int, MailMessage]:
    """Run the mail job once through `mail`: how many were sent, and Robin's invitation's row."""
    with use_database(clinic.app.state.database):
        sent = await deliver_mail(replace(clinic.env, mailer=mail_transport(mail)))
        return sent, await MailMessage.get(recipient="robin@example.test")


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
async def test_the_invitation_reaches_the_server_encrypted_with_starttls_or_implicit_tls(
    clinic: Clinic, ca: PrivateCa, scheme: str
) -> None:
    """smtp:// to a server that requires STARTTLS (no login, no message before it); smtps://
    speaking TLS from the first byte. The client trusts the server's CA through SMTP_CA_FILE."""
    await invite_robin(clinic)
    secure = Inbox()
    if scheme == "smtp":
        tls: dict[str, Any] = {"tls_context": ca.server_context(), "require_starttls": True}
    else:
        # aiosmtpd offers AUTH only after STARTTLS unless told: this connection is TLS from the start.
        tls = {"ssl_context": ca.server_context(), "auth_require_tls": False}
    with smtp_server(secure, **tls) as port:
        url = f"{scheme}://{SMTP_USER}:{SMTP_PASSWORD}@{LOOPBACK}:{port}"
        sent, row = await deliver_with(clinic, smtp_settings(url, ca))
    assert (sent, row.status, row.last_error) == (1, NotificationStatus.SENT, None)
    [message] = secure.to("robin@example.test")
    assert secure.encrypted == [True]
    assert secure.logins == [SMTP_USER]
    token = link_in(message, "activate")
    assert (await clinic.form("/auth/activate", token=token, password=NEW_PASSWORD)).status_code == 200
    assert clinic.inbox.messages == []  # nothing went to the plain server


async def test_a_server_certificate_the_client_does_not_trust_gets_nothing(clinic: Clinic, ca: PrivateCa) -> None:
    await invite_robin(clinic)
    secure = Inbox()
    with smtp_server(secure, tls_context=ca.server_context(), require_starttls=True) as port:
        sent, row = await deliver_with(clinic, smtp_settings(f"smtp://{LOOPBACK}:{port}", None))
    assert (sent, row.status, row.attempts) == (0, NotificationStatus.PENDING, 1)
    assert row.last_error is not None and row.last_error.startswith("SSLCertVerificationError: ")
    assert secure.messages == []


async def test_a_server_without_starttls_gets_nothing_in_the_clear_and_the_mail_waits(
    clinic: Clinic, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """In production (and to any server not on this machine) STARTTLS is required: a server that
    does not offer it gets neither the login nor the message; the message is retried later."""
    await invite_robin(clinic)
    plain = Inbox()
    with smtp_server(plain, auth_require_tls=False) as port:
        url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@{LOOPBACK}:{port}"
        as_in_production = replace(smtp_settings(url, None), allow_plain_loopback=False)
        with caplog.at_level("WARNING", logger="ketafollow.mail"):
            sent, row = await deliver_with(clinic, as_in_production)
    assert (plain.messages, plain.logins) == ([], [])
    assert (sent, row.status, row.attempts, row.not_before) == (
        0, NotificationStatus.PENDING, 1, clock.now() + timedelta(seconds=30),
    )  # fmt: skip
    assert row.last_error == f"StartTlsUnavailable: {LOOPBACK} does not offer STARTTLS"
    assert row.body  # kept for the retry
    [logged] = [record for record in caplog.records if record.name == "ketafollow.mail"]
    assert logged.getMessage() == f"mail {row.id} not sent (attempt 1, retried later): StartTlsUnavailable"


async def test_without_smtp_in_development_each_email_is_a_file(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    mail = MailSettings(directory=tmp_path / "mail", public_app_url=APP_URL)
    configured = replace(settings, mail=mail, run_scheduler=False)
    async with running_app(configured, clock) as app, client_of(app) as http:
        with use_database(app.state.database):
            admin = await User.get(email="admin@demo.test")
            north = await CareTeam.get(name="North")
            tokens = await signed_in_tokens(configured, clock)
        token = tokens.user(admin.email)
        variables = {"team": str(relay.GlobalID("CareTeam", str(north.id))), "email": "robin@example.test"}
        await http.post("/graphql", json={"query": INVITE_PATIENT, "variables": variables},
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        with use_database(app.state.database):
            assert await deliver_mail(job_environment(configured, clock)) == 2  # with the demo's invitation
    [written] = (tmp_path / "mail").glob("*-robin@example.test.eml")
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-robin@example\.test\.eml", written.name)
    message = email.message_from_bytes(written.read_bytes(), policy=default_policy)
    assert message["To"] == "robin@example.test"
    token = link_in(message, "activate")
    assert len(token) >= 43  # 256 random bits
    assert f"\n{APP_URL}/activate?token={token}\n" in written.read_text()  # whole, as written


# Settings


def test_smtp_url_names_the_server_its_tls_and_its_login() -> None:
    settings = Settings.from_env({"SMTP_URL": "smtp://mailer%40clinic:p%3Ass@smtp.clinic.example"}, env_file=None)
    assert settings.mail.smtp == SmtpServer("smtp.clinic.example", 587, False, "mailer@clinic", "p:ss")
    implicit = Settings.from_env({"SMTP_URL": "smtps://smtp.clinic.example:2465"}, env_file=None).mail.smtp
    assert implicit == SmtpServer("smtp.clinic.example", 2465, True)


def test_in_development_email_goes_to_files_and_links_to_this_machine() -> None:
    mail = Settings.from_env({}, env_file=None).mail
    assert (mail.smtp, mail.public_app_url, str(mail.directory)) == (None, "http://127.0.0.1:8000", "var/mail")


def test_smtp_ca_file_names_the_cas_the_client_trusts(ca: PrivateCa) -> None:
    environ = {"SMTP_URL": "smtp://smtp.clinic.example", "SMTP_CA_FILE": str(ca.ca_file)}
    smtp = Settings.from_env(environ, env_file=None).mail.smtp
    assert smtp is not None and smtp.ca_file == ca.ca_file
    assert len(smtp.tls_context().get_ca_certs()) == 1  # that CA only, not the system's


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"SMTP_URL": "http://smtp.clinic.example"}, "SMTP_URL must be smtp://host[:port] (STARTTLS)"),
        (
            {"SMTP_URL": "smtp://smtp.clinic.example", "SMTP_CA_FILE": "/nonexistent/ca.pem"},
            "SMTP_CA_FILE must be a readable file of PEM certificates, got '/nonexistent/ca.pem'",
        ),
        ({"SMTP_CA_FILE": "/nonexistent/ca.pem"}, "SMTP_CA_FILE is set without SMTP_URL"),
        ({"MAIL_FROM": "not an address"}, "MAIL_FROM must be an e-mail address"),
        ({"PUBLIC_APP_URL": "ftp://app.clinic.example"}, "PUBLIC_APP_URL must be an http(s) URL"),
    ],
)
def test_a_bad_mail_setting_is_refused_naming_it(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    assert any(line.startswith(problem) for line in raised.value.problems), raised.value.problems


def test_production_requires_smtp_a_sender_and_an_https_app_url() -> None:
    environ = {"KETAFOLLOW_ENV": "production", "SECRET_KEY": "pK3v9QzL1xWc7RtB5nHy2MdJ8sFg4AeU"}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    assert raised.value.problems == [
        "SMTP_URL must be set in production (invitations and password resets are e-mailed)",
        "MAIL_FROM must be set in production",
        "PUBLIC_APP_URL must be set in production (the links in e-mails start with it)",
    ]
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**environ, "SMTP_URL": "smtps://smtp.clinic.example", "MAIL_FROM": "no-reply@clinic.example",
                           "PUBLIC_APP_URL": "http://app.clinic.example"}, env_file=None)  # fmt: skip
    assert raised.value.problems == ["PUBLIC_APP_URL must use https in production"]


async def test_the_demo_clinic_has_one_open_invitation_and_its_logins_unchanged(clinic: Clinic) -> None:
    with use_database(clinic.app.state.database):
        invitations = await Invitation.all().values("email", "role", "accepted_at", "revoked_at")
        invited = await User.get(email="np.patel@demo.test")
    assert invitations == [{"email": "np.patel@demo.test", "role": "PROVIDER", "accepted_at": None, "revoked_at": None}]
    assert not invited.is_active
    for login in ("admin@demo.test", "dr.rivera@demo.test", "alex@demo.test"):
        assert (await clinic.sign_in(login, DEMO_PASSWORD)).status_code == 200


# One's own logins

MY_LOGINS = "{ myLogins { id userAgent current createdAt lastUsedAt } }"
END_LOGIN = (
    "mutation($id: ID!) { endLogin(input: { loginId: $id }) { result { __typename ... on EndedLogins { count } } } }"
)
END_OTHERS = "mutation { endOtherLogins { result { __typename ... on EndedLogins { count } } } }"


async def sign_in_with(clinic: Clinic, user_agent: str) -> dict[str, Any]:
    response = await clinic.http.post(
        "/auth/token",
        data={"grant_type": "password", "username": "blair@demo.test", "password": DEMO_PASSWORD},
        headers={"User-Agent": user_agent},
    )
    tokens: dict[str, Any] = response.json()
    return tokens


async def test_a_user_sees_their_logins_with_the_device_that_signed_in(clinic: Clinic, clock: ManualClock) -> None:
    phone = await sign_in_with(clinic, "ketafollow-ios/2.4.1")
    clock.advance(timedelta(minutes=5))
    laptop = await sign_in_with(clinic, "Mozilla/5.0 (Macintosh)")
    body = await clinic.graphql(MY_LOGINS, laptop["access_token"])
    logins = body["data"]["myLogins"]
    assert [(login["userAgent"], login["current"]) for login in logins] == [
        ("Mozilla/5.0 (Macintosh)", True),
        ("ketafollow-ios/2.4.1", False),
    ]
    clock.advance(timedelta(minutes=5))
    refreshed = await clinic.http.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": phone["refresh_token"]},
        headers={"User-Agent": "ketafollow-ios/2.5.0"},
    )
    body = await clinic.graphql(MY_LOGINS, refreshed.json()["access_token"])
    latest = body["data"]["myLogins"][0]
    assert (latest["userAgent"], latest["current"], latest["lastUsedAt"]) == (
        "ketafollow-ios/2.5.0", True, "2026-11-25T15:10:00+00:00",
    )  # fmt: skip


async def test_ending_one_login_stops_its_refresh_token_and_keeps_the_others(clinic: Clinic) -> None:
    phone = await sign_in_with(clinic, "ketafollow-ios/2.4.1")
    laptop = await sign_in_with(clinic, "Mozilla/5.0")
    logins = (await clinic.graphql(MY_LOGINS, laptop["access_token"]))["data"]["myLogins"]
    [phone_login] = [login for login in logins if not login["current"]]
    ended = await clinic.graphql(END_LOGIN, laptop["access_token"], id=phone_login["id"])
    assert ended["data"]["endLogin"]["result"] == {"__typename": "EndedLogins", "count": 1}
    refused = await clinic.form("/auth/token", grant_type="refresh_token", refresh_token=phone["refresh_token"])
    assert refused.json()["error"] == "invalid_grant"
    kept = await clinic.form("/auth/token", grant_type="refresh_token", refresh_token=laptop["refresh_token"])
    assert kept.status_code == 200


async def test_a_login_of_someone_else_cannot_be_ended_and_looks_missing(clinic: Clinic) -> None:
    blairs = await sign_in_with(clinic, "Mozilla/5.0")
    [login] = (await clinic.graphql(MY_LOGINS, blairs["access_token"]))["data"]["myLogins"]
    alex = clinic.tokens.user("alex@demo.test")
    body = await clinic.graphql(END_LOGIN, alex, id=login["id"])
    assert body["data"]["endLogin"]["result"]["__typename"] == "NotFound"
    kept = await clinic.form("/auth/token", grant_type="refresh_token", refresh_token=blairs["refresh_token"])
    assert kept.status_code == 200


async def test_signing_out_everywhere_else_keeps_this_login(clinic: Clinic) -> None:
    others = [await sign_in_with(clinic, f"device {n}") for n in range(3)]
    this = await sign_in_with(clinic, "this browser")
    body = await clinic.graphql(END_OTHERS, this["access_token"])
    assert body["data"]["endOtherLogins"]["result"] == {"__typename": "EndedLogins", "count": 3}
    for other in others:
        refused = await clinic.form("/auth/token", grant_type="refresh_token", refresh_token=other["refresh_token"])
        assert refused.json()["error"] == "invalid_grant"
    logins = (await clinic.graphql(MY_LOGINS, this["access_token"]))["data"]["myLogins"]
    assert [(login["userAgent"], login["current"]) for login in logins] == [("this browser", True)]
