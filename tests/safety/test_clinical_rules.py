"""The clinical rules of CLINICAL.md, called directly as pure functions with tables of reference cases.

No database and no app: each table row is a case CLINICAL.md decides, written out here from the
document (not copied from the code), so a rule that drifts from the document fails a row.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from models.alerts.alert_rules import (
    AlertKind,
    Severity,
    abandoned_session_alert,
    checklist_alerts,
    crisis_language_alert,
    dosed_despite_failed_checks_alert,
    failed_checks_are_urgent,
    not_back_to_baseline_alert,
    respond_by,
)
from models.care.plan_records import CareSetting, Formulation, PlanStatus, ScheduledSurvey
from models.care.plan_rules import (
    DEFAULT_SURVEY_SCHEDULE,
    STRUCTURAL_CONTRAINDICATIONS,
    ceiling_problem,
    contraindication_problem,
    dose_limits_problem,
    dose_problem,
    formulation_limits,
    highest_dose_mg,
    schedule_problem,
)
from models.care.pre_dose import (
    CHECKLIST,
    BloodPressureReading,
    FailedCheck,
    SafetyFacts,
    StartSession,
    failed_safety_checks,
    reading_is_current,
    refusal_advice,
    start_findings,
    validate_start,
)
from models.kernel.errors import InvalidInput
from models.kernel.policy import (
    DEFAULT_POLICY,
    EMERGENCY_INSTRUCTIONS,
    US_CRISIS_RESOURCES,
    BloodPressure,
    DoseLimit,
)
from models.reports.checkins import NewCheckIn, check_in_problem
from models.reports.side_effects import (
    CATALOGUE,
    Grade,
    NewSideEffect,
    side_effect_advice,
    side_effect_alert,
    side_effect_calls_for_911,
    side_effect_calls_for_crisis_resources,
    side_effect_findings,
    side_effect_holds_plan,
)
from models.safety.rules import (
    Phase,
    blood_pressure_alert,
    checklist_findings,
    oxygen_saturation_alert,
    reading_findings,
)

POLICY = DEFAULT_POLICY
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)
CALL_911 = "Call 911 (emergency services) now"

URGENT, HIGH, ROUTINE = Severity.URGENT, Severity.HIGH, Severity.ROUTINE
MILD, MODERATE, SEVERE, LIFE_THREATENING = Grade.MILD, Grade.MODERATE, Grade.SEVERE, Grade.LIFE_THREATENING


def bp(systolic: int, diastolic: int) -> BloodPressure:
    return BloodPressure(systolic, diastolic)


# --- §1 Formulations and settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("formulation", "setting", "dose"),
    [
        (Formulation.SUBLINGUAL_TABLET, CareSetting.AT_HOME, "25"),
        (Formulation.SUBLINGUAL_TABLET, CareSetting.CLINIC, "800"),
        (Formulation.INTRANASAL_KETAMINE, CareSetting.AT_HOME, "200"),
        (Formulation.INTRANASAL_ESKETAMINE, CareSetting.CLINIC, "28"),
        (Formulation.INTRANASAL_ESKETAMINE, CareSetting.CLINIC, "56"),
        (Formulation.INTRANASAL_ESKETAMINE, CareSetting.CLINIC, "84"),
        (Formulation.INTRAMUSCULAR, CareSetting.CLINIC, "1.0"),
        (Formulation.INTRAVENOUS, CareSetting.CLINIC, "2.0"),
    ],
)
def test_a_dose_within_the_formulations_limits_is_accepted(
    formulation: Formulation, setting: CareSetting, dose: str
) -> None:
    assert dose_problem(formulation, setting, Decimal(dose), POLICY) is None


@pytest.mark.parametrize(
    ("formulation", "setting", "dose", "problem"),
    [
        (Formulation.SUBLINGUAL_TABLET, CareSetting.AT_HOME, "801", "between 25 and 800 mg"),
        (Formulation.ORAL, CareSetting.CLINIC, "900", "between 25 and 800 mg"),
        (Formulation.INTRANASAL_KETAMINE, CareSetting.AT_HOME, "201", "between 10 and 200 mg"),
        (Formulation.INTRANASAL_ESKETAMINE, CareSetting.CLINIC, "42", "one of 28, 56, 84 mg"),
        (Formulation.INTRANASAL_ESKETAMINE, CareSetting.CLINIC, "112", "one of 28, 56, 84 mg"),
        (Formulation.INTRANASAL_ESKETAMINE, CareSetting.AT_HOME, "56", "clinic only"),
        (Formulation.INTRAMUSCULAR, CareSetting.CLINIC, "1.1", "between 0.1 and 1.0 mg/kg"),
        (Formulation.INTRAMUSCULAR, CareSetting.AT_HOME, "0.5", "clinic only"),
        (Formulation.INTRAVENOUS, CareSetting.CLINIC, "2.1", "between 0.1 and 2.0 mg/kg per hour"),
        (Formulation.INTRAVENOUS, CareSetting.AT_HOME, "0.5", "clinic only"),
    ],
)
def test_a_dose_outside_the_limits_or_a_clinic_only_formulation_at_home_is_refused_with_the_limit_named(
    formulation: Formulation, setting: CareSetting, dose: str, problem: str
) -> None:
    refusal = dose_problem(formulation, setting, Decimal(dose), POLICY)
    assert refusal is not None
    assert formulation.value in refusal
    assert problem in refusal


NARROWED = replace(
    POLICY,
    dose_limits=(
        DoseLimit("ORAL", Decimal(50), Decimal(400)),
        DoseLimit("SUBLINGUAL_TABLET", Decimal(25), Decimal(600)),
        DoseLimit("INTRANASAL_ESKETAMINE", Decimal(28), Decimal(56)),
    ),
)


@pytest.mark.parametrize(
    ("formulation", "dose", "problem"),
    [
        (Formulation.ORAL, "401", "ORAL dose must be between 50 and 400 mg"),
        (Formulation.ORAL, "40", "ORAL dose must be between 50 and 400 mg"),
        (Formulation.INTRANASAL_ESKETAMINE, "84", "INTRANASAL_ESKETAMINE dose must be one of 28, 56 mg"),
    ],
)
def test_a_limit_the_clinic_narrowed_refuses_a_plan_outside_it_naming_the_limit(
    formulation: Formulation, dose: str, problem: str
) -> None:
    """§1: a clinic may narrow the limits in settings (`ClinicPolicy.dose_limits`)."""
    assert dose_problem(formulation, CareSetting.CLINIC, Decimal(dose), NARROWED) == problem
    assert dose_problem(formulation, CareSetting.CLINIC, Decimal(dose), POLICY) is None


def test_a_formulation_the_clinic_did_not_narrow_keeps_the_product_s_limits() -> None:
    assert dose_problem(Formulation.INTRANASAL_KETAMINE, CareSetting.AT_HOME, Decimal(200), NARROWED) is None
    assert formulation_limits(Formulation.INTRANASAL_KETAMINE, NARROWED) == formulation_limits(
        Formulation.INTRANASAL_KETAMINE, POLICY
    )


def test_a_start_s_highest_dose_is_the_highest_limit_in_mg_the_clinic_allows() -> None:
    """§1: the start's guard rail against a mistyped dose is the same limits, whatever the plan."""
    assert highest_dose_mg(POLICY) == Decimal(800)
    only_oral = replace(POLICY, dose_limits=NARROWED.dose_limits[:1])
    assert highest_dose_mg(only_oral) == Decimal(800)  # sublingual tablets keep 800 mg
    both = NARROWED  # oral 400, sublingual 600, Spravato 56
    assert highest_dose_mg(both) == Decimal(600)
    checklist = tuple((code, False) for code in CHECKLIST)
    with pytest.raises(InvalidInput, match="doseMg must be more than 0 and at most 600"):
        validate_start(StartSession(Decimal(601), True, "Sam", None, checklist), NOW, both)
    assert validate_start(StartSession(Decimal(600), True, "Sam", None, checklist), NOW, both) == ()


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ((DoseLimit("ORAL", Decimal(25), Decimal(900)),),
         "ORAL 25-900 mg is wider than the product's guard rails, 25-800 mg"),
        ((DoseLimit("ORAL", Decimal(20), Decimal(400)),), "ORAL 20-400 mg is wider than the product's guard rails"),
        ((DoseLimit("INTRAVENOUS", Decimal("0.1"), Decimal("2.5")),), "INTRAVENOUS 0.1-2.5 mg/kg per hour is wider"),
        ((DoseLimit("PATCH", Decimal(1), Decimal(2)),), "dose_limits: PATCH is not a formulation"),
        ((DoseLimit("ORAL", Decimal(25), Decimal(400)), DoseLimit("ORAL", Decimal(25), Decimal(300))),
         "ORAL is given twice"),
        ((DoseLimit("INTRANASAL_ESKETAMINE", Decimal(60), Decimal(80)),), "leaves none of 28, 56, 84 mg"),
    ],
)  # fmt: skip
def test_dose_limits_that_widen_the_guard_rails_are_refused(limits: tuple[DoseLimit, ...], problem: str) -> None:
    """§1: a clinic may narrow the limits, never widen them."""
    refusal = dose_limits_problem(replace(POLICY, dose_limits=limits))
    assert refusal is not None and problem in refusal
    assert dose_limits_problem(NARROWED) is None and dose_limits_problem(POLICY) is None


