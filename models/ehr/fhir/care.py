"""The treatment as FHIR: a dosing session as a MedicationAdministration and each of its readings
as an Observation, a treatment plan as a CarePlan and a MedicationRequest (CLINICAL.md §1-§3 for
the readings, §11 for their codes; PRODUCT.md capability 10).

Every resource here is read under the patient's chart rule (`patient_row`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.care.dosing_records import DosingSession, SessionStatus
from models.care.plan_records import DoseUnit, PlanStatus, TreatmentPlan
from models.ehr.fhir.common import (
    LOINC,
    RXNORM,
    SNOMED,
    UCUM,
    Readable,
    Resource,
    category,
    concept,
    instant,
    meta,
    owned_record,
    patient_row,
    patient_rows,
    period,
    questionnaire_canonical,
    record_id,
    reference,
)
from models.identity.access import Viewer
from models.kernel.errors import NotFound

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


def medication_administration(session: DosingSession) -> dict[str, Any]:
    """A dosing session as a MedicationAdministration: ketamine, route, dose, when."""
    route_code, route_name = ROUTES[session.formulation]
    return {
        "resourceType": "MedicationAdministration",
        "id": str(session.id),
        "meta": meta(session.updated_at, session.version),
        "status": ADMINISTRATION_STATUS[session.status],
        "medicationCodeableConcept": _ketamine(session.formulation),
        "subject": reference("Patient", session.patient_id),  # type: ignore[attr-defined]
        "effectivePeriod": period(session.started_at, session.ended_at),
        "dosage": {
            "route": concept(SNOMED, route_code, route_name),
            "dose": {"value": float(session.dose_mg), "unit": "mg", "system": UCUM, "code": "mg"},
        },
    }


def _pressure(code: str, name: str, value: int) -> dict[str, Any]:
    return {
        "code": concept(LOINC, code, name),
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
        "meta": meta(session.updated_at, session.version),
        "status": "entered-in-error" if voided else "final",
        "category": category("vital-signs", "Vital Signs"),
        "code": code,
        "subject": reference("Patient", session.patient_id),  # type: ignore[attr-defined]
        "partOf": [reference("MedicationAdministration", session.id)],
    }
    measured_at = _reading(session, phase).measured_at
    if measured_at is not None:
        observation["effectiveDateTime"] = instant(measured_at)
    return observation


def blood_pressure_observation(session: DosingSession, phase: str) -> dict[str, Any] | None:
    """A session's blood pressure before, at 40 minutes or after dosing (CLINICAL.md §11: 85354-9
    with 8480-6 and 8462-4, mm[Hg]); None when it was not measured."""
    reading = _reading(session, phase)
    if reading.systolic is None or reading.diastolic is None:
        return None
    observation = _vital_sign(
        session, "bp", phase, concept(LOINC, "85354-9", "Blood pressure panel with all children optional")
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
    observation = _vital_sign(session, "hr", phase, concept(LOINC, "8867-4", "Heart rate"))
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
    return concept(RXNORM, KETAMINE_RXCUI, "Ketamine")


def medication_request(plan: TreatmentPlan) -> dict[str, Any]:
    """A treatment plan's prescription: ketamine, route, dose per session, sessions per week."""
    route_code, route_name = ROUTES[plan.formulation]
    unit = _DOSE_UNITS[plan.dose_unit]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": str(plan.id),
        "meta": meta(plan.updated_at, plan.version),
        "status": _PLAN_STATUS[plan.status][1],
        "intent": "order",
        "medicationCodeableConcept": _ketamine(plan.formulation),
        "subject": reference("Patient", plan.patient_id),  # type: ignore[attr-defined]
        "authoredOn": instant(plan.created_at),
        "requester": reference("Practitioner", plan.prescriber_id),  # type: ignore[attr-defined]
        "dosageInstruction": [
            {
                "text": (
                    f"{plan.dose.normalize():f} {unit} per session, up to {plan.sessions_per_week} sessions a week, "
                    f"at least {plan.min_hours_between_sessions} h apart"
                    + (", with a treatment monitor present" if plan.monitor_required else "")
                ),
                "timing": {"repeat": {"frequency": plan.sessions_per_week, "period": 1, "periodUnit": "wk"}},
                "route": concept(SNOMED, route_code, route_name),
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
                "instantiatesCanonical": [questionnaire_canonical(item.instrument)],
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
        "meta": meta(plan.updated_at, plan.version),
        "status": _PLAN_STATUS[plan.status][0],
        "intent": "plan",
        "title": "Ketamine treatment plan",
        "description": (
            f"{plan.planned_sessions} sessions ({plan.setting.value.lower().replace('_', ' ')}); hold the dose "
            f"when blood pressure exceeds {plan.bp_ceiling_systolic}/{plan.bp_ceiling_diastolic} mmHg"
        ),
        "subject": reference("Patient", plan.patient_id),  # type: ignore[attr-defined]
        "period": {"start": instant(plan.created_at)},
        "created": instant(plan.created_at),
        "author": reference("Practitioner", plan.prescriber_id),  # type: ignore[attr-defined]
        "activity": [{"reference": reference("MedicationRequest", plan.id)}, *surveys],
    }
    if plan.notes:
        resource["note"] = [{"text": plan.notes}]
    return resource


def _reading_id(resource_id: str) -> tuple[str, str, str] | None:
    """(session id, kind, phase) of a `<session id>-<kind>-<phase>` reading id, or None for an id
    of another shape (a check-in's UUID). A UUID holds no `-bp-`, `-hr-` or `-spo2-`: not hex."""
    for kind in VITAL_SIGNS:
        session_id, separator, phase = resource_id.partition(f"-{kind}-")
        if separator:
            return session_id, kind, phase
    return None


async def _session_reading(viewer: Viewer, resource_id: str) -> tuple[DosingSession, str, str]:
    """The session of a reading id, if the viewer may read it, with the reading's kind and phase
    (checked when rendered: a reading of another kind or phase does not exist)."""
    reading = _reading_id(resource_id)
    if reading is None:  # not a reading's id (never: this reader claims reading ids only)
        raise NotFound("resource")
    session_id, kind, phase = reading
    return await owned_record(viewer, DosingSession, record_id(session_id), "Observation"), kind, phase


def _is_reading_id(resource_id: str) -> bool:
    return _reading_id(resource_id) is not None


def session_resources(session: DosingSession) -> list[Resource]:
    """A session and its readings: wherever a session is exported, its readings come with it."""
    return [medication_administration(session), *reading_observations(session)]


MEDICATION_ADMINISTRATION = patient_row("MedicationAdministration", DosingSession, medication_administration)
READING_OBSERVATION = Readable(
    "Observation", _session_reading, lambda found: reading_observation(*found), claims=_is_reading_id
)
CARE_PLAN = patient_row("CarePlan", TreatmentPlan, care_plan)
MEDICATION_REQUEST = patient_row("MedicationRequest", TreatmentPlan, medication_request)

PLANS = patient_rows(
    "TreatmentPlan",
    ("CarePlan", "MedicationRequest"),
    TreatmentPlan,
    lambda plan: [care_plan(plan), medication_request(plan)],
    oldest_first=("created_at", "id"),
)
SESSIONS = patient_rows(
    "DosingSession",
    ("MedicationAdministration", "Observation"),
    DosingSession,
    session_resources,
    oldest_first=("started_at", "id"),
)
