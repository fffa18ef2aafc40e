"""The safety rules for readings and the pre-dose checklist (CLINICAL.md §2, §3): pure
functions, one per rule.

What a reading calls for does not depend on whether the request that carried it is accepted: a
stale pre-dose reading, one sent with a refused start or a refused completion, raises the same
alert (§0). The thresholds are the clinic's (`ClinicPolicy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from models.alerts.alert_rules import AlertKind, AlertSpec, Severity, checklist_alerts, crisis_language_alert
from models.kernel.policy import EMERGENCY_INSTRUCTIONS, BloodPressure, ClinicPolicy
from models.safety.crisis import crisis_matches


class Phase(StrEnum):
    """When a reading was taken: before dosing, at about 40 minutes (clinic), or after."""

    PRE = "PRE"
    AT_40_MIN = "AT_40_MIN"
    POST = "POST"


_WHEN = {Phase.PRE: "Pre-dose", Phase.AT_40_MIN: "40-minute", Phase.POST: "Post-dose"}


@dataclass
class Findings:
    """What screened content calls for: the alerts to raise and the advice for the patient."""

    alerts: list[AlertSpec] = field(default_factory=list)
    advice: dict[str, Any] = field(default_factory=dict)

    def add(self, spec: AlertSpec | None, *, emergency: bool = False, crisis_resources: str | None = None) -> None:
        if spec is not None:
            self.alerts.append(spec)
        if emergency:
            self.advice["safetyInstructions"] = EMERGENCY_INSTRUCTIONS
        if crisis_resources:
            self.advice["crisisResources"] = crisis_resources

    def merge(self, other: Findings) -> None:
        self.alerts.extend(other.alerts)
        if "safetyInstructions" in other.advice and self.advice.get("safetyInstructions") != EMERGENCY_INSTRUCTIONS:
            self.advice["safetyInstructions"] = other.advice["safetyInstructions"]
        if "crisisResources" in other.advice:
            self.advice["crisisResources"] = other.advice["crisisResources"]

    @property
    def urgent(self) -> bool:
        return any(spec.severity is Severity.URGENT for spec in self.alerts)


def blood_pressure_alert(
    reading: BloodPressure, phase: Phase, policy: ClinicPolicy, *, ceiling: BloodPressure | None = None
) -> AlertSpec | None:
    """§2 and §3. Before dosing: at or over `pre_dose_urgent` (180/110) → URGENT, at or over the
    plan's ceiling → HIGH. At 40 minutes or after: at or over `post_dose_urgent` (180/110) →
    URGENT (hypertensive urgency), at or over `post_dose_high` (160/100) → HIGH. Each phase is its
    own rule: readings of one session at 40 minutes and after are not duplicates of each other (§9)."""
    if phase is Phase.PRE:
        if reading.reaches(policy.pre_dose_urgent):
            return AlertSpec(
                AlertKind.PRE_DOSE_BP_ABOVE_CEILING,
                Severity.URGENT,
                f"Pre-dose blood pressure {reading}: hypertensive urgency; do not dose.",
                rule=phase.value,
            )
        limit = ceiling or policy.default_bp_ceiling
        if reading.reaches(limit):
            return AlertSpec(
                AlertKind.PRE_DOSE_BP_ABOVE_CEILING,
                Severity.HIGH,
                f"Pre-dose blood pressure {reading} at or over the plan's ceiling {limit}.",
                rule=phase.value,
            )
        return None
    when = _WHEN[phase]
    if reading.reaches(policy.post_dose_urgent):
        return AlertSpec(
            AlertKind.POST_DOSE_BP_HIGH,
            Severity.URGENT,
            f"{when} blood pressure {reading}: hypertensive urgency.",
            rule=phase.value,
        )
    if reading.reaches(policy.post_dose_high):
        return AlertSpec(
            AlertKind.POST_DOSE_BP_HIGH, Severity.HIGH, f"{when} blood pressure {reading}.", rule=phase.value
        )
    return None


def oxygen_saturation_alert(spo2: int, phase: Phase, policy: ClinicPolicy) -> AlertSpec | None:
    """§2 breathing and oxygen (REMS pulse oximetry): SpO2 below `spo2_urgent_below` (90 %) →
    URGENT; below `spo2_high_below` (94 %, so 90-93 %) → HIGH."""
    when = _WHEN[phase]
    if spo2 < policy.spo2_urgent_below:
        return AlertSpec(
            AlertKind.LOW_OXYGEN_SATURATION, Severity.URGENT, f"{when} SpO2 {spo2} %: low oxygen.", rule=phase.value
        )
    if spo2 < policy.spo2_high_below:
        return AlertSpec(AlertKind.LOW_OXYGEN_SATURATION, Severity.HIGH, f"{when} SpO2 {spo2} %.", rule=phase.value)
    return None


def reading_findings(
    phase: Phase,
    policy: ClinicPolicy,
    *,
    systolic: int | None,
    diastolic: int | None,
    spo2: int | None,
    ceiling: BloodPressure | None = None,
) -> Findings:
    """Everything one reading calls for (§2, §3), whatever else is wrong with the request that
    carried it: an urgent alert comes with emergency instructions."""
    findings = Findings()
    if systolic is not None and diastolic is not None:
        spec = blood_pressure_alert(BloodPressure(systolic, diastolic), phase, policy, ceiling=ceiling)
        findings.add(spec, emergency=spec is not None and spec.severity is Severity.URGENT)
    if spo2 is not None:
        spec = oxygen_saturation_alert(spo2, phase, policy)
        findings.add(spec, emergency=spec is not None and spec.severity is Severity.URGENT)
    return findings


# CLINICAL.md §2, the checklist's "on yes" column beyond its alerts (`CHECKLIST_ALERTS` in
# models/alerts/alert_rules.py): the items that call for emergency instructions, and for crisis resources.
CHECKLIST_EMERGENCY_ITEMS = frozenset({"CHEST_PAIN_OR_SOB", "SEVERE_HEADACHE"})
CHECKLIST_CRISIS_ITEMS = frozenset({"SUICIDAL_THOUGHTS"})


def checklist_findings(answered_yes: tuple[str, ...] | list[str], policy: ClinicPolicy) -> Findings:
    """§2, the pre-dose checklist's "on yes" column: each item answered "yes" raises the alert the
    table marks it with (`URGENT`, `HIGH` for `PREGNANT`, `ROUTINE` for `NEW_MEDICATION`), chest
    pain or a severe headache call for emergency instructions, suicidal thoughts for crisis
    resources; also on a checklist that is incomplete or refused (§0)."""
    findings = Findings()
    for spec in checklist_alerts(list(answered_yes)):
        findings.add(spec)
    findings.add(None, emergency=bool(set(answered_yes) & CHECKLIST_EMERGENCY_ITEMS))
    if set(answered_yes) & CHECKLIST_CRISIS_ITEMS:
        findings.add(None, crisis_resources=policy.crisis_text())
    return findings


def crisis_findings(text: str | None, where: str, policy: ClinicPolicy) -> Findings:
    """§7: crisis wording in a patient's free text → URGENT alert with the match shown, and the
    crisis resources for the patient. Every scanned field goes through here, as part of the
    screen that runs whatever the request's outcome (§0)."""
    findings = Findings()
    matches = crisis_matches(text, policy.crisis_phrases)
    if matches:
        findings.add(crisis_language_alert(matches, where), crisis_resources=policy.crisis_text())
    return findings


def respiratory_depression_alert(observed: bool) -> AlertSpec | None:
    """§1 (the REMS monitoring form asks whether respiratory depression occurred) and §2
    breathing and oxygen (REMS, updated 12/2024): respiratory depression observed during a
    clinic session → URGENT, as slow or shallow breathing is an always-urgent side effect (§4)."""
    if not observed:
        return None
    return AlertSpec(
        AlertKind.SIDE_EFFECT,
        Severity.URGENT,
        "Respiratory depression observed during the clinic session.",
        rule="RESPIRATORY_DEPRESSION",
    )