@pytest.mark.parametrize("ceiling", [bp(140, 90), bp(160, 100), bp(120, 80)])
def test_a_blood_pressure_ceiling_up_to_160_over_100_is_accepted(ceiling: BloodPressure) -> None:
    assert ceiling_problem(ceiling, POLICY) is None


@pytest.mark.parametrize("ceiling", [bp(161, 100), bp(160, 101), bp(180, 110)])
def test_a_blood_pressure_ceiling_above_160_over_100_is_refused(ceiling: BloodPressure) -> None:
    assert ceiling_problem(ceiling, POLICY) == "the blood-pressure ceiling may not be above 160/100 mmHg"


@pytest.mark.parametrize("ceiling", [bp(80, 60), bp(100, 100)])
def test_an_implausible_blood_pressure_ceiling_is_refused(ceiling: BloodPressure) -> None:
    assert ceiling_problem(ceiling, POLICY) == "the blood-pressure ceiling is not a plausible blood pressure"


# --- §6 Default follow-up schedule ----------------------------------------------------------------


def test_the_default_survey_schedule_is_the_table_of_clinical_md_section_6() -> None:
    schedule = [
        (item.instrument, timedelta(minutes=item.offset_minutes), timedelta(minutes=item.window_minutes))
        for item in DEFAULT_SURVEY_SCHEDULE
    ]
    assert schedule == [
        ("POST-SESSION", timedelta(hours=2), timedelta(hours=6)),
        ("PAIN-NRS", timedelta(hours=24), timedelta(hours=24)),
        ("PEG-3", timedelta(hours=72), timedelta(hours=48)),
        ("PHQ-9", timedelta(days=7), timedelta(hours=72)),
        ("GAD-7", timedelta(days=7), timedelta(hours=72)),
    ]
    assert schedule_problem(DEFAULT_SURVEY_SCHEDULE) is None


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ((ScheduledSurvey("PHQ-15", 60, 60),), "unknown instrument 'PHQ-15'"),
        ((ScheduledSurvey("PHQ-9", -1, 60),), "PHQ-9: offset must be between"),
        ((ScheduledSurvey("PHQ-9", 60 * 24 * 60 + 1, 60),), "PHQ-9: offset must be between"),
        ((ScheduledSurvey("GAD-7", 0, 59),), "GAD-7: window must be between"),
        ((ScheduledSurvey("GAD-7", 0, 14 * 24 * 60 + 1),), "GAD-7: window must be between"),
        ((ScheduledSurvey("PAIN-NRS", 0, 60),) * 21, "a survey schedule has at most 20 entries"),
    ],
)
def test_a_survey_schedule_out_of_bounds_is_refused(
    schedule: tuple[ScheduledSurvey, ...],
    problem: str,
) -> None:
    refusal = schedule_problem(schedule)
    assert refusal is not None
    assert refusal.startswith(problem)


