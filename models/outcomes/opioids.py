"""Opioid use: the patient's log of opioid intakes and the figures read from it (CLINICAL.md §10
in morphine milligram equivalents, the rules in models/outcomes/mme.py; §8 for an opioid before a session).

Every catalogue drug is recorded as logged; an unknown drug or a wrong unit is refused. Drugs
without an MME factor are kept, never converted, and named beside every figure that leaves them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from uuid import UUID
from zoneinfo import ZoneInfo

from tortoise import fields
from tortoise.transactions import in_transaction

from models.identity.access import Viewer, clinical_patients, require_patient_self
from models.identity.accounts import Patient
from models.kernel.audit import AuditAction
from models.kernel.base import Entity
from models.kernel.errors import Forbidden, InvalidInput
from models.kernel.events import record_created
from models.kernel.idempotency import Outcome, request_fields, run_once
from models.kernel.policy import ClinicPolicy
from models.outcomes.baselines import first_completed_sessions
from models.outcomes.mme import (
    CATALOGUE,
    DAY,
    FLAG_DAYS,
    Flag,
    Intake,
    StrengthUnit,
    Total,
    daily_totals,
    dose_mme,
    highest_day,
    mme_flags,
    total_between,
)


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
    refusal = Forbidden("opioid use is logged by the patient")
    patient_id = require_patient_self(viewer, refusal, AuditAction.CREATE, "OpioidDose")
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
            await record_created(viewer, "OpioidDose", dose.id, patient_id, now=now, payload={"drug": drug})
        return Outcome(dose.id)

    return await run_once(viewer, "logOpioidUse", data.idempotency_key, request_fields(data), write, now=now)


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
    """A patient's opioid use as the chart shows it (CLINICAL.md §10)."""

    current_mme_per_day: Decimal  # the total of the last 24 hours
    baseline_mme_per_day: Decimal | None  # the daily average of the 7 days before the first session
    daily: dict[date, Total]
    regimen: list[RegimenItem]
    flags: list[Flag]  # on the highest day of the last 7
    left_out: tuple[str, ...]  # drugs without a factor taken in the period of any figure above

    @property
    def incomplete(self) -> bool:
        return bool(self.left_out)

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


def opioid_interaction(intakes: list[Intake], session_start: datetime, *, wear: timedelta) -> InteractionWarning | None:
    """CLINICAL.md §8: an opioid logged within 4 hours before a session starts is a warning, not a
    refusal (ketamine adds to an opioid's sedation and its slowing of breathing). A patch still
    worn at the start (applied less than the clinic's `patch_wear` before it) counts as taken now."""

    def on_board(dose: Intake) -> bool:
        if dose.taken_at > session_start:
            return False
        opioid = CATALOGUE.get(dose.drug)
        worn_for = wear if opioid is not None and opioid.transdermal else INTERACTION_WINDOW
        return session_start - dose.taken_at <= max(INTERACTION_WINDOW, worn_for)

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


async def session_warnings(
    patient_id: UUID, session_start: datetime, *, policy: ClinicPolicy
) -> list[InteractionWarning]:
    """The §8 warnings of a session started at `session_start` (recomputed the same on a retry)."""
    window = OpioidDose.filter(
        patient_id=patient_id,
        taken_at__gte=session_start - max(INTERACTION_WINDOW, policy.patch_wear),
        taken_at__lte=session_start,
    )
    intakes = [
        Intake(drug, strength, quantity, taken_at)
        for drug, strength, quantity, taken_at in await window.values_list("drug", "strength", "quantity", "taken_at")
    ]
    warning = opioid_interaction(intakes, session_start, wear=policy.patch_wear)
    return [warning] if warning else []


SUMMARY_DAYS = 90  # the longest `daily` trend
REGIMEN_DAYS = 7
BASELINE_DAYS = 7


def _average(totals: list[Total]) -> Decimal:
    return (sum((total.mme for total in totals), Decimal(0)) / len(totals)).quantize(Decimal("0.1"))


async def opioid_summaries(
    viewer: Viewer, patient_ids: list[UUID], *, now: datetime, policy: ClinicPolicy
) -> dict[UUID, OpioidSummary]:
    """Per patient (for DataLoaders): the CLINICAL.md §10 figures of `summarize`."""

    allowed = await clinical_patients(viewer, patient_ids, "OpioidDose")
    return await summaries_for(allowed, now=now, policy=policy)


