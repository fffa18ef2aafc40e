"""Clinic defaults (CLINICAL.md), in one object a clinic can change without a release.

Every number here is either a published figure or a product default that CLINICAL.md names as
such; settings may override the ones a clinic is expected to tune.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from models.kernel.errors import InvalidInput
from models.notifications.quiet_hours import QuietHours
from models.safety.crisis import SEED_CRISIS_PHRASES_FILE, read_crisis_phrases

US_CRISIS_RESOURCES = "If you are in danger now, call 911. Call or text 988 (Suicide & Crisis Lifeline), any time."
EMERGENCY_INSTRUCTIONS = "Call 911 (emergency services) now. Do not drive yourself."
# §7: the phrase list is seed data (seeds/crisis_phrases.txt); settings may name a clinic's own file.
SEED_CRISIS_PHRASES = read_crisis_phrases(SEED_CRISIS_PHRASES_FILE)


@dataclass(frozen=True)
class BloodPressure:
    systolic: int
    diastolic: int

    def reaches(self, limit: BloodPressure) -> bool:
        """At or over a limit: either number at or above its counterpart (CLINICAL.md §2, §3)."""
        return self.systolic >= limit.systolic or self.diastolic >= limit.diastolic

    def __str__(self) -> str:
        return f"{self.systolic}/{self.diastolic} mmHg"


@dataclass(frozen=True)
class DoseLimit:
    """§1: a clinic's own dose limits for one formulation (its code), in the formulation's unit
    (mg, mg/kg, mg/kg per hour). They may only narrow the product's guard rails
    (`models.care.plan_rules.dose_limits_problem`, checked when the service starts)."""

    formulation: str
    minimum: Decimal
    maximum: Decimal


@dataclass(frozen=True)
class ClinicPolicy:
    # §2: default pre-dose ceiling (the label's example of an elevated baseline); never above 160/100.
    default_bp_ceiling: BloodPressure = BloodPressure(140, 90)
    highest_bp_ceiling: BloodPressure = BloodPressure(160, 100)
    # §2: a pre-dose reading counts if taken in the last 30 minutes.
    bp_reading_valid_for: timedelta = timedelta(minutes=30)
    default_min_hours_between_sessions: int = 48
    # §3: monitoring for at least 2 hours (label); abandoned after 6 hours (product default).
    minimum_monitoring: timedelta = timedelta(hours=2)
    abandon_after: timedelta = timedelta(hours=6)
    # §3: post-dose limits (product defaults, per clinic).
    post_dose_high: BloodPressure = BloodPressure(160, 100)
    post_dose_urgent: BloodPressure = BloodPressure(180, 110)
    # §2: before dosing, a reading at or over this is URGENT with emergency instructions, as after.
    pre_dose_urgent: BloodPressure = BloodPressure(180, 110)
    # §2 breathing and oxygen: SpO2 below `spo2_urgent_below` % → URGENT; below `spo2_high_below` → HIGH.
    spo2_urgent_below: int = 90
    spo2_high_below: int = 94
    # §2: a start whose `recordedAt` is more than this before it reaches the server describes a
    # dose already taken offline: recorded even when its checks fail.
    offline_dose_after: timedelta = timedelta(minutes=10)
    # §7: crisis resources shown to patients (US defaults) and the clinic's on-call number.
    crisis_resources: str = US_CRISIS_RESOURCES
    on_call_contact: str | None = None
    # §7: crisis wording scanned for in patients' free text (models/safety/crisis.py).
    crisis_phrases: tuple[str, ...] = SEED_CRISIS_PHRASES
    # §9: acknowledge within (URGENT, HIGH), and ROUTINE in business days of the patient's zone.
    urgent_response: timedelta = timedelta(minutes=15)
    high_response: timedelta = timedelta(hours=4)
    routine_response_business_days: int = 2
    # §6: when nothing but a safety check is pushed to a patient (their local time).
    quiet_hours: QuietHours = field(default_factory=QuietHours)
    # Device clocks drift: a time this far in the future is still accepted as "now".
    clock_skew: timedelta = timedelta(minutes=5)
    # Offline phones sync late; anything older than this is refused as implausible.
    oldest_backdated_entry: timedelta = timedelta(days=30)
    # A session start replayed from an offline phone is not closed as abandoned for this long
    # after it arrived: its completion is on its way in the same queue.
    replay_grace: timedelta = timedelta(minutes=10)
    # §10: a fentanyl patch is worn this long unless a new one is applied first (the label's 72 h).
    patch_wear: timedelta = timedelta(hours=72)
    # §1: a weight-based dose given in clinic (IM mg/kg, IV mg/kg per hour) is recorded as the
    # total in mg; without the patient's weight the total is checked against the formulation's
    # per-kg maximum for a patient this heavy (a guard rail against typing errors, not advice).
    heaviest_patient_kg: int = 250
    # §1: the dose limits this clinic narrowed, per formulation; the others keep the product's.
    dose_limits: tuple[DoseLimit, ...] = ()
    # §5 outcome definitions: a baseline is the latest value recorded at most this long before the
    # first completed session.
    baseline_window: timedelta = timedelta(days=30)

    def device_time_problem(self, field: str, moment: datetime, now: datetime) -> str | None:
        """Why a time set by the patient's phone cannot be right, or None: more than the clock skew
        ahead of the server, or older than an offline phone is believed to keep its queue."""
        if moment > now + self.clock_skew:
            return f"{field} is in the future: check the phone's clock"
        if moment < now - self.oldest_backdated_entry:
            return f"{field} is more than {self.oldest_backdated_entry.days} days ago"
        return None

    def check_device_time(self, field: str, moment: datetime | None, now: datetime) -> None:
        """`InvalidInput(field, …)` naming `device_time_problem`'s reason; a time not sent passes."""
        if moment is not None and (problem := self.device_time_problem(field, moment, now)):
            raise InvalidInput(field, problem)

    def crisis_text(self) -> str:
        """CLINICAL.md §7: the crisis resources shown to a patient, with the clinic's on-call number."""
        if self.on_call_contact:
            return f"{self.crisis_resources} Your clinic's on-call line: {self.on_call_contact}."
        return self.crisis_resources


