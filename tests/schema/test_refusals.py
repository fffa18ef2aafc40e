"""A record that is not yours and a record that does not exist get the same answer, on every
path (FHIR reads, `node`, `patient`, the audit log, every mutation), and every refused access,
read or write, leaves a DENIED row in the audit log (issue #16, finding 7).

Alex is in the North care team (Dr Rivera's); Casey and Dr Okafor are in South.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.alerts.alerts import Alert
from models.care.dosing_records import DosingSession
from models.care.plan_records import TreatmentPlan
from models.identity.accounts import DataSharingConsent, Patient
from models.kernel.audit import AuditEvent, AuditOutcome
from models.messaging.messaging import Message, MessageThread
from models.notifications.devices import Device
from models.outcomes.opioids import OpioidDose
from models.reports.checkins import CheckIn
from models.reports.side_effects import SideEffectReport
from models.surveys.survey_records import SurveyAssignment, SurveyResponse
from schema import build_schema
from tests.conftest import Tokens
from tests.support.graphql import gql

ALEX = "alex@demo.test"
FHIR = "query($t: String!, $id: ID!) { fhirResource(resourceType: $t, id: $id) }"


def gid(type_name: str, value: uuid.UUID | str) -> str:
    return str(relay.GlobalID(type_name, str(value)))


@dataclass(frozen=True)
class AlexsRecords:
    """One record of each kind in Alex's chart (raw ids), and their owner's provider's view."""

    patient: uuid.UUID
    plan: uuid.UUID
    session: uuid.UUID
    check_in: uuid.UUID
    response: uuid.UUID
    scored_response: uuid.UUID
    assignment: uuid.UUID
    side_effect: uuid.UUID
    alert: uuid.UUID
    thread: uuid.UUID
    message: uuid.UUID
    dose: uuid.UUID
    consent: uuid.UUID
    audit_event: uuid.UUID
    device: uuid.UUID | None = None


async def alexs_records(app: Starlette) -> AlexsRecords:
    with use_database(app.state.database):
        patient = await Patient.get(user__email=ALEX)
        mine: dict[str, Any] = {"patient_id": patient.id}

        async def first(model: Any, **filters: Any) -> uuid.UUID:
            row = await model.filter(**filters).order_by("id").first()
            assert row is not None, model
            found: uuid.UUID = row.id
            return found

        device = await Device.filter(user__email=ALEX).first()
        return AlexsRecords(
            patient=patient.id,
            plan=await first(TreatmentPlan, **mine),
            session=await first(DosingSession, **mine, pre_systolic__isnull=False),
            check_in=await first(CheckIn, **mine),
            response=await first(SurveyResponse, **mine),
            scored_response=await first(SurveyResponse, **mine, total_score__isnull=False),
            assignment=await first(SurveyAssignment, **mine, status="AVAILABLE")
            if await SurveyAssignment.exists(**mine, status="AVAILABLE")
            else await first(SurveyAssignment, **mine),
            side_effect=await first(SideEffectReport, **mine),
            alert=await first(Alert, **mine),
            thread=await first(MessageThread, **mine),
            message=await first(Message, thread__patient_id=patient.id),
            dose=await first(OpioidDose, **mine),
            consent=await first(DataSharingConsent, **mine),
            audit_event=await first(AuditEvent, **mine),
            device=device.id if device else None,
        )


async def denied_rows(app: Starlette, actor: str) -> list[AuditEvent]:
    with use_database(app.state.database):
        return list(await AuditEvent.filter(outcome=AuditOutcome.DENIED, actor_label=actor).order_by("occurred_at"))


# ------------------------------------------------------------------ reads


@dataclass(frozen=True)
class Readable:
    resource_type: str
    forbidden: Callable[[AlexsRecords], str]
    missing: Callable[[uuid.UUID], str] = str
    # Viewers who may read it although it is not their chart (admins see identities and the log).
    also_allowed: frozenset[str] = frozenset()
    reads_it: str = "dr.rivera@demo.test"  # who may read it, to show that it exists