# --- §2 Before a session starts --------------------------------------------------------------------

SECTION_2_ORDER = [
    "NO_ACTIVE_PLAN",
    "PLAN_ON_HOLD",
    "CLINIC_ONLY",
    "MONITOR_NOT_CONFIRMED",
    "BP_MISSING",
    "BP_ABOVE_CEILING",
    "SESSION_IN_PROGRESS",
    "TOO_SOON",
    "SESSIONS_USED_UP",
    "CONTRAINDICATION",
]
CHECKLIST_ITEMS = [
    "CHEST_PAIN_OR_SOB",
    "SEVERE_HEADACHE",
    "SUICIDAL_THOUGHTS",
    "PREGNANT",
    "SUBSTANCES_24H",
    "ATE_RECENTLY",
    "UNWELL",
    "WILL_DRIVE",
    "NEW_MEDICATION",
]

# An at-home session that passes every check: an active plan, a monitor, a fresh reading under
# the default ceiling, the last session two days ago, 3 of 6 sessions done, every answer "no".
PASSING = SafetyFacts(
    now=NOW,
    plan_status=PlanStatus.ACTIVE,
    plan_setting=CareSetting.AT_HOME,
    monitor_required=True,
    monitor_present=True,
    monitor_name="Sam Doe",
    blood_pressure=bp(120, 80),
    measured_at=NOW - 5 * MINUTE,
    ceiling=bp(140, 90),
    session_in_progress=False,
    last_session_started_at=NOW - timedelta(hours=48),
    min_hours_between_sessions=48,
    completed_sessions=3,
    planned_sessions=6,
    answered_yes=(),
)


def passing(**changes: Any) -> SafetyFacts:
    """PASSING with some facts changed."""
    return replace(PASSING, **changes)


def codes(checks: list[FailedCheck]) -> list[str]:
    return [check.code for check in checks]


@pytest.mark.parametrize(
    "facts",
    [
        pytest.param(PASSING, id="as planned"),
        pytest.param(
            passing(monitor_required=False, monitor_present=False, monitor_name=None),
            id="no monitor needed",
        ),
        pytest.param(passing(last_session_started_at=None), id="first session"),
        pytest.param(passing(measured_at=NOW - 30 * MINUTE), id="reading exactly 30 min old"),
        pytest.param(passing(measured_at=NOW + 5 * MINUTE), id="reading within clock skew"),
        pytest.param(passing(blood_pressure=bp(139, 89)), id="reading just under the ceiling"),
        pytest.param(passing(completed_sessions=5), id="last planned session"),
        pytest.param(
            passing(next_session_started_at=NOW + timedelta(hours=48)), id="replayed 48 h before a later session"
        ),
    ],
)
def test_a_session_that_passes_every_check_has_no_failures(facts: SafetyFacts) -> None:
    assert failed_safety_checks(facts, POLICY) == []


@pytest.mark.parametrize(
    ("facts", "code"),
    [
        pytest.param(passing(plan_status=None), "NO_ACTIVE_PLAN", id="no plan"),
        pytest.param(passing(plan_status=PlanStatus.CANCELLED), "NO_ACTIVE_PLAN", id="cancelled plan"),
        pytest.param(passing(plan_status=PlanStatus.ON_HOLD), "PLAN_ON_HOLD", id="plan on hold"),
        pytest.param(passing(plan_setting=CareSetting.CLINIC), "CLINIC_ONLY", id="clinic plan"),
        pytest.param(passing(monitor_present=False), "MONITOR_NOT_CONFIRMED", id="no monitor"),
        pytest.param(passing(monitor_name="  "), "MONITOR_NOT_CONFIRMED", id="monitor not named"),
        pytest.param(passing(blood_pressure=None, measured_at=None), "BP_MISSING", id="no reading"),
        pytest.param(passing(measured_at=NOW - 31 * MINUTE), "BP_MISSING", id="31 min old"),
        pytest.param(passing(measured_at=NOW + 6 * MINUTE), "BP_MISSING", id="in the future"),
        pytest.param(passing(blood_pressure=bp(140, 70)), "BP_ABOVE_CEILING", id="systolic at ceiling"),
        pytest.param(passing(blood_pressure=bp(120, 90)), "BP_ABOVE_CEILING", id="diastolic at ceiling"),
        pytest.param(passing(session_in_progress=True), "SESSION_IN_PROGRESS", id="in progress"),
        pytest.param(
            passing(last_session_started_at=NOW - timedelta(hours=48) + timedelta(seconds=1)),
            "TOO_SOON",
            id="one second short of 48 h",
        ),
        pytest.param(
            passing(next_session_started_at=NOW + timedelta(hours=48) - timedelta(seconds=1)),
            "TOO_SOON",
            id="replayed one second short of 48 h before a later session",
        ),
        pytest.param(passing(completed_sessions=6), "SESSIONS_USED_UP", id="completed == planned"),
        pytest.param(passing(completed_sessions=7), "SESSIONS_USED_UP", id="completed > planned"),
    ],
)
def test_each_pre_dose_check_fails_alone(facts: SafetyFacts, code: str) -> None:
    failures = failed_safety_checks(facts, POLICY)
    assert codes(failures) == [code]
    assert failures[0].message