DEFAULT_POLICY = ClinicPolicy()


class PolicyFileError(ValueError):
    """A clinic policy file that cannot be read; the message names the key and the problem."""


# Set elsewhere: crisis wording by CRISIS_RESOURCES, CLINIC_ON_CALL and CRISIS_PHRASES_FILE.
_NOT_IN_THE_FILE = frozenset({"crisis_resources", "on_call_contact", "crisis_phrases"})


def policy_overrides(data: object) -> dict[str, object]:
    """A clinic's policy file (JSON: an object whose keys are `ClinicPolicy` fields) as the values
    to replace in `DEFAULT_POLICY`. Blood pressures are "systolic/diastolic" ("180/110"),
    durations a number of minutes, quiet hours "HH:MM-HH:MM", dose limits
    `{"ORAL": [25, 400]}`, the rest whole numbers. Every key is checked: an unknown key or a value
    of the wrong kind is an error naming it (dose limits against the product's guard rails are
    checked by `models.care.plan_rules.dose_limits_problem`, which knows the formulations)."""
    if not isinstance(data, dict):
        raise PolicyFileError("the file must hold a JSON object of policy fields")
    defaults = {name: value for name, value in vars(DEFAULT_POLICY).items() if name not in _NOT_IN_THE_FILE}
    overrides: dict[str, object] = {}
    for key, raw in data.items():
        if key not in defaults:
            raise PolicyFileError(f"{key}: not a clinic policy field (known: {', '.join(sorted(defaults))})")
        overrides[key] = _policy_value(key, raw, defaults[key])
    policy = replace(DEFAULT_POLICY, **overrides)  # type: ignore[arg-type]
    ceiling, highest = policy.default_bp_ceiling, policy.highest_bp_ceiling
    if ceiling.systolic > highest.systolic or ceiling.diastolic > highest.diastolic:
        raise PolicyFileError("default_bp_ceiling: must not be above highest_bp_ceiling")
    if not policy.spo2_urgent_below <= policy.spo2_high_below <= 100:
        raise PolicyFileError("spo2_high_below: must be between spo2_urgent_below and 100")
    return overrides


def _dose_limits(raw: object) -> tuple[DoseLimit, ...]:
    """`{"ORAL": [25, 400], …}`: per formulation code, the lowest and highest dose, numbers above 0."""
    problem = 'dose_limits: an object of formulation codes and [lowest, highest] doses, e.g. {"ORAL": [25, 400]}'
    if not isinstance(raw, dict):
        raise PolicyFileError(problem)
    limits = []
    for code, pair in raw.items():
        if not (isinstance(pair, list) and len(pair) == 2):
            raise PolicyFileError(f"{problem}; {code} is not")
        try:
            low, high = (Decimal(str(value)) for value in pair if not isinstance(value, bool))
        except (ValueError, InvalidOperation):
            raise PolicyFileError(f"{problem}; {code} is not") from None
        if not (low.is_finite() and high.is_finite() and 0 < low <= high):
            raise PolicyFileError(f"dose_limits: {code}: the lowest dose is above 0 and not above the highest")
        limits.append(DoseLimit(code, low, high))
    return tuple(limits)


def _policy_value(key: str, raw: object, default: object) -> object:
    if key == "dose_limits":
        return _dose_limits(raw)
    if isinstance(default, BloodPressure):
        if isinstance(raw, str) and (match := re.fullmatch(r"\s*(\d{2,3})\s*/\s*(\d{2,3})\s*", raw)):
            return BloodPressure(int(match[1]), int(match[2]))
        raise PolicyFileError(f'{key}: a blood pressure as "systolic/diastolic", e.g. "180/110"')
    if isinstance(default, timedelta):
        if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
            return timedelta(minutes=raw)
        raise PolicyFileError(f"{key}: a number of minutes above 0")
    if isinstance(default, QuietHours):
        if isinstance(raw, str) and (match := re.fullmatch(r"\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*", raw)):
            try:
                return QuietHours(time(int(match[1]), int(match[2])), time(int(match[3]), int(match[4])))
            except ValueError:
                pass
        raise PolicyFileError(f'{key}: quiet hours as "HH:MM-HH:MM", e.g. "22:00-08:00"')
    if isinstance(default, int):
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        raise PolicyFileError(f"{key}: a whole number, 0 or more")
    raise PolicyFileError(f"{key}: cannot be set in the policy file")  # pragma: no cover - every field has a kind