READABLE = {
    "Patient": Readable("Patient", lambda r: str(r.patient), also_allowed=frozenset({"admin", "EHR patients:read"})),
    "MedicationAdministration": Readable("MedicationAdministration", lambda r: str(r.session)),
    "Observation (check-in)": Readable("Observation", lambda r: str(r.check_in)),
    "Observation (reading)": Readable("Observation", lambda r: f"{r.session}-bp-pre", lambda u: f"{u}-bp-pre"),
    "Observation (score)": Readable("Observation", lambda r: f"{r.scored_response}-total", lambda u: f"{u}-total"),
    "QuestionnaireResponse": Readable("QuestionnaireResponse", lambda r: str(r.response)),
    "AdverseEvent": Readable("AdverseEvent", lambda r: str(r.side_effect)),
    "Flag": Readable("Flag", lambda r: str(r.alert)),
    "Communication": Readable("Communication", lambda r: str(r.message)),
    "MedicationStatement": Readable("MedicationStatement", lambda r: str(r.dose)),
    "CarePlan": Readable("CarePlan", lambda r: str(r.plan)),
    "MedicationRequest": Readable("MedicationRequest", lambda r: str(r.plan)),
    "Consent": Readable("Consent", lambda r: str(r.consent)),
    "AuditEvent": Readable(
        "AuditEvent", lambda r: str(r.audit_event), also_allowed=frozenset({"admin"}), reads_it="admin@demo.test"
    ),
}


def readers(tokens: Tokens) -> dict[str, tuple[str, str]]:
    """Who may not read Alex's chart: (token, audit label) by kind of viewer."""
    return {
        "provider of another team": (tokens.user("dr.okafor@demo.test"), "dr.okafor@demo.test"),
        "another patient": (tokens.user("casey@demo.test"), "casey@demo.test"),
        "admin": (tokens.user("admin@demo.test"), "admin@demo.test"),
        "EHR patients:read": (tokens.client("demo-ehr", frozenset({"patients:read"})), "demo-ehr"),
    }


