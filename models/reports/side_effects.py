"""Side-effect reports: the catalogue, the grading rules, and what the patient is told (CLINICAL.md §4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from tortoise import fields
from tortoise.transactions import in_transaction

from models.alerts.alert_rules import AlertKind, AlertSpec, Severity
from models.care.dosing_records import DosingSession
from models.care.plan_records import PlanStatus, TreatmentPlan
from models.care.plans import change_plan_status
from models.identity.access import Viewer, clinical_record, require_clinical_access, require_patient_self
from models.identity.accounts import Patient
from models.kernel.audit import AuditAction, denied
from models.kernel.base import Entity
from models.kernel.errors import Forbidden, InvalidInput, NotFound
from models.kernel.events import record_created
from models.kernel.idempotency import Outcome, request_fields, run_once
from models.kernel.pages import newest_first
from models.kernel.policy import EMERGENCY_INSTRUCTIONS, ClinicPolicy
from models.kernel.text import kept_note
from models.safety.rules import Findings, crisis_findings
from models.safety.screen import Action, Submission, screen


class Grade(StrEnum):
    """CTCAE-style grades (CLINICAL.md §4)."""

    MILD = "MILD"
    MODERATE = "MODERATE"
    SEVERE = "SEVERE"
    LIFE_THREATENING = "LIFE_THREATENING"


@dataclass(frozen=True)
class CatalogueEntry:
    label: str
    snomed: str | None
    always_urgent: bool = False
    # No SNOMED CT concept fits the symptom as reported (the near ones are diagnoses or narrower):
    # FHIR carries the catalogue code itself in our own code system.
    local_code: bool = False


# CLINICAL.md §4: the catalogue, with SNOMED CT codes for FHIR, or a local code where a standard
# one would say more than the patient reported (44376007 is dissociative disorder, a diagnosis;
# 49650001 is dysuria, pain only).
CATALOGUE: dict[str, CatalogueEntry] = {
    "NAUSEA": CatalogueEntry("Nausea", "422587007"),
    "VOMITING": CatalogueEntry("Vomiting", "422400008"),
    "DIZZINESS": CatalogueEntry("Dizziness", "404640003"),
    "HEADACHE": CatalogueEntry("Headache", "25064002"),
    "DISSOCIATION": CatalogueEntry("Dissociation", None, local_code=True),
    "SEDATION": CatalogueEntry("Sedation (drowsy)", "271782001"),
    "ELEVATED_BLOOD_PRESSURE": CatalogueEntry("High blood pressure", "24184005"),
    "PALPITATIONS": CatalogueEntry("Palpitations", "80313002"),
    "ANXIETY": CatalogueEntry("Anxiety", "48694002"),
    "HALLUCINATIONS": CatalogueEntry("Hallucinations", "7011001"),
    "CONFUSION": CatalogueEntry("Confusion", "286933003"),
    "BLURRED_VISION": CatalogueEntry("Blurred vision", "111516008"),
    "URINARY_SYMPTOMS": CatalogueEntry("Urinary urgency, frequency or pain", None, local_code=True),
    "BLOOD_IN_URINE": CatalogueEntry("Blood in urine", "34436003", always_urgent=True),
    "CHEST_PAIN": CatalogueEntry("Chest pain", "29857009", always_urgent=True),
    "SHORTNESS_OF_BREATH": CatalogueEntry("Shortness of breath", "267036007", always_urgent=True),
    # Respiratory depression (REMS, updated 12/2024).
    "SLOW_OR_SHALLOW_BREATHING": CatalogueEntry("Slow or shallow breathing", None, always_urgent=True, local_code=True),
    "SUICIDAL_THOUGHTS": CatalogueEntry("Suicidal thoughts", "6471006", always_urgent=True),
    "FALL_OR_INJURY": CatalogueEntry("Fall or injury", "1912002"),
    "CRAVING_OR_MISUSE": CatalogueEntry("Craving or misuse", None),
    "ALLERGIC_REACTION": CatalogueEntry("Allergic reaction", "419076005"),
    "OTHER": CatalogueEntry("Other", None),
}
# CLINICAL.md §4: "Call 911 (emergency services) now" whatever the grade.
_CALL_911_ANY_GRADE = frozenset({"CHEST_PAIN", "SHORTNESS_OF_BREATH", "SLOW_OR_SHALLOW_BREATHING"})


def side_effect_alert(code: str, grade: Grade) -> AlertSpec | None:
    """CLINICAL.md §4: MODERATE → ROUTINE; SEVERE → HIGH; LIFE_THREATENING or an always-urgent code
    → URGENT; CRAVING_OR_MISUSE at any grade → at least HIGH. MILD alone raises nothing. A code
    not in the catalogue is judged by its grade (it is screened before it is refused, §0)."""
    entry = CATALOGUE.get(code)
    label = entry.label if entry else f"Unlisted side effect {code[:40]!r}"
    if grade is Grade.LIFE_THREATENING or (entry is not None and entry.always_urgent):
        return AlertSpec(AlertKind.SIDE_EFFECT, Severity.URGENT, f"{label} reported as {grade.value}.")
    if code == "CRAVING_OR_MISUSE":
        return AlertSpec(
            AlertKind.MISUSE_CONCERN, Severity.HIGH, f"Patient reported craving or misuse ({grade.value})."
        )
    if grade is Grade.SEVERE:
        return AlertSpec(AlertKind.SIDE_EFFECT, Severity.HIGH, f"{label} reported as SEVERE.")
    if grade is Grade.MODERATE:
        return AlertSpec(AlertKind.SIDE_EFFECT, Severity.ROUTINE, f"{label} reported as MODERATE.")
    return None


def side_effect_holds_plan(code: str, grade: Grade) -> bool:
    """CLINICAL.md §4: SEVERE, LIFE_THREATENING or an always-urgent code put the plan ON_HOLD."""
    entry = CATALOGUE.get(code)
    return grade in (Grade.SEVERE, Grade.LIFE_THREATENING) or (entry is not None and entry.always_urgent)


def side_effect_calls_for_911(code: str, grade: Grade) -> bool:
    """CLINICAL.md §4: the reports whose advice is "Call 911 (emergency services) now": grade
    LIFE_THREATENING, chest pain, shortness of breath or slow breathing at any grade, an allergic
    reaction from SEVERE up. One rule for the screen's advice and the payload's."""
    return (
        grade is Grade.LIFE_THREATENING
        or code in _CALL_911_ANY_GRADE
        or (code == "ALLERGIC_REACTION" and grade in (Grade.SEVERE, Grade.LIFE_THREATENING))
    )


def side_effect_calls_for_crisis_resources(code: str) -> bool:
    """CLINICAL.md §4 (and §7): a report of suicidal thoughts returns the crisis resources, at any
    grade. One rule for the screen's advice and the payload's."""
    return code == "SUICIDAL_THOUGHTS"


def side_effect_advice(
    code: str, grade: Grade, respond_by: datetime | None, time_zone: str, policy: ClinicPolicy
) -> dict[str, Any]:
    """CLINICAL.md §4: what the patient is told after a report."""
    advice: dict[str, Any] = {}
    if side_effect_calls_for_911(code, grade):
        advice["safetyInstructions"] = EMERGENCY_INSTRUCTIONS
    elif respond_by is not None:
        local = respond_by.astimezone(ZoneInfo(time_zone))
        when = f"{local:%a %d %b, %H:%M} {local.tzname()}"
        advice["safetyInstructions"] = (
            f"Your care team has been told and will respond by {when}. "
            "If you feel worse or unsafe before then, call 911."
        )
    else:
        advice["safetyInstructions"] = (
            "Thank you: your care team will review this report. If it gets worse, report it again."
        )
    if side_effect_calls_for_crisis_resources(code):
        advice["crisisResources"] = policy.crisis_text()
    return advice


class SideEffectReport(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="side_effect_reports", on_delete=fields.RESTRICT
    )
    session: fields.ForeignKeyNullableRelation[DosingSession] = fields.ForeignKeyField(
        "ketafollow.DosingSession", related_name="side_effect_reports", null=True, on_delete=fields.RESTRICT
    )
    code = fields.CharField(max_length=40)
    grade = fields.CharEnumField(Grade, max_length=20)
    onset_at = fields.DatetimeField()
    resolved_at = fields.DatetimeField(null=True)
    reported_at = fields.DatetimeField()
    # When the patient made the report on the phone (sent by an app replaying its offline queue);
    # `reported_at` is when the server received it.
    recorded_at = fields.DatetimeField(null=True)
    note = fields.TextField(default="")
    version = fields.IntField(default=1)

    class Meta:
        table = "side_effect_report"
        indexes = (("patient_id", "onset_at"),)


@dataclass(frozen=True)
class NewSideEffect:
    code: str
    grade: Grade
    onset_at: datetime | None
    session_id: UUID | None = None
    resolved_at: datetime | None = None
    note: str = ""
    recorded_at: datetime | None = None
    idempotency_key: str | None = None
    # Input the API could not read (an id of another type, a time without its offset).
    problems: tuple[InvalidInput, ...] = ()


def _validate(data: NewSideEffect, now: datetime, policy: ClinicPolicy) -> datetime:
    """CLINICAL.md §4: a code of the catalogue, free text for `OTHER`, and times a phone can
    have; runs after the screen (§0), so a refused report has already raised its alert."""
    if data.problems:
        raise data.problems[0]
    if data.code not in CATALOGUE:
        raise InvalidInput("code", f"unknown side effect {data.code!r}")
    if data.code == "OTHER" and not data.note.strip():
        raise InvalidInput("note", "describe the side effect when the code is OTHER")
    kept_note(data.note)
    if data.onset_at is None:
        raise InvalidInput("onsetAt", "onsetAt is required")
    policy.check_device_time("recordedAt", data.recorded_at, now)
    policy.check_device_time("onsetAt", data.onset_at, now)
    if data.recorded_at is not None and data.onset_at > data.recorded_at + policy.clock_skew:
        raise InvalidInput("onsetAt", "onsetAt is after recordedAt: a side effect is reported after it starts")
    if data.resolved_at is not None and not data.onset_at <= data.resolved_at <= now + policy.clock_skew:
        raise InvalidInput("resolvedAt", "resolvedAt must be between onsetAt and now")
    return data.onset_at


def side_effect_findings(data: NewSideEffect, policy: ClinicPolicy) -> Findings:
    """CLINICAL.md §0, §4, §7: what a report calls for whatever else is wrong with it: its alert
    by code and grade, crisis wording in its note, and the emergency instructions of §4."""
    findings = Findings()
    findings.add(side_effect_alert(data.code, data.grade), emergency=side_effect_calls_for_911(data.code, data.grade))
    if side_effect_calls_for_crisis_resources(data.code):
        findings.add(None, crisis_resources=policy.crisis_text())
    findings.merge(crisis_findings(data.note, "a side-effect note", policy))
    return findings


def _automatic_hold(data: NewSideEffect, now: datetime) -> Action:
    async def hold(patient: Patient) -> None:
        """CLINICAL.md §4: the plan goes on hold, also when the report itself is refused (§0)."""
        plan = await TreatmentPlan.filter(patient_id=patient.id, status=PlanStatus.ACTIVE).select_for_update().first()
        if plan is not None:
            entry = CATALOGUE.get(data.code)
            label = entry.label if entry else data.code[:40]
            reason = f"automatic hold: {label} reported as {data.grade.value}"
            await change_plan_status(plan, PlanStatus.ON_HOLD, reason, changed_by=None, now=now)

    return hold


async def report_side_effect(viewer: Viewer, data: NewSideEffect, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """Store a patient's report; alert, hold the plan and advise as CLINICAL.md §4 says. The
    report is screened first (§0): its alert, hold and advice stand even when it is refused."""
    refusal = Forbidden("side effects are reported by the patient")
    patient_id = require_patient_self(viewer, refusal, AuditAction.CREATE, "SideEffectReport")
    content = {"code": data.code, "grade": data.grade.value, "note": data.note}
    actions = [_automatic_hold(data, now)] if side_effect_holds_plan(data.code, data.grade) else []
    submission = Submission(
        "reportSideEffect", patient_id, content, side_effect_findings(data, policy),
        idempotency_key=data.idempotency_key, recorded_at=data.recorded_at, actions=actions,
    )  # fmt: skip
    screened = await screen(submission, now=now, policy=policy)
    patient = await Patient.get(id=patient_id)
    deadline = min((alert.respond_by for alert in screened.alerts), default=None)
    advice = side_effect_advice(data.code, data.grade, deadline, patient.time_zone, policy)
    screened.advice = {**advice, **screened.advice}
    return await screened.guard(_report(viewer, patient, data, now=now, policy=policy), record_type="SideEffectReport")


async def _report(
    viewer: Viewer, patient: Patient, data: NewSideEffect, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    onset_at = _validate(data, now, policy)
    if data.session_id is not None and not await DosingSession.exists(id=data.session_id, patient_id=patient.id):
        # Another patient's session or none at all: one answer, audited like any refused access.
        refusal = InvalidInput("sessionId", "sessionId is not one of your sessions")
        raise denied(viewer, refusal, AuditAction.CREATE, "SideEffectReport", resource_id=data.session_id)

    async def write() -> Outcome:
        async with in_transaction():
            report = await SideEffectReport.create(
                patient=patient,
                session_id=data.session_id,
                code=data.code,
                grade=data.grade,
                onset_at=onset_at,
                resolved_at=data.resolved_at,
                reported_at=now,
                recorded_at=data.recorded_at,
                note=kept_note(data.note),
            )
            await record_created(viewer, "SideEffectReport", report.id, patient.id, now=now)
        return Outcome(report.id)

    return await run_once(viewer, "reportSideEffect", data.idempotency_key, request_fields(data), write, now=now)


async def list_side_effects(
    viewer: Viewer, patient_id: UUID, *, limit: int, before: tuple[datetime, UUID] | None = None
) -> list[SideEffectReport]:
    """A patient's side-effect reports, most recent onset first."""
    await require_clinical_access(viewer, patient_id, "SideEffectReport")
    return await newest_first(SideEffectReport, "onset_at", limit=limit, before=before, patient_id=patient_id)


async def get_side_effect(viewer: Viewer, report_id: UUID) -> SideEffectReport:
    return await clinical_record(viewer, SideEffectReport, report_id, NotFound("side-effect report"))
