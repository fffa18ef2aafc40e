"""What patients report between sessions, as FHIR: a daily check-in as an Observation, a side
effect as an AdverseEvent (CLINICAL.md §4 for the side effects' codes; PRODUCT.md capability 10).

Both are read under the patient's chart rule (`patient_row`). A check-in's id is the record's UUID: any
Observation id that is not a reading's nor a score's (the registry asks those readers first).
"""

from __future__ import annotations

from typing import Any

from models.ehr.fhir.common import (
    HL7,
    KETAFOLLOW_CODE_SYSTEMS,
    LOINC,
    SNOMED,
    category,
    concept,
    instant,
    meta,
    patient_row,
    patient_rows,
    reference,
)
from models.reports.checkins import CheckIn
from models.reports.side_effects import CATALOGUE, Grade, SideEffectReport

SIDE_EFFECT_CODES = f"{KETAFOLLOW_CODE_SYSTEMS}/side-effects"
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
        "meta": meta(check_in.updated_at),
        "status": "final",
        "category": category("survey", "Survey"),
        "code": concept(LOINC, PAIN_NRS_LOINC, "Pain severity 0-10 numeric rating, reported"),
        "subject": reference("Patient", check_in.patient_id),  # type: ignore[attr-defined]
        "effectiveDateTime": instant(check_in.recorded_at),
        "issued": instant(check_in.received_at),
        "valueInteger": check_in.pain,
    }
    if components:
        resource["component"] = components
    if check_in.note:
        resource["note"] = [{"text": check_in.note}]
    return resource


_SEVERITY = {Grade.MILD: "mild", Grade.MODERATE: "moderate", Grade.SEVERE: "severe", Grade.LIFE_THREATENING: "severe"}


def adverse_event(report: SideEffectReport) -> dict[str, Any]:
    """A side effect (CLINICAL.md §4): SNOMED CT code (or the catalogue's own code in our code
    system where no standard one fits), seriousness, severity, the session as the suspect entity."""
    entry = CATALOGUE[report.code]
    if entry.snomed:
        event = concept(SNOMED, entry.snomed, entry.label)
    elif entry.local_code:
        event = concept(SIDE_EFFECT_CODES, report.code, entry.label)
    else:
        event = {"text": entry.label}
    if report.note:
        event["text"] = f"{entry.label}: {report.note}"
    serious = report.grade in (Grade.SEVERE, Grade.LIFE_THREATENING)
    resolved = report.resolved_at is not None
    resource: dict[str, Any] = {
        "resourceType": "AdverseEvent",
        "id": str(report.id),
        "meta": meta(report.updated_at, report.version),
        "actuality": "actual",
        "event": event,
        "subject": reference("Patient", report.patient_id),  # type: ignore[attr-defined]
        "date": instant(report.onset_at),
        "recordedDate": instant(report.recorded_at or report.reported_at),
        "seriousness": concept(
            f"{HL7}/adverse-event-seriousness",
            "serious" if serious else "non-serious",
            "Serious" if serious else "Non-serious",
        ),
        "severity": concept(
            f"{HL7}/adverse-event-severity", _SEVERITY[report.grade], _SEVERITY[report.grade].capitalize()
        ),
        "outcome": concept(
            f"{HL7}/adverse-event-outcome",
            "resolved" if resolved else "ongoing",
            "Resolved" if resolved else "Ongoing",
        ),
    }
    if report.session_id is not None:  # type: ignore[attr-defined]
        resource["suspectEntity"] = [{"instance": reference("MedicationAdministration", report.session_id)}]  # type: ignore[attr-defined]
    return resource


CHECK_IN_OBSERVATION = patient_row("Observation", CheckIn, check_in_observation)
ADVERSE_EVENT = patient_row("AdverseEvent", SideEffectReport, adverse_event)

CHECK_INS = patient_rows(
    "CheckIn", ("Observation",), CheckIn, lambda row: [check_in_observation(row)], oldest_first=("recorded_at", "id")
)
SIDE_EFFECTS = patient_rows(
    "SideEffectReport",
    ("AdverseEvent",),
    SideEffectReport,
    lambda row: [adverse_event(row)],
    oldest_first=("reported_at", "id"),
)
