"""Our records as FHIR R4 resources (PRODUCT.md capability 10, CLINICAL.md §4 and §11 codes).

Pure mappers from stored rows to FHIR JSON, and `fhir_resource`, which finds one resource the
viewer may read. Codes are the ones CLINICAL.md gives (or the HL7 code systems' own); where a
record has no standard code it carries text only, never a guessed code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from models.alerts.alerts import Alert, AlertStatus
from models.care.dosing_records import DosingSession, SessionStatus
from models.care.plan_records import DoseUnit, PlanStatus, TreatmentPlan
from models.identity.access import Viewer
from models.identity.accounts import ApiClient, CareTeam, DataSharingConsent, Patient, Provider
from models.identity.directory import (
    clinical_patient,
    get_care_teams,
    get_patient,
    get_providers,
    providers_of_care_team,
)
from models.kernel.audit import ActorType, AuditAction, AuditEvent, AuditOutcome, denied
from models.kernel.audit_log import get_audit_event
from models.kernel.errors import InvalidInput, NotFound
from models.kernel.policy import DEFAULT_POLICY
from models.messaging.messaging import Message, MessageThread
from models.outcomes.mme import CATALOGUE as OPIOIDS
from models.outcomes.opioids import OpioidDose
from models.reports.checkins import CheckIn
from models.reports.side_effects import CATALOGUE, Grade, SideEffectReport
from models.surveys.instruments import Instrument, InstrumentDefinition
from models.surveys.survey_records import SurveyResponse

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
HL7 = "http://terminology.hl7.org/CodeSystem"
# Our own code systems, named like the instruments' (seeds/instruments/*.json: `.../instrument-items`).
KETAFOLLOW_CODE_SYSTEMS = "https://ketafollow.example/fhir/CodeSystem"
SIDE_EFFECT_CODES = f"{KETAFOLLOW_CODE_SYSTEMS}/side-effects"

KETAMINE_RXCUI = "6130"  # the ingredient; esketamine (Spravato) is named in text only
ROUTES = {  # SNOMED CT route of administration
    "SUBLINGUAL_TABLET": ("37839007", "Sublingual route"),
    "ORAL": ("26643006", "Oral route"),
    "INTRANASAL_KETAMINE": ("46713006", "Nasal route"),
    "INTRANASAL_ESKETAMINE": ("46713006", "Nasal route"),
    "INTRAMUSCULAR": ("78421000", "Intramuscular route"),
    "INTRAVENOUS": ("47625008", "Intravenous route"),
}
ADMINISTRATION_STATUS = {
    SessionStatus.IN_PROGRESS: "in-progress",
    SessionStatus.COMPLETED: "completed",
    SessionStatus.ABANDONED: "unknown",  # never closed: whether it ended well is not known
    SessionStatus.ENTERED_IN_ERROR: "entered-in-error",
}
# A session's readings (CLINICAL.md §1-§3): before dosing, at about 40 minutes (a clinic session's
# REMS form) and after; each a blood-pressure, a heart-rate and an SpO2 Observation where measured,
# with ids `<session id>-<kind>-<phase>` (`-bp-pre`, `-hr-mid`, `-spo2-post`…).
READING_PHASES = ("pre", "mid", "post")
VITAL_SIGNS = ("bp", "hr", "spo2")


def _instant(moment: datetime) -> str:
    return moment.isoformat()


def _meta(updated_at: datetime, version: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"lastUpdated": _instant(updated_at)}
    if version is not None:
        meta["versionId"] = str(version)
    return meta


def _period(start: datetime, end: datetime | None) -> dict[str, str]:
    return {"start": _instant(start)} | ({"end": _instant(end)} if end is not None else {})


def _category(code: str, display: str) -> list[dict[str, Any]]:
    """An Observation's category from HL7's observation-category code system."""
    return [{"coding": [{"system": f"{HL7}/observation-category", "code": code, "display": display}]}]


def _reference(resource_type: str, resource_id: UUID | str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{resource_id}"}


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def patient_resource(patient: Patient) -> dict[str, Any]:
    """A Patient: name, birth date, phone."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(patient.id),
        "meta": _meta(patient.updated_at),
        "active": True,
        "name": [{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
        "birthDate": patient.birth_date.isoformat(),
    }
    if patient.phone:
        resource["telecom"] = [{"system": "phone", "value": patient.phone, "use": "mobile"}]
    return resource


def practitioner(provider: Provider) -> dict[str, Any]:
    """A provider: name, credentials, NPI when known."""
    name: dict[str, Any] = {"family": provider.family_name, "given": [provider.given_name]}
    if provider.credentials:
        name["suffix"] = [provider.credentials]
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": str(provider.id),
        "meta": _meta(provider.updated_at),
        "active": True,
        "name": [name],
    }
    if provider.npi:
        resource["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-npi", "value": provider.npi}]
    return resource