async def summaries_for(
    allowed: dict[UUID, Patient], *, now: datetime, policy: ClinicPolicy
) -> dict[UUID, OpioidSummary]:
    """`opioid_summaries` for patients whose access the caller has already checked and audited."""

    earliest = now - timedelta(days=SUMMARY_DAYS + 40)
    doses = OpioidDose.filter(patient_id__in=list(allowed), taken_at__gte=earliest).order_by("taken_at")
    first_session = await first_completed_sessions(list(allowed))
    by_patient: dict[UUID, list[Intake]] = {patient_id: [] for patient_id in allowed}
    for patient_id, drug, strength, quantity, taken_at in await doses.values_list(
        "patient_id", "drug", "strength", "quantity", "taken_at"
    ):
        by_patient[patient_id].append(Intake(drug, strength, quantity, taken_at))
    return {
        patient_id: summarize(
            by_patient[patient_id], patient.time_zone, first_session.get(patient_id), now=now, policy=policy
        )
        for patient_id, patient in allowed.items()
    }


def summarize(
    intakes: list[Intake], time_zone: str, first_session: datetime | None, *, now: datetime, policy: ClinicPolicy
) -> OpioidSummary:
    """CLINICAL.md §10 over one patient's intakes: the current figure is the total of the last 24
    hours (intakes the server accepted as now, within the clock skew, included), the trend one
    total per local day over `SUMMARY_DAYS`, the flags on the highest of the last 7 days (today
    so far included), the baseline the daily average of the 7 days before the first completed
    session; every drug without a factor taken in any of those periods is named in `left_out`."""
    zone, wear = ZoneInfo(time_zone), policy.patch_wear
    today = now.astimezone(zone).date()
    daily = daily_totals(intakes, today - timedelta(days=SUMMARY_DAYS - 1), today, time_zone, wear=wear, now=now)
    current = total_between(intakes, now - DAY, now + policy.clock_skew, wear=wear, now=now)
    highest = highest_day(daily[today - timedelta(days=n)] for n in range(FLAG_DAYS))
    figures = [current, *daily.values()]
    baseline = None
    if first_session is not None:
        day = first_session.astimezone(zone).date()
        before = daily_totals(intakes, day - timedelta(days=BASELINE_DAYS), day - DAY, time_zone, wear=wear, now=now)
        baseline = _average(list(before.values()))
        figures += before.values()
    return OpioidSummary(
        current_mme_per_day=current.mme,
        baseline_mme_per_day=baseline,
        daily=daily,
        regimen=_regimen(intakes, today - timedelta(days=REGIMEN_DAYS), today - DAY, time_zone, wear=wear),
        flags=mme_flags(highest),
        left_out=tuple(sorted({drug for figure in figures for drug in figure.left_out})),
    )


def _regimen(
    intakes: list[Intake], first_day: date, last_day: date, time_zone: str, *, wear: timedelta
) -> list[RegimenItem]:
    """What the patient took over the last 7 whole local days, by drug and strength, per day."""
    zone = ZoneInfo(time_zone)
    totals: dict[tuple[str, Decimal], Decimal] = {}
    for intake in intakes:
        if first_day <= intake.taken_at.astimezone(zone).date() <= last_day:
            key = (intake.drug, intake.strength)
            totals[key] = totals.get(key, Decimal(0)) + intake.quantity
    worn_days = Decimal(wear // timedelta(seconds=1)) / Decimal(DAY // timedelta(seconds=1))
    items = []
    for (drug, strength), quantity in sorted(totals.items()):
        opioid = CATALOGUE[drug]
        per_day = (quantity / REGIMEN_DAYS).quantize(Decimal("0.01"))
        if opioid.transdermal:  # a patch applied every 3 days is worn every day
            per_day = min(Decimal(1), quantity * worn_days / REGIMEN_DAYS)
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


async def logged_dose(dose_id: UUID) -> OpioidDose:
    """The dose `log_opioid_use` just recorded (or replayed) for the caller, to answer the write."""
    return await OpioidDose.get(id=dose_id)