@pytest.mark.parametrize(
    ("measured_at", "after_start", "current"),
    [
        (NOW - 30 * MINUTE, timedelta(0), True),
        (NOW - 31 * MINUTE, timedelta(0), False),
        (NOW, timedelta(0), True),
        (NOW + MINUTE, timedelta(0), False),
        (NOW + 5 * MINUTE, POLICY.clock_skew, True),
        (NOW + 6 * MINUTE, POLICY.clock_skew, False),
    ],
)
def test_a_pre_dose_reading_counts_for_30_minutes_before_the_start_and_the_allowance_after(
    measured_at: datetime, after_start: timedelta, current: bool
) -> None:
    """§2: one rule for the start at home (a phone's clock: the skew) and the clinic form (none)."""
    assert reading_is_current(measured_at, NOW, POLICY, after_start=after_start) is current


def test_no_structural_contraindication_recorded_lets_a_plan_be_created() -> None:
    assert contraindication_problem(()) is None


@pytest.mark.parametrize("recorded", sorted(STRUCTURAL_CONTRAINDICATIONS))
def test_each_structural_contraindication_refuses_a_plan_naming_it(recorded: str) -> None:
    """§2: the label's three and the product's two, each on its own."""
    assert contraindication_problem((recorded,)) == (
        f"a plan cannot be created while a contraindication is recorded: {recorded}"
    )


def test_an_unknown_structural_contraindication_is_refused_not_ignored() -> None:
    assert contraindication_problem(("ACTIVE_PSYCHOSIS", "BROKEN_ARM")) == "unknown contraindications: BROKEN_ARM"


def test_a_reading_at_the_ceiling_is_refused() -> None:
    failures = failed_safety_checks(passing(blood_pressure=bp(140, 90)), POLICY)
    assert codes(failures) == ["BP_ABOVE_CEILING"]
    assert "140/90 mmHg is at or above your limit of 140/90 mmHg" in failures[0].message


@pytest.mark.parametrize("item", CHECKLIST_ITEMS)
def test_each_yes_on_the_checklist_is_a_contraindication_naming_the_item(item: str) -> None:
    failures = failed_safety_checks(passing(answered_yes=(item,)), POLICY)
    assert failures == [FailedCheck("CONTRAINDICATION", failures[0].message, item)]
    assert CHECKLIST[item] in failures[0].message


def test_the_checklist_asks_the_questions_of_section_2_in_order() -> None:
    assert list(CHECKLIST) == CHECKLIST_ITEMS


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        pytest.param(
            passing(
                plan_status=PlanStatus.ON_HOLD,
                plan_setting=CareSetting.CLINIC,
                monitor_present=False,
                blood_pressure=bp(150, 95),
                session_in_progress=True,
                last_session_started_at=NOW - timedelta(hours=1),
                completed_sessions=6,
                answered_yes=("PREGNANT", "WILL_DRIVE"),
            ),
            [
                "PLAN_ON_HOLD",
                "CLINIC_ONLY",
                "MONITOR_NOT_CONFIRMED",
                "BP_ABOVE_CEILING",
                "SESSION_IN_PROGRESS",
                "TOO_SOON",
                "SESSIONS_USED_UP",
                "CONTRAINDICATION",
                "CONTRAINDICATION",
            ],
            id="plan on hold and a reading over the ceiling",
        ),
        pytest.param(
            passing(
                plan_status=None,
                monitor_name=None,
                measured_at=None,
                session_in_progress=True,
                last_session_started_at=NOW - timedelta(hours=1),
                answered_yes=("UNWELL",),
            ),
            [
                "NO_ACTIVE_PLAN",
                "MONITOR_NOT_CONFIRMED",
                "BP_MISSING",
                "SESSION_IN_PROGRESS",
                "TOO_SOON",
                "CONTRAINDICATION",
            ],
            id="no plan and no reading",
        ),
    ],
)
def test_every_failed_check_is_listed_at_once_in_the_order_of_section_2(
    facts: SafetyFacts, expected: list[str]
) -> None:
    failures = failed_safety_checks(facts, POLICY)
    assert codes(failures) == expected
    assert codes(failures) == sorted(codes(failures), key=SECTION_2_ORDER.index)
    assert all(check.message for check in failures)
    assert [check.item for check in failures if check.code == "CONTRAINDICATION"] == list(facts.answered_yes)


def contraindication(item: str) -> FailedCheck:
    return FailedCheck("CONTRAINDICATION", "", item)


EMERGENCY = {"safetyInstructions": EMERGENCY_INSTRUCTIONS}
CRISIS = {"crisisResources": US_CRISIS_RESOURCES}


def start(yes: tuple[str, ...] = (), reading: BloodPressureReading | None = None) -> StartSession:
    checklist = tuple((code, code in yes) for code in CHECKLIST)
    return StartSession(Decimal(100), True, "Sam", reading, checklist)