def care_team(team: CareTeam, providers: list[Provider]) -> dict[str, Any]:
    """A care team and its providers."""
    return {
        "resourceType": "CareTeam",
        "id": str(team.id),
        "meta": _meta(team.updated_at),
        "status": "active",
        "name": team.name,
        "participant": [{"member": _reference("Practitioner", provider.id)} for provider in providers],
    }


def medication_administration(session: DosingSession) -> dict[str, Any]:
    """A dosing session as a MedicationAdministration: ketamine, route, dose, when."""
    route_code, route_name = ROUTES[session.formulation]
    return {
        "resourceType": "MedicationAdministration",
        "id": str(session.id),
        "meta": _meta(session.updated_at, session.version),
        "status": ADMINISTRATION_STATUS[session.status],
        "medicationCodeableConcept": _ketamine(session.formulation),
        "subject": _reference("Patient", session.patient_id),  # type: ignore[attr-defined]
        "effectivePeriod": _period(session.started_at, session.ended_at),
        "dosage": {
            "route": _concept(SNOMED, route_code, route_name),
            "dose": {"value": float(session.dose_mg), "unit": "mg", "system": UCUM, "code": "mg"},
        },
    }


def _pressure(code: str, name: str, value: int) -> dict[str, Any]:
    return {
        "code": _concept(LOINC, code, name),
        "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    }


@dataclass(frozen=True)
class _Reading:
    systolic: int | None
    diastolic: int | None
    heart_rate: int | None
    spo2: int | None
    measured_at: datetime | None


def _reading(session: DosingSession, phase: str) -> _Reading:
    if phase == "pre":
        return _Reading(
            session.pre_systolic, session.pre_diastolic, session.pre_heart_rate, session.pre_spo2,
            session.pre_measured_at,
        )  # fmt: skip
    if phase == "mid":
        return _Reading(
            session.mid_systolic, session.mid_diastolic, session.mid_heart_rate, session.mid_spo2,
            session.mid_measured_at,
        )  # fmt: skip
    return _Reading(
        session.post_systolic, session.post_diastolic, session.post_heart_rate, session.post_spo2,
        session.post_measured_at,
    )  # fmt: skip


def _vital_sign(session: DosingSession, kind: str, phase: str, code: dict[str, Any]) -> dict[str, Any]:
    """What every reading of a session shares: vital-signs, the patient, `partOf` the session,
    when it was measured (left out when unknown: the reading is exported all the same), voided with
    the session."""
    voided = session.status is SessionStatus.ENTERED_IN_ERROR
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{session.id}-{kind}-{phase}",
        "meta": _meta(session.updated_at, session.version),
        "status": "entered-in-error" if voided else "final",
        "category": _category("vital-signs", "Vital Signs"),
        "code": code,
        "subject": _reference("Patient", session.patient_id),  # type: ignore[attr-defined]
        "partOf": [_reference("MedicationAdministration", session.id)],
    }
    measured_at = _reading(session, phase).measured_at
    if measured_at is not None:
        observation["effectiveDateTime"] = _instant(measured_at)
    return observation


def blood_pressure_observation(session: DosingSession, phase: str) -> dict[str, Any] | None:
    """A session's blood pressure before, at 40 minutes or after dosing (CLINICAL.md §11: 85354-9
    with 8480-6 and 8462-4, mm[Hg]); None when it was not measured."""
    reading = _reading(session, phase)
    if reading.systolic is None or reading.diastolic is None:
        return None
    observation = _vital_sign(
        session, "bp", phase, _concept(LOINC, "85354-9", "Blood pressure panel with all children optional")
    )
    observation["component"] = [
        _pressure("8480-6", "Systolic blood pressure", reading.systolic),
        _pressure("8462-4", "Diastolic blood pressure", reading.diastolic),
    ]
    return observation


def heart_rate_observation(session: DosingSession, phase: str) -> dict[str, Any] | None:
    """A session's heart rate (CLINICAL.md §11: LOINC 8867-4, /min); None when not measured."""
    heart_rate = _reading(session, phase).heart_rate
    if heart_rate is None:
        return None
    observation = _vital_sign(session, "hr", phase, _concept(LOINC, "8867-4", "Heart rate"))
    observation["valueQuantity"] = {"value": heart_rate, "unit": "/min", "system": UCUM, "code": "/min"}
    return observation


