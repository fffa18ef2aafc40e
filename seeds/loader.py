"""Loads the seed data. Idempotent: what exists is left as it is, what is missing is added."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from models.ehr.consent import grant_data_sharing_consent
from models.identity import accounts
from models.identity.access import load_user_viewer
from models.identity.enrolment import Invitation, ProviderInvite, invite_provider
from models.kernel.audit import AuditTrail
from models.kernel.policy import ClinicPolicy
from models.surveys.instruments import load_definition
from seeds import demo
from seeds.clinical import load_clinical_demo


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)
    demo_loaded: bool = False

    def describe(self) -> str:
        lines = [f"seeded: {', '.join(self.created)}" if self.created else "seed data already present"]
        if self.demo_loaded:
            lines.append(f"demo logins (password {demo.DEMO_PASSWORD!r}):")
            lines += [f"  {user.email:<24} {user.role.value.lower()}" for user in demo.USERS]
            lines += [
                f"  EHR client {client.client_id!r}, secret {demo.DEMO_CLIENT_SECRET!r}, "
                f"scopes {' '.join(client.scopes)}"
                for client in demo.API_CLIENTS
            ]
        else:
            lines.append("demo data is not loaded in production")
        return "\n".join(lines)


INSTRUMENTS = Path(__file__).parent / "instruments"

# The password hasher of the sign-in code (`api.auth.passwords.hash_password`), given by the caller
# so that the seeds stay below the API.
HashPassword = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class Demo:
    """What the demo clinic needs of the settings: the app's address (for the invitation link) and
    the clinic policy."""

    app_url: str
    policy: ClinicPolicy


async def load_instruments() -> list[str]:
    """The survey instruments (every deployment needs them); a known version is left alone."""
    added = []
    for path in sorted(INSTRUMENTS.glob("*.json")):
        data = json.loads(path.read_text())
        if await load_definition(data):
            added.append(f"instrument {data['code']} {data['version']}")
    return added


async def load_seeds(*, demo_clinic: Demo | None, hash_password: HashPassword, now: datetime) -> SeedReport:
    """Load what every deployment needs, and the demo clinic when `demo_clinic` is given (never in production)."""
    report = SeedReport()
    report.created += await load_instruments()
    if demo_clinic is None:
        return report
    await _load_demo(report, now, demo_clinic.app_url, hash_password)
    report.created += await load_clinical_demo(now, demo_clinic.policy)
    report.demo_loaded = True
    return report


async def _load_demo(report: SeedReport, now: datetime, app_url: str, hash_password: HashPassword) -> None:
    for name in demo.CARE_TEAMS:
        if not await accounts.CareTeam.exists(name=name):
            await accounts.ensure_care_team(name)
            report.created.append(f"care team {name}")
    for user in demo.USERS:
        if await accounts.User.exists(email=user.email):
            continue
        await accounts.create_user(user, password_hash=await hash_password(demo.DEMO_PASSWORD), today=now.date())
        report.created.append(user.email)
    for client in demo.API_CLIENTS:
        if await accounts.ApiClient.exists(client_id=client.client_id):
            continue
        await accounts.create_api_client(client, secret_hash=await hash_password(demo.DEMO_CLIENT_SECRET))
        report.created.append(f"client {client.client_id}")
    for email, client_id in demo.CONSENTS:
        patient = await accounts.Patient.get(user__email=email)
        client_row = await accounts.ApiClient.get(client_id=client_id)
        if await accounts.DataSharingConsent.exists(patient=patient, api_client=client_row, revoked_at=None):
            continue
        viewer = await load_user_viewer(patient.user_id, AuditTrail())  # type: ignore[attr-defined]
        assert viewer is not None, f"demo patient {email} cannot sign in"
        await grant_data_sharing_consent(viewer, client_id, now=now)
        report.created.append(f"consent {email} -> {client_id}")
    await _load_invitation(report, now, app_url)


async def _load_invitation(report: SeedReport, now: datetime, app_url: str) -> None:
    """The demo's open invitation, made by the admin through the same operation as the API's."""
    invited = demo.INVITED_PROVIDER
    if await Invitation.exists(email=invited.email):
        return
    admin = await accounts.User.get(email="admin@demo.test")
    viewer = await load_user_viewer(admin.id, AuditTrail(operation="Seed"))
    assert viewer is not None, "the demo admin cannot sign in"
    teams = [await accounts.CareTeam.get(name=name) for name in invited.care_teams]
    data = ProviderInvite(
        email=invited.email, given_name=invited.given_name, family_name=invited.family_name,
        care_team_ids=tuple(team.id for team in teams), credentials=invited.credentials,
    )  # fmt: skip
    await invite_provider(viewer, data, now=now, app_url=app_url)
    report.created.append(f"invitation {invited.email}")
