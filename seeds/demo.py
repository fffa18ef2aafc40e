"""The demo clinic of PRODUCT.md: fixed logins that tools and examples rely on.

Refused in production: `seeds.loader` never loads it there, and sign-in refuses these accounts.
"""

from __future__ import annotations

from datetime import date

from models.identity.accounts import NewApiClient, NewUser, Role

DEMO_PASSWORD = "ketafollow-demo"
DEMO_CLIENT_SECRET = "demo-ehr-secret"
DEMO_EMAIL_DOMAIN = "demo.test"

CARE_TEAMS = ("North", "South")

USERS: tuple[NewUser, ...] = (
    NewUser(email="admin@demo.test", role=Role.ADMIN),
    NewUser(
        email="dr.rivera@demo.test",
        role=Role.PROVIDER,
        given_name="Maria",
        family_name="Rivera",
        credentials="MD",
        npi="1234567893",
        time_zone="America/New_York",
        care_teams=("North",),
    ),
    NewUser(
        email="dr.okafor@demo.test",
        role=Role.PROVIDER,
        given_name="Chinedu",
        family_name="Okafor",
        credentials="DO",
        npi="1987654328",
        time_zone="America/Denver",
        care_teams=("South",),
    ),
    NewUser(
        email="alex@demo.test",
        role=Role.PATIENT,
        given_name="Alex",
        family_name="Morgan",
        birth_date=date(1984, 3, 12),
        time_zone="America/New_York",
        care_team="North",
    ),
    NewUser(
        email="blair@demo.test",
        role=Role.PATIENT,
        given_name="Blair",
        family_name="Chen",
        birth_date=date(1976, 11, 2),
        time_zone="America/Chicago",
        care_team="North",
    ),
    NewUser(
        email="casey@demo.test",
        role=Role.PATIENT,
        given_name="Casey",
        family_name="Nguyen",
        birth_date=date(1991, 7, 24),
        time_zone="America/Denver",
        care_team="South",
    ),
    NewUser(
        email="devon@demo.test",
        role=Role.PATIENT,
        given_name="Devon",
        family_name="Brooks",
        birth_date=date(1969, 1, 30),
        time_zone="America/Los_Angeles",
        care_team="South",
    ),
)

# An open invitation (PRODUCT.md capability 11): the admin invited a nurse practitioner onto North
# (a clinician, so the demo panels stay as they are); in development its e-mail, with the
# activation link, is written under var/mail/.
INVITED_PROVIDER = NewUser(
    email="np.patel@demo.test",
    role=Role.PROVIDER,
    given_name="Sam",
    family_name="Patel",
    credentials="NP",
    care_teams=("North",),
)

# Patients who consented to share their record with the demo EHR client (email, client id).
CONSENTS: tuple[tuple[str, str], ...] = (("alex@demo.test", "demo-ehr"), ("blair@demo.test", "demo-ehr"))

API_CLIENTS: tuple[NewApiClient, ...] = (
    NewApiClient(
        client_id="demo-ehr",
        name="Demo EHR",
        scopes=("patients:read", "clinical:read", "changes:read"),
        care_teams=("North",),
    ),
)
