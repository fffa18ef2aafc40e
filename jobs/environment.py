"""What every job is given: the clock, the clinic's policy, the notification sender and the mailer."""

from __future__ import annotations

from dataclasses import dataclass

from models.kernel.clock import Clock
from models.kernel.policy import ClinicPolicy
from models.notifications.mail import MailTransport
from models.notifications.notifications import Sender


@dataclass(frozen=True)
class JobEnvironment:
    clock: Clock
    policy: ClinicPolicy
    sender: Sender
    mailer: MailTransport
    # Where the links in e-mails point (PUBLIC_APP_URL).
    public_app_url: str = "http://127.0.0.1:8000"
