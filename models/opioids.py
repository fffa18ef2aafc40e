"""Opioid use in morphine milligram equivalents (CLINICAL.md §10, CDC 2022 clinical practice
guideline conversion factors).

MME/day = sum of strength per unit * units per day * factor. A fentanyl patch counts, at its strength
in mcg/hr, for every day it is worn (72 h by default). Buprenorphine and fentanyl buccal or nasal
products are recorded but not converted: "MME not computed", never guessed. An unknown drug or
unit is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID
from zoneinfo import ZoneInfo

from tortoise import fields
from tortoise.transactions import in_transaction

from models.access import Viewer
from models.accounts import Patient, Role
from models.audit import AuditAction, AuditEntry, AuditOutcome, record_now
from models.base import Entity
from models.errors import Forbidden, InvalidInput
from models.events import Operation, record_event
from models.idempotency import Outcome, run_once
from models.policy import ClinicPolicy


class StrengthUnit(StrEnum):
    MG = "mg"
    MCG = "mcg"  # buccal and nasal fentanyl
    MCG_PER_HOUR = "mcg/hr"  # a patch


@dataclass(frozen=True)
class Opioid:
    factor: Decimal | None  # None: recorded, not converted
    unit: StrengthUnit
    rxnorm: str | None
    not_converted_because: str | None = None
    worn_for: timedelta | None = None  # transdermal patches


PATCH_WEAR = timedelta(hours=72)

# CLINICAL.md §10 (RxNorm ingredient codes as listed there, to be checked against RxNav).
CATALOGUE: dict[str, Opioid] = {
    "codeine": Opioid(Decimal("0.15"), StrengthUnit.MG, "2670"),
    "dihydrocodeine": Opioid(Decimal("0.25"), StrengthUnit.MG, None),
    "fentanyl patch": Opioid(Decimal("2.4"), StrengthUnit.MCG_PER_HOUR, "4337", worn_for=PATCH_WEAR),
    "hydrocodone": Opioid(Decimal(1), StrengthUnit.MG, "5489"),
    "hydromorphone": Opioid(Decimal(5), StrengthUnit.MG, "3423"),
    "methadone": Opioid(Decimal("4.7"), StrengthUnit.MG, "6813"),
    "morphine": Opioid(Decimal(1), StrengthUnit.MG, "7052"),
    "oxycodone": Opioid(Decimal("1.5"), StrengthUnit.MG, "7804"),
    "oxymorphone": Opioid(Decimal(3), StrengthUnit.MG, "7814"),
    "tapentadol": Opioid(Decimal("0.4"), StrengthUnit.MG, "787390"),
    "tramadol": Opioid(Decimal("0.2"), StrengthUnit.MG, "10689"),
    "buprenorphine": Opioid(None, StrengthUnit.MG, None, "no MME factor for buprenorphine (CDC 2022)"),
    "fentanyl buccal": Opioid(None, StrengthUnit.MCG, None, "no MME factor for buccal fentanyl"),
    "fentanyl nasal": Opioid(None, StrengthUnit.MCG, None, "no MME factor for nasal fentanyl"),
}
# CLINICAL.md §10 flags.
REASSESS_AT = Decimal(50)
AVOID_OR_JUSTIFY_AT = Decimal(90)


def dose_mme(drug: str, strength: Decimal, quantity: Decimal) -> Decimal | None:
    """MME of one intake (or, for a patch, of each day it is worn); None when not converted."""
    factor = CATALOGUE[drug].factor
    return None if factor is None else strength * quantity * factor


def mme_flags(mme_per_day: Decimal | None) -> list[str]:
    """CLINICAL.md §10: ≥ 50 MME/day reassess, ≥ 90 avoid or justify."""
    if mme_per_day is None:
        return []
    flags = []
    if mme_per_day >= REASSESS_AT:
        flags.append("AT_OR_ABOVE_50")
    if mme_per_day >= AVOID_OR_JUSTIFY_AT:
        flags.append("AT_OR_ABOVE_90")
    return flags


@dataclass(frozen=True)
class Intake:
    drug: str
    strength: Decimal
    quantity: Decimal
    taken_at: datetime


def daily_mme(intakes: list[Intake], first_day: date, last_day: date, time_zone: str) -> dict[date, Decimal]:
    """MME per local day (CLINICAL.md §10): each intake on the day it was taken; a patch on
    every day it is worn. Drugs without a factor add nothing (they are reported apart)."""
    zone = ZoneInfo(time_zone)
    days: dict[date, Decimal] = {}
    day = first_day
    while day <= last_day:
        days[day] = Decimal(0)
        day += timedelta(days=1)
    for intake in intakes:
        mme = dose_mme(intake.drug, intake.strength, intake.quantity)
        if mme is None:
            continue
        opioid = CATALOGUE[intake.drug]
        start = intake.taken_at.astimezone(zone)
        if opioid.worn_for is None:
            if start.date() in days:
                days[start.date()] += mme
            continue
        removed = (intake.taken_at + opioid.worn_for).astimezone(zone)
        worn_day = start.date()
        # Every calendar day the patch is on, except a day it comes off at midnight exactly.
        while worn_day < removed.date() or (worn_day == removed.date() and removed.time() > time(0, 0)):
            if worn_day in days:
                days[worn_day] += mme
            worn_day += timedelta(days=1)
    return days


class OpioidDose(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="opioid_doses", on_delete=fields.RESTRICT
    )
    drug = fields.CharField(max_length=40)
    strength = fields.DecimalField(max_digits=8, decimal_places=2)
    strength_unit = fields.CharEnumField(StrengthUnit, max_length=8)
    quantity = fields.DecimalField(max_digits=6, decimal_places=2)
    taken_at = fields.DatetimeField()
    recorded_at = fields.DatetimeField()

    class Meta:
        table = "opioid_dose"
        indexes = (("patient_id", "taken_at"),)


@dataclass(frozen=True)
class NewOpioidDose:
    drug: str
    strength: Decimal
    strength_unit: str
    quantity: Decimal
    taken_at: datetime
    idempotency_key: str | None = None


def _validate(data: NewOpioidDose, now: datetime, policy: ClinicPolicy) -> str:
    drug = data.drug.strip().lower()
    if drug not in CATALOGUE:
        known = ", ".join(sorted(CATALOGUE))
        raise InvalidInput("drug", f"unknown opioid {data.drug!r}: use one of {known}")
    unit = CATALOGUE[drug].unit
    if data.strength_unit != unit.value:
        raise InvalidInput("strengthUnit", f"{drug} strength is in {unit.value}, not {data.strength_unit!r}")
    if not Decimal(0) < data.strength <= Decimal(2000) or data.strength != data.strength.quantize(Decimal("0.01")):
        raise InvalidInput("strength", "strength must be more than 0 and at most 2000, with at most 2 decimals")
    if not Decimal(0) < data.quantity <= Decimal(50) or data.quantity != data.quantity.quantize(Decimal("0.01")):
        raise InvalidInput("quantity", "quantity must be more than 0 and at most 50, with at most 2 decimals")
    if data.taken_at > now + policy.clock_skew:
        raise InvalidInput("takenAt", "takenAt is in the future")
    if data.taken_at < now - policy.oldest_backdated_entry:
        raise InvalidInput("takenAt", f"takenAt is more than {policy.oldest_backdated_entry.days} days ago")
    return drug


async def log_opioid_use(viewer: Viewer, data: NewOpioidDose, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """The patient records an opioid intake (a patch: when it was applied)."""
    if not viewer.is_role(Role.PATIENT) or viewer.patient_id is None:
        raise Forbidden("opioid use is logged by the patient")
    patient_id = viewer.patient_id
    drug = _validate(data, now, policy)

    async def write() -> Outcome:
        async with in_transaction():
            dose = await OpioidDose.create(
                patient_id=patient_id,
                drug=drug,
                strength=data.strength,
                strength_unit=StrengthUnit(data.strength_unit),
                quantity=data.quantity,
                taken_at=data.taken_at,
                recorded_at=now,
            )
            await record_event(
                "OpioidDose.created", resource_type="OpioidDose", resource_id=dose.id, operation=Operation.CREATED,
                version=1, now=now, patient_id=patient_id, payload={"drug": drug},
            )  # fmt: skip
            entry = AuditEntry(AuditAction.CREATE, "OpioidDose", AuditOutcome.SUCCESS, patient_id, str(dose.id))
            await record_now(viewer, entry, now=now, trail=viewer.audit)
        return Outcome(dose.id)

    request = {k: v for k, v in vars(data).items() if k != "idempotency_key"}
    return await run_once(viewer, "logOpioidUse", data.idempotency_key, request, write, now=now)


@dataclass(frozen=True)
class RegimenItem:
    drug: str
    strength: Decimal
    strength_unit: str
    doses_per_day: Decimal
    mme_per_day: Decimal | None
    not_converted_because: str | None


@dataclass(frozen=True)
class OpioidSummary:
    current_mme_per_day: Decimal
    baseline_mme_per_day: Decimal | None
    daily: dict[date, Decimal]
    regimen: list[RegimenItem]
    flags: list[str]

    @property
    def change_from_baseline(self) -> Decimal | None:
        if self.baseline_mme_per_day is None:
            return None
        return self.current_mme_per_day - self.baseline_mme_per_day


INTERACTION_WINDOW = timedelta(hours=4)


@dataclass(frozen=True)
class InteractionWarning:
    code: str
    message: str


def opioid_interaction(intakes: list[Intake], session_start: datetime) -> InteractionWarning | None:
    """CLINICAL.md §8: an opioid logged within 4 hours before a session starts is a warning, not a
    refusal (ketamine adds to an opioid's sedation and its slowing of breathing). A patch still
    worn at the start counts as taken now."""

    def on_board(dose: Intake) -> bool:
        if dose.taken_at > session_start:
            return False
        worn_for = CATALOGUE[dose.drug].worn_for if dose.drug in CATALOGUE else None
        return session_start - dose.taken_at <= max(INTERACTION_WINDOW, worn_for or INTERACTION_WINDOW)

    recent = [dose for dose in intakes if on_board(dose)]
    if not recent:
        return None
    last = max(recent, key=lambda dose: dose.taken_at)
    if session_start - last.taken_at > INTERACTION_WINDOW:
        when = f"You are wearing a {last.drug}"
    else:
        minutes = int((session_start - last.taken_at).total_seconds() // 60)
        when = f"You logged {last.drug} {minutes} minutes before this session"
    return InteractionWarning(
        "OPIOID_WITHIN_4_HOURS",
        f"{when}. Together with ketamine, opioids add to sleepiness and can slow breathing: keep your "
        "monitor with you, and if breathing becomes slow or shallow, or you cannot be woken, your "
        "monitor should call 911.",
    )


async def session_warnings(patient_id: UUID, session_start: datetime) -> list[InteractionWarning]:
    """The §8 warnings of a session started at `session_start` (recomputed the same on a retry)."""
    window = OpioidDose.filter(
        patient_id=patient_id,
        taken_at__gte=session_start - max(INTERACTION_WINDOW, PATCH_WEAR),
        taken_at__lte=session_start,
    )
    intakes = [
        Intake(drug, strength, quantity, taken_at)
        for drug, strength, quantity, taken_at in await window.values_list("drug", "strength", "quantity", "taken_at")
    ]
    warning = opioid_interaction(intakes, session_start)
    return [warning] if warning else []


CURRENT_WINDOW_DAYS = 7


def _average(values: list[Decimal]) -> Decimal:
    return (sum(values, Decimal(0)) / len(values)).quantize(Decimal("0.1")) if values else Decimal(0)


SUMMARY_DAYS = 90


async def opioid_summaries(
    viewer: Viewer, patient_ids: list[UUID], *, now: datetime, days: int = SUMMARY_DAYS
) -> dict[UUID, OpioidSummary]:
    """Per patient (for DataLoaders): daily MME over `days` local days, the current MME/day (the
    average of the last 7 days), the baseline (7 days before the first completed session), the
    regimen of the last 7 days, and the CLINICAL.md §10 flags."""
    from models.directory import clinical_patients

    allowed = await clinical_patients(viewer, patient_ids, "OpioidDose")
    return await summaries_for(allowed, now=now, days=days)


async def summaries_for(
    allowed: dict[UUID, Patient], *, now: datetime, days: int = SUMMARY_DAYS
) -> dict[UUID, OpioidSummary]:
    """`opioid_summaries` for patients whose access the caller has already checked and audited."""
    from models.dosing import DosingSession, SessionStatus

    earliest = now - timedelta(days=max(days, CURRENT_WINDOW_DAYS) + 40)
    doses = OpioidDose.filter(patient_id__in=list(allowed), taken_at__gte=earliest).order_by("taken_at")
    firsts = DosingSession.filter(patient_id__in=list(allowed), status=SessionStatus.COMPLETED).order_by("started_at")
    first_session: dict[UUID, datetime] = {}
    for patient_id, started_at in await firsts.values_list("patient_id", "started_at"):
        first_session.setdefault(patient_id, started_at)
    by_patient: dict[UUID, list[Intake]] = {patient_id: [] for patient_id in allowed}
    for patient_id, drug, strength, quantity, taken_at in await doses.values_list(
        "patient_id", "drug", "strength", "quantity", "taken_at"
    ):
        by_patient[patient_id].append(Intake(drug, strength, quantity, taken_at))
    summaries = {}
    for patient_id, patient in allowed.items():
        zone = patient.time_zone
        today = now.astimezone(ZoneInfo(zone)).date()
        intakes = by_patient[patient_id]
        daily = daily_mme(intakes, today - timedelta(days=days - 1), today, zone)
        window = (today - timedelta(days=CURRENT_WINDOW_DAYS), today - timedelta(days=1))
        recent = daily_mme(intakes, *window, zone)
        current = _average(list(recent.values()))
        baseline = None
        if patient_id in first_session:
            day = first_session[patient_id].astimezone(ZoneInfo(zone)).date()
            before = daily_mme(intakes, day - timedelta(days=CURRENT_WINDOW_DAYS), day - timedelta(days=1), zone)
            baseline = _average(list(before.values()))
        summaries[patient_id] = OpioidSummary(
            current_mme_per_day=current,
            baseline_mme_per_day=baseline,
            daily=daily,
            regimen=_regimen(intakes, *window, zone),
            flags=mme_flags(current),
        )
    return summaries


def _regimen(intakes: list[Intake], first_day: date, last_day: date, time_zone: str) -> list[RegimenItem]:
    """What the patient took over the last 7 local days, by drug and strength, per day."""
    zone = ZoneInfo(time_zone)
    totals: dict[tuple[str, Decimal], Decimal] = {}
    for intake in intakes:
        if first_day <= intake.taken_at.astimezone(zone).date() <= last_day:
            key = (intake.drug, intake.strength)
            totals[key] = totals.get(key, Decimal(0)) + intake.quantity
    items = []
    for (drug, strength), quantity in sorted(totals.items()):
        opioid = CATALOGUE[drug]
        per_day = (quantity / CURRENT_WINDOW_DAYS).quantize(Decimal("0.01"))
        if opioid.worn_for is not None:  # a patch applied every 3 days is worn every day
            per_day = min(Decimal(1), (quantity * Decimal(opioid.worn_for.days)) / CURRENT_WINDOW_DAYS)
        mme = dose_mme(drug, strength, per_day)
        items.append(
            RegimenItem(
                drug,
                strength,
                opioid.unit.value,
                per_day,
                mme.quantize(Decimal("0.1")) if mme is not None else None,
                opioid.not_converted_because,
            )
        )
    return items