@pytest.mark.parametrize(
    ("yes", "reading", "expected"),
    [
        pytest.param(("CHEST_PAIN_OR_SOB",), None, EMERGENCY, id="chest pain"),
        pytest.param(("SEVERE_HEADACHE",), None, EMERGENCY, id="severe headache"),
        pytest.param(("SUICIDAL_THOUGHTS",), None, CRISIS, id="suicidal thoughts"),
        pytest.param(("CHEST_PAIN_OR_SOB", "SUICIDAL_THOUGHTS"), None, {**EMERGENCY, **CRISIS}, id="both"),
        pytest.param((), BloodPressureReading(185, 100), EMERGENCY, id="180/110 or more before dosing"),
        pytest.param((), BloodPressureReading(150, 95, spo2=88), EMERGENCY, id="SpO2 under 90"),
        pytest.param(("UNWELL", "PREGNANT"), BloodPressureReading(150, 95, spo2=92), {}, id="nothing to add"),
    ],
)
def test_a_start_s_content_gives_emergency_instructions_or_crisis_resources_whatever_its_outcome(
    yes: tuple[str, ...], reading: BloodPressureReading | None, expected: dict[str, str]
) -> None:
    assert start_findings(start(yes, reading), bp(140, 90), POLICY).advice == expected


# CLINICAL.md §2's checklist, its "on yes" column: (alert severity or None, advice).
ON_YES: dict[str, tuple[Severity | None, dict[str, str]]] = {
    "CHEST_PAIN_OR_SOB": (Severity.URGENT, EMERGENCY),
    "SEVERE_HEADACHE": (Severity.URGENT, EMERGENCY),
    "SUICIDAL_THOUGHTS": (Severity.URGENT, CRISIS),
    "PREGNANT": (Severity.HIGH, {}),
    "SUBSTANCES_24H": (None, {}),
    "ATE_RECENTLY": (None, {}),
    "UNWELL": (None, {}),
    "WILL_DRIVE": (None, {}),
    "NEW_MEDICATION": (Severity.ROUTINE, {}),
}


def test_the_on_yes_column_names_every_checklist_item() -> None:
    assert list(ON_YES) == list(CHECKLIST)


@pytest.mark.parametrize("item", list(ON_YES))
def test_each_yes_calls_for_what_the_on_yes_column_says(item: str) -> None:
    severity, advice = ON_YES[item]
    found = checklist_findings((item,), POLICY)
    assert [(spec.kind.value, spec.severity, spec.rule) for spec in found.alerts] == (
        [("PRE_DOSE_CHECKLIST", severity, item)] if severity else []
    )
    assert found.advice == advice


@pytest.mark.parametrize(
    ("yes", "reading", "kinds"),
    [
        pytest.param(
            ("SUICIDAL_THOUGHTS", "PREGNANT"), None, [("PRE_DOSE_CHECKLIST", URGENT), ("PRE_DOSE_CHECKLIST", HIGH)]
        ),
        pytest.param((), BloodPressureReading(150, 95), [("PRE_DOSE_BP_ABOVE_CEILING", HIGH)], id="over the ceiling"),
        pytest.param((), BloodPressureReading(181, 95), [("PRE_DOSE_BP_ABOVE_CEILING", URGENT)], id="urgency"),
        pytest.param((), BloodPressureReading(130, 80, spo2=91), [("LOW_OXYGEN_SATURATION", HIGH)], id="SpO2 90-93"),
        pytest.param((), BloodPressureReading(130, 80, heart_rate=130, spo2=94), [], id="nothing"),
    ],
)
def test_a_start_s_content_raises_the_alerts_of_section_2(
    yes: tuple[str, ...], reading: BloodPressureReading | None, kinds: list[tuple[str, Severity]]
) -> None:
    found = start_findings(start(yes, reading), bp(140, 90), POLICY).alerts
    assert [(spec.kind.value, spec.severity) for spec in found] == kinds


def test_a_refusal_for_blood_pressure_over_the_ceiling_says_not_to_dose_and_when_to_call_911() -> None:
    advice = refusal_advice([FailedCheck("BP_ABOVE_CEILING", "")])
    assert set(advice) == {"safetyInstructions"}
    assert advice["safetyInstructions"].startswith("Do not dose today.")
    assert "call 911" in advice["safetyInstructions"]


# --- §2, §3 and §7 Alert rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reading", "severity"),
    [
        (bp(139, 89), None),
        (bp(140, 80), HIGH),
        (bp(130, 90), HIGH),
        (bp(170, 105), HIGH),
        (bp(179, 109), HIGH),
        (bp(180, 100), URGENT),
        (bp(150, 110), URGENT),
    ],
)
def test_a_pre_dose_reading_at_or_over_the_ceiling_is_high_and_from_180_over_110_urgent(
    reading: BloodPressure, severity: Severity | None
) -> None:
    alert = blood_pressure_alert(reading, Phase.PRE, POLICY, ceiling=bp(140, 90))
    assert (alert.severity if alert else None) is severity


@pytest.mark.parametrize(
    ("item", "severity"),
    [
        ("CHEST_PAIN_OR_SOB", URGENT),
        ("SEVERE_HEADACHE", URGENT),
        ("SUICIDAL_THOUGHTS", URGENT),
        ("PREGNANT", HIGH),
        ("SUBSTANCES_24H", None),
        ("ATE_RECENTLY", None),
        ("UNWELL", None),
        ("WILL_DRIVE", None),
        ("NEW_MEDICATION", ROUTINE),
    ],
)
def test_a_yes_on_the_checklist_raises_the_alert_of_section_2(item: str, severity: Severity | None) -> None:
    alerts = checklist_alerts([item])
    assert [alert.severity for alert in alerts] == ([severity] if severity else [])
    assert all(alert.rule == item for alert in alerts)


