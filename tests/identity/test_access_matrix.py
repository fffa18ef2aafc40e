"""Who may do what: every query and mutation of the schema by every kind of viewer.

The matrix is checked against the schema itself, so a new root field without a rule here makes
this file fail. Each probe targets the demo patient Alex (care team North) and answers one
question: did the viewer get at Alex's data (or perform the operation)?

Viewers: Alex; Blair (another North patient); Dr Rivera (North); Dr Okafor (South); the admin;
the demo EHR client (North) with its scopes and Alex's consent, without the `patients:read`
scope, and after Alex revoked consent; and nobody (no token).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

import graphql
import httpx
import pytest
from strawberry import relay

from api.database import use_database
from api.settings import Settings
from models.alerts.alerts import Alert
from models.care.dosing_records import DosingSession
from models.care.plan_records import TreatmentPlan
from models.care.pre_dose import CHECKLIST
from models.identity.accounts import DataSharingConsent, Patient, Role
from models.identity.enrolment import Invitation
from models.identity.sign_in_records import SessionFamily
from models.messaging.messaging import MessageThread
from models.notifications.devices import Device, Platform
from schema import build_schema
from schema.pagination import CursorCodec
from tests.conftest import Tokens
from tests.support.graphql import gql

ROLES = (
    "alex",
    "blair",
    "provider_in_team",
    "provider_outside",
    "admin",
    "client",
    "client_without_scope",
    "client_without_consent",
    "anonymous",
)


@dataclass
class Probe:
    """One request about Alex; `allowed(body)` tells whether the viewer got what it asked for."""

    query: str
    allowed: Callable[[dict[str, Any]], bool]


def _data(body: dict[str, Any], field: str) -> Any:
    return (body.get("data") or {}).get(field)


def _patients_include_alex(body: dict[str, Any]) -> bool:
    edges = (_data(body, "patients") or {}).get("edges", [])
    return any(edge["node"]["givenName"] == "Alex" for edge in edges)


def _consent_result(field: str) -> Callable[[dict[str, Any]], bool]:
    def allowed(body: dict[str, Any]) -> bool:
        payload = _data(body, field)
        return bool(payload) and payload["result"]["__typename"] == "DataSharingConsent"

    return allowed


PROBES: dict[str, Probe] = {
    "me": Probe("{ me { role } }", lambda body: _data(body, "me") is not None),
    "node": Probe(
        "query($id: ID!) { node(id: $id) { ... on Patient { givenName } } }",
        lambda body: (_data(body, "node") or {}).get("givenName") == "Alex",
    ),
    "patient": Probe(
        "query($id: ID!) { patient(id: $id) { givenName } }",
        lambda body: (_data(body, "patient") or {}).get("givenName") == "Alex",
    ),
    "patients": Probe("{ patients(first: 50) { edges { node { givenName } } } }", _patients_include_alex),
    "auditEvents": Probe(
        "query($id: ID!) { auditEvents(patientId: $id, first: 5) { edges { node { id } } } }",
        lambda body: _data(body, "auditEvents") is not None,
    ),
    "fhirResource": Probe(
        'query($record: ID!) { fhirResource(resourceType: "MedicationAdministration", id: $record) }',
        lambda body: (_data(body, "fhirResource") or {}).get("resourceType") == "MedicationAdministration",
    ),
    "fhirPatientBundle": Probe(
        "query($id: ID!) { fhirPatientBundle(patientId: $id) }",
        lambda body: (_data(body, "fhirPatientBundle") or {}).get("type") == "collection",
    ),
    "changes": Probe(
        "{ changes(first: 20) { edges { node { resourceType resource } } } }",
        lambda body: any(
            edge["node"]["resourceType"] == "Patient" and edge["node"]["resource"]["name"][0]["given"] == ["Alex"]
            for edge in (_data(body, "changes") or {}).get("edges", [])
        ),
    ),
    "grantDataSharingConsent": Probe(
        'mutation { grantDataSharingConsent(input: { clientId: "demo-ehr" }) { result { __typename } } }',
        _consent_result("grantDataSharingConsent"),
    ),
    "revokeDataSharingConsent": Probe(
        'mutation { revokeDataSharingConsent(input: { clientId: "demo-ehr" }) { result { __typename } } }',
        _consent_result("revokeDataSharingConsent"),
    ),
}


def _authorised(field: str) -> Callable[[dict[str, Any]], bool]:
    """A mutation reached its business rules (it may still refuse on them, e.g. a Conflict)."""

    def allowed(body: dict[str, Any]) -> bool:
        codes = {error.get("extensions", {}).get("code") for error in body.get("errors") or []}
        payload = _data(body, field)
        if codes & {"FORBIDDEN", "UNAUTHENTICATED"} or not payload:
            return False
        return bool(payload["result"]["__typename"] != "NotFound")

    return allowed


def _mutation(field: str, input_fields: str, variables: str = "") -> Probe:
    signature = f"({variables})" if variables else ""
    query = f"mutation{signature} {{ {field}(input: {{ {input_fields} }}) {{ result {{ __typename }} }} }}"
    return Probe(query, _authorised(field))


def _alerts_include_alex(body: dict[str, Any]) -> bool:
    edges = (_data(body, "alerts") or {}).get("edges", [])
    return any((edge["node"]["patient"] or {}).get("givenName") == "Alex" for edge in edges)


NO = ", ".join(f'{{ code: "{code}", answer: false }}' for code in CHECKLIST)
BP = '{ systolic: 120, diastolic: 80, measuredAt: "2026-11-25T14:55:00Z" }'

PROBES.update(
    {
        "alerts": Probe(
            "{ alerts(status: [OPEN, ACKNOWLEDGED, RESOLVED]) { edges { node { patient { givenName } } } } }",
            _alerts_include_alex,
        ),
        "createTreatmentPlan": _mutation(
            "createTreatmentPlan",
            "patientId: $id, formulation: ORAL, setting: AT_HOME, dose: 100, plannedSessions: 4",
            "$id: ID!",
        ),
        "updateTreatmentPlan": _mutation("updateTreatmentPlan", 'planId: $plan, notes: "reviewed"', "$plan: ID!"),
        "holdTreatmentPlan": _mutation("holdTreatmentPlan", 'planId: $plan, reason: "review"', "$plan: ID!"),
        "resumeTreatmentPlan": _mutation("resumeTreatmentPlan", 'planId: $plan, reason: "review"', "$plan: ID!"),
        "endTreatmentPlan": _mutation(
            "endTreatmentPlan", 'planId: $plan, status: COMPLETED, reason: "course done"', "$plan: ID!"
        ),
        "startDosingSession": _mutation(
            "startDosingSession",
            f'doseMg: 50, monitorPresent: true, monitorName: "Sam", bloodPressure: {BP}, checklist: [{NO}]',
        ),
        "completeDosingSession": _mutation(
            "completeDosingSession",
            "sessionId: $session, dissociation: 3, sedation: 2, backToBaseline: true",
            "$session: ID!",
        ),
        "submitCheckIn": _mutation("submitCheckIn", 'recordedAt: "2026-11-25T14:00:00Z", pain: 4'),
        "reportNewMedication": _mutation("reportNewMedication", 'medicationClass: MAOI, note: "phenelzine"'),
        "reportSideEffect": _mutation(
            "reportSideEffect", 'code: "NAUSEA", grade: MILD, onsetAt: "2026-11-25T14:00:00Z"'
        ),
        "acknowledgeAlert": _mutation("acknowledgeAlert", "alertId: $alert", "$alert: ID!"),
        "instruments": Probe("{ instruments { code } }", lambda body: bool(_data(body, "instruments"))),
        "threads": Probe(
            "{ threads { edges { node { patient { givenName } } } } }",
            lambda body: any(
                ((edge["node"]["patient"] or {}).get("givenName") == "Alex")
                for edge in (_data(body, "threads") or {}).get("edges", [])
            ),
        ),
        "unreadMessageCount": Probe(
            "{ unreadMessageCount }", lambda body: _data(body, "unreadMessageCount") is not None
        ),
        "createMessageThread": _mutation("createMessageThread", 'subject: "hello", patientId: $id', "$id: ID!"),
        "sendMessage": _mutation("sendMessage", 'threadId: $thread, body: "hello"', "$thread: ID!"),
        "markThreadRead": _mutation("markThreadRead", "threadId: $thread", "$thread: ID!"),
        "logOpioidUse": _mutation(
            "logOpioidUse",
            'drug: "oxycodone", strength: 5, strengthUnit: "mg", quantity: 1, takenAt: "2026-11-25T14:00:00Z"',
        ),
        "voidDosingSession": _mutation("voidDosingSession", 'sessionId: $session, reason: "test"', "$session: ID!"),
        "submitSurveyResponse": _mutation(
            "submitSurveyResponse", 'instrument: "PAIN-NRS", answers: [{ linkId: "1", value: 4 }]'
        ),
        "resolveAlert": _mutation("resolveAlert", 'alertId: $alert, note: "done"', "$alert: ID!"),
        "registerDevice": _mutation(
            "registerDevice", 'platform: IOS, pushToken: "0a1b2c3d", appVersion: "2.4.1", locale: "en-US"'
        ),
        "unregisterDevice": _mutation("unregisterDevice", "deviceId: $device", "$device: ID!"),
        "recordClinicSession": _mutation(
            "recordClinicSession",
            'patientId: $id, doseMg: 100, startedAt: "2026-11-25T12:00:00Z", endedAt: "2026-11-25T14:30:00Z", '
            'monitoredBy: "Jo Lee, RN", sedation: false, dissociation: true, respiratoryDepression: false, '
            'readyToLeaveAt: "2026-11-25T14:30:00Z", '
            'readings: [{ phase: PRE, systolic: 120, diastolic: 80, measuredAt: "2026-11-25T11:50:00Z" }]',
            "$id: ID!",
        ),
        "invitePatient": _mutation(
            "invitePatient",
            'email: "new.patient@example.test", givenName: "Robin", familyName: "Quill", birthDate: "1984-03-09", '
            'timeZone: "America/New_York", careTeamId: $team',
            "$team: ID!",
        ),
        "inviteProvider": _mutation(
            "inviteProvider",
            'email: "dr.new@example.test", givenName: "Noor", familyName: "Haddad", credentials: "MD", '
            "careTeamIds: [$team]",
            "$team: ID!",
        ),
        "resendInvitation": _mutation("resendInvitation", "invitationId: $invitation", "$invitation: ID!"),
        "revokeInvitation": _mutation("revokeInvitation", "invitationId: $invitation", "$invitation: ID!"),
        "myLogins": Probe("{ myLogins { id } }", lambda body: _data(body, "myLogins") is not None),
        "endLogin": _mutation("endLogin", "loginId: $login", "$login: ID!"),
        "endOtherLogins": Probe(
            "mutation { endOtherLogins { result { __typename } } }",
            lambda body: (
                bool(_data(body, "endOtherLogins"))
                and _data(body, "endOtherLogins")["result"]["__typename"] == "EndedLogins"
            ),
        ),
        "changePassword": _mutation(
            "changePassword", 'currentPassword: "ketafollow-demo", newPassword: "lantern harbour quiet"'
        ),
    }
)

EVERYONE = frozenset(ROLES) - {"anonymous"}
PATIENTS = frozenset({"alex", "blair"})
TREATING_PROVIDER = frozenset({"provider_in_team"})
SEES_ALEX = frozenset({"alex", "provider_in_team", "admin", "client"})

# operation -> the viewers allowed; every other viewer is refused.
MATRIX: dict[str, frozenset[str]] = {
    "me": EVERYONE,
    "node": SEES_ALEX,
    "patient": SEES_ALEX,
    "patients": SEES_ALEX,
    "auditEvents": frozenset({"alex", "admin"}),
    # A clinical record as FHIR: the chart's readers (an admin sees identities, not care).
    "fhirResource": frozenset({"alex", "provider_in_team", "client"}),
    "fhirPatientBundle": frozenset({"alex", "provider_in_team", "client"}),
    # The change feed is for EHR clients: scopes, care team and consent (a revoked one stops it).
    "changes": frozenset({"client"}),
    # A patient grants or revokes sharing of their own record only (Blair acts on Blair's).
    "grantDataSharingConsent": PATIENTS,
    "revokeDataSharingConsent": PATIENTS,
    # The alert queue and the plan belong to the patient's care team.
    "alerts": TREATING_PROVIDER,
    "createTreatmentPlan": TREATING_PROVIDER,
    "updateTreatmentPlan": TREATING_PROVIDER,
    "holdTreatmentPlan": TREATING_PROVIDER,
    "resumeTreatmentPlan": TREATING_PROVIDER,
    "endTreatmentPlan": TREATING_PROVIDER,
    "voidDosingSession": TREATING_PROVIDER,
    # A session given in clinic is recorded by the patient's care team (CLINICAL.md §1).
    "recordClinicSession": TREATING_PROVIDER,
    "acknowledgeAlert": TREATING_PROVIDER,
    "resolveAlert": TREATING_PROVIDER,
    # Patients log their own care (each acts on their own record only).
    "startDosingSession": PATIENTS,
    "submitCheckIn": PATIENTS,
    "reportSideEffect": PATIENTS,
    "submitSurveyResponse": PATIENTS,
    "logOpioidUse": PATIENTS,
    "reportNewMedication": PATIENTS,
    # Alex's thread: Alex and Alex's care team, nobody else.
    "threads": frozenset({"alex", "provider_in_team"}),
    "sendMessage": frozenset({"alex", "provider_in_team"}),
    "markThreadRead": frozenset({"alex", "provider_in_team"}),
    # Everyone's own count (0 for those who take part in no thread): no one else's data.
    "unreadMessageCount": EVERYONE,
    # A patient opens a thread with their own team (Blair: hers); a provider with a team patient.
    "createMessageThread": frozenset({"alex", "blair", "provider_in_team"}),
    # Instrument definitions are not patient data: every signed-in viewer may read them.
    "instruments": EVERYONE,
    # Alex's session: Blair cannot complete it (it looks missing to her).
    "completeDosingSession": frozenset({"alex"}),
    # Pushes go to the people who use the apps: patients and providers, each on their own devices.
    "registerDevice": frozenset({"alex", "blair", "provider_in_team", "provider_outside"}),
    "unregisterDevice": frozenset({"alex"}),
    # Enrolment (PRODUCT.md capability 11): admins invite anyone; providers invite patients into
    # their own teams and manage those invitations; a team out of reach is NotFound.
    "invitePatient": frozenset({"admin", "provider_in_team"}),
    "inviteProvider": frozenset({"admin"}),
    "resendInvitation": frozenset({"admin", "provider_in_team"}),
    "revokeInvitation": frozenset({"admin", "provider_in_team"}),
    # Every person sees and ends their own logins (Alex's looks missing to others); clients have none.
    "myLogins": frozenset({"alex", "blair", "provider_in_team", "provider_outside", "admin"}),
    "endLogin": frozenset({"alex"}),
    "endOtherLogins": frozenset({"alex", "blair", "provider_in_team", "provider_outside", "admin"}),
    # Every person changes their own password; EHR clients have none.
    "changePassword": frozenset({"alex", "blair", "provider_in_team", "provider_outside", "admin"}),
}

# A second factor (models.identity.totp): every person turns on and off their own; EHR clients have none.
PROBES.update(
    {
        "startTotpEnrollment": Probe(
            "mutation { startTotpEnrollment { result { __typename } } }",
            lambda body: (
                bool(_data(body, "startTotpEnrollment"))
                and _data(body, "startTotpEnrollment")["result"]["__typename"] == "TotpEnrollment"
            ),
        ),
        "confirmTotpEnrollment": _mutation("confirmTotpEnrollment", 'code: "000000"'),
        "disableTotp": _mutation("disableTotp", 'code: "000000"'),
    }
)
MATRIX.update(
    {
        "startTotpEnrollment": frozenset({"alex", "blair", "provider_in_team", "provider_outside", "admin"}),
        "confirmTotpEnrollment": frozenset({"alex", "blair", "provider_in_team", "provider_outside", "admin"}),
        "disableTotp": frozenset({"alex", "blair", "provider_in_team", "provider_outside", "admin"}),
    }
)


# Administration (PRODUCT.md capability 11): admins only; every other viewer is FORBIDDEN.
ADMINS = frozenset({"admin"})
PROBES.update(
    {
        "users": Probe(
            '{ users(first: 50, search: "alex") { edges { node { email patient { id } } } } }',
            lambda body: any(
                edge["node"]["email"] == "alex@demo.test" for edge in (_data(body, "users") or {}).get("edges", [])
            ),
        ),
        "deactivateUser": _mutation("deactivateUser", 'userId: $user, reason: "left the clinic"', "$user: ID!"),
        "reactivateUser": _mutation("reactivateUser", "userId: $user", "$user: ID!"),
        "createCareTeam": _mutation("createCareTeam", 'name: "East"'),
        "transferPatient": _mutation(
            "transferPatient", "patientId: $id, careTeamId: $otherTeam", "$id: ID!, $otherTeam: ID!"
        ),
        "registerApiClient": _mutation(
            "registerApiClient",
            'clientId: "new-ehr", name: "New EHR", scopes: ["patients:read"], careTeamIds: [$team]',
            "$team: ID!",
        ),
        "rotateApiClientSecret": _mutation("rotateApiClientSecret", 'clientId: "demo-ehr"'),
        "deactivateApiClient": _mutation("deactivateApiClient", 'clientId: "demo-ehr"'),
    }
)
MATRIX.update(
    {
        "users": ADMINS,
        "deactivateUser": ADMINS,
        "reactivateUser": ADMINS,
        "createCareTeam": ADMINS,
        "transferPatient": ADMINS,
        "registerApiClient": ADMINS,
        "rotateApiClientSecret": ADMINS,
        "deactivateApiClient": ADMINS,
    }
)


def test_every_root_field_of_the_schema_has_a_rule() -> None:
    schema = build_schema()
    fields = {field.name for field in schema.schema_converter.type_map["Query"].definition.fields}  # type: ignore[union-attr]
    fields |= {field.name for field in schema.schema_converter.type_map["Mutation"].definition.fields}  # type: ignore[union-attr]
    camel = {schema.config.name_converter.apply_naming_config(name) for name in fields}
    assert camel == set(MATRIX), "add a rule (and a probe) for every new query or mutation"
    assert set(MATRIX) == set(PROBES)


async def _token_for(role: str, tokens: Tokens, app: Any) -> str | None:
    if role == "anonymous":
        return None
    if role == "client_without_consent":
        with use_database(app.state.database):
            await DataSharingConsent.filter(patient__user__email="alex@demo.test").update(revoked_at=tokens.clock.now())
    users = {
        "alex": "alex@demo.test",
        "blair": "blair@demo.test",
        "provider_in_team": "dr.rivera@demo.test",
        "provider_outside": "dr.okafor@demo.test",
        "admin": "admin@demo.test",
    }
    if role in users:
        return tokens.user(users[role])
    scopes = frozenset({"clinical:read", "changes:read"}) if role == "client_without_scope" else None
    return tokens.client("demo-ehr", scopes) if scopes else tokens.client("demo-ehr")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", sorted(MATRIX))
async def test_access(client: httpx.AsyncClient, tokens: Tokens, app: Any, operation: str, role: str) -> None:
    with use_database(app.state.database):
        alex = await Patient.get(user__email="alex@demo.test")
        south = await Patient.get(user__email="casey@demo.test").values_list("care_team_id", flat=True)
        plan = await TreatmentPlan.get(patient=alex)
        session = await DosingSession.filter(patient=alex).order_by("-started_at").first()
        alert = await Alert.get(patient=alex)
        thread = await MessageThread.get(patient=alex)
        assert session is not None
        device = await Device.create(
            user_id=alex.user_id, platform=Platform.IOS, push_token="ab" * 32, app_version="2.4.1", locale="en-US",
            last_seen_at=tokens.clock.now(),
        )  # fmt: skip
        login = await SessionFamily.create(
            user_id=alex.user_id, created_at=tokens.clock.now(), last_used_at=tokens.clock.now(),
            expires_at=tokens.clock.now() + timedelta(days=1),
        )  # fmt: skip
        invitation = await Invitation.create(
            email="invited@example.test", role=Role.PATIENT, care_team_id=alex.care_team_id,
            invited_by_id=tokens.user_ids["admin@demo.test"], token_hash="0" * 64, created_at=tokens.clock.now(),
            expires_at=tokens.clock.now() + timedelta(days=7),
        )  # fmt: skip
    variables = {
        "id": str(relay.GlobalID("Patient", str(alex.id))),
        "plan": str(relay.GlobalID("TreatmentPlan", str(plan.id))),
        "session": str(relay.GlobalID("DosingSession", str(session.id))),
        "alert": str(relay.GlobalID("Alert", str(alert.id))),
        "thread": str(relay.GlobalID("MessageThread", str(thread.id))),
        "record": str(session.id),  # FHIR ids are the records' own
        "device": str(relay.GlobalID("Device", str(device.id))),
        "team": str(relay.GlobalID("CareTeam", str(alex.care_team_id))),
        "invitation": str(relay.GlobalID("Invitation", str(invitation.id))),
        "login": str(relay.GlobalID("Login", str(login.id))),
        "user": str(relay.GlobalID("User", str(alex.user_id))),  # type: ignore[attr-defined]
        "otherTeam": str(relay.GlobalID("CareTeam", str(south))),
    }
    token = await _token_for(role, tokens, app)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    probe = PROBES[operation]
    used = {name: value for name, value in variables.items() if f"${name}" in probe.query}
    response = await client.post("/graphql", json={"query": probe.query, "variables": used}, headers=headers)
    assert response.status_code in {200, 401}, response.text
    body = response.json()
    for error in body.get("errors") or []:
        assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", body
    expected = role in MATRIX[operation]
    assert probe.allowed(body) is expected, f"{role} {'should' if expected else 'must not'} {operation}: {body}"
    if role == "anonymous":
        assert response.status_code == 401


async def test_a_refused_patient_looks_exactly_like_a_missing_one(
    client: httpx.AsyncClient, tokens: Tokens, app: Any
) -> None:
    with use_database(app.state.database):
        casey = await Patient.get(user__email="casey@demo.test")
    headers = {"Authorization": f"Bearer {tokens.user('dr.rivera@demo.test')}"}
    query = "query($id: ID!) { patient(id: $id) { givenName } node(id: $id) { id } }"
    existing = str(relay.GlobalID("Patient", str(casey.id)))
    missing = str(relay.GlobalID("Patient", "00000000-0000-4000-8000-000000000000"))
    answers = []
    for patient_id in (existing, missing):
        response = await client.post(
            "/graphql", json={"query": query, "variables": {"id": patient_id}}, headers=headers
        )
        body = response.json()
        for error in body["errors"]:
            error.pop("locations", None)
        answers.append((response.status_code, body))
    assert answers[0] == answers[1]
    assert answers[0][1]["errors"][0]["extensions"] == {"code": "NOT_FOUND"}


# --- arguments and cursors: what a list is filtered, ordered and paged by ------------------------
#
# Filtering or ordering a list by a property reads that property as surely as selecting it does,
# and so does a cursor that carries it: an admin ordering patients by alert urgency, or reading
# the urgency out of a cursor, learns who has an urgent alert. Every argument of the schema has a
# rule here (a new one makes this file fail), and every connection's cursors are checked for every
# kind of viewer, EHR clients with each combination of scopes included.

SCOPES = ("patients:read", "clinical:read", "changes:read")
CLIENTS = {
    f"client({'+'.join(scope.split(':')[0] for scope in combination) or 'no scope'})": frozenset(combination)
    for size in range(len(SCOPES), -1, -1)
    for combination in itertools.combinations(SCOPES, size)
}
VIEWERS = (
    "alex",
    "blair",
    "provider_in_team",
    "provider_outside",
    "admin",
    *CLIENTS,
    "client_without_consent",
    "anonymous",
)
SIGNED_IN = frozenset(VIEWERS) - {"anonymous"}
# Clinical data: patients (their own), providers (their teams'), EHR clients granted clinical:read.
READS_CLINICAL = frozenset({"alex", "blair", "provider_in_team", "provider_outside", "client_without_consent"}) | {
    name for name, scopes in CLIENTS.items() if "clinical:read" in scopes
}
LISTS_PATIENTS = frozenset(
    {"alex", "blair", "provider_in_team", "provider_outside", "admin", "client_without_consent"}
) | {name for name, scopes in CLIENTS.items() if "patients:read" in scopes}


class Reads(Enum):
    """What an argument reads, so who may use it."""

    PAGE = "how many rows: nothing"
    CURSOR = "a sealed position: nothing (the cursor matrix below)"
    RECORD = "which record: the field's own rule for it (MATRIX above)"
    WITHIN = "narrows rows that are all as sensitive as the field: the field's own rule"
    IDENTITY = "who patients are: whoever may list them"
    CLINICAL = "their care: only viewers who may see clinical data"
    # Proved over a socket in tests/messaging/test_live_resume.py: other patients' and teams' events are
    # never replayed, and each replayed event is checked and audited like a live one.
    RESUME = "from when a stream resumes: only the events the field's own rule lets the viewer see"


ARGUMENTS: dict[str, Reads] = {
    "CareTeam.patients(first)": Reads.PAGE,
    "CareTeam.patients(after)": Reads.CURSOR,
    "MessageThread.messages(first)": Reads.PAGE,
    "MessageThread.messages(after)": Reads.CURSOR,
    "MessageThread.missedMessages(afterNumber)": Reads.WITHIN,
    "OpioidUse.daily(days)": Reads.WITHIN,
    "Patient.dosingSessions(first)": Reads.PAGE,
    "Patient.dosingSessions(after)": Reads.CURSOR,
    "Patient.checkIns(first)": Reads.PAGE,
    "Patient.checkIns(after)": Reads.CURSOR,
    "Patient.sideEffectReports(first)": Reads.PAGE,
    "Patient.sideEffectReports(after)": Reads.CURSOR,
    "Patient.surveyAssignments(status)": Reads.WITHIN,
    "Patient.surveyAssignments(first)": Reads.PAGE,
    "Patient.surveyAssignments(after)": Reads.CURSOR,
    "Patient.surveyResponses(first)": Reads.PAGE,
    "Patient.surveyResponses(after)": Reads.CURSOR,
    "Query.node(id)": Reads.RECORD,
    "Query.patient(id)": Reads.RECORD,
    "Query.patients(first)": Reads.PAGE,
    "Query.patients(after)": Reads.CURSOR,
    "Query.patients(filter.careTeamId)": Reads.IDENTITY,
    "Query.patients(filter.hasOpenAlerts)": Reads.CLINICAL,
    "Query.patients(orderBy: NAME)": Reads.IDENTITY,
    "Query.patients(orderBy: URGENCY)": Reads.CLINICAL,
    "Query.alerts(status)": Reads.WITHIN,
    "Query.alerts(first)": Reads.PAGE,
    "Query.alerts(after)": Reads.CURSOR,
    "Query.threads(first)": Reads.PAGE,
    "Query.threads(after)": Reads.CURSOR,
    "Query.auditEvents(patientId)": Reads.RECORD,
    "Query.auditEvents(first)": Reads.PAGE,
    "Query.auditEvents(after)": Reads.CURSOR,
    "Query.fhirResource(resourceType)": Reads.RECORD,
    "Query.fhirResource(id)": Reads.RECORD,
    "Query.fhirPatientBundle(patientId)": Reads.RECORD,
    "Query.changes(after)": Reads.CURSOR,
    "Query.changes(first)": Reads.PAGE,
    "Query.changes(resourceTypes)": Reads.WITHIN,
    "Subscription.messageAdded(threadId)": Reads.RECORD,
    "Subscription.messageAdded(since)": Reads.RESUME,
    "Subscription.alertRaised(since)": Reads.RESUME,
    "Subscription.surveyAvailable(since)": Reads.RESUME,
}
# Administration: the list of accounts is the admins' (its field's rule); its arguments narrow it.
ARGUMENTS.update(
    {
        "Query.users(first)": Reads.PAGE,
        "Query.users(after)": Reads.CURSOR,
        "Query.users(role: PATIENT)": Reads.WITHIN,
        "Query.users(role: PROVIDER)": Reads.WITHIN,
        "Query.users(role: ADMIN)": Reads.WITHIN,
        "Query.users(search)": Reads.WITHIN,
    }
)


def _arguments_of_the_schema() -> set[str]:
    """Every argument of every field but the mutations' (their `input` is MATRIX's): an input
    object by its fields, an enum by its values (each value may read something else)."""
    schema = build_schema()._schema
    found: set[str] = set()
    for type_name, graphql_type in schema.type_map.items():
        if type_name.startswith("__") or type_name == "Mutation":
            continue
        if not isinstance(graphql_type, graphql.GraphQLObjectType | graphql.GraphQLInterfaceType):
            continue
        for field_name, field in graphql_type.fields.items():
            for name, argument in field.args.items():
                kind = graphql.get_nullable_type(argument.type)
                where = f"{type_name}.{field_name}"
                if isinstance(kind, graphql.GraphQLInputObjectType):
                    found |= {f"{where}({name}.{inner})" for inner in kind.fields}
                elif isinstance(kind, graphql.GraphQLEnumType):
                    found |= {f"{where}({name}: {value})" for value in kind.values}
                else:
                    found.add(f"{where}({name})")
    return found


def test_every_argument_of_the_schema_has_a_rule() -> None:
    assert _arguments_of_the_schema() == set(ARGUMENTS), "say what every new argument reads"
    probed = {name for name, reads in ARGUMENTS.items() if reads in (Reads.IDENTITY, Reads.CLINICAL)}
    assert probed == set(ARGUMENT_PROBES)
    assert {name for name, reads in ARGUMENTS.items() if reads is Reads.WITHIN} == set(WITHIN_PROBES)
    assert {name.split("(")[0] for name, reads in ARGUMENTS.items() if reads is Reads.CURSOR} == set(PAGERS)


PATIENT_NAMES = "edges { node { givenName } }"
# Each query of a patient list that uses the argument (both values of a boolean filter).
ARGUMENT_PROBES: dict[str, tuple[str, ...]] = {
    "Query.patients(filter.careTeamId)": (
        f"query($team: ID!) {{ patients(filter: {{ careTeamId: $team }}) {{ {PATIENT_NAMES} }} }}",
    ),
    "Query.patients(filter.hasOpenAlerts)": (
        f"{{ patients(filter: {{ hasOpenAlerts: true }}) {{ {PATIENT_NAMES} }} }}",
        f"{{ patients(filter: {{ hasOpenAlerts: false }}, orderBy: NAME) {{ {PATIENT_NAMES} }} }}",
    ),
    "Query.patients(orderBy: NAME)": (f"{{ patients(orderBy: NAME) {{ {PATIENT_NAMES} }} }}",),
    "Query.patients(orderBy: URGENCY)": (f"{{ patients(orderBy: URGENCY) {{ {PATIENT_NAMES} }} }}",),
}
# The argument each refusal names (in its message and in `extensions.argument`).
REFUSAL_NAMES = {
    "Query.patients(filter.hasOpenAlerts)": "filter.hasOpenAlerts",
    "Query.patients(orderBy: URGENCY)": "orderBy",
}

# The field without the argument, and with it: the argument must not change who gets an answer.
WITHIN_PROBES: dict[str, tuple[str, str]] = {
    "Query.alerts(status)": (
        "{ alerts { edges { node { id } } } }",
        "{ alerts(status: [OPEN]) { edges { node { id } } } }",
    ),
    "Patient.surveyAssignments(status)": (
        "query($id: ID!) { patient(id: $id) { surveyAssignments { edges { node { id } } } } }",
        "query($id: ID!) { patient(id: $id) {"
        " surveyAssignments(status: [AVAILABLE, COMPLETED]) { edges { node { id } } } } }",
    ),
    "Query.changes(resourceTypes)": (
        "{ changes { edges { node { sequence } } } }",
        "{ changes(resourceTypes: [Patient, Observation]) { edges { node { sequence } } } }",
    ),
    "MessageThread.missedMessages(afterNumber)": (
        "query($thread: ID!) { node(id: $thread) { ... on MessageThread { subject } } }",
        "query($thread: ID!) { node(id: $thread) {"
        " ... on MessageThread { missedMessages(afterNumber: 0) { body } } } }",
    ),
    "OpioidUse.daily(days)": (
        "query($id: ID!) { patient(id: $id) { opioidUse { currentMmePerDay } } }",
        "query($id: ID!) { patient(id: $id) { opioidUse { daily(days: 7) { mme } } } }",
    ),
}

# Administration: narrowing the admins' list of accounts answers whom the list answers.
WITHIN_PROBES.update(
    {
        f"Query.users({argument})": (
            "{ users { edges { node { id } } } }",
            f"{{ users({narrowed}) {{ edges {{ node {{ id }} }} }} }}",
        )
        for argument, narrowed in (
            ("role: PATIENT", "role: PATIENT"),
            ("role: PROVIDER", "role: PROVIDER"),
            ("role: ADMIN", "role: ADMIN"),
            ("search", 'search: "dr."'),
        )
    }
)


async def _viewer_token(viewer: str, tokens: Tokens, app: Any) -> str | None:
    if viewer in CLIENTS:
        return tokens.client("demo-ehr", CLIENTS[viewer])
    return await _token_for(viewer, tokens, app)


async def _ask(client: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    used = {name: value for name, value in variables.items() if f"${name}" in query}
    response = await client.post("/graphql", json={"query": query, "variables": used}, headers=headers)
    assert response.status_code == (401 if token is None else 200), response.text
    body: dict[str, Any] = response.json()
    for error in body.get("errors") or []:
        assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", body
    return body


async def _demo_ids(app: Any) -> dict[str, str]:
    with use_database(app.state.database):
        alex = await Patient.get(user__email="alex@demo.test").prefetch_related("care_team")
        thread = await MessageThread.get(patient=alex)
    return {
        "id": str(relay.GlobalID("Patient", str(alex.id))),
        "thread": str(relay.GlobalID("MessageThread", str(thread.id))),
        "team": str(relay.GlobalID("CareTeam", str(alex.care_team.id))),
    }


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("argument", sorted(ARGUMENT_PROBES))
async def test_a_list_is_filtered_and_ordered_only_by_what_the_viewer_may_read(
    client: httpx.AsyncClient, tokens: Tokens, app: Any, argument: str, viewer: str
) -> None:
    ids = await _demo_ids(app)
    token = await _viewer_token(viewer, tokens, app)
    may = viewer in SIGNED_IN and (ARGUMENTS[argument] is Reads.IDENTITY or viewer in READS_CLINICAL)
    for query in ARGUMENT_PROBES[argument]:
        body = await _ask(client, query, ids, token)
        if viewer == "anonymous":
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        elif may:
            assert "errors" not in body, f"{viewer} may use {argument}: {body}"
            assert isinstance(body["data"]["patients"]["edges"], list)
        else:
            named = REFUSAL_NAMES[argument]
            assert body["data"] is None, f"{viewer} must not use {argument}: {body}"
            [error] = body["errors"]
            assert error["extensions"] == {"code": "FORBIDDEN", "argument": named}
            assert error["message"].startswith(f"{named}") and "clinical data you may not see" in error["message"]


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("argument", sorted(WITHIN_PROBES))
async def test_an_argument_within_a_field_answers_whom_the_field_answers(
    client: httpx.AsyncClient, tokens: Tokens, app: Any, argument: str, viewer: str
) -> None:
    ids = await _demo_ids(app)
    token = await _viewer_token(viewer, tokens, app)
    without, with_argument = [await _ask(client, query, ids, token) for query in WITHIN_PROBES[argument]]
    assert _access(without) == _access(with_argument), f"{viewer}, {argument}"


def _access(body: dict[str, Any]) -> tuple[frozenset[str], bool]:
    """Who got what, whatever the rows: the error codes, and whether the innermost object asked for came back."""
    codes = frozenset(error["extensions"]["code"] for error in body.get("errors") or [])
    value: Any = body.get("data")
    while isinstance(value, dict) and len(value) == 1 and not {"edges", "currentMmePerDay", "daily"} & set(value):
        value = next(iter(value.values()))
    return codes, value is not None


async def test_a_viewer_who_may_not_see_clinical_data_gets_patients_by_name_and_the_others_by_urgency(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    query = "query($order: PatientOrder) { patients(orderBy: $order) { edges { node { givenName } } } }"

    async def names(token: str, order: str | None) -> list[str]:
        body = await gql(client, query, {"order": order}, token=token)
        return [edge["node"]["givenName"] for edge in body["data"]["patients"]["edges"]]

    admin = tokens.user("admin@demo.test")
    # Brooks, Chen, Morgan, Nguyen: by family name; by urgency Casey (HIGH, due first), Blair, Devon.
    assert await names(admin, None) == await names(admin, "NAME") == ["Devon", "Blair", "Alex", "Casey"]
    provider = tokens.user("dr.okafor@demo.test")
    assert await names(provider, None) == await names(provider, "URGENCY") == ["Casey", "Devon"]
    assert await names(provider, "NAME") == ["Devon", "Casey"]


# --- cursors ---------------------------------------------------------------------------------------


@dataclass
class Pager:
    """One connection: a query with `$after`, where its connection is in the answer, the names of
    its list (to forge a cursor with another key), and the viewers who must get rows of it.
    `stable`: reading it adds no row before the first (reading the audit log is audited)."""

    query: str
    path: tuple[str, ...]
    kinds: tuple[str, ...]
    readers: frozenset[str]
    stable: bool = True


def _page(field: str, node: str, arguments: str = "") -> str:
    return (
        f"{field}({arguments}first: 1, after: $after) {{ edges {{ cursor node {{ {node} }} }} "
        "pageInfo { startCursor endCursor hasNextPage } }"
    )


def _query(selection: str) -> str:
    variables = {"after": "String", "id": "ID!", "thread": "ID!", "team": "ID!"}
    declared = ", ".join(f"${name}: {kind}" for name, kind in variables.items() if f"${name}" in selection)
    return f"query({declared}) {{ {selection} }}"


SEES_ALEXS_CARE = frozenset({"alex", "provider_in_team"}) | {
    name for name, scopes in CLIENTS.items() if {"patients:read", "clinical:read"} <= scopes
}
PATIENT = "givenName familyName birthDate"
ALL_STATUSES = "status: [OPEN, ACKNOWLEDGED, RESOLVED], "
PAGERS: dict[str, Pager] = {
    "Query.patients": Pager(_query(_page("patients", PATIENT)), ("patients",), ("patients", "panel"), LISTS_PATIENTS),
    "CareTeam.patients": Pager(
        _query(f"node(id: $team) {{ ... on CareTeam {{ {_page('patients', PATIENT)} }} }}"),
        ("node", "patients"),
        ("patients",),
        LISTS_PATIENTS - {"provider_outside"},
    ),
    "Query.alerts": Pager(
        _query(_page("alerts", "id severity respondBy summary", ALL_STATUSES)),
        ("alerts",),
        ("alerts",),
        frozenset({"provider_in_team", "provider_outside"}),
    ),
    "Query.threads": Pager(
        _query(_page("threads", "id subject")),
        ("threads",),
        ("threads",),
        frozenset({"alex", "blair", "provider_in_team"}),
    ),
    "MessageThread.messages": Pager(
        _query(f"node(id: $thread) {{ ... on MessageThread {{ {_page('messages', 'id number body sentAt')} }} }}"),
        ("node", "messages"),
        ("messages",),
        frozenset({"alex", "provider_in_team"}),
    ),
    "Query.auditEvents": Pager(
        _query(_page("auditEvents", "id occurredAt actor resourceType", "patientId: $id, ")),
        ("auditEvents",),
        ("audit",),
        frozenset({"alex", "admin"}),
        stable=False,
    ),
    "Query.changes": Pager(
        _query(_page("changes", "sequence resourceType resourceId occurredAt")),
        ("changes",),
        ("changes",),
        frozenset({"client(patients+clinical+changes)", "client(patients+changes)", "client_without_consent"}),
    ),
    **{
        f"Patient.{field}": Pager(
            _query(f"patient(id: $id) {{ {_page(field, node)} }}"), ("patient", field), (kind,), SEES_ALEXS_CARE
        )
        for field, node, kind in (
            ("dosingSessions", "id startedAt doseMg", "sessions"),
            ("checkIns", "id recordedAt pain", "checkins"),
            ("sideEffectReports", "id code onsetAt", "side_effects"),
            ("surveyAssignments", "id instrument availableAt", "assignments"),
            ("surveyResponses", "id submittedAt", "responses"),
        )
    },
}
# Administration: the admins' list of accounts.
PAGERS["Query.users"] = Pager(_query(_page("users", "id email role")), ("users",), ("users",), frozenset({"admin"}))
REFUSED_CURSOR = {"code": "BAD_USER_INPUT"}


def _connection(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    value: Any = body.get("data")
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else None


def _tells(node: Any) -> set[str]:
    """What a readable cursor could give away about its row: every value of it the viewer sees,
    the UUID inside a global id, the day of a time."""
    found: set[str] = set()
    for value in node.values() if isinstance(node, dict) else [node]:
        if isinstance(value, dict):
            found |= _tells(value)
        elif value is not None and len(str(value)) >= 3:
            text = str(value)
            found.add(text)
            with contextlib.suppress(ValueError, UnicodeDecodeError, binascii.Error, relay.GlobalIDValueError):
                found.add(relay.GlobalID.from_id(text).node_id)
            if len(text) >= 19 and text[4] == "-" and text[10] == "T":
                found.add(text[:10])
    return {tell for tell in found if len(tell) >= 3}


def _unpadded_b64decode(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("connection", sorted(PAGERS))
async def test_every_cursor_is_sealed_and_only_its_own_list_opens_it(
    client: httpx.AsyncClient, tokens: Tokens, app: Any, settings: Settings, connection: str, viewer: str
) -> None:
    pager = PAGERS[connection]
    ids = await _demo_ids(app)
    token = await _viewer_token(viewer, tokens, app)

    async def page(after: str | None) -> dict[str, Any]:
        return await _ask(client, pager.query, {**ids, "after": after}, token)

    first = _connection(await page(None), pager.path)
    rows = (first or {}).get("edges") or []
    assert bool(rows) or viewer not in pager.readers, f"{viewer} should page {connection}"
    if not rows:
        return
    cursor, info = rows[0]["cursor"], first["pageInfo"]  # type: ignore[index]
    # It carries nothing: not the old readable layout, none of the row's values.
    for sealed in {cursor, info["startCursor"], info["endCursor"]}:
        opened = _unpadded_b64decode(sealed)
        assert not opened.startswith(b"["), f"{connection} cursor is readable"
        text = opened.decode("latin-1")
        assert not [tell for tell in _tells(rows[0]["node"]) if tell in text], f"{connection} cursor tells its row"
    # Not even whether two cursors are at the same place; yet both page on the same way.
    again = _connection(await page(None), pager.path)
    assert again is not None and again["edges"][0]["cursor"] != cursor
    second = _connection(await page(cursor), pager.path)
    assert second is not None and [e["node"] for e in second["edges"]] != [e["node"] for e in rows]
    if pager.stable:
        assert again["edges"][0]["node"] == rows[0]["node"]
        second_again = _connection(await page(again["edges"][0]["cursor"]), pager.path)
        assert second_again is not None
        assert [e["node"] for e in second_again["edges"]] == [e["node"] for e in second["edges"]]
    # Anything else is refused: edited, written in the old readable layout, sealed for another
    # list, or sealed for this list with another key.
    edited = cursor[:20] + ("A" if cursor[20] != "A" else "B") + cursor[21:]
    readable = base64.urlsafe_b64encode(json.dumps([pager.kinds[0], "0", "x", "y"]).encode()).decode()
    forged = [
        edited,
        readable,
        CursorCodec([settings.secret_key]).seal("another list", ["0", "x", "y"]),
        *(CursorCodec(["a key that is not the server's, long enough"]).seal(kind, ["0"]) for kind in pager.kinds),
    ]
    for bad in forged:
        body = await page(bad)
        assert body["errors"][0]["extensions"] == REFUSED_CURSOR, f"{connection} took a forged cursor: {body}"
        assert body["errors"][0]["message"] == "after is not a cursor this list issued"
