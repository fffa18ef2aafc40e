"""Settings a production start needs (e-mail), shared by the settings and second-factor tests."""

from __future__ import annotations

# What production needs to send invitations and resets (tests/identity/test_enrolment.py checks each).
PRODUCTION_MAIL = {
    "SMTP_URL": "smtps://mailer:secret@smtp.clinic.example",
    "MAIL_FROM": "no-reply@clinic.example",
    "PUBLIC_APP_URL": "https://app.clinic.example",
}