def oxygen_saturation_observation(session: DosingSession, phase: str) -> dict[str, Any] | None:
    """A session's SpO2 by pulse oximetry (CLINICAL.md §11: LOINC 59408-5, %, with 2708-6, the
    code FHIR's vital-signs profile asks for); None when not measured."""
    spo2 = _reading(session, phase).spo2
    if spo2 is None:
        return None
    name = "Oxygen saturation in Arterial blood by Pulse oximetry"
    code = {
        "coding": [
            {"system": LOINC, "code": "59408-5", "display": name},
            {"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"},
        ],
        "text": name,
    }
    observation = _vital_sign(session, "spo2", phase, code)
    observation["valueQuantity"] = {"value": spo2, "unit": "%", "system": UCUM, "code": "%"}
    return observation


_VITAL_SIGN_OBSERVATIONS = {
    "bp": blood_pressure_observation,
    "hr": heart_rate_observation,
    "spo2": oxygen_saturation_observation,
}


def reading_observation(session: DosingSession, kind: str, phase: str) -> dict[str, Any] | None:
    """One reading of a session by its kind and phase (`bp`/`hr`/`spo2`, `pre`/`mid`/`post`)."""
    if kind not in _VITAL_SIGN_OBSERVATIONS or phase not in READING_PHASES:
        return None
    return _VITAL_SIGN_OBSERVATIONS[kind](session, phase)


def reading_observations(session: DosingSession) -> list[dict[str, Any]]:
    """Every reading of a session as Observations, phase by phase (blood pressure, heart rate,
    SpO2): the resources a session brings besides its MedicationAdministration, wherever it is
    exported (one resource, the patient Bundle, the change feed)."""
    return [
        observation
        for phase in READING_PHASES
        for kind in VITAL_SIGNS
        if (observation := reading_observation(session, kind, phase)) is not None
    ]


_SEVERITY = {Grade.MILD: "mild", Grade.MODERATE: "moderate", Grade.SEVERE: "severe", Grade.LIFE_THREATENING: "severe"}


def adverse_event(report: SideEffectReport) -> dict[str, Any]:
    """A side effect (CLINICAL.md §4): SNOMED CT code (or the catalogue's own code in our code
    system where no standard one fits), seriousness, severity, the session as the suspect entity."""
    entry = CATALOGUE[report.code]
    if entry.snomed:
        event = _concept(SNOMED, entry.snomed, entry.label)
    elif entry.local_code:
        event = _concept(SIDE_EFFECT_CODES, report.code, entry.label)
    else:
        event = {"text": entry.label}
    if report.note:
        event["text"] = f"{entry.label}: {report.note}"
    serious = report.grade in (Grade.SEVERE, Grade.LIFE_THREATENING)
    resolved = report.resolved_at is not None
    resource: dict[str, Any] = {
        "resourceType": "AdverseEvent",
        "id": str(report.id),
        "meta": _meta(report.updated_at, report.version),
        "actuality": "actual",
        "event": event,
        "subject": _reference("Patient", report.patient_id),  # type: ignore[attr-defined]
        "date": _instant(report.onset_at),
        "recordedDate": _instant(report.recorded_at or report.reported_at),
        "seriousness": _concept(
            f"{HL7}/adverse-event-seriousness",
            "serious" if serious else "non-serious",
            "Serious" if serious else "Non-serious",
        ),
        "severity": _concept(
            f"{HL7}/adverse-event-severity", _SEVERITY[report.grade], _SEVERITY[report.grade].capitalize()
        ),
        "outcome": _concept(
            f"{HL7}/adverse-event-outcome",
            "resolved" if resolved else "ongoing",
            "Resolved" if resolved else "Ongoing",
        ),
    }
    if report.session_id is not None:  # type: ignore[attr-defined]
        resource["suspectEntity"] = [{"instance": _reference("MedicationAdministration", report.session_id)}]  # type: ignore[attr-defined]
    return resource


def flag(alert: Alert) -> dict[str, Any]:
    """An alert as a Flag: active until resolved, its severity in the text."""
    return {
        "resourceType": "Flag",
        "id": str(alert.id),
        "meta": _meta(alert.updated_at, alert.version),
        "status": "inactive" if alert.status is AlertStatus.RESOLVED else "active",
        "category": [_concept(f"{HL7}/flag-category", "clinical", "Clinical")],
        "code": {"text": f"{alert.severity.value}: {alert.summary}"},
        "subject": _reference("Patient", alert.patient_id),  # type: ignore[attr-defined]
        "period": _period(alert.raised_at, alert.resolved_at),
    }


