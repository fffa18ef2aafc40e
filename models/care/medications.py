"""Interactions to surface before a dose (CLINICAL.md §8): warnings, not refusals.

Each class of concomitant medication on the plan (`models.care.plan_records.MedicationClass`) returns its
warning on every `startDosingSession`, beside the one for an opioid logged in the 4 hours before
the start (`models.outcomes.opioids`); `start_warnings` gives them all, in the shape the payload shows and
the session keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from tortoise.transactions import in_transaction

from models.alerts.alert_rules import AlertKind, AlertSpec, Severity
from models.care.plan_records import (
    CURRENT_STATUSES,
    ConcomitantMedication,
    MedicationClass,
    MedicationSource,
    TreatmentPlan,
)
from models.care.plans import record_plan_medications
from models.identity.access import Viewer, require_patient_self
from models.kernel.audit import AuditAction
from models.kernel.errors import Forbidden, InvalidInput, NotFound
from models.kernel.idempotency import Outcome, run_once
from models.kernel.policy import ClinicPolicy
from models.outcomes.opioids import InteractionWarning, session_warnings
from models.safety.rules import Findings, crisis_findings
from models.safety.screen import Submission, screened_write

_SEDATION = "adds to sleepiness and may make ketamine work less well: keep your monitor with you during the session."
_BLOOD_PRESSURE = (
    "can raise your blood pressure further: measure it before the session as usual, and tell your care team if "
    "it is high."
)

# CLINICAL.md §8, one sentence for the patient per class, in the order they are shown.
INTERACTION_WARNINGS: dict[MedicationClass, str] = {
    MedicationClass.OPIOID: (
        "Your plan lists an opioid. Together with ketamine, opioids add to sleepiness and can slow breathing: keep "
        "your monitor with you, and if breathing becomes slow or shallow, or you cannot be woken, your monitor "
        "should call 911."
    ),
    MedicationClass.BENZODIAZEPINE: f"Your plan lists a benzodiazepine. Together with ketamine it {_SEDATION}",
    MedicationClass.NON_BENZODIAZEPINE_HYPNOTIC: (
        f"Your plan lists a sleep medicine (such as zolpidem). Together with ketamine it {_SEDATION}"
    ),
    MedicationClass.OTHER_SEDATIVE: (
        f"Your plan lists another medicine that makes you sleepy. Together with ketamine it {_SEDATION}"
    ),
    MedicationClass.PSYCHOSTIMULANT: (
        "Your plan lists a stimulant (such as amphetamine, methylphenidate or modafinil). Together with ketamine it "
        f"{_BLOOD_PRESSURE}"
    ),
    MedicationClass.MAOI: f"Your plan lists an MAOI antidepressant. Together with ketamine it {_BLOOD_PRESSURE}",
    MedicationClass.THEOPHYLLINE: (
        "Your plan lists theophylline or aminophylline. Together with ketamine it may make a seizure more likely: "
        "if you have a seizure, your monitor should call 911."
    ),
    MedicationClass.LAMOTRIGINE: (
        "Your plan lists lamotrigine, which may make ketamine work less well: tell your care team how this "
        "session went."
    ),
    MedicationClass.MEMANTINE: (
        "Your plan lists memantine, which acts on the same receptor in the brain as ketamine: tell your care team "
        "how this session went."
    ),
}


def interaction_warnings(classes: Iterable[MedicationClass]) -> list[InteractionWarning]:
    """CLINICAL.md §8: the warning of each class of concomitant medication given, each once, in
    the table's order (its code is the class, e.g. `BENZODIAZEPINE`)."""
    present = set(classes)
    return [
        InteractionWarning(kind.value, message) for kind, message in INTERACTION_WARNINGS.items() if kind in present
    ]


async def start_warnings(
    plan: TreatmentPlan, started_at: datetime, *, policy: ClinicPolicy
) -> list[InteractionWarning]:
    """Every CLINICAL.md §8 warning of a session started at `started_at` under a plan: an opioid
    logged in the 4 hours before it (`OPIOID_WITHIN_4_HOURS`, or a patch still worn), then each
    class of concomitant medication on the plan. What `startDosingSession` keeps on the session
    (as the REMS form does) and returns beside its result."""
    patient_id: UUID = plan.patient_id  # type: ignore[attr-defined]
    recent_opioid = await session_warnings(patient_id, started_at, policy=policy)
    return [*recent_opioid, *interaction_warnings(entry.medication_class for entry in plan.medications)]


@dataclass(frozen=True)
class NewMedication:
    """A patient's report of a medication they started (CLINICAL.md §8)."""

    medication_class: MedicationClass
    note: str = ""
    idempotency_key: str | None = None


MAX_NOTE = 500
NEW_MEDICATION_ADVICE = (
    "Your care team has been told and will review this medication with your treatment. Until they have, "
    "answer yes to the new-medication question before a session."
)


def new_medication_alert(medication_class: MedicationClass, note: str) -> AlertSpec:
    """CLINICAL.md §2 and §8: a patient's report of a new medication raises the ROUTINE
    new-medication alert (the care team reviews interactions)."""
    described = f" ({note.strip()[:100]})" if note.strip() else ""
    return AlertSpec(
        AlertKind.NEW_MEDICATION,
        Severity.ROUTINE,
        f"Patient reported a new medication: {medication_class.value}{described}.",
        rule=medication_class.value,
    )


async def report_new_medication(viewer: Viewer, data: NewMedication, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """The patient adds a class of medication to their current plan (source PATIENT). The report
    is screened first (CLINICAL.md §0): its alert is raised even when the report is refused."""
    refusal = Forbidden("new medications are reported by the patient")
    patient_id = require_patient_self(viewer, refusal, AuditAction.UPDATE, "TreatmentPlan")
    findings = Findings(advice={"safetyInstructions": NEW_MEDICATION_ADVICE})
    findings.add(new_medication_alert(data.medication_class, data.note))
    findings.merge(crisis_findings(data.note, "a medication report", policy))
    content = {"medicationClass": data.medication_class.value, "note": data.note}
    submission = Submission("reportNewMedication", patient_id, content, findings, idempotency_key=data.idempotency_key)
    return await screened_write(
        submission, lambda: _report(viewer, patient_id, data, now=now), record_type="TreatmentPlan", now=now,
        policy=policy,
    )  # fmt: skip


async def _report(viewer: Viewer, patient_id: UUID, data: NewMedication, *, now: datetime) -> Outcome:
    note = data.note.strip()
    if len(note) > MAX_NOTE:
        raise InvalidInput("note", f"note must be at most {MAX_NOTE} characters")

    async def write() -> Outcome:
        async with in_transaction():
            plan = (
                await TreatmentPlan.filter(patient_id=patient_id, status__in=CURRENT_STATUSES)
                .select_for_update()
                .first()
            )
            if plan is None:
                raise NotFound("treatment plan")
            if all(entry.medication_class is not data.medication_class for entry in plan.medications):
                reported = ConcomitantMedication(data.medication_class, MedicationSource.PATIENT, now, note or None)
                await record_plan_medications(plan, [*plan.medications, reported], viewer, now=now)
        return Outcome(plan.id)

    request = {"medication_class": data.medication_class.value, "note": note}
    return await run_once(viewer, "reportNewMedication", data.idempotency_key, request, write, now=now)