@pytest.mark.parametrize(
    ("reading", "severity"),
    [
        (bp(159, 99), None),
        (bp(160, 80), HIGH),
        (bp(130, 100), HIGH),
        (bp(179, 109), HIGH),
        (bp(180, 90), URGENT),
        (bp(150, 110), URGENT),
        (bp(200, 120), URGENT),
    ],
)
@pytest.mark.parametrize("phase", [Phase.AT_40_MIN, Phase.POST])
def test_a_reading_after_dosing_raises_high_from_160_over_100_and_urgent_from_180_over_110(
    reading: BloodPressure, severity: Severity | None, phase: Phase
) -> None:
    alert = blood_pressure_alert(reading, phase, POLICY)
    assert (alert.severity if alert else None) is severity


@pytest.mark.parametrize(
    ("spo2", "severity"), [(100, None), (94, None), (93, HIGH), (90, HIGH), (89, URGENT), (70, URGENT)]
)
@pytest.mark.parametrize("phase", list(Phase))
def test_spo2_under_90_is_urgent_and_90_to_93_high_before_and_after_dosing(
    spo2: int, severity: Severity | None, phase: Phase
) -> None:
    alert = oxygen_saturation_alert(spo2, phase, POLICY)
    assert (alert.severity if alert else None) is severity
    findings = reading_findings(phase, POLICY, systolic=None, diastolic=None, spo2=spo2)
    assert ("safetyInstructions" in findings.advice) is (severity is URGENT)


def test_the_reading_thresholds_are_the_clinic_s_policy() -> None:
    stricter = replace(POLICY, pre_dose_urgent=bp(170, 105), spo2_urgent_below=92, spo2_high_below=96)
    assert blood_pressure_alert(bp(172, 95), Phase.PRE, POLICY, ceiling=bp(140, 90)).severity is HIGH  # type: ignore[union-attr]
    assert blood_pressure_alert(bp(172, 95), Phase.PRE, stricter, ceiling=bp(140, 90)).severity is URGENT  # type: ignore[union-attr]
    assert oxygen_saturation_alert(91, Phase.POST, POLICY).severity is HIGH  # type: ignore[union-attr]
    assert oxygen_saturation_alert(91, Phase.POST, stricter).severity is URGENT  # type: ignore[union-attr]
    assert oxygen_saturation_alert(95, Phase.POST, stricter).severity is HIGH  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("items", "reading", "urgent"),
    [
        pytest.param([], None, False, id="no reading, no yes"),
        pytest.param(["PREGNANT", "UNWELL"], bp(150, 95), False, id="a high yes and a high reading"),
        pytest.param(["SUICIDAL_THOUGHTS"], None, True, id="an urgent yes"),
        pytest.param(["CHEST_PAIN_OR_SOB"], bp(120, 80), True, id="chest pain"),
        pytest.param([], bp(180, 95), True, id="180/110 or more"),
    ],
)
def test_a_dose_taken_offline_despite_failed_checks_is_urgent_when_a_failed_check_is(
    items: list[str], reading: BloodPressure | None, urgent: bool
) -> None:
    assert failed_checks_are_urgent(items, reading, POLICY.pre_dose_urgent) is urgent
    spec = dosed_despite_failed_checks_alert(["BP_MISSING"], urgent=urgent, recorded=True)
    assert spec.kind is AlertKind.DOSED_DESPITE_FAILED_CHECKS
    assert spec.severity is (URGENT if urgent else HIGH)
    assert "BP_MISSING" in spec.summary


@pytest.mark.parametrize(("back_to_baseline", "severity"), [(True, None), (False, HIGH)])
def test_a_patient_not_back_to_baseline_raises_a_high_alert(
    back_to_baseline: bool,
    severity: Severity | None,
) -> None:
    alert = not_back_to_baseline_alert(back_to_baseline)
    assert (alert.severity if alert else None) is severity


def test_an_abandoned_session_raises_a_high_alert_saying_the_patient_may_need_a_call() -> None:
    alert = abandoned_session_alert(6)
    assert alert.severity is HIGH
    assert "after 6 hours" in alert.summary
    assert "may need a call" in alert.summary


def test_crisis_wording_raises_an_urgent_alert_showing_the_match() -> None:
    alert = crisis_language_alert(["want to die", "overdose"], "a check-in note")
    assert alert is not None
    assert alert.severity is URGENT
    assert alert.summary == 'Crisis wording in a check-in note: "want to die", "overdose".'
    assert crisis_language_alert([], "a check-in note") is None


def test_the_crisis_resources_are_the_us_defaults_plus_the_clinic_s_on_call_number() -> None:
    assert POLICY.crisis_text() == (
        "If you are in danger now, call 911. Call or text 988 (Suicide & Crisis Lifeline), any time."
    )
    with_on_call = replace(POLICY, on_call_contact="+1 555 0100").crisis_text()
    assert with_on_call.startswith(POLICY.crisis_text())
    assert with_on_call.endswith("+1 555 0100.")


