"""Alert rules: which facts raise which alert, how severe, and by when someone must respond.

Pure functions, one per rule, each naming its source in CLINICAL.md. The operations that store
alerts (models.alerts.alerts) call them; nothing else decides severity or deadlines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from models.kernel.policy import BloodPressure, ClinicPolicy


class Severity(StrEnum):
    URGENT = "URGENT"
    HIGH = "HIGH"
    ROUTINE = "ROUTINE"

    @property
    def rank(self) -> int:
        """Sort key: most urgent first."""
        return {"URGENT": 0, "HIGH": 1, "ROUTINE": 2}[self.value]


class AlertKind(StrEnum):
    PRE_DOSE_BP_ABOVE_CEILING = "PRE_DOSE_BP_ABOVE_CEILING"
    PRE_DOSE_CHECKLIST = "PRE_DOSE_CHECKLIST"
    POST_DOSE_BP_HIGH = "POST_DOSE_BP_HIGH"
    NOT_BACK_TO_BASELINE = "NOT_BACK_TO_BASELINE"
    SESSION_ABANDONED = "SESSION_ABANDONED"
    SIDE_EFFECT = "SIDE_EFFECT"
    MISUSE_CONCERN = "MISUSE_CONCERN"
    CRISIS_LANGUAGE = "CRISIS_LANGUAGE"
    SURVEY_ANSWER = "SURVEY_ANSWER"
    SAFETY_CHECK_UNANSWERED = "SAFETY_CHECK_UNANSWERED"
    DOSED_DESPITE_FAILED_CHECKS = "DOSED_DESPITE_FAILED_CHECKS"
    LOW_OXYGEN_SATURATION = "LOW_OXYGEN_SATURATION"
    NEW_MEDICATION = "NEW_MEDICATION"


@dataclass(frozen=True)
class AlertSpec:
    """An alert to raise: `rule` distinguishes alerts of one kind for duplicate suppression."""

    kind: AlertKind
    severity: Severity
    summary: str
    rule: str = ""


def respond_by(severity: Severity, raised_at: datetime, time_zone: str, policy: ClinicPolicy) -> datetime:
    """The response deadline of an alert (CLINICAL.md §9): by default 15 min, 4 h, or 2 business
    days (the clinic's `urgent_response`, `high_response`, `routine_response_business_days`).

    Business days are counted in the patient's time zone, skipping Saturdays and Sundays
    (public holidays are not known to the service).
    """
    if severity is Severity.URGENT:
        return raised_at + policy.urgent_response
    if severity is Severity.HIGH:
        return raised_at + policy.high_response
    local = raised_at.astimezone(ZoneInfo(time_zone))
    remaining = policy.routine_response_business_days
    while remaining:
        local += timedelta(days=1)
        if local.weekday() < 5:
            remaining -= 1
    # Re-localise the wall-clock time so a DST change in between keeps the local hour.
    return local.replace(tzinfo=None).replace(tzinfo=ZoneInfo(time_zone)).astimezone(raised_at.tzinfo)


# §2: the pre-dose checklist items that raise an alert when answered "yes".
CHECKLIST_ALERTS: dict[str, Severity] = {
    "CHEST_PAIN_OR_SOB": Severity.URGENT,
    "SEVERE_HEADACHE": Severity.URGENT,
    "SUICIDAL_THOUGHTS": Severity.URGENT,
    "PREGNANT": Severity.HIGH,
    "NEW_MEDICATION": Severity.ROUTINE,
}


def failed_checks_are_urgent(
    items_answered_yes: list[str], reading: BloodPressure | None, urgent_pressure: BloodPressure
) -> bool:
    """§2, a dose taken offline: a failed check is itself urgent when it is a checklist "yes"
    that calls for URGENT, or a pre-dose blood pressure at or over `urgent_pressure` (180/110)."""
    if any(CHECKLIST_ALERTS.get(item) is Severity.URGENT for item in items_answered_yes):
        return True
    return reading is not None and reading.reaches(urgent_pressure)


def dosed_despite_failed_checks_alert(failed_codes: list[str], *, urgent: bool, recorded: bool) -> AlertSpec:
    """§2, a dose taken offline despite failed checks: HIGH; URGENT when a failed check is urgent.
    Recorded as a session with its failed checks; when it could not be (another session in
    progress, no plan) the summary says so, so the care team knows the dose is not on the record."""
    listed = ", ".join(failed_codes)
    summary = (
        f"Dose taken offline despite failed pre-dose checks: {listed}."
        if recorded
        else f"Dose taken offline despite failed pre-dose checks ({listed}) could not be recorded as a session."
    )
    return AlertSpec(AlertKind.DOSED_DESPITE_FAILED_CHECKS, Severity.URGENT if urgent else Severity.HIGH, summary)


def checklist_alerts(answered_yes: list[str]) -> list[AlertSpec]:
    """§2 pre-dose checklist: each "yes" that CLINICAL.md marks with an alert raises one."""
    return [
        AlertSpec(
            AlertKind.PRE_DOSE_CHECKLIST,
            CHECKLIST_ALERTS[code],
            f"Pre-dose checklist: patient answered yes to {code}.",
            rule=code,
        )
        for code in answered_yes
        if code in CHECKLIST_ALERTS
    ]


def not_back_to_baseline_alert(back_to_baseline: bool) -> AlertSpec | None:
    """§3: `backToBaseline: false` at the end of a session → HIGH."""
    if back_to_baseline:
        return None
    return AlertSpec(
        AlertKind.NOT_BACK_TO_BASELINE,
        Severity.HIGH,
        "Patient reported not being back to baseline after the session.",
    )


def abandoned_session_alert(hours: float) -> AlertSpec:
    """§3: a session still in progress after the limit is closed as abandoned → HIGH."""
    return AlertSpec(
        AlertKind.SESSION_ABANDONED,
        Severity.HIGH,
        f"Dosing session still in progress after {hours:g} hours was closed as abandoned; the patient may need a call.",
    )


def unanswered_safety_check_alert(instrument: str) -> AlertSpec:
    """§6: a post-session check that expires unanswered → HIGH (a safety check went unanswered)."""
    return AlertSpec(
        AlertKind.SAFETY_CHECK_UNANSWERED,
        Severity.HIGH,
        f"The {instrument} safety check expired unanswered; the patient may need a call.",
    )


def crisis_language_alert(matches: list[str], where: str) -> AlertSpec | None:
    """§7: crisis wording in a patient's text → URGENT, with the match shown."""
    if not matches:
        return None
    shown = ", ".join(f'"{match}"' for match in matches)
    return AlertSpec(AlertKind.CRISIS_LANGUAGE, Severity.URGENT, f"Crisis wording in {where}: {shown}.")
