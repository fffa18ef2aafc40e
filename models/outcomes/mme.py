"""Morphine milligram equivalents (CLINICAL.md §10, CDC 2022 clinical practice guideline Table):
the conversion factors and the pure rules that turn logged intakes into the figures a clinician
reads: one total per local day, the total of the last 24 hours, and the ≥ 50 / ≥ 90 flags.

A drug without a factor (buprenorphine, buccal or nasal fentanyl) is recorded but never
converted and never guessed; every total names the drugs it left out, so no figure silently
reads lower than what the patient took.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo


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
    transdermal: bool = False  # worn for `ClinicPolicy.patch_wear`, counted by the hours worn


# CLINICAL.md §10 (RxNorm ingredient codes as listed there, to be checked against RxNav).
CATALOGUE: dict[str, Opioid] = {
    "codeine": Opioid(Decimal("0.15"), StrengthUnit.MG, "2670"),
    "dihydrocodeine": Opioid(Decimal("0.25"), StrengthUnit.MG, None),
    "fentanyl patch": Opioid(Decimal("2.4"), StrengthUnit.MCG_PER_HOUR, "4337", transdermal=True),
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
# CLINICAL.md §10 flags: 2022 Recommendation 4 (reassess) and the 2016 guideline's "avoid or justify".
REASSESS_AT = Decimal(50)
AVOID_OR_JUSTIFY_AT = Decimal(90)
FLAG_DAYS = 7  # the flags look at the highest day of the last 7 (today included)

DAY = timedelta(days=1)
_MICROSECONDS_PER_DAY = Decimal(DAY // timedelta(microseconds=1))
_SHOWN = Decimal("0.1")


@dataclass(frozen=True)
class Intake:
    drug: str
    strength: Decimal
    quantity: Decimal
    taken_at: datetime  # a patch: when it was applied


@dataclass(frozen=True)
class Total:
    """An MME total as shown (to 0.1), with the drugs taken in its period that it leaves out."""

    mme: Decimal
    left_out: tuple[str, ...] = ()

    @property
    def incomplete(self) -> bool:
        return bool(self.left_out)


@dataclass(frozen=True)
class Flag:
    code: str
    message: str


def dose_mme(drug: str, strength: Decimal, quantity: Decimal) -> Decimal | None:
    """CLINICAL.md §10: strength x units x factor (a patch: its MME over a whole day worn, mcg/hr x
    2.4); None for a drug without a factor: never guessed."""
    factor = CATALOGUE[drug].factor
    return None if factor is None else strength * quantity * factor


def _is_worn(intake: Intake) -> bool:
    opioid = CATALOGUE[intake.drug]
    return opioid.transdermal and opioid.factor is not None


@dataclass(frozen=True)
class Wear:
    """A patch on the skin from `start` to `end` (UTC), at `mme_per_day` while it is worn."""

    start: datetime
    end: datetime
    mme_per_day: Decimal

    def mme_within(self, start: datetime, end: datetime) -> Decimal:
        """CLINICAL.md §10: the part of the wear inside [start, end): mcg/hr x 2.4 x hours / 24."""
        overlap = min(self.end, end.astimezone(UTC)) - max(self.start, start.astimezone(UTC))
        if overlap <= timedelta(0):
            return Decimal(0)
        return self.mme_per_day * Decimal(overlap // timedelta(microseconds=1)) / _MICROSECONDS_PER_DAY


def patch_wears(intakes: Iterable[Intake], *, wear: timedelta, now: datetime) -> list[Wear]:
    """CLINICAL.md §10: each patch is worn from its application for `wear` (the clinic's
    `patch_wear`, 72 h by default), a later application ends the wear of those before it (patches
    applied at the same moment are worn together), and no wear counts past `now` (the figures say
    what was worn, not what will be)."""
    patches = [intake for intake in intakes if _is_worn(intake)]
    applications = sorted({patch.taken_at.astimezone(UTC) for patch in patches})  # in UTC: real hours
    changed_at = dict(pairwise(applications))
    wears = []
    for patch in sorted(patches, key=lambda patch: patch.taken_at):
        start = patch.taken_at.astimezone(UTC)
        end = min(start + wear, changed_at.get(start, start + wear), now.astimezone(UTC))
        per_day = dose_mme(patch.drug, patch.strength, patch.quantity)
        if per_day is not None and end > start:
            wears.append(Wear(start, end, per_day))
    return wears


def _shown(value: Decimal) -> Decimal:
    return value.quantize(_SHOWN, rounding=ROUND_HALF_UP)


def total_between(
    intakes: Iterable[Intake], start: datetime, end: datetime, *, wear: timedelta, now: datetime
) -> Total:
    """CLINICAL.md §10: the MME taken in [start, end): an intake taken in it at its full value, a
    patch by the hours it was worn in it; a drug without a factor taken in it is left out and
    named. The current figure is this over the last 24 hours."""
    intakes = list(intakes)
    mme, left_out = Decimal(0), set()
    for intake in intakes:
        if _is_worn(intake) or not start <= intake.taken_at < end:
            continue
        value = dose_mme(intake.drug, intake.strength, intake.quantity)
        if value is None:
            left_out.add(intake.drug)
        else:
            mme += value
    for worn in patch_wears(intakes, wear=wear, now=now):
        mme += worn.mme_within(start, end)
    return Total(_shown(mme), tuple(sorted(left_out)))


def local_day(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """A calendar day in the patient's time zone as UTC instants [start, end): 23 or 25 hours
    long on a daylight-saving change."""
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    return start, datetime.combine(day + DAY, time(0), tzinfo=zone).astimezone(UTC)


def daily_totals(
    intakes: Iterable[Intake], first_day: date, last_day: date, time_zone: str, *, wear: timedelta, now: datetime
) -> dict[date, Total]:
    """CLINICAL.md §10: one total per local day (the patient's time zone), first to last day: each
    intake on the day it was taken, a patch by the hours it was worn on each day (so a 25 mcg/hr
    patch changed every 72 h is 60 on every whole day, change days included), each day naming
    the drugs without a factor taken that day."""
    intakes, zone = list(intakes), ZoneInfo(time_zone)
    days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
    mme: dict[date, Decimal] = {day: Decimal(0) for day in days}
    left_out: dict[date, set[str]] = {day: set() for day in days}
    for intake in intakes:
        day = intake.taken_at.astimezone(zone).date()
        if _is_worn(intake) or day not in mme:
            continue
        value = dose_mme(intake.drug, intake.strength, intake.quantity)
        if value is None:
            left_out[day].add(intake.drug)
        else:
            mme[day] += value
    for worn in patch_wears(intakes, wear=wear, now=now):
        day, last = worn.start.astimezone(zone).date(), worn.end.astimezone(zone).date()
        while day <= last:
            if day in mme:
                mme[day] += worn.mme_within(*local_day(day, zone))
            day += DAY
    return {day: Total(_shown(mme[day]), tuple(sorted(left_out[day]))) for day in days}


def highest_day(totals: Iterable[Total]) -> Total:
    """CLINICAL.md §10: the highest daily total of a period, naming every drug left out of any day
    of it (the highest could be any of them)."""
    totals = list(totals)
    left_out = sorted({drug for total in totals for drug in total.left_out})
    return Total(max((total.mme for total in totals), default=Decimal(0)), tuple(left_out))


def mme_flags(highest: Total) -> list[Flag]:
    """CLINICAL.md §10: ≥ 50 MME/day reassess (CDC 2022 Recommendation 4), ≥ 90 avoid or justify
    (CDC 2016), on the highest day of the last 7; information for the clinician, not a rule. When
    a drug was left out, the text reads "at least" and names it."""
    figure = f"{highest.mme:f} MME/day"
    if highest.incomplete:
        figure = f"at least {figure} ({', '.join(highest.left_out)} not converted)"
    flags = []
    if highest.mme >= REASSESS_AT:
        flags.append(
            Flag(
                "AT_OR_ABOVE_50",
                f"Highest day of the last {FLAG_DAYS}: {figure}, at or above 50 MME/day. Reassess "
                "benefits and risks; pause before going higher (CDC 2022, Recommendation 4).",
            )
        )
    if highest.mme >= AVOID_OR_JUSTIFY_AT:
        flags.append(
            Flag(
                "AT_OR_ABOVE_90",
                f"Highest day of the last {FLAG_DAYS}: {figure}, at or above 90 MME/day. Avoid or "
                "carefully justify (CDC 2016; the 2022 guideline keeps no fixed ceiling).",
            )
        )
    return flags