# --- §9 Response deadlines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "raised_at", "time_zone", "deadline"),
    [
        pytest.param(URGENT, NOW, "America/New_York", NOW + 15 * MINUTE, id="urgent: 15 min"),
        pytest.param(HIGH, NOW, "America/New_York", NOW + timedelta(hours=4), id="high: 4 h"),
        pytest.param(
            HIGH,
            datetime(2026, 3, 8, 5, 0, tzinfo=UTC),
            "America/New_York",
            datetime(2026, 3, 8, 9, 0, tzinfo=UTC),
            id="high: 4 elapsed hours across the spring-forward night",
        ),
        pytest.param(
            ROUTINE,
            datetime(2026, 11, 23, 15, 0, tzinfo=UTC),
            "America/New_York",
            datetime(2026, 11, 25, 15, 0, tzinfo=UTC),
            id="routine: Monday to Wednesday",
        ),
        pytest.param(
            ROUTINE,
            datetime(2026, 11, 26, 15, 0, tzinfo=UTC),
            "America/New_York",
            datetime(2026, 11, 30, 15, 0, tzinfo=UTC),
            id="routine: Thursday to Monday",
        ),
        pytest.param(
            ROUTINE,
            datetime(2026, 11, 27, 20, 0, tzinfo=UTC),  # Friday 15:00 EST
            "America/New_York",
            datetime(2026, 12, 1, 20, 0, tzinfo=UTC),  # Tuesday 15:00 EST
            id="routine: Friday afternoon to Tuesday",
        ),
        pytest.param(
            ROUTINE,
            datetime(2026, 11, 28, 4, 0, tzinfo=UTC),  # Saturday in UTC, Friday 20:00 in Los Angeles
            "America/Los_Angeles",
            datetime(2026, 12, 2, 4, 0, tzinfo=UTC),  # Tuesday 20:00 in Los Angeles
            id="routine: business days are counted in the patient's zone",
        ),
        pytest.param(
            ROUTINE,
            datetime(2026, 11, 28, 15, 0, tzinfo=UTC),
            "America/New_York",
            datetime(2026, 12, 1, 15, 0, tzinfo=UTC),
            id="routine: Saturday to Tuesday",
        ),
    ],
)
def test_an_alert_must_be_answered_within_the_time_of_its_severity(
    severity: Severity, raised_at: datetime, time_zone: str, deadline: datetime
) -> None:
    assert respond_by(severity, raised_at, time_zone, POLICY) == deadline


@pytest.mark.parametrize(
    ("raised_at", "deadline", "offset_change"),
    [
        pytest.param(
            datetime(2026, 3, 6, 14, 0, tzinfo=NEW_YORK),  # Friday 14:00 EST (UTC-5)
            datetime(2026, 3, 10, 14, 0, tzinfo=NEW_YORK),  # Tuesday 14:00 EDT (UTC-4)
            -timedelta(hours=1),
            id="spring forward",
        ),
        pytest.param(
            datetime(2026, 10, 30, 14, 0, tzinfo=NEW_YORK),  # Friday 14:00 EDT (UTC-4)
            datetime(2026, 11, 3, 14, 0, tzinfo=NEW_YORK),  # Tuesday 14:00 EST (UTC-5)
            timedelta(hours=1),
            id="fall back",
        ),
    ],
)
def test_a_routine_deadline_across_a_daylight_saving_change_keeps_the_local_hour(
    raised_at: datetime, deadline: datetime, offset_change: timedelta
) -> None:
    answer = respond_by(ROUTINE, raised_at.astimezone(UTC), "America/New_York", POLICY)
    assert answer == deadline
    assert answer.astimezone(NEW_YORK).hour == 14
    assert answer - raised_at == timedelta(days=4) + offset_change


# --- §4 Side effects -------------------------------------------------------------------------------

LOCAL = "local code"
# code: (SNOMED CT, or a local code where CLINICAL.md §4 says a standard one would be wrong; always
# urgent), as written in CLINICAL.md §4.
SECTION_4_CATALOGUE: dict[str, tuple[str | None, bool]] = {
    "NAUSEA": ("422587007", False),
    "VOMITING": ("422400008", False),
    "DIZZINESS": ("404640003", False),
    "HEADACHE": ("25064002", False),
    "DISSOCIATION": (LOCAL, False),  # not 44376007, dissociative disorder: a diagnosis
    "SEDATION": ("271782001", False),
    "ELEVATED_BLOOD_PRESSURE": ("24184005", False),
    "PALPITATIONS": ("80313002", False),
    "ANXIETY": ("48694002", False),
    "HALLUCINATIONS": ("7011001", False),
    "CONFUSION": ("286933003", False),
    "BLURRED_VISION": ("111516008", False),
    "URINARY_SYMPTOMS": (LOCAL, False),  # not 49650001, dysuria: pain only
    "BLOOD_IN_URINE": ("34436003", True),
    "CHEST_PAIN": ("29857009", True),
    "SHORTNESS_OF_BREATH": ("267036007", True),
    "SLOW_OR_SHALLOW_BREATHING": (LOCAL, True),
    "SUICIDAL_THOUGHTS": ("6471006", True),
    "FALL_OR_INJURY": ("1912002", False),
    "CRAVING_OR_MISUSE": (None, False),
    "ALLERGIC_REACTION": ("419076005", False),
    "OTHER": (None, False),
}


def test_the_side_effect_catalogue_is_exactly_the_table_of_section_4() -> None:
    catalogue = {
        code: (LOCAL if entry.local_code else entry.snomed, entry.always_urgent) for code, entry in CATALOGUE.items()
    }
    assert catalogue == SECTION_4_CATALOGUE
    assert not [code for code, entry in CATALOGUE.items() if entry.local_code and entry.snomed]


