"""Reading the e-mail settings from the environment (part of `api.settings`).

`SMTP_URL`: `smtp://user:password@host:587` (STARTTLS) or `smtps://user:password@host:465`
(TLS from the first byte); user and password percent-encoded. `SMTP_CA_FILE`: a PEM file of the
CA(s) to trust for that server instead of the system's (a private CA). `MAIL_FROM`: the sender address.
`PUBLIC_APP_URL`: where the links in e-mails point (`http://127.0.0.1:8000` in development,
required in production). Without `SMTP_URL`, outside production, each message is written as a
file under `var/mail/` instead of being sent (PRODUCT.md, "Exact shapes for enrolment").
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jobs.mail import DEVELOPMENT_APP_URL, DEVELOPMENT_MAIL_FROM, MailSettings, SmtpServer
from models.identity.accounts import normalise_email
from models.kernel.errors import InvalidInput

_DEFAULT_PORTS = {"smtp": 587, "smtps": 465}


def read_mail(values: Mapping[str, str], *, production: bool, problems: list[str]) -> MailSettings:
    url, ca_name = values.get("SMTP_URL", "").strip(), values.get("SMTP_CA_FILE", "").strip()
    if ca_name and not url:
        problems.append("SMTP_CA_FILE is set without SMTP_URL")
    smtp = _smtp(url, _ca_file(ca_name, problems), problems)
    if production and smtp is None:
        problems.append("SMTP_URL must be set in production (invitations and password resets are e-mailed)")
    mail_from = values.get("MAIL_FROM", "").strip()
    if mail_from:
        try:
            mail_from = normalise_email(mail_from)
        except InvalidInput:
            problems.append(f"MAIL_FROM must be an e-mail address, got {mail_from!r}")
    elif production:
        problems.append("MAIL_FROM must be set in production")
    app_url = values.get("PUBLIC_APP_URL", "").strip().rstrip("/")
    if not app_url and production:
        problems.append("PUBLIC_APP_URL must be set in production (the links in e-mails start with it)")
    elif app_url:
        parts = urlsplit(app_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
            problems.append(f"PUBLIC_APP_URL must be an http(s) URL without query, got {app_url!r}")
        elif production and parts.scheme != "https":
            problems.append("PUBLIC_APP_URL must use https in production")
    return MailSettings(
        smtp=smtp,
        mail_from=mail_from or DEVELOPMENT_MAIL_FROM,
        public_app_url=app_url or DEVELOPMENT_APP_URL,
        allow_plain_loopback=not production,
    )


def _ca_file(name: str, problems: list[str]) -> Path | None:
    if not name:
        return None
    try:
        ssl.create_default_context(cafile=name)
    except (OSError, ssl.SSLError) as error:
        problems.append(f"SMTP_CA_FILE must be a readable file of PEM certificates, got {name!r} ({error})")
        return None
    return Path(name)


def _smtp(url: str, ca_file: Path | None, problems: list[str]) -> SmtpServer | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        problems.append("SMTP_URL has an invalid port")
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        problems.append("SMTP_URL must be smtp://host[:port] (STARTTLS) or smtps://host[:port] (implicit TLS)")
        return None
    return SmtpServer(
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[parts.scheme],
        implicit_tls=parts.scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ca_file=ca_file,
    )
