"""What a treatment plan may say, as pure rules: the formulations' settings and dose guard rails
(CLINICAL.md §1, guard rails against typing errors, not dosing advice), the structural
contraindications that refuse a plan and the blood-pressure ceiling's bounds (§2), the follow-up
survey schedule and its default (§6), and the medication list a provider sets (§8).
`models.care.plans` applies them to the plans it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from models.care.plan_records import (
    CareSetting,
    ConcomitantMedication,
    DoseUnit,
    Formulation,
    MedicationClass,
    MedicationSource,
    ScheduledSurvey,
)
from models.kernel.errors import InvalidInput
from models.kernel.policy import BloodPressure, ClinicPolicy


@dataclass(frozen=True)
class FormulationRule:
    """CLINICAL.md §1: where a formulation may be used and its dose guard rails."""

    settings: frozenset[CareSetting]
    unit: DoseUnit
    minimum: Decimal
    maximum: Decimal
    allowed_doses: frozenset[Decimal] = frozenset()


_BOTH = frozenset({CareSetting.AT_HOME, CareSetting.CLINIC})
_CLINIC = frozenset({CareSetting.CLINIC})

FORMULATIONS: dict[Formulation, FormulationRule] = {
    Formulation.SUBLINGUAL_TABLET: FormulationRule(_BOTH, DoseUnit.MG, Decimal(25), Decimal(800)),
    Formulation.ORAL: FormulationRule(_BOTH, DoseUnit.MG, Decimal(25), Decimal(800)),
    Formulation.INTRANASAL_KETAMINE: FormulationRule(_BOTH, DoseUnit.MG, Decimal(10), Decimal(200)),
    Formulation.INTRANASAL_ESKETAMINE: FormulationRule(
        _CLINIC, DoseUnit.MG, Decimal(28), Decimal(84), frozenset({Decimal(28), Decimal(56), Decimal(84)})
    ),
    Formulation.INTRAMUSCULAR: FormulationRule(_CLINIC, DoseUnit.MG_PER_KG, Decimal("0.1"), Decimal("1.0")),
    Formulation.INTRAVENOUS: FormulationRule(_CLINIC, DoseUnit.MG_PER_KG_PER_HOUR, Decimal("0.1"), Decimal("2.0")),
}


def provider_medication_list(
    current: list[ConcomitantMedication], classes: tuple[MedicationClass, ...], now: datetime
) -> list[ConcomitantMedication]:
    """CLINICAL.md §8: the plan's medications once a provider lists `classes` in full: a class already on the plan
    keeps its entry (who reported it, when); a new one is the provider's, as of `now`; a class left
    out is taken off. Each class once."""
    repeated = sorted({value.value for value in classes if classes.count(value) > 1})
    if repeated:
        raise InvalidInput("concomitantMedications", f"each class once; repeated: {', '.join(repeated)}")
    kept = [entry for entry in current if entry.medication_class in classes]
    known = {entry.medication_class for entry in kept}
    added = [ConcomitantMedication(value, MedicationSource.PROVIDER, now) for value in classes if value not in known]
    return kept + added


# CLINICAL.md §5 instruments a schedule may name.
INSTRUMENT_CODES = frozenset({"POST-SESSION", "PAIN-NRS", "PEG-3", "PHQ-9", "GAD-7", "WEEKLY-SAFETY"})
# CLINICAL.md §6: the default follow-up schedule after each completed session.
DEFAULT_SURVEY_SCHEDULE: tuple[ScheduledSurvey, ...] = (
    ScheduledSurvey("POST-SESSION", 2 * 60, 6 * 60),
    ScheduledSurvey("PAIN-NRS", 24 * 60, 24 * 60),
    ScheduledSurvey("PEG-3", 72 * 60, 48 * 60),
    ScheduledSurvey("PHQ-9", 7 * 24 * 60, 72 * 60),
    ScheduledSurvey("GAD-7", 7 * 24 * 60, 72 * 60),
)


UNITS = {DoseUnit.MG: "mg", DoseUnit.MG_PER_KG: "mg/kg", DoseUnit.MG_PER_KG_PER_HOUR: "mg/kg per hour"}


def formulation_limits(formulation: Formulation, policy: ClinicPolicy) -> FormulationRule:
    """CLINICAL.md §1: a formulation's dose limits at this clinic: the product's guard rails
    (`FORMULATIONS`), narrowed where the clinic set its own (`ClinicPolicy.dose_limits`; Spravato
    keeps those of its 28, 56 and 84 mg that fall inside them)."""
    rule = FORMULATIONS[formulation]
    for narrowed in policy.dose_limits:
        if narrowed.formulation == formulation.value:
            allowed = frozenset(dose for dose in rule.allowed_doses if narrowed.minimum <= dose <= narrowed.maximum)
            return replace(rule, minimum=narrowed.minimum, maximum=narrowed.maximum, allowed_doses=allowed)
    return rule


def dose_limits_problem(policy: ClinicPolicy) -> str | None:
    """CLINICAL.md §1: a clinic may narrow the dose limits, never widen them past the product's
    guard rails; why its `dose_limits` cannot be, or None (the service refuses to start)."""
    seen: set[str] = set()
    for narrowed in policy.dose_limits:
        code = narrowed.formulation
        if code not in Formulation.__members__:
            return f"dose_limits: {code} is not a formulation (known: {', '.join(Formulation.__members__)})"
        if code in seen:
            return f"dose_limits: {code} is given twice"
        seen.add(code)
        rule = FORMULATIONS[Formulation[code]]
        unit = UNITS[rule.unit]
        if narrowed.minimum < rule.minimum or narrowed.maximum > rule.maximum:
            return (
                f"dose_limits: {code} {narrowed.minimum:g}-{narrowed.maximum:g} {unit} is wider than the product's "
                f"guard rails, {rule.minimum:g}-{rule.maximum:g} {unit}: a clinic may narrow them, never widen them"
            )
        if rule.allowed_doses and not formulation_limits(Formulation[code], policy).allowed_doses:
            allowed = ", ".join(f"{value:g}" for value in sorted(rule.allowed_doses))
            return (
                f"dose_limits: {code} {narrowed.minimum:g}-{narrowed.maximum:g} {unit} leaves none of {allowed} {unit}"
            )
    return None


def highest_dose_mg(policy: ClinicPolicy) -> Decimal:
    """CLINICAL.md §1: the highest dose in mg any formulation allows at this clinic (800 mg by
    default): a start whose dose is above it is a typing error whatever its plan."""
    return max(
        formulation_limits(formulation, policy).maximum
        for formulation, rule in FORMULATIONS.items()
        if rule.unit is DoseUnit.MG
    )


def dose_problem(formulation: Formulation, setting: CareSetting, dose: Decimal, policy: ClinicPolicy) -> str | None:
    """Why a plan's dose or setting is refused (CLINICAL.md §1), naming the limit, or None."""
    rule = formulation_limits(formulation, policy)
    if setting not in rule.settings:
        return f"{formulation.value} is given in clinic only"
    if rule.allowed_doses and dose not in rule.allowed_doses:
        allowed = ", ".join(f"{value:g}" for value in sorted(rule.allowed_doses))
        return f"{formulation.value} dose must be one of {allowed} mg"
    if not rule.minimum <= dose <= rule.maximum:
        return f"{formulation.value} dose must be between {rule.minimum:g} and {rule.maximum:g} {UNITS[rule.unit]}"
    return None