@pytest.mark.parametrize(
    ("code", "grade", "severity", "holds_plan", "calls_911"),
    [
        # Grades alone.
        ("NAUSEA", MILD, None, False, False),
        ("NAUSEA", MODERATE, ROUTINE, False, False),
        ("NAUSEA", SEVERE, HIGH, True, False),
        ("NAUSEA", LIFE_THREATENING, URGENT, True, True),
        ("OTHER", MODERATE, ROUTINE, False, False),
        # Always-urgent codes, even when mild.
        ("BLOOD_IN_URINE", MILD, URGENT, True, False),
        ("CHEST_PAIN", MILD, URGENT, True, True),
        ("SHORTNESS_OF_BREATH", MILD, URGENT, True, True),
        ("SLOW_OR_SHALLOW_BREATHING", MILD, URGENT, True, True),
        ("SLOW_OR_SHALLOW_BREATHING", MODERATE, URGENT, True, True),
        ("SUICIDAL_THOUGHTS", MILD, URGENT, True, False),
        ("SUICIDAL_THOUGHTS", LIFE_THREATENING, URGENT, True, True),
        # Craving or misuse: at least HIGH at any grade.
        ("CRAVING_OR_MISUSE", MILD, HIGH, False, False),
        ("CRAVING_OR_MISUSE", MODERATE, HIGH, False, False),
        ("CRAVING_OR_MISUSE", SEVERE, HIGH, True, False),
        ("CRAVING_OR_MISUSE", LIFE_THREATENING, URGENT, True, True),
        # Allergic reaction: 911 from SEVERE, not at MODERATE.
        ("ALLERGIC_REACTION", MODERATE, ROUTINE, False, False),
        ("ALLERGIC_REACTION", SEVERE, HIGH, True, True),
        ("ALLERGIC_REACTION", LIFE_THREATENING, URGENT, True, True),
    ],
)
def test_a_side_effect_alerts_holds_the_plan_and_advises_as_section_4_says(
    code: str, grade: Grade, severity: Severity | None, holds_plan: bool, calls_911: bool
) -> None:
    alert = side_effect_alert(code, grade)
    deadline = respond_by(alert.severity, NOW, "America/New_York", POLICY) if alert else None
    advice = side_effect_advice(code, grade, deadline, "America/New_York", POLICY)
    assert (alert.severity if alert else None) is severity
    assert side_effect_holds_plan(code, grade) is holds_plan
    assert advice["safetyInstructions"].startswith(CALL_911) is calls_911
    assert ("crisisResources" in advice) is (code == "SUICIDAL_THOUGHTS")
    # One rule for the payload and for the screen, whose advice survives a refusal (§0).
    assert side_effect_calls_for_911(code, grade) is calls_911
    assert side_effect_calls_for_crisis_resources(code) is (code == "SUICIDAL_THOUGHTS")
    screened = side_effect_findings(NewSideEffect(code, grade, onset_at=NOW), POLICY)
    assert (screened.advice.get("safetyInstructions") == EMERGENCY_INSTRUCTIONS) is calls_911
    assert ("crisisResources" in screened.advice) is (code == "SUICIDAL_THOUGHTS")


@pytest.mark.parametrize("code", ["CHEST_PAIN", "SHORTNESS_OF_BREATH", "SLOW_OR_SHALLOW_BREATHING"])
def test_chest_pain_shortness_of_breath_or_slow_breathing_tell_the_patient_to_call_911_at_any_grade(
    code: str,
) -> None:
    for grade in Grade:
        advice = side_effect_advice(code, grade, NOW, "America/New_York", POLICY)
        assert advice["safetyInstructions"] == EMERGENCY_INSTRUCTIONS, grade


def test_suicidal_thoughts_return_the_crisis_resources() -> None:
    advice = side_effect_advice("SUICIDAL_THOUGHTS", MILD, NOW, "America/New_York", POLICY)
    assert advice["crisisResources"] == US_CRISIS_RESOURCES


def test_any_other_side_effect_tells_the_patient_when_the_care_team_will_respond_in_their_time() -> None:
    deadline = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)
    advice = side_effect_advice("NAUSEA", MODERATE, deadline, "America/Los_Angeles", POLICY)
    assert advice == {
        "safetyInstructions": "Your care team has been told and will respond by Tue 01 Dec, 15:00 PST. "
        "If you feel worse or unsafe before then, call 911."
    }


def test_a_mild_side_effect_without_an_alert_is_left_for_the_care_team_to_review() -> None:
    advice = side_effect_advice("NAUSEA", MILD, None, "America/New_York", POLICY)
    thanks = "Thank you: your care team will review this report. If it gets worse, report it again."
    assert advice == {"safetyInstructions": thanks}


# --- Daily check-ins -------------------------------------------------------------------------------


def check_in(**changes: Any) -> NewCheckIn:
    return replace(NewCheckIn(recorded_at=NOW, pain=3, mood=6, sleep=7, note="ok"), **changes)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(check_in(), id="today"),
        pytest.param(check_in(pain=0, mood=10, sleep=0), id="ends of the scales"),
        pytest.param(check_in(pain=10, mood=0, sleep=10), id="other ends of the scales"),
        pytest.param(check_in(mood=None, sleep=None), id="pain only"),
        pytest.param(check_in(recorded_at=NOW + 5 * MINUTE), id="within clock skew"),
        pytest.param(check_in(recorded_at=NOW - timedelta(days=30)), id="30 days late"),
        pytest.param(check_in(note="x" * 2000), id="longest note"),
    ],
)
def test_a_plausible_check_in_is_accepted(data: NewCheckIn) -> None:
    assert check_in_problem(data, NOW, POLICY) is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (check_in(pain=-1), "pain"),
        (check_in(pain=11), "pain"),
        (check_in(mood=11), "mood"),
        (check_in(sleep=-1), "sleep"),
        (check_in(recorded_at=NOW + 6 * MINUTE), "recordedAt"),
        (check_in(recorded_at=NOW - timedelta(days=30, minutes=1)), "recordedAt"),
        (check_in(note="x" * 2001), "note"),
    ],
)
def test_an_implausible_check_in_is_refused_with_the_field_named(data: NewCheckIn, field: str) -> None:
    problem = check_in_problem(data, NOW, POLICY)
    assert problem is not None
    assert problem[0] == field
