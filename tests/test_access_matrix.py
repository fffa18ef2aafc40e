"""Who may do what: every query and mutation of the schema by every kind of viewer.

The matrix is checked against the schema itself, so a new root field without a rule here makes
this file fail. Each probe targets the demo patient Alex (care team North) and answers one
question: did the viewer get at Alex's data (or perform the operation)?

Viewers: Alex; Blair (another North patient); Dr Rivera (North); Dr Okafor (South); the admin;
the demo EHR client (North) with its scopes and Alex's consent, without the `patients:read`
scope, and after Alex revoked consent; and nobody (no token).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from strawberry import relay

from api.database import use_database
from models.accounts import DataSharingConsent, Patient, Role
from models.alerts import Alert
from models.devices import Device, Platform
from models.dosing import CHECKLIST, DosingSession
from models.enrolment import Invitation
from models.messaging import MessageThread
from models.plans import TreatmentPlan
from models.sessions import SessionFamily
from schema import build_schema
from tests.conftest import Tokens

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
