"""Accounts: what a valid user and API client are, and the idempotent demo seed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from api.auth.passwords import hash_password, needs_rehash, verify_password
from api.commands.service import seed_database
from api.settings import Environment, Settings
from models.identity import accounts
from models.identity.accounts import ApiClient, NewApiClient, NewUser, Patient, Provider, Role, User
from models.kernel.errors import Conflict, InvalidInput, NotFound
from seeds import demo
from seeds.clinical import COURSES
from seeds.loader import INSTRUMENTS

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
TODAY = NOW.date()
HASH = "$argon2id$v=19$m=65536,t=3,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def patient(**changes: object) -> NewUser:
    values: dict[str, object] = {
        "email": "  New.Patient@Example.TEST ",
        "role": Role.PATIENT,
        "given_name": "Sam",
        "family_name": "Lee",
        "birth_date": date(1980, 5, 1),
        "time_zone": "America/Chicago",
        "care_team": "North",
    }
    values.update(changes)
    return NewUser(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("npi", "valid"),
    [
        ("1234567893", True),
        ("1987654328", True),
        ("1234567890", False),
        ("123456789", False),
        ("12345678a3", False),
    ],
)
def test_npi_check_digit_follows_the_cms_luhn_rule(npi: str, valid: bool) -> None:
    assert accounts.npi_is_valid(npi) is valid


async def test_a_patient_is_created_with_their_profile_and_a_normalised_email(blank_db: None) -> None:
    await accounts.ensure_care_team("North")
    user = await accounts.create_user(patient(), password_hash=HASH, today=TODAY)
    assert user.email == "new.patient@example.test"
    profile = await Patient.get(user=user).prefetch_related("care_team")
    assert profile.care_team.name == "North"
    assert profile.time_zone == "America/Chicago"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"time_zone": "Mars/Olympus_Mons"}, "timeZone"),
        ({"birth_date": date(2027, 1, 1)}, "birthDate"),
        ({"birth_date": None}, "birthDate"),
        ({"given_name": "   "}, "givenName"),
        ({"care_team": None}, "careTeam"),
    ],
)
async def test_an_invalid_patient_is_refused_with_the_field_named(
    blank_db: None, changes: dict[str, object], field: str
) -> None:
    await accounts.ensure_care_team("North")
    with pytest.raises(InvalidInput) as refused:
        await accounts.create_user(patient(**changes), password_hash=HASH, today=TODAY)
    assert refused.value.field == field
    assert await User.all().count() == 0


async def test_a_duplicate_email_is_a_conflict_and_nothing_is_half_written(blank_db: None) -> None:
    await accounts.ensure_care_team("North")
    await accounts.create_user(patient(), password_hash=HASH, today=TODAY)
    with pytest.raises(Conflict):
        await accounts.create_user(patient(email="NEW.PATIENT@example.test"), password_hash=HASH, today=TODAY)
    assert await User.all().count() == 1
    assert await Patient.all().count() == 1


async def test_an_unknown_care_team_leaves_no_user_behind(blank_db: None) -> None:
    with pytest.raises(NotFound):
        await accounts.create_user(patient(care_team="Nowhere"), password_hash=HASH, today=TODAY)
    assert await User.all().count() == 0


async def test_a_provider_with_a_bad_npi_is_refused(blank_db: None) -> None:
    provider = NewUser(email="dr@example.test", role=Role.PROVIDER, given_name="A", family_name="B", npi="1234567890")
    with pytest.raises(InvalidInput, match="npi"):
        await accounts.create_user(provider, password_hash=HASH, today=TODAY)


async def test_an_api_client_gets_only_known_scopes(blank_db: None) -> None:
    with pytest.raises(InvalidInput, match="unknown scopes: admin:all"):
        await accounts.create_api_client(
            NewApiClient(client_id="acme", name="Acme", scopes=("patients:read", "admin:all")),
            secret_hash=HASH,
        )
    client = await accounts.create_api_client(
        NewApiClient(client_id="acme", name="Acme", scopes=("patients:read",)), secret_hash=HASH
    )
    assert client.scopes == ["patients:read"]


async def test_the_demo_seed_is_idempotent(blank_db: None, blank_settings: Settings) -> None:
    first = await seed_database(blank_settings, now=NOW)
    counts = (await User.all().count(), await Provider.all().count(), await ApiClient.all().count())
    second = await seed_database(blank_settings, now=NOW)
    instruments = len(list(INSTRUMENTS.glob("*.json")))
    expected = len(demo.USERS) + len(demo.CARE_TEAMS) + len(demo.API_CLIENTS) + len(demo.CONSENTS) + len(COURSES)
    expected += instruments + 1  # the open invitation
    assert len(first.created) == expected
    assert second.created == []
    assert counts == (await User.all().count(), await Provider.all().count(), await ApiClient.all().count())
    assert counts == (8, 3, 1)  # with the invited (inactive) provider
    rivera = await Provider.get(user__email="dr.rivera@demo.test").prefetch_related("care_teams")
    assert [team.name for team in rivera.care_teams] == ["North"]


async def test_production_loads_no_demo_clinic(blank_db: None, blank_settings: Settings) -> None:
    production = replace(blank_settings, env=Environment.PRODUCTION)
    report = await seed_database(production, now=NOW)
    assert not report.demo_loaded
    assert all(line.startswith("instrument ") for line in report.created)
    assert await User.all().count() == 0


async def test_passwords_are_hashed_with_argon2id_and_verified() -> None:
    stored = await hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert await verify_password(stored, "correct horse battery staple")
    assert not await verify_password(stored, "wrong horse battery staple")
    assert not await verify_password("not-a-hash", "anything")
    assert not needs_rehash(stored)
    assert needs_rehash("$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