def communication(message: Message, thread: MessageThread, patient: Patient, sender: dict[str, str]) -> dict[str, Any]:
    """A message as a Communication between the patient and their care team; `sender` is the
    reference to the patient or the provider who wrote it."""
    from_patient = sender["reference"] == f"Patient/{patient.id}"
    team = _reference("CareTeam", patient.care_team_id)  # type: ignore[attr-defined]
    return {
        "resourceType": "Communication",
        "id": str(message.id),
        "meta": _meta(message.updated_at),
        "status": "completed",
        "subject": _reference("Patient", patient.id),
        "topic": {"text": thread.subject},
        "sent": _instant(message.sent_at),
        "sender": sender,
        "recipient": [team if from_patient else _reference("Patient", patient.id)],
        "payload": [{"contentString": message.body}],
        **({"inResponseTo": [_reference("Communication", message.reply_to_id)]} if message.reply_to_id else {}),
    }


async def sender_references(patients: list[Patient], user_ids: set[UUID]) -> dict[UUID, dict[str, str]]:
    """References for message senders: one of the patients, or a provider (one query)."""
    found = {patient.user_id: _reference("Patient", patient.id) for patient in patients}  # type: ignore[attr-defined]
    for provider in await Provider.filter(user_id__in=list(user_ids - set(found))):
        found[provider.user_id] = _reference("Practitioner", provider.id)  # type: ignore[attr-defined]
    return {user_id: found.get(user_id, {"display": "care team"}) for user_id in user_ids}


def medication_statement(dose: OpioidDose) -> dict[str, Any]:
    """A logged opioid dose (CLINICAL.md §10): RxNorm ingredient where the catalogue has one, the
    strength and count as taken; a patch covers the time it is worn."""
    opioid = OPIOIDS[dose.drug]
    medication = _concept(RXNORM, opioid.rxnorm, dose.drug) if opioid.rxnorm else {"text": dose.drug}
    unit = dose.strength_unit.value
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": str(dose.id),
        "meta": _meta(dose.updated_at),
        "status": "completed",
        "medicationCodeableConcept": medication,
        "subject": _reference("Patient", dose.patient_id),  # type: ignore[attr-defined]
        "dateAsserted": _instant(dose.recorded_at),
        "informationSource": _reference("Patient", dose.patient_id),  # type: ignore[attr-defined]
        "dosage": [{"text": f"{dose.quantity.normalize():f} x {dose.strength.normalize():f} {unit}"}],
    }
    if opioid.transdermal:  # the clinic default's wear (a later patch may have ended it sooner)
        resource["effectivePeriod"] = _period(dose.taken_at, dose.taken_at + DEFAULT_POLICY.patch_wear)
    else:
        resource["effectiveDateTime"] = _instant(dose.taken_at)
    return resource


PAIN_NRS_LOINC = "72514-3"  # the pain NRS instrument's own code (seeds/instruments/pain-nrs-*.json)


def _rating(text: str, value: int) -> dict[str, Any]:
    return {"code": {"text": text}, "valueInteger": value}


def check_in_observation(check_in: CheckIn) -> dict[str, Any]:
    """A daily check-in: pain 0-10 (LOINC 72514-3) with mood and sleep (0 worst, 10 best, no
    standard code: text) as components; the note as a note."""
    components = [
        _rating(f"{name} (0 worst, 10 best)", value)
        for name, value in (("Mood", check_in.mood), ("Sleep quality", check_in.sleep))
        if value is not None
    ]
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(check_in.id),
        "meta": _meta(check_in.updated_at),
        "status": "final",
        "category": _category("survey", "Survey"),
        "code": _concept(LOINC, PAIN_NRS_LOINC, "Pain severity 0-10 numeric rating, reported"),
        "subject": _reference("Patient", check_in.patient_id),  # type: ignore[attr-defined]
        "effectiveDateTime": _instant(check_in.recorded_at),
        "issued": _instant(check_in.received_at),
        "valueInteger": check_in.pain,
    }
    if components:
        resource["component"] = components
    if check_in.note:
        resource["note"] = [{"text": check_in.note}]
    return resource


QUESTIONNAIRE_CANONICAL = "urn:ketafollow:Questionnaire"


def questionnaire_response(response: SurveyResponse, definition: InstrumentDefinition) -> dict[str, Any]:
    """A survey answer set, each answer as its LOINC answer code where the instrument has one."""
    items = []
    for item in definition.items:
        if item.link_id not in response.answers:
            continue
        value = response.answers[item.link_id]
        option = next((o for o in item.options if o.value == value), None)
        if option is not None and option.loinc:
            answer: dict[str, Any] = {"valueCoding": {"system": LOINC, "code": option.loinc, "display": option.label}}
        else:
            answer = {"valueInteger": value}
        entry: dict[str, Any] = {"linkId": item.link_id, "text": item.text, "answer": [answer]}
        if item.loinc:
            entry["definition"] = f"{LOINC}/{item.loinc}"
        items.append(entry)
    return {
        "resourceType": "QuestionnaireResponse",
        "id": str(response.id),
        "meta": _meta(response.updated_at),
        "questionnaire": _questionnaire_canonical(definition.code, definition.version),
        "status": "completed",
        "subject": _reference("Patient", response.patient_id),  # type: ignore[attr-defined]
        "authored": _instant(response.answered_at),
        "item": items,
    }


