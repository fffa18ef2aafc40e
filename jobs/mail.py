"""E-mail transports and the job that empties the mail outbox (models.notifications.mail).

SMTP through the standard library, run in a thread (smtplib blocks): implicit TLS for smtps://,
STARTTLS for smtp:// (required, except to a server on this machine outside production). Without
an SMTP server, in development, each message becomes an RFC 5322 file under `var/mail/`.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from jobs.environment import JobEnvironment
from models.identity import password_reset
from models.notifications import mail
from models.notifications.mail import MailTransport, OutgoingMail

TIMEOUT_SECONDS = 30.0
DEVELOPMENT_APP_URL = "http://127.0.0.1:8000"
DEVELOPMENT_MAIL_FROM = "ketafollow@localhost"
MAIL_DIRECTORY = Path("var/mail")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    implicit_tls: bool  # smtps://; smtp:// upgrades with STARTTLS
    username: str | None = None
    password: str | None = None
    # PEM certificates of the CA(s) that signed the server's certificate, trusted instead of the
    # system's (a clinic's private CA); the certificate and its host name are always checked.
    ca_file: Path | None = None

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


@dataclass(frozen=True)
class MailSettings:
    smtp: SmtpServer | None = None
    mail_from: str = DEVELOPMENT_MAIL_FROM
    public_app_url: str = DEVELOPMENT_APP_URL
    # Where messages are written when no SMTP server is configured (development only).
    directory: Path = MAIL_DIRECTORY
    # STARTTLS may be skipped only to a server on this machine outside production (tests, a
    # local catcher); anywhere else a server that does not offer it is refused.
    allow_plain_loopback: bool = True


def is_loopback(host: str) -> bool:
    return host in _LOOPBACK


class StartTlsUnavailable(Exception):
    """The server did not offer STARTTLS: nothing is sent in the clear."""


def rfc5322(message: OutgoingMail, sender: str, *, now: datetime) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.recipient
    email["Subject"] = message.subject
    email["Date"] = format_datetime(now)
    domain = sender.rpartition("@")[2] or "localhost"
    email["Message-ID"] = f"<{message.id}@{domain}>"  # receivers deduplicate on it
    # 7bit, not quoted-printable: the link stays whole on one line, for a person or a script.
    email.set_content(message.body, cte="7bit")
    return email


def smtp_transport(server: SmtpServer, sender: str, *, allow_plain_loopback: bool) -> MailTransport:
    def send(message: OutgoingMail) -> None:
        email = rfc5322(message, sender, now=datetime.now(UTC))
        context = server.tls_context()
        client: smtplib.SMTP
        if server.implicit_tls:
            client = smtplib.SMTP_SSL(server.host, server.port, timeout=TIMEOUT_SECONDS, context=context)
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=TIMEOUT_SECONDS)
        with client:
            client.ehlo()
            if not server.implicit_tls:
                if client.has_extn("starttls"):
                    client.starttls(context=context)
                    client.ehlo()
                elif not (allow_plain_loopback and is_loopback(server.host)):
                    raise StartTlsUnavailable(f"{server.host} does not offer STARTTLS")
            if server.username:
                client.login(server.username, server.password or "")
            client.send_message(email)

    async def transport(message: OutgoingMail) -> None:
        await asyncio.to_thread(send, message)

    return transport


def _file_name(recipient: str, now: datetime) -> str:
    safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", recipient)
    return f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{safe}.eml"


def directory_transport(directory: Path, sender: str) -> MailTransport:
    """Development without SMTP: `<time>-<recipient>.eml` files a person or a script can open."""

    def write(message: OutgoingMail) -> None:
        now = datetime.now(UTC)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / _file_name(message.recipient, now)).write_bytes(bytes(rfc5322(message, sender, now=now)))

    async def transport(message: OutgoingMail) -> None:
        await asyncio.to_thread(write, message)

    return transport


def mail_transport(settings: MailSettings) -> MailTransport:
    if settings.smtp is None:
        return directory_transport(settings.directory, settings.mail_from)
    return smtp_transport(settings.smtp, settings.mail_from, allow_plain_loopback=settings.allow_plain_loopback)


async def send_password_resets(env: JobEnvironment) -> int:
    """Answer the recorded password-reset requests: a link to each active account (models.identity.password_reset)."""
    return await password_reset.send_password_resets(now=env.clock.now(), app_url=env.public_app_url)


async def deliver_mail(env: JobEnvironment) -> int:
    """Send the queued e-mails (invitations, password resets), with retries."""
    return await mail.deliver_due_mail(env.mailer, now=env.clock.now())
