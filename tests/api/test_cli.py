"""The `ketafollow` command, run as a newcomer would run it."""

from __future__ import annotations

import pytest

from api.auth.passwords import verify_password
from api.database import open_database
from api.settings import Environment, Settings
from models.identity.accounts import ApiClient, CareTeam, User
from models.identity.enrolment import Invitation
from models.kernel.audit import AuditEvent, AuditOutcome
from models.notifications.mail import MailMessage
from tests.support.cli import run


def test_help_lists_every_command(database_url: str) -> None:
    result = run("--help", database_url=database_url)
    assert result.returncode == 0
    for command in (
        "serve",
        "worker",
        "migrate",
        "setup-roles",
        "seed",
        "export-schema",
        "create-care-team",
        "create-user",
        "invite",
        "create-client",
        "deactivate-user",
        "reactivate-user",
        "rotate-client-secret",
        "deactivate-client",
        "reset-totp",
    ):
        assert command in result.stdout


def test_invalid_configuration_is_reported_before_anything_runs(database_url: str) -> None:
    result = run("migrate", database_url="mysql://nope/db")
    assert result.returncode == 2
    assert "DATABASE_URL must start with sqlite:// or postgres://" in result.stderr


def test_serve_refuses_an_unmigrated_database_and_names_the_fix(empty_database_url: str) -> None:
    result = run("serve", "--port", "8798", database_url=empty_database_url)
    assert result.returncode == 1
    assert "the database is not migrated" in result.stderr
    assert "ketafollow migrate" in result.stderr


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        ({"KETAFOLLOW_ENV": ""}, "KETAFOLLOW_ENV is not set and "),
        (
            {"KETAFOLLOW_ENV": "development"},
            "SECRET_KEY is the development key, public in the repository, and HOST=0.0.0.0",
        ),
    ],
)
def test_serve_on_every_address_refuses_the_default_environment_or_key_before_it_listens(
    database_url: str, environment: dict[str, str], problem: str
) -> None:
    # HOST says loopback; `--host` is what the server would listen on.
    result = run(
        "serve", "--host", "0.0.0.0", "--port", "8799", database_url=database_url, HOST="127.0.0.1", SECRET_KEY="",
        **environment,
    )  # fmt: skip
    assert result.returncode == 2
    assert problem in result.stderr
    assert "KETAFOLLOW_ENV=production" in result.stderr


def test_migrate_on_an_empty_database_then_again_is_a_no_op(empty_database_url: str) -> None:
    first = run("migrate", database_url=empty_database_url)
    second = run("migrate", database_url=empty_database_url)
    assert first.returncode == 0 and "applied ketafollow.0001_initial" in first.stdout
    assert second.returncode == 0 and "up to date" in second.stdout


def test_export_schema_check_passes_on_the_committed_schema(database_url: str) -> None:
    result = run("export-schema", "--check", database_url=database_url)
    assert result.returncode == 0, result.stderr


async def test_create_user_and_client_store_only_hashes(blank_database_url: str) -> None:
    database_url = blank_database_url
    admin = run(
        "create-user", "--email", "admin@clinic.test", "--role", "ADMIN", "--password-stdin",
        database_url=database_url, stdin="a lantern for the clinic\n",
    )  # fmt: skip
    assert admin.returncode == 0, admin.stderr
    team = run("create-care-team", "--by", "admin@clinic.test", "North", database_url=database_url)
    assert team.returncode == 0, team.stderr
    created = run(
        "create-user", "--email", "Dr.Lee@Clinic.test", "--role", "provider", "--given-name", "Ana",
        "--family-name", "Lee", "--time-zone", "America/Chicago", "--care-team", "North",
        "--npi", "1234567893", "--password-stdin",
        database_url=database_url, stdin="a long enough passphrase\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "created provider dr.lee@clinic.test" in created.stdout
    again = run(
        "create-user", "--email", "dr.lee@clinic.test", "--role", "ADMIN", "--password-stdin",
        database_url=database_url, stdin="another long passphrase\n",
    )  # fmt: skip
    assert again.returncode == 1
    assert "already exists" in again.stderr

    client = run(
        "create-client", "--by", "admin@clinic.test", "--client-id", "acme-ehr", "--name", "Acme EHR",
        "--scope", "patients:read", "--care-team", "North", database_url=database_url,
    )  # fmt: skip
    assert client.returncode == 0, client.stderr
    secret = client.stdout.rsplit(": ", 1)[1].strip()

    async with open_database(Settings(env=Environment.TEST, database_url=database_url)):
        user = await User.get(email="dr.lee@clinic.test")
        assert await verify_password(user.password_hash, "a long enough passphrase")
        stored = await ApiClient.get(client_id="acme-ehr")
        assert secret not in stored.secret_hash
        assert await verify_password(stored.secret_hash, secret)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "at least 12 characters"),
        ("", "at least 12 characters"),
        ("Password1234", "too common"),
        ("the admin.kim keys", "must not contain your e-mail address"),
    ],
)
def test_create_user_refuses_a_weak_password(database_url: str, password: str, reason: str) -> None:
    result = run(
        "create-user", "--email", "admin.kim@b.test", "--role", "ADMIN", "--password-stdin",
        database_url=database_url, stdin=password + "\n",
    )  # fmt: skip
    assert result.returncode == 2
    assert reason in result.stderr


@pytest.mark.parametrize(("team", "status", "said"), [("North", 0, "invited robin@example.test as patient"),
                                                      ("South", 1, "care team not found")])  # fmt: skip