def score_observation(response: SurveyResponse, definition: InstrumentDefinition) -> dict[str, Any] | None:
    """CLINICAL.md §11: an Observation per total score (LOINC total code where the instrument has
    one), `derivedFrom` its QuestionnaireResponse; None for an unscored instrument."""
    if response.total_score is None:
        return None
    title = f"{definition.title} total score"
    code = _concept(LOINC, definition.loinc_total, title) if definition.loinc_total else {"text": title}
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{response.id}-total",
        "meta": _meta(response.updated_at),
        "status": "final",
        "category": _category("survey", "Survey"),
        "code": code,
        "subject": _reference("Patient", response.patient_id),  # type: ignore[attr-defined]
        "effectiveDateTime": _instant(response.answered_at),
        "issued": _instant(response.submitted_at),
        "valueQuantity": {"value": float(response.total_score), "unit": "{score}", "system": UCUM, "code": "{score}"},
        "derivedFrom": [_reference("QuestionnaireResponse", response.id)],
    }
    if response.severity:
        observation["interpretation"] = [{"text": response.severity}]
    return observation


def _questionnaire_id(definition: InstrumentDefinition) -> str:
    return f"{definition.code}-{definition.version}"


def _questionnaire_canonical(code: str, version: str | None = None) -> str:
    return f"{QUESTIONNAIRE_CANONICAL}:{code}" + (f"|{version}" if version else "")


def questionnaire(definition: InstrumentDefinition) -> dict[str, Any]:
    """An instrument's definition as a Questionnaire (the canonical its responses name), items
    with their LOINC codes and answer options."""
    items = []
    for item in definition.items:
        coded = bool(item.options) and all(option.loinc for option in item.options)
        entry: dict[str, Any] = {
            "linkId": item.link_id,
            "text": item.text,
            "type": "choice" if coded else "integer",
            "required": item.required,
        }
        if item.loinc:
            entry["code"] = [{"system": LOINC, "code": item.loinc}]
        if coded:
            entry["answerOption"] = [
                {"valueCoding": {"system": LOINC, "code": option.loinc, "display": option.label}}
                for option in item.options
            ]
        elif item.options:
            entry["answerOption"] = [{"valueInteger": option.value} for option in item.options]
        items.append(entry)
    resource: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": _questionnaire_id(definition),
        "url": _questionnaire_canonical(definition.code),
        "version": definition.version,
        "name": "".join(character for character in definition.code if character.isalnum()),
        "title": definition.title,
        "status": "active",
        "subjectType": ["Patient"],
        "item": items,
    }
    if definition.loinc_panel:
        resource["code"] = [{"system": LOINC, "code": definition.loinc_panel}]
    if definition.preamble:
        resource["description"] = definition.preamble
    if definition.source:
        resource["copyright"] = definition.source
    return resource


_PLAN_STATUS = {  # CarePlan.status, MedicationRequest.status
    PlanStatus.ACTIVE: ("active", "active"),
    PlanStatus.ON_HOLD: ("on-hold", "on-hold"),
    PlanStatus.COMPLETED: ("completed", "completed"),
    PlanStatus.CANCELLED: ("revoked", "cancelled"),
}
_DOSE_UNITS = {DoseUnit.MG: "mg", DoseUnit.MG_PER_KG: "mg/kg", DoseUnit.MG_PER_KG_PER_HOUR: "mg/kg/h"}


def _ketamine(formulation: str) -> dict[str, Any]:
    if formulation == "INTRANASAL_ESKETAMINE":
        return {"text": "Esketamine nasal spray"}
    return _concept(RXNORM, KETAMINE_RXCUI, "Ketamine")


def medication_request(plan: TreatmentPlan) -> dict[str, Any]:
    """A treatment plan's prescription: ketamine, route, dose per session, sessions per week."""
    route_code, route_name = ROUTES[plan.formulation]
    unit = _DOSE_UNITS[plan.dose_unit]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": str(plan.id),
        "meta": _meta(plan.updated_at, plan.version),
        "status": _PLAN_STATUS[plan.status][1],
        "intent": "order",
        "medicationCodeableConcept": _ketamine(plan.formulation),
        "subject": _reference("Patient", plan.patient_id),  # type: ignore[attr-defined]
        "authoredOn": _instant(plan.created_at),
        "requester": _reference("Practitioner", plan.prescriber_id),  # type: ignore[attr-defined]
        "dosageInstruction": [
            {
                "text": (
                    f"{plan.dose.normalize():f} {unit} per session, up to {plan.sessions_per_week} sessions a week, "
                    f"at least {plan.min_hours_between_sessions} h apart"
                    + (", with a treatment monitor present" if plan.monitor_required else "")
                ),
                "timing": {"repeat": {"frequency": plan.sessions_per_week, "period": 1, "periodUnit": "wk"}},
                "route": _concept(SNOMED, route_code, route_name),
                "doseAndRate": [
                    {"doseQuantity": {"value": float(plan.dose), "unit": unit, "system": UCUM, "code": unit}}
                ],
            }
        ],
    }
    if plan.status_reason:
        resource["statusReason"] = {"text": plan.status_reason}
    return resource


