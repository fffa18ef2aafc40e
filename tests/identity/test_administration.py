"""Administration without a shell (issue #19): accounts, care teams, transfers and EHR clients,
end to end over HTTP and WebSocket, as an admin of the demo clinic would use them."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from api.settings import Settings
from models.identity.accounts import ApiClient, CareTeam, DataSharingConsent, NewUser, Patient, Role, User, create_user
from models.identity.bearer_tokens import hash_token
from models.identity.enrolment import NO_PASSWORD, Invitation
from models.kernel.audit import AuditEvent, AuditOutcome
from models.kernel.clock import ManualClock
from models.kernel.events import DomainEvent
from models.notifications.devices import Device
from models.surveys.delivery import schedule_recurring_surveys
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment
from tests.conftest import Tokens
from tests.support.clinical import ALERTS, REPORT_SIDE_EFFECT
from tests.support.graphql import gql
from tests.support.sockets import (
    assert_refused_as_ended,
    closed,
    me,
    refresh,
    replica_settings,
    served,
    sign_in,
    socket,
    subscribe,
)

ADMIN, RIVERA, OKAFOR, ALEX, BLAIR = (
    "admin@demo.test", "dr.rivera@demo.test", "dr.okafor@demo.test", "alex@demo.test", "blair@demo.test",
)  # fmt: skip
USERS = """
query($first: Int, $after: String, $role: UserRole, $search: String) {
  users(first: $first, after: $after, role: $role, search: $search) {
    edges { cursor node { id email role active createdAt patient { id } provider { id } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
RESULT = "result { __typename ... on Error { message } ... on ValidationError { field } }"
DEACTIVATE = """
mutation($user: ID!, $reason: String!) {
  deactivateUser(input: { userId: $user, reason: $reason }) {
    result { __typename ... on User { email active } ... on Error { message } ... on ValidationError { field } }
  }
}
"""
REACTIVATE = f"mutation($user: ID!) {{ reactivateUser(input: {{ userId: $user }}) {{ {RESULT} }} }}"
TRANSFER = """
mutation($patient: ID!, $team: ID!) {
  transferPatient(input: { patientId: $patient, careTeamId: $team }) {
    result { __typename ... on Patient { givenName } ... on Error { message } }
  }
}
"""
CREATE_TEAM = """
mutation($name: String!) {
  createCareTeam(input: { name: $name }) { result { __typename ... on CareTeam { id name } ... on Error { message } } }
}
"""
REGISTRATION = """
  result {
    __typename
    ... on ApiClientRegistration { secret client { id clientId scopes } }
    ... on Error { message } ... on ValidationError { field }
  }
"""
REGISTER = f"""
mutation($clientId: String!, $scopes: [String!]!, $teams: [ID!]!) {{
  registerApiClient(input: {{ clientId: $clientId, name: "Lab EHR", scopes: $scopes, careTeamIds: $teams }}) {{
    {REGISTRATION}
  }}
}}
"""
ROTATE = f'mutation {{ rotateApiClientSecret(input: {{ clientId: "lab-ehr" }}) {{ {REGISTRATION} }} }}'
DEACTIVATE_CLIENT = """
mutation { deactivateApiClient(input: { clientId: "lab-ehr" }) {
  result { __typename ... on ApiClient { clientId active scopes careTeams { name } } } } }
"""
PATIENT_NAME = "query($id: ID!) { patient(id: $id) { givenName } }"


def user_gid(user_id: object) -> str:
    return str(relay.GlobalID("User", str(user_id)))


async def ids(app: Starlette) -> dict[str, Any]:
    with use_database(app.state.database):
        users = {user.email: user.id for user in await User.all()}
        teams = {team.name: str(relay.GlobalID("CareTeam", str(team.id))) for team in await CareTeam.all()}
        alex = await Patient.get(user__email=ALEX)
    return {"users": users, "teams": teams, "alex": str(relay.GlobalID("Patient", str(alex.id)))}


async def audit_details(app: Starlette, resource_type: str) -> list[str]:
    with use_database(app.state.database):
        rows = await AuditEvent.filter(resource_type=resource_type, outcome=AuditOutcome.SUCCESS).order_by(
            "occurred_at"
        )
    return [f"{row.actor_label}: {row.detail}" for row in rows]


# ------------------------------------------------------------------ deactivation


async def test_deactivation_stops_a_live_token_a_refresh_token_a_socket_and_push_devices_at_once(
    settings: Settings, clock: ManualClock
) -> None:
    async with served(settings, clock) as server:
        admin = (await sign_in(server, ADMIN))["access_token"]
        login = await sign_in(server, RIVERA)
        access = login["access_token"]
        phone = 'mutation { registerDevice(input: { platform: IOS, pushToken: "0a1b2c3d", appVersion: "2.4.1", '
        phone += 'locale: "en-US" }) { result { __typename } } }'
        assert (await gql(server.http, phone, token=access))["data"]["registerDevice"]["result"][
            "__typename"
        ] == "Device"
        found = await gql(server.http, USERS, {"search": "rivera"}, token=admin)
        [edge] = found["data"]["users"]["edges"]
        rivera = edge["node"]
        assert (rivera["email"], rivera["role"], rivera["active"]) == (RIVERA, "PROVIDER", True)
        assert rivera["provider"]["id"] and rivera["patient"] is None
        async with socket(server, access) as live:
            await subscribe(live, "subscription { alertRaised { id } }")
            body = await gql(server.http, DEACTIVATE, {"user": rivera["id"], "reason": "left the clinic"}, token=admin)
            assert body["data"]["deactivateUser"]["result"] == {"__typename": "User", "email": RIVERA, "active": False}
            ended = await closed(live)  # closed by the deactivation, before anything else is sent
        assert (ended.code, ended.reason) == (4401, "the login has ended: sign in again")
        assert_refused_as_ended(await me(server, access))
        assert (await refresh(server, login["refresh_token"])).json()["error"] == "invalid_grant"
        refused = await server.http.post(
            "/auth/token", data={"grant_type": "password", "username": RIVERA, "password": "ketafollow-demo"}
        )
        assert refused.json()["error"] == "invalid_grant"
        with use_database(server.app.state.database):
            assert not await Device.filter(user__email=RIVERA, is_active=True).exists()
            assert await Device.filter(user__email=RIVERA).count() == 1  # records stay
        # Reactivation lets them sign in again, and revives nothing of before.
        body = await gql(server.http, REACTIVATE, {"user": rivera["id"]}, token=admin)
        assert body["data"]["reactivateUser"]["result"]["__typename"] == "User"
        assert_refused_as_ended(await me(server, access))
        assert (await refresh(server, login["refresh_token"])).json()["error"] == "invalid_grant"
        again = await sign_in(server, RIVERA)
        assert (await me(server, again["access_token"])).json()["data"] == {"me": {"role": "PROVIDER"}}
        details = await audit_details(server.app, "User")
    assert (
        f"{ADMIN}: deactivated {RIVERA}: left the clinic (1 login(s), 1 device(s), 0 invitation(s), 0 survey(s) ended)"
        in details
    )
    assert f"{ADMIN}: reactivated {RIVERA}" in details


async def test_an_admin_cannot_deactivate_themself_and_a_reason_is_required(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    known = await ids(app)
    admin = tokens.user(ADMIN)
    own = await gql(client, DEACTIVATE, {"user": user_gid(known["users"][ADMIN]), "reason": "test"}, token=admin)
    assert own["data"]["deactivateUser"]["result"] == {
        "__typename": "ValidationError", "message": "you cannot deactivate your own account", "field": "userId",
    }  # fmt: skip
    blank = await gql(client, DEACTIVATE, {"user": user_gid(known["users"][BLAIR]), "reason": "  "}, token=admin)
    assert blank["data"]["deactivateUser"]["result"]["field"] == "reason"
    missing = await gql(
        client, DEACTIVATE, {"user": user_gid("00000000-0000-4000-8000-000000000000"), "reason": "x"}, token=admin
    )
    assert missing["data"]["deactivateUser"]["result"]["__typename"] == "NotFound"
    forbidden = await gql(
        client, DEACTIVATE, {"user": user_gid(known["users"][BLAIR]), "reason": "x"}, token=tokens.user(RIVERA)
    )
    assert forbidden["data"] is None and forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_deactivated_patient_is_sent_no_surveys_but_keeps_their_record_and_post_session_check(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, clock: ManualClock, settings: Settings
) -> None:
    known = await ids(app)
    with use_database(app.state.database):
        alex = await Patient.get(user__email=ALEX)
        open_before = await SurveyAssignment.filter(
            patient=alex, status__in=[AssignmentStatus.SCHEDULED, AssignmentStatus.AVAILABLE]
        ).count()
        answered = await SurveyAssignment.filter(patient=alex, status=AssignmentStatus.COMPLETED).count()
    assert open_before > 0
    body = await gql(
        client, DEACTIVATE, {"user": user_gid(known["users"][ALEX]), "reason": "moved away"}, token=tokens.user(ADMIN)
    )
    assert body["data"]["deactivateUser"]["result"]["active"] is False
    with use_database(app.state.database):
        still_open = await SurveyAssignment.filter(
            patient=alex, status__in=[AssignmentStatus.SCHEDULED, AssignmentStatus.AVAILABLE]
        ).values_list("instrument", flat=True)
        assert set(still_open) <= {"POST-SESSION"}
        assert await SurveyAssignment.filter(patient=alex, status=AssignmentStatus.COMPLETED).count() == answered
        assert await DomainEvent.filter(type="SurveyAssignment.cancelled", patient_id=alex.id).count() > 0
        before = await SurveyAssignment.filter(patient=alex).count()
        clock.advance(timedelta(days=8))
        assert await schedule_recurring_surveys(now=clock.now(), policy=settings.clinic_policy) > 0  # others' surveys
        after = await SurveyAssignment.filter(patient=alex).count()
    assert after == before  # none new for Alex while deactivated
    # The care team still reads the record.
    chart = await gql(client, PATIENT_NAME, {"id": known["alex"]}, token=tokens.user(RIVERA))
    assert chart["data"]["patient"] == {"givenName": "Alex"}


# ------------------------------------------------------------------ the list of users


async def test_admins_list_users_by_role_and_search_page_by_page(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    admin = tokens.user(ADMIN)

    async def emails(**variables: Any) -> list[str]:
        body = await gql(client, USERS, {"first": 50, **variables}, token=admin)
        return [edge["node"]["email"] for edge in body["data"]["users"]["edges"]]

    everyone = await emails()
    assert everyone == sorted(everyone) and {ADMIN, RIVERA, ALEX} <= set(everyone)
    providers = await emails(role="PROVIDER")
    assert {RIVERA, OKAFOR} <= set(providers) and not {ADMIN, ALEX} & set(providers)
    assert await emails(role="ADMIN") == [ADMIN]
    assert await emails(search="ALEX") == [ALEX]  # a prefix of the e-mail, any case
    assert await emails(search="Oka") == [OKAFOR]  # a prefix of a family name
    assert await emails(search="zz-nobody") == []
    pages, after = [], None
    while True:
        body = await gql(client, USERS, {"first": 3, "after": after}, token=admin)
        connection = body["data"]["users"]
        pages.append([edge["node"]["email"] for edge in connection["edges"]])
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert [email for page in pages for email in page] == everyone and len(pages) > 1
    blank = await gql(client, USERS, {"search": " "}, token=admin)
    assert blank["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    for viewer in (RIVERA, ALEX):
        refused = await gql(client, USERS, {}, token=tokens.user(viewer))
        assert refused["data"] is None and refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    refused = await gql(client, USERS, {}, token=tokens.client("demo-ehr"))
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# ------------------------------------------------------------------ care teams and transfers


async def test_a_transferred_patients_record_and_alerts_follow_them_to_the_new_team(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, clock: ManualClock
) -> None:
    known = await ids(app)
    admin = tokens.user(ADMIN)
    created = await gql(client, CREATE_TEAM, {"name": "East"}, token=admin)
    assert created["data"]["createCareTeam"]["result"]["name"] == "East"
    duplicate = await gql(client, CREATE_TEAM, {"name": "east"}, token=admin)
    assert duplicate["data"]["createCareTeam"]["result"]["__typename"] == "Conflict"
    moved = await gql(client, TRANSFER, {"patient": known["alex"], "team": known["teams"]["South"]}, token=admin)
    assert moved["data"]["transferPatient"]["result"] == {"__typename": "Patient", "givenName": "Alex"}
    again = await gql(client, TRANSFER, {"patient": known["alex"], "team": known["teams"]["South"]}, token=admin)
    assert again["data"]["transferPatient"]["result"]["__typename"] == "ValidationError"
    # The old team's provider no longer finds Alex; the new team's does.
    old = await gql(client, PATIENT_NAME, {"id": known["alex"]}, token=tokens.user(RIVERA))
    assert old["data"]["patient"] is None and old["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    new = await gql(client, PATIENT_NAME, {"id": known["alex"]}, token=tokens.user(OKAFOR))
    assert new["data"]["patient"] == {"givenName": "Alex"}
    # A new alert goes to the new team, with Alex's open ones; the old team sees none of them.
    report = {"code": "CONFUSION", "grade": "SEVERE", "onsetAt": (clock.now() - timedelta(hours=1)).isoformat()}
    sent = await gql(client, REPORT_SIDE_EFFECT, {"input": report}, token=tokens.user(ALEX))
    assert sent["data"]["reportSideEffect"]["result"]["__typename"] == "SideEffectReport"

    async def alex_alerts(viewer: str) -> list[str]:
        queue = await gql(client, ALERTS, {"status": ["OPEN"]}, token=tokens.user(viewer))
        return [
            edge["node"]["summary"]
            for edge in queue["data"]["alerts"]["edges"]
            if edge["node"]["patient"]["givenName"] == "Alex"
        ]

    assert "Confusion reported as SEVERE." in await alex_alerts(OKAFOR)
    assert await alex_alerts(RIVERA) == []
    with use_database(app.state.database):
        consent = await DataSharingConsent.get(patient__user__email=ALEX)
    assert consent.revoked_at is not None  # demo-ehr serves North only: its consent ended, kept
    assert f"{ADMIN}: moved from care team North to South; 1 data-sharing consent(s) ended" in await audit_details(
        app, "Patient"
    )
    out_of_reach = await gql(
        client, TRANSFER, {"patient": known["alex"], "team": known["teams"]["North"]}, token=tokens.user(OKAFOR)
    )
    assert out_of_reach["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# ------------------------------------------------------------------ EHR clients


async def grant(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await client.post(
        "/auth/token", data={"grant_type": "client_credentials", "client_id": "lab-ehr", "client_secret": secret}
    )


async def test_an_ehr_client_registered_rotated_and_deactivated_signs_in_only_with_its_current_secret(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    known = await ids(app)
    admin = tokens.user(ADMIN)
    north = [known["teams"]["North"]]
    body = await gql(
        client, REGISTER, {"clientId": "lab-ehr", "scopes": ["patients:read"], "teams": north}, token=admin
    )
    registration = body["data"]["registerApiClient"]["result"]
    assert registration["client"]["clientId"] == "lab-ehr" and registration["client"]["scopes"] == ["patients:read"]
    first_secret = registration["secret"]
    with use_database(app.state.database):
        stored = await ApiClient.get(client_id="lab-ehr")
    assert first_secret not in stored.secret_hash and stored.secret_hash.startswith("$argon2id$")
    signed_in = await grant(client, first_secret)
    assert signed_in.status_code == 200, signed_in.text
    first_token = signed_in.json()["access_token"]
    assert (await gql(client, "{ me { role } }", token=first_token))["data"] == {"me": {"role": "EHR_CLIENT"}}
    # Bad input is named; a taken client id is a Conflict.
    for variables, answer in (
        ({"clientId": "lab-ehr", "scopes": [], "teams": []}, ("Conflict", None)),
        ({"clientId": "X", "scopes": [], "teams": []}, ("ValidationError", "clientId")),
        ({"clientId": "lab-two", "scopes": ["everything"], "teams": []}, ("ValidationError", "scopes")),
    ):
        refused = (await gql(client, REGISTER, variables, token=admin))["data"]["registerApiClient"]["result"]
        assert (refused["__typename"], refused.get("field")) == answer
    # A rotation: the old secret and the tokens issued under it stop; the new one works.
    rotated = (await gql(client, ROTATE, token=admin))["data"]["rotateApiClientSecret"]["result"]
    second_secret = rotated["secret"]
    assert second_secret != first_secret
    assert (await grant(client, first_secret)).json()["error"] == "invalid_client"
    stale = await gql(client, "{ me { role } }", token=first_token, expect_status=401)
    assert stale["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    second_token = (await grant(client, second_secret)).json()["access_token"]
    assert (await gql(client, "{ me { role } }", token=second_token))["data"] == {"me": {"role": "EHR_CLIENT"}}
    # Deactivated: its tokens stop and it can no longer sign in.
    stopped = (await gql(client, DEACTIVATE_CLIENT, token=admin))["data"]["deactivateApiClient"]["result"]
    assert stopped == {
        "__typename": "ApiClient",
        "clientId": "lab-ehr",
        "active": False,
        "scopes": ["patients:read"],
        "careTeams": [{"name": "North"}],
    }
    await gql(client, "{ me { role } }", token=second_token, expect_status=401)
    assert (await grant(client, second_secret)).json()["error"] == "invalid_client"
    details = await audit_details(app, "ApiClient")
    assert details == [
        f"{ADMIN}: registered API client lab-ehr with scopes patients:read",
        f"{ADMIN}: rotated the secret of lab-ehr",
        f"{ADMIN}: deactivated API client lab-ehr",
    ]
    unknown = await gql(
        client,
        'mutation { rotateApiClientSecret(input: { clientId: "no-such-ehr" }) { result { __typename } } }',
        token=admin,
    )
    assert unknown["data"]["rotateApiClientSecret"]["result"]["__typename"] == "NotFound"


async def test_an_id_of_another_type_is_refused_naming_the_field_but_only_to_an_admin(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    known = await ids(app)
    wrong = {"user": known["alex"], "reason": "x"}  # a Patient id where a User id belongs
    by_admin = await gql(client, DEACTIVATE, wrong, token=tokens.user(ADMIN))
    assert by_admin["data"]["deactivateUser"]["result"] == {
        "__typename": "ValidationError", "message": "userId is not a User id", "field": "userId",
    }  # fmt: skip
    by_provider = await gql(client, DEACTIVATE, wrong, token=tokens.user(RIVERA))
    assert by_provider["data"] is None and by_provider["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_deactivated_invitees_link_no_longer_activates_the_account(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, clock: ManualClock
) -> None:
    with use_database(app.state.database):
        north = await CareTeam.get(name="North")
        invitee = NewUser(
            email="robin@example.test", role=Role.PATIENT, given_name="Robin", family_name="Quill",
            birth_date=date(1984, 3, 9), time_zone="America/New_York", care_team="North",
        )  # fmt: skip
        user = await create_user(invitee, password_hash=NO_PASSWORD, today=clock.now().date(), active=False)
        await Invitation.create(
            email=user.email, role=Role.PATIENT, user=user, care_team_id=north.id,
            invited_by_id=tokens.user_ids[ADMIN], token_hash=hash_token("the-emailed-token"),
            created_at=clock.now(), expires_at=clock.now() + timedelta(days=7),
        )  # fmt: skip
    body = await gql(
        client, DEACTIVATE, {"user": user_gid(user.id), "reason": "wrong person"}, token=tokens.user(ADMIN)
    )
    assert body["data"]["deactivateUser"]["result"]["active"] is False
    activation = await client.post(
        "/auth/activate", data={"token": "the-emailed-token", "password": "lantern harbour quiet"}
    )
    assert (activation.status_code, activation.json()["error"]) == (400, "invalid_grant")
    # Nor can it be reactivated: it never had a password of its own.
    again = await gql(client, REACTIVATE, {"user": user_gid(user.id)}, token=tokens.user(ADMIN))
    assert again["data"]["reactivateUser"]["result"]["field"] == "userId"


@pytest.mark.parametrize("store", ["in-process", "redis"])
async def test_a_user_deactivated_through_one_replica_is_stopped_on_another(
    settings: Settings, clock: ManualClock, store: str
) -> None:
    shared = replica_settings(settings, store)
    async with served(shared, clock) as replica_a, served(shared, clock) as replica_b:
        admin = (await sign_in(replica_a, ADMIN))["access_token"]
        access = (await sign_in(replica_b, OKAFOR))["access_token"]
        assert (await me(replica_b, access)).json()["data"] == {"me": {"role": "PROVIDER"}}  # cached on B
        with use_database(replica_a.app.state.database):
            okafor = await User.get(email=OKAFOR)
        async with socket(replica_b, access) as on_b:
            body = await gql(replica_a.http, DEACTIVATE, {"user": user_gid(okafor.id), "reason": "left"}, token=admin)
            assert body["data"]["deactivateUser"]["result"]["active"] is False
            assert (await closed(on_b)).code == 4401  # B heard the ended login through the event bus
        assert (await me(replica_b, access)).status_code == 401  # the account is inactive: no cache to wait for