@pytest.mark.parametrize("kind", list(READABLE))
async def test_a_fhir_read_of_a_record_not_yours_is_answered_as_one_that_does_not_exist_and_audited(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, kind: str
) -> None:
    readable = READABLE[kind]
    records = await alexs_records(app)
    target = readable.forbidden(records)
    mine = await gql(client, FHIR, {"t": readable.resource_type, "id": target}, token=tokens.user(readable.reads_it))
    assert mine["data"]["fhirResource"]["id"] == target  # it exists: Alex's provider (an admin) reads it
    for reader, (token, label) in readers(tokens).items():
        if reader in readable.also_allowed:
            continue
        before = len(await denied_rows(app, label))
        forbidden = await gql(client, FHIR, {"t": readable.resource_type, "id": target}, token=token)
        missing = await gql(
            client, FHIR, {"t": readable.resource_type, "id": readable.missing(uuid.uuid4())}, token=token
        )
        assert forbidden == missing, reader
        assert forbidden["errors"][0]["message"] == "resource not found"
        assert forbidden["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
        assert len(await denied_rows(app, label)) > before, f"{reader}: the refusal is not audited"


@pytest.mark.parametrize(
    ("query", "type_name"),
    [
        ("query($id: ID!) { patient(id: $id) { givenName } }", "Patient"),
        ("query($id: ID!) { node(id: $id) { id } }", "Patient"),
        ("query($id: ID!) { node(id: $id) { id } }", "MessageThread"),
        ("query($id: ID!) { fhirPatientBundle(patientId: $id) }", "Patient"),
        ("query($id: ID) { auditEvents(patientId: $id) { edges { node { id } } } }", "Patient"),
    ],
)
async def test_a_graphql_read_of_a_record_not_yours_is_answered_as_one_that_does_not_exist(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, query: str, type_name: str
) -> None:
    records = await alexs_records(app)
    target = gid(type_name, records.patient if type_name == "Patient" else records.thread)
    casey = tokens.user("casey@demo.test")
    forbidden = await gql(client, query, {"id": target}, token=casey)
    missing = await gql(client, query, {"id": gid(type_name, uuid.uuid4())}, token=casey)
    assert forbidden == missing
    assert [row.patient_id for row in await denied_rows(app, "casey@demo.test")].count(records.patient) >= (
        1 if type_name == "Patient" else 0
    )


async def test_a_patient_reading_another_patients_audit_log_is_refused_and_audited(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    records = await alexs_records(app)
    body = await gql(
        client,
        "query($id: ID) { auditEvents(patientId: $id) { edges { node { id } } } }",
        {"id": gid("Patient", records.patient)},
        token=tokens.user("casey@demo.test"),
    )
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    [row] = await denied_rows(app, "casey@demo.test")
    assert (row.resource_type, row.patient_id, row.operation) == ("AuditEvent", records.patient, "auditEvents")


# ------------------------------------------------------------------ writes

RESULT = "{ result { __typename ... on Error { message } } }"


@dataclass(frozen=True)
class RefusedWrite:
    """A mutation refused to `viewer`: `target` picks what it is sent against; when `missing` is
    given (the type of a global id, or a literal), the same request against a record that does
    not exist must get the very same answer."""

    mutation: str
    viewer: str
    input: str  # the input object, `$target` standing for the record
    target: Callable[[AlexsRecords], str]
    missing: Callable[[], str] | None = None
    patient_in_audit: bool = False  # the DENIED row names Alex

    @property
    def document(self) -> str:
        if not self.input:  # a mutation without arguments
            return f"mutation {{ {self.mutation} {RESULT} }}"
        if "$target" not in self.input:
            return f"mutation {{ {self.mutation}(input: {self.input}) {RESULT} }}"
        kind = "String!" if "clientId" in self.input else "ID!"
        return f"mutation($target: {kind}) {{ {self.mutation}(input: {self.input}) {RESULT} }}"

    def variables(self, records: AlexsRecords) -> dict[str, str]:
        return {"target": self.target(records)} if "$target" in self.input else {}


def _record(type_name: str, attribute: str) -> Callable[[AlexsRecords], str]:
    """The global id of Alex's record of that kind."""

    def pick(records: AlexsRecords) -> str:
        value = getattr(records, attribute)
        assert value is not None  # a device: registered by the test
        return gid(type_name, value)

    return pick


def _none(type_name: str) -> Callable[[], str]:
    """The global id of a record of that kind that does not exist."""
    return lambda: gid(type_name, uuid.uuid4())


PLAN, PATIENT = _record("TreatmentPlan", "plan"), _record("Patient", "patient")
SESSION, ALERT = _record("DosingSession", "session"), _record("Alert", "alert")
THREAD, DEVICE = _record("MessageThread", "thread"), _record("Device", "device")
ASSIGNMENT = _record("SurveyAssignment", "assignment")
NO_PLAN = _none("TreatmentPlan")
NOW = "2026-11-25T14:00:00Z"
CLINIC_SESSION = (
    '{ patientId: $target, doseMg: 50, startedAt: "2026-11-25T13:00:00Z", endedAt: "2026-11-25T14:30:00Z", '
    'monitoredBy: "RN Lee", readings: [], sedation: false, dissociation: false, respiratoryDepression: false }'
)
NEW_PLAN = "{ patientId: $target, formulation: ORAL, setting: AT_HOME, dose: 100, plannedSessions: 6 }"
COMPLETION = "{ sessionId: $target, dissociation: 0, sedation: 0, backToBaseline: true }"
OPIOID = f'{{ drug: "oxycodone", strength: 5, strengthUnit: "mg", quantity: 1, takenAt: "{NOW}" }}'
PHONE = f'{{ platform: IOS, pushToken: "{"cd" * 32}", appVersion: "1.0", locale: "en-US" }}'
EHR, NO_EHR = (lambda records: "demo-ehr"), (lambda: "no-such-ehr")
INVITE_PATIENT = (
    '{ email: "robin@example.test", givenName: "Robin", familyName: "Example", birthDate: "1980-05-17", '
    'timeZone: "America/New_York", careTeamId: $target }'
)
INVITE_PROVIDER = (
    '{ email: "dr.new@example.test", givenName: "Ana", familyName: "New", npi: "1234567893", credentials: "MD", '
    "careTeamIds: [$target] }"
)


def _any(type_name: str) -> Callable[[AlexsRecords], str]:
    """A target whose existence does not matter: the role is refused before it is looked up."""
    return lambda records: gid(type_name, uuid.uuid4())


PATIENT_TEAM, INVITATION, NO_LOGIN = _any("CareTeam"), _any("Invitation"), _any("Login")
# Another care team's record, or another patient's: the same answer as none at all.
NOT_YOURS = [
    RefusedWrite("updateTreatmentPlan", "dr.okafor", "{ planId: $target, dose: 90 }", PLAN, NO_PLAN, True),
    RefusedWrite("holdTreatmentPlan", "dr.okafor", '{ planId: $target, reason: "x" }', PLAN, NO_PLAN, True),
    RefusedWrite("resumeTreatmentPlan", "dr.okafor", '{ planId: $target, reason: "x" }', PLAN, NO_PLAN, True),
    RefusedWrite(
        "endTreatmentPlan", "dr.okafor", '{ planId: $target, status: CANCELLED, reason: "stop" }', PLAN, NO_PLAN, True
    ),
    RefusedWrite("createTreatmentPlan", "dr.okafor", NEW_PLAN, PATIENT, _none("Patient"), True),
    RefusedWrite(
        "voidDosingSession", "dr.okafor", '{ sessionId: $target, reason: "x" }', SESSION, _none("DosingSession"), True
    ),
    RefusedWrite("acknowledgeAlert", "dr.okafor", "{ alertId: $target }", ALERT, _none("Alert"), True),
    RefusedWrite("resolveAlert", "dr.okafor", '{ alertId: $target, note: "called" }', ALERT, _none("Alert"), True),
    RefusedWrite("recordClinicSession", "dr.okafor", CLINIC_SESSION, PATIENT, _none("Patient"), True),
    RefusedWrite(
        "createMessageThread", "dr.okafor", '{ subject: "Hello", patientId: $target }', PATIENT, _none("Patient"), True
    ),
    RefusedWrite("completeDosingSession", "casey", COMPLETION, SESSION, _none("DosingSession")),
    RefusedWrite(
        "submitSurveyResponse", "casey", '{ assignmentId: $target, answers: [{ linkId: "pain", value: 3 }] }',
        ASSIGNMENT, _none("SurveyAssignment"),
    ),
    RefusedWrite(
        "reportSideEffect", "casey", f'{{ code: "NAUSEA", grade: MILD, onsetAt: "{NOW}", sessionId: $target }}',
        SESSION, _none("DosingSession"),
    ),
    RefusedWrite("sendMessage", "casey", '{ threadId: $target, body: "hi" }', THREAD, _none("MessageThread")),
    RefusedWrite("markThreadRead", "casey", "{ threadId: $target }", THREAD, _none("MessageThread")),
    RefusedWrite("unregisterDevice", "casey", "{ deviceId: $target }", DEVICE, _none("Device")),
    RefusedWrite("grantDataSharingConsent", "casey", "{ clientId: $target }", EHR, NO_EHR),
    RefusedWrite("revokeDataSharingConsent", "casey", "{ clientId: $target }", EHR, NO_EHR),
]  # fmt: skip


async def _register_alexs_phone(client: httpx.AsyncClient, tokens: Tokens) -> None:
    body = await gql(
        client,
        "mutation { registerDevice(input: { platform: IOS, pushToken: "
        f'"{"ab" * 32}", appVersion: "1.0", locale: "en-US" }}) {{ result {{ __typename }} }} }}',
        token=tokens.user(ALEX),
    )
    assert body["data"]["registerDevice"]["result"]["__typename"] == "Device"


@pytest.mark.parametrize("case", NOT_YOURS, ids=lambda case: case.mutation)
async def test_a_write_to_a_record_not_yours_is_answered_as_one_that_does_not_exist_and_audited(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, case: RefusedWrite
) -> None:
    await _register_alexs_phone(client, tokens)
    records = await alexs_records(app)
    token = tokens.user(f"{case.viewer}@demo.test")
    forbidden = await gql(client, case.document, case.variables(records), token=token)
    result = forbidden["data"][case.mutation]["result"]
    assert result["__typename"] in {"NotFound", "ValidationError"}, forbidden
    assert case.missing is not None
    missing = await gql(client, case.document, {"target": case.missing()}, token=token)
    assert forbidden == missing
    rows = [row for row in await denied_rows(app, f"{case.viewer}@demo.test") if row.operation == case.mutation]
    assert len(rows) == 2, f"{case.mutation}: each refusal leaves a DENIED row"
    if case.patient_in_audit:
        assert records.patient in {row.patient_id for row in rows}


# The viewer's role may not do this at all: a FORBIDDEN error, and a DENIED row.
WRONG_ROLE = [
    RefusedWrite("startDosingSession", "dr.rivera", "{ doseMg: 100, monitorPresent: true, checklist: [] }", str),
    RefusedWrite("completeDosingSession", "dr.rivera", COMPLETION, SESSION),
    RefusedWrite("submitCheckIn", "dr.rivera", f'{{ recordedAt: "{NOW}", pain: 4 }}', str),
    RefusedWrite("reportSideEffect", "dr.rivera", f'{{ code: "NAUSEA", grade: MILD, onsetAt: "{NOW}" }}', str),
    RefusedWrite("reportNewMedication", "dr.rivera", "{ medicationClass: OPIOID }", str),
    RefusedWrite("submitSurveyResponse", "dr.rivera", '{ instrument: "PHQ-9", answers: [] }', str),
    RefusedWrite("logOpioidUse", "dr.rivera", OPIOID, str),
    RefusedWrite("createTreatmentPlan", "alex", NEW_PLAN, PATIENT),
    RefusedWrite("updateTreatmentPlan", "alex", "{ planId: $target, dose: 90 }", PLAN),
    RefusedWrite("holdTreatmentPlan", "alex", '{ planId: $target, reason: "hold" }', PLAN),
    RefusedWrite("resumeTreatmentPlan", "alex", '{ planId: $target, reason: "go" }', PLAN),
    RefusedWrite("endTreatmentPlan", "alex", '{ planId: $target, status: CANCELLED, reason: "stop" }', PLAN),
    RefusedWrite("voidDosingSession", "alex", '{ sessionId: $target, reason: "wrong" }', SESSION),
    RefusedWrite("acknowledgeAlert", "alex", "{ alertId: $target }", ALERT),
    RefusedWrite("resolveAlert", "alex", '{ alertId: $target, note: "fine" }', ALERT),
    RefusedWrite("recordClinicSession", "alex", CLINIC_SESSION, PATIENT),
    RefusedWrite("createMessageThread", "admin", '{ subject: "Hello", patientId: $target }', PATIENT),
    RefusedWrite("sendMessage", "admin", '{ threadId: $target, body: "hi" }', THREAD),
    RefusedWrite("markThreadRead", "admin", "{ threadId: $target }", THREAD),
    RefusedWrite("registerDevice", "admin", PHONE, str),
    RefusedWrite("unregisterDevice", "admin", "{ deviceId: $target }", DEVICE),
    RefusedWrite("grantDataSharingConsent", "dr.rivera", '{ clientId: "demo-ehr" }', str),
    RefusedWrite("revokeDataSharingConsent", "dr.rivera", '{ clientId: "demo-ehr" }', str),
    RefusedWrite("invitePatient", "alex", INVITE_PATIENT, PATIENT_TEAM),
    RefusedWrite("inviteProvider", "dr.rivera", INVITE_PROVIDER, PATIENT_TEAM),
    RefusedWrite("resendInvitation", "alex", "{ invitationId: $target }", INVITATION),
    RefusedWrite("revokeInvitation", "alex", "{ invitationId: $target }", INVITATION),
]  # fmt: skip
# Administration is the admins' alone: a provider or a patient is refused outright.
ANY_USER, ANY_TEAM = _any("User"), gid("CareTeam", uuid.uuid4())
WRONG_ROLE += [
    RefusedWrite("deactivateUser", "dr.rivera", '{ userId: $target, reason: "left the clinic" }', ANY_USER),
    RefusedWrite("reactivateUser", "alex", "{ userId: $target }", ANY_USER),
    RefusedWrite("createCareTeam", "dr.rivera", '{ name: "East" }', str),
    RefusedWrite("transferPatient", "dr.rivera", f'{{ patientId: $target, careTeamId: "{ANY_TEAM}" }}', PATIENT),
    RefusedWrite(
        "registerApiClient", "dr.rivera", '{ clientId: "new-ehr", name: "New", scopes: [], careTeamIds: [] }', str
    ),
    RefusedWrite("rotateApiClientSecret", "alex", '{ clientId: "demo-ehr" }', str),
    RefusedWrite("deactivateApiClient", "dr.okafor", '{ clientId: "demo-ehr" }', str),
]  # fmt: skip
# An EHR client has no logins and no password: refused, and audited, like a role that may not.
CLIENT_REFUSALS = [
    RefusedWrite("changePassword", "demo-ehr", '{ currentPassword: "x", newPassword: "y" }', str),
    RefusedWrite("endLogin", "demo-ehr", "{ loginId: $target }", NO_LOGIN),
    RefusedWrite("endOtherLogins", "demo-ehr", "", str),
]  # fmt: skip
# Nor a second factor (models.identity.totp).
CLIENT_REFUSALS += [
    RefusedWrite("startTotpEnrollment", "demo-ehr", "", str),
    RefusedWrite("confirmTotpEnrollment", "demo-ehr", '{ code: "123456" }', str),
    RefusedWrite("disableTotp", "demo-ehr", '{ code: "123456" }', str),
]  # fmt: skip


@pytest.mark.parametrize("case", CLIENT_REFUSALS, ids=lambda case: case.mutation)
async def test_an_account_write_by_an_ehr_client_is_forbidden_and_audited(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, case: RefusedWrite
) -> None:
    records = await alexs_records(app)
    body = await gql(client, case.document, case.variables(records), token=tokens.client("demo-ehr"))
    assert body["data"] is None, body
    assert [error["extensions"]["code"] for error in body["errors"]] == ["FORBIDDEN"]
    with use_database(app.state.database):
        rows = await AuditEvent.filter(outcome=AuditOutcome.DENIED, operation=case.mutation)
    assert len(rows) == 1, f"{case.mutation}: the refusal leaves one DENIED row"


@pytest.mark.parametrize("case", WRONG_ROLE, ids=lambda case: f"{case.mutation}-by-{case.viewer}")
async def test_a_write_the_viewers_role_may_not_make_is_forbidden_and_audited(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, case: RefusedWrite
) -> None:
    await _register_alexs_phone(client, tokens)
    records = await alexs_records(app)
    body = await gql(client, case.document, case.variables(records), token=tokens.user(f"{case.viewer}@demo.test"))
    assert body["data"] is None, body
    assert [error["extensions"]["code"] for error in body["errors"]] == ["FORBIDDEN"]
    rows = [row for row in await denied_rows(app, f"{case.viewer}@demo.test") if row.operation == case.mutation]
    assert len(rows) == 1, f"{case.mutation}: the refusal leaves one DENIED row"


def test_every_mutation_has_a_refusal_that_is_audited() -> None:
    mutation_type = build_schema()._schema.mutation_type
    assert mutation_type is not None
    names = set(mutation_type.fields)
    covered = {case.mutation for case in [*NOT_YOURS, *WRONG_ROLE, *CLIENT_REFUSALS]}
    assert names - covered == set(), "add a refused case for each new mutation"