# CLINICAL.md §2: the label's (aneurysmal vascular disease or arteriovenous malformation, intracerebral
# hemorrhage, known hypersensitivity to ketamine or esketamine), then the product's two choices;
# any one recorded refuses a plan.
STRUCTURAL_CONTRAINDICATIONS = frozenset(
    {
        "ANEURYSMAL_VASCULAR_DISEASE",
        "ARTERIOVENOUS_MALFORMATION",
        "INTRACEREBRAL_HEMORRHAGE",
        "KETAMINE_HYPERSENSITIVITY",
        "ACTIVE_PSYCHOSIS",
        "UNCONTROLLED_HYPERTENSION",
    }
)


def contraindication_problem(recorded: tuple[str, ...]) -> str | None:
    """CLINICAL.md §2: a plan cannot be created while a structural contraindication is recorded
    on it (`STRUCTURAL_CONTRAINDICATIONS`: the label's three, then the product's two); why, or
    None. A code outside the list is refused as unknown, never ignored."""
    unknown = sorted(set(recorded) - STRUCTURAL_CONTRAINDICATIONS)
    if unknown:
        return f"unknown contraindications: {', '.join(unknown)}"
    if recorded:
        return f"a plan cannot be created while a contraindication is recorded: {', '.join(sorted(recorded))}"
    return None


def ceiling_problem(ceiling: BloodPressure, policy: ClinicPolicy) -> str | None:
    """CLINICAL.md §2: a plan's ceiling is never above 160/100 (nor absurdly low)."""
    highest = policy.highest_bp_ceiling
    if ceiling.systolic > highest.systolic or ceiling.diastolic > highest.diastolic:
        return f"the blood-pressure ceiling may not be above {highest}"
    if ceiling.systolic < 90 or ceiling.diastolic < 50 or ceiling.diastolic >= ceiling.systolic:
        return "the blood-pressure ceiling is not a plausible blood pressure"
    return None


def schedule_problem(schedule: tuple[ScheduledSurvey, ...]) -> str | None:
    if len(schedule) > 20:
        return "a survey schedule has at most 20 entries"
    instruments = [item.instrument for item in schedule]
    if len(set(instruments)) != len(instruments):
        return "each instrument appears once in a survey schedule"
    for item in schedule:
        if item.instrument not in INSTRUMENT_CODES:
            return f"unknown instrument {item.instrument!r} (known: {', '.join(sorted(INSTRUMENT_CODES))})"
        if not 0 <= item.offset_minutes <= 60 * 24 * 60:
            return f"{item.instrument}: offset must be between 0 and 60 days"
        if not 60 <= item.window_minutes <= 14 * 24 * 60:
            return f"{item.instrument}: window must be between 1 hour and 14 days"
    return None