def care_plan(plan: TreatmentPlan) -> dict[str, Any]:
    """A treatment plan: the prescription as its activity, and each scheduled survey (instrument,
    when after a session) as a task, with the blood-pressure ceiling in the description."""
    surveys = [
        {
            "detail": {
                "kind": "Task",
                "instantiatesCanonical": [_questionnaire_canonical(item.instrument)],
                "code": {"text": item.instrument},
                "status": "scheduled",
                "description": (
                    f"{item.instrument} {item.offset_minutes} minutes after each session, "
                    f"open for {item.window_minutes} minutes"
                ),
            }
        }
        for item in plan.schedule
    ]
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": str(plan.id),
        "meta": _meta(plan.updated_at, plan.version),
        "status": _PLAN_STATUS[plan.status][0],
        "intent": "plan",
        "title": "Ketamine treatment plan",
        "description": (
            f"{plan.planned_sessions} sessions ({plan.setting.value.lower().replace('_', ' ')}); hold the dose "
            f"when blood pressure exceeds {plan.bp_ceiling_systolic}/{plan.bp_ceiling_diastolic} mmHg"
        ),
        "subject": _reference("Patient", plan.patient_id),  # type: ignore[attr-defined]
        "period": {"start": _instant(plan.created_at)},
        "created": _instant(plan.created_at),
        "author": _reference("Practitioner", plan.prescriber_id),  # type: ignore[attr-defined]
        "activity": [{"reference": _reference("MedicationRequest", plan.id)}, *surveys],
    }
    if plan.notes:
        resource["note"] = [{"text": plan.notes}]
    return resource


def consent(record: DataSharingConsent, client: ApiClient) -> dict[str, Any]:
    """A patient's consent to share their record with one EHR client; `inactive` once revoked
    (from then on the client receives nothing more of the record)."""
    return {
        "resourceType": "Consent",
        "id": str(record.id),
        "meta": _meta(record.updated_at, 2 if record.revoked_at else 1),
        "status": "inactive" if record.revoked_at else "active",
        "scope": _concept(f"{HL7}/consentscope", "patient-privacy", "Privacy Consent"),
        "category": [_concept(LOINC, "59284-0", "Patient Consent")],
        "patient": _reference("Patient", record.patient_id),  # type: ignore[attr-defined]
        "dateTime": _instant(record.granted_at),
        "policyRule": _concept(f"{HL7}/v3-ActCode", "OPTIN", "opt-in"),
        "provision": {
            "type": "permit",
            "period": _period(record.granted_at, record.revoked_at),
            "actor": [
                {
                    "role": _concept(f"{HL7}/v3-ParticipationType", "IRCP", "information recipient"),
                    "reference": {
                        "identifier": {"system": CLIENT_IDENTIFIER_SYSTEM, "value": client.client_id},
                        "display": client.name,
                    },
                }
            ],
        },
    }


CLIENT_IDENTIFIER_SYSTEM = "urn:ketafollow:api-client"
_AUDIT_OUTCOME = {AuditOutcome.SUCCESS: "0", AuditOutcome.DENIED: "4", AuditOutcome.FAILED: "8"}


def audit_event(event: AuditEvent) -> dict[str, Any]:
    """An audit row as a FHIR AuditEvent (ARCHITECTURE.md decision 6: they map 1:1)."""
    who: dict[str, Any] = {"display": event.actor_label or event.actor_type.value.lower()}
    if event.actor_id is not None:
        who["identifier"] = {"system": f"urn:ketafollow:{event.actor_type.value.lower()}", "value": str(event.actor_id)}
    agent: dict[str, Any] = {"who": who, "requestor": event.actor_type is not ActorType.SYSTEM}
    if event.actor_role:
        agent["type"] = {"text": event.actor_role}
    if event.client_address:
        agent["network"] = {"address": event.client_address, "type": "2"}
    entities: list[dict[str, Any]] = []
    if event.patient_id is not None:
        entities.append({"what": _reference("Patient", event.patient_id), "role": _coding_role("1", "Patient")})
    if event.resource_id:
        entities.append({"what": {"display": f"{event.resource_type}/{event.resource_id}"}})
    elif event.resource_type:
        entities.append({"what": {"display": event.resource_type}})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(event.id),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "action": event.action.value,
        "recorded": _instant(event.occurred_at),
        "outcome": _AUDIT_OUTCOME[event.outcome],
        "agent": [agent],
        "source": {"observer": {"display": "ketafollow"}},
    }
    if event.operation:
        resource["subtype"] = [{"system": "urn:ketafollow:graphql-operation", "code": event.operation}]
    if event.detail:
        resource["outcomeDesc"] = event.detail
    if entities:
        resource["entity"] = entities
    return resource