async def test_invite_calls_the_same_operation_as_the_api(database_url: str, team: str, status: int, said: str) -> None:
    result = run(
        "invite", "--by", "dr.rivera@demo.test", "--email", "Robin@Example.test", "--role", "patient",
        "--given-name", "Robin", "--family-name", "Quill", "--birth-date", "1984-03-09",
        "--time-zone", "America/New_York", "--care-team", team, database_url=database_url,
    )  # fmt: skip
    assert result.returncode == status, result.stderr
    assert said in (result.stdout + result.stderr)
    async with open_database(Settings(env=Environment.TEST, database_url=database_url)):
        invitations = await Invitation.filter(email="robin@example.test").count()
        queued = await MailMessage.filter(recipient="robin@example.test").count()
        invited = await User.get_or_none(email="robin@example.test")
    assert (invitations, queued) == ((1, 1) if status == 0 else (0, 0))
    assert (invited is not None and not invited.is_active) if status == 0 else invited is None


async def test_create_care_team_calls_the_same_operation_as_the_api(database_url: str) -> None:
    """As createCareTeam: an admin's, audited under their name; a taken name is refused (exit 2)."""
    refused = run("create-care-team", "--by", "dr.rivera@demo.test", "West", database_url=database_url)
    assert refused.returncode == 1 and "only admins may create care teams" in refused.stderr
    unknown = run("create-care-team", "--by", "nobody@demo.test", "West", database_url=database_url)
    assert unknown.returncode == 1 and "no active account nobody@demo.test" in unknown.stderr
    created = run("create-care-team", "--by", "admin@demo.test", "  West ", database_url=database_url)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created care team West (")
    again = run("create-care-team", "--by", "admin@demo.test", "west", database_url=database_url)
    assert again.returncode == 2
    assert "ketafollow: a care team named 'west' already exists" in again.stderr
    async with open_database(Settings(env=Environment.TEST, database_url=database_url)):
        teams = await CareTeam.filter(name__iexact="west").values_list("name", flat=True)
        created_events = await AuditEvent.filter(resource_type="CareTeam", outcome=AuditOutcome.SUCCESS).values_list(
            "actor_label", "detail", "operation"
        )
        refusals = await AuditEvent.filter(resource_type="CareTeam", outcome=AuditOutcome.DENIED).values_list(
            "actor_label", "detail", "operation"
        )
    assert teams == ["West"]
    assert created_events == [("admin@demo.test", "created care team West", "CLI create-care-team")]
    assert refusals == [("dr.rivera@demo.test", "only admins may create care teams", "CLI create-care-team")]


async def test_create_client_calls_the_same_operation_as_the_api(database_url: str) -> None:
    """As registerApiClient: an admin's, audited under their name; a provider is refused (and
    audited), an unknown care team is named."""
    args = ("--client-id", "west-ehr", "--name", "West EHR", "--scope", "clinical:read")
    refused = run(
        "create-client", "--by", "dr.rivera@demo.test", *args, "--care-team", "North", database_url=database_url
    )
    assert refused.returncode == 1 and "only admins may register API clients" in refused.stderr
    unknown = run(
        "create-client", "--by", "admin@demo.test", *args, "--care-team", "Nowhere", database_url=database_url
    )
    assert unknown.returncode == 2 and "no care team named 'Nowhere'" in unknown.stderr
    created = run("create-client", "--by", "admin@demo.test", *args, "--care-team", "North", database_url=database_url)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.rsplit(": ", 1)[1].strip()
    async with open_database(Settings(env=Environment.TEST, database_url=database_url)):
        stored = await ApiClient.get(client_id="west-ehr").prefetch_related("care_teams")
        events = await AuditEvent.filter(resource_type="ApiClient").values_list("actor_label", "outcome", "operation")
    assert await verify_password(stored.secret_hash, secret)
    assert [team.name for team in stored.care_teams] == ["North"]
    assert sorted(events) == [
        ("admin@demo.test", AuditOutcome.SUCCESS, "CLI create-client"),
        ("dr.rivera@demo.test", AuditOutcome.DENIED, "CLI create-client"),
    ]


async def test_the_admin_commands_call_the_same_operations_as_the_api(database_url: str) -> None:
    """Deactivation and a secret rotation from a shell: refused to a provider, done for an admin,
    audited under the admin's name (models.identity.administration)."""
    refused = run(
        "deactivate-user", "--by", "dr.rivera@demo.test", "--email", "blair@demo.test", "--reason", "left",
        database_url=database_url,
    )  # fmt: skip
    assert refused.returncode == 1 and "only admins may deactivate users" in refused.stderr
    done = run(
        "deactivate-user", "--by", "admin@demo.test", "--email", "blair@demo.test", "--reason", "moved away",
        database_url=database_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "deactivated blair@demo.test" in done.stdout
    rotated = run(
        "rotate-client-secret", "--by", "admin@demo.test", "--client-id", "demo-ehr", database_url=database_url
    )
    assert rotated.returncode == 0, rotated.stderr
    secret = rotated.stdout.rsplit(": ", 1)[1].strip()
    async with open_database(Settings(env=Environment.TEST, database_url=database_url)):
        blair = await User.get(email="blair@demo.test")
        client = await ApiClient.get(client_id="demo-ehr")
        details = set(await AuditEvent.filter(actor_label="admin@demo.test").values_list("detail", flat=True))
        refused_rows = await AuditEvent.filter(actor_label="dr.rivera@demo.test", outcome=AuditOutcome.DENIED).count()
    assert not blair.is_active
    assert refused_rows == 1  # the provider's refused attempt is audited, as the API's would be
    assert await verify_password(client.secret_hash, secret)
    assert not await verify_password(client.secret_hash, "demo-ehr-secret")
    assert "rotated the secret of demo-ehr" in details
    assert any(str(detail).startswith("deactivated blair@demo.test: moved away") for detail in details)