def _coding_role(code: str, display: str) -> dict[str, str]:
    return {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": code, "display": display}


async def _definition(response: SurveyResponse) -> InstrumentDefinition:
    row = await Instrument.get(code=response.instrument, version=response.instrument_version)
    return InstrumentDefinition.parse(row.definition)


RESOURCE_TYPES = (
    "Patient",
    "MedicationAdministration",
    "Observation",
    "QuestionnaireResponse",
    "AdverseEvent",
    "Flag",
    "Communication",
    "Practitioner",
    "CareTeam",
    "MedicationStatement",
    "CarePlan",
    "MedicationRequest",
    "Questionnaire",
    "Consent",
    "AuditEvent",
)


def _uuid(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound("resource") from None


async def fhir_resource(viewer: Viewer, resource_type: str, resource_id: str) -> dict[str, Any]:
    """One resource the viewer may read, as FHIR JSON; `NotFound("resource")` for one that does
    not exist or that the viewer may not see, whichever rule refused it (the patient's, the
    record's, the audit log's): the same words either way, and the refusal audited."""
    try:
        return await _fhir_resource(viewer, resource_type, resource_id)
    except NotFound:
        raise NotFound("resource") from None


async def _fhir_resource(viewer: Viewer, resource_type: str, resource_id: str) -> dict[str, Any]:
    if resource_type not in RESOURCE_TYPES:
        raise InvalidInput("resourceType", f"resourceType must be one of {', '.join(RESOURCE_TYPES)}")
    if resource_type == "Patient":
        return patient_resource(await get_patient(viewer, _uuid(resource_id)))
    if resource_type == "Questionnaire":
        return questionnaire(await _instrument(resource_id))
    if resource_type == "AuditEvent":
        return audit_event(await get_audit_event(viewer, _uuid(resource_id)))
    if resource_type == "Consent":
        record = await DataSharingConsent.get_or_none(id=_uuid(resource_id)).select_related("api_client")
        if record is None:
            raise NotFound("resource")
        if viewer.is_api_client and record.api_client.id != viewer.id:  # another client's consent
            patient_id: UUID = record.patient_id  # type: ignore[attr-defined]
            raise denied(viewer, NotFound("resource"), AuditAction.READ, "Consent", patient_id=patient_id)
        await clinical_patient(viewer, record.patient_id, resource_type)  # type: ignore[attr-defined]
        return consent(record, record.api_client)
    if resource_type in ("CarePlan", "MedicationRequest"):
        plan = await _owned(viewer, TreatmentPlan, _uuid(resource_id), resource_type)
        return care_plan(plan) if resource_type == "CarePlan" else medication_request(plan)
    if resource_type == "Observation" and resource_id.endswith("-total"):
        response = await _owned(viewer, SurveyResponse, _uuid(resource_id.removesuffix("-total")), resource_type)
        scored = score_observation(response, await _definition(response))
        if scored is None:
            raise NotFound("resource")
        return scored
    if resource_type == "QuestionnaireResponse":
        response = await _owned(viewer, SurveyResponse, _uuid(resource_id), resource_type)
        return questionnaire_response(response, await _definition(response))
    if resource_type == "Observation" and (reading := _reading_id(resource_id)):  # a session's reading
        session_id, kind, phase = reading
        session = await _owned(viewer, DosingSession, _uuid(session_id), "Observation")
        observation = reading_observation(session, kind, phase)
        if observation is None:
            raise NotFound("resource")
        return observation
    if resource_type == "Observation":  # a check-in
        return check_in_observation(await _owned(viewer, CheckIn, _uuid(resource_id), resource_type))
    if resource_type == "MedicationAdministration":
        return medication_administration(await _owned(viewer, DosingSession, _uuid(resource_id), resource_type))
    if resource_type == "Practitioner":
        providers = await get_providers(viewer, [_uuid(resource_id)])
        if not providers:
            raise NotFound("resource")
        return practitioner(next(iter(providers.values())))
    if resource_type == "CareTeam":
        teams = await get_care_teams(viewer, [_uuid(resource_id)])
        if not teams:
            raise NotFound("resource")
        team = next(iter(teams.values()))
        return care_team(team, await providers_of_care_team(viewer, team.id))
    if resource_type == "MedicationStatement":
        return medication_statement(await _owned(viewer, OpioidDose, _uuid(resource_id), resource_type))
    if resource_type == "Communication":
        message = await Message.get_or_none(id=_uuid(resource_id)).select_related("thread")
        if message is None:
            raise NotFound("resource")
        patient = await clinical_patient(viewer, message.thread.patient_id, resource_type)  # type: ignore[attr-defined]
        senders = await sender_references([patient], {message.sender_id})  # type: ignore[attr-defined]
        return communication(message, message.thread, patient, senders[message.sender_id])  # type: ignore[attr-defined]
    if resource_type == "AdverseEvent":
        return adverse_event(await _owned(viewer, SideEffectReport, _uuid(resource_id), resource_type))
    return flag(await _owned(viewer, Alert, _uuid(resource_id), resource_type))


def _reading_id(resource_id: str) -> tuple[str, str, str] | None:
    """(session id, kind, phase) of a `<session id>-<kind>-<phase>` reading id, or None for an id
    of another shape (a check-in's UUID). A UUID holds no `-bp-`, `-hr-` or `-spo2-`: not hex."""
    for kind in VITAL_SIGNS:
        session_id, separator, phase = resource_id.partition(f"-{kind}-")
        if separator:
            return session_id, kind, phase
    return None


async def _instrument(questionnaire_id: str) -> InstrumentDefinition:
    code, _, version = questionnaire_id.rpartition("-")
    row = await Instrument.get_or_none(code=code, version=version)
    if row is None:
        raise NotFound("resource")
    return InstrumentDefinition.parse(row.definition)


async def questionnaires() -> list[dict[str, Any]]:
    """Every instrument version we have served, as Questionnaires (no patient data)."""
    rows = await Instrument.all().order_by("code", "version")
    return [questionnaire(InstrumentDefinition.parse(row.definition)) for row in rows]


async def patient_bundle(viewer: Viewer, patient_id: UUID, *, now: datetime) -> dict[str, Any]:
    """A patient's record as a FHIR `collection` Bundle: the Patient, then each session with its
    readings, side effects and alerts, oldest first (one query per kind of record)."""
    patient = await clinical_patient(viewer, patient_id, "Bundle")
    resources: list[dict[str, Any]] = [patient_resource(patient)]
    for plan in await TreatmentPlan.filter(patient_id=patient_id).order_by("created_at", "id"):
        resources += [care_plan(plan), medication_request(plan)]
    for session in await DosingSession.filter(patient_id=patient_id).order_by("started_at", "id"):
        resources.append(medication_administration(session))
        resources += reading_observations(session)
    doses = await OpioidDose.filter(patient_id=patient_id).order_by("taken_at", "id")
    resources += [medication_statement(dose) for dose in doses]
    check_ins = await CheckIn.filter(patient_id=patient_id).order_by("recorded_at", "id")
    resources += [check_in_observation(check_in) for check_in in check_ins]
    instruments = await Instrument.all()
    definitions = {(row.code, row.version): InstrumentDefinition.parse(row.definition) for row in instruments}
    for response in await SurveyResponse.filter(patient_id=patient_id).order_by("submitted_at", "id"):
        definition = definitions[(response.instrument, response.instrument_version)]
        resources.append(questionnaire_response(response, definition))
        if scored := score_observation(response, definition):
            resources.append(scored)
    reports = await SideEffectReport.filter(patient_id=patient_id).order_by("reported_at", "id")
    resources += [adverse_event(report) for report in reports]
    resources += [flag(alert) for alert in await Alert.filter(patient_id=patient_id).order_by("raised_at", "id")]
    threads = {thread.id: thread for thread in await MessageThread.filter(patient_id=patient_id)}
    messages = await Message.filter(thread_id__in=list(threads)).order_by("sent_at", "number")
    senders = await sender_references([patient], {message.sender_id for message in messages})  # type: ignore[attr-defined]
    resources += [
        communication(message, threads[message.thread_id], patient, senders[message.sender_id])  # type: ignore[attr-defined]
        for message in messages
    ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _instant(now),
        "total": len(resources),
        "entry": [
            {"fullUrl": f"urn:ketafollow:{resource['resourceType']}/{resource['id']}", "resource": resource}
            for resource in resources
        ],
    }


async def _owned(viewer: Viewer, model: Any, record_id: UUID, resource_type: str) -> Any:
    record = await model.get_or_none(id=record_id)
    if record is None:
        raise NotFound("resource")
    await clinical_patient(viewer, record.patient_id, resource_type)
    return record
