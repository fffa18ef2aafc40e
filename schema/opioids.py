"""Opioid use in the API: a patient's intake log (`logOpioidUse`) and its morphine milligram
equivalents (CDC 2022 factors; CLINICAL.md §8, where an opioid taken before a session is a warning)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.outcomes import opioids
from models.outcomes.mme import dose_mme
from schema.context import Context
from schema.errors import IdempotencyConflict, ValidationError
from schema.loaders import loader
from schema.mutations import aware, decimal, written
from schema.permissions import viewer_of


@strawberry.type(name="DailyMme")
class DailyMmeType:
    date: date
    mme: float = strawberry.field(description="The day's total (a patch by the hours worn that day).")
    incomplete: bool = strawberry.field(description="A drug without an MME factor was taken that day: at least `mme`.")
    unconverted_drugs: list[str] = strawberry.field(description="The drugs taken that day and left out of `mme`.")


@strawberry.type(name="MmeFlag")
class MmeFlagType:
    code: str = strawberry.field(description="AT_OR_ABOVE_50 or AT_OR_ABOVE_90.")
    message: str = strawberry.field(description='For the clinician; reads "at least" when a drug was left out.')


@strawberry.type(name="OpioidRegimenItem")
class OpioidRegimenItemType:
    drug: str
    strength: float
    strength_unit: str
    doses_per_day: float
    mme_per_day: float | None = strawberry.field(description="Null when the drug has no MME factor.")
    not_converted_because: str | None


@strawberry.type(name="OpioidUse")
class OpioidUseType:
    current_mme_per_day: float = strawberry.field(
        description="MME of the last 24 hours (a worn patch by its hours in them)."
    )
    baseline_mme_per_day: float | None = strawberry.field(
        description="Daily average of the 7 days before the first session."
    )
    change_from_baseline: float | None
    flags: list[str] = strawberry.field(
        description="On the highest day of the last 7: AT_OR_ABOVE_50 (reassess), AT_OR_ABOVE_90 (avoid or justify)."
    )
    flag_details: list[MmeFlagType] = strawberry.field(description="The flags with their text for the clinician.")
    incomplete: bool = strawberry.field(
        description="A drug without an MME factor is left out of a figure here: it is at least what it says."
    )
    unconverted_drugs: list[str] = strawberry.field(
        description="Drugs left out of the figures (the last 90 days and the baseline week): recorded, never converted."
    )
    regimen: list[OpioidRegimenItemType]
    summary: strawberry.Private[opioids.OpioidSummary]

    @strawberry.field(description="MME per day in the patient's time zone, oldest first (at most 90 days).")
    def daily(self, days: int = 30) -> list[DailyMmeType]:
        wanted = max(1, min(days, opioids.SUMMARY_DAYS))
        ordered = sorted(self.summary.daily.items())[-wanted:]
        return [
            DailyMmeType(
                date=day, mme=float(total.mme), incomplete=total.incomplete, unconverted_drugs=list(total.left_out)
            )
            for day, total in ordered
        ]

    @classmethod
    def from_summary(cls, summary: opioids.OpioidSummary) -> OpioidUseType:
        change = summary.change_from_baseline
        return cls(
            current_mme_per_day=float(summary.current_mme_per_day),
            baseline_mme_per_day=float(summary.baseline_mme_per_day)
            if summary.baseline_mme_per_day is not None
            else None,
            change_from_baseline=float(change) if change is not None else None,
            flags=[flag.code for flag in summary.flags],
            flag_details=[MmeFlagType(code=flag.code, message=flag.message) for flag in summary.flags],
            incomplete=summary.incomplete,
            unconverted_drugs=list(summary.left_out),
            regimen=[
                OpioidRegimenItemType(
                    drug=item.drug,
                    strength=float(item.strength),
                    strength_unit=item.strength_unit,
                    doses_per_day=float(item.doses_per_day),
                    mme_per_day=float(item.mme_per_day) if item.mme_per_day is not None else None,
                    not_converted_because=item.not_converted_because,
                )
                for item in summary.regimen
            ],
            summary=summary,
        )


@strawberry.type(name="OpioidDose")
class OpioidDoseType(relay.Node):
    id: relay.NodeID[str]
    drug: str
    strength: float
    strength_unit: str
    quantity: float
    taken_at: datetime
    mme: float | None = strawberry.field(
        description="MME of this intake (a patch: per whole day worn); null for a drug without a factor."
    )

    @classmethod
    def from_model(cls, dose: opioids.OpioidDose) -> OpioidDoseType:
        value = dose_mme(dose.drug, dose.strength, dose.quantity)
        return cls(
            id=str(dose.id),
            drug=dose.drug,
            strength=float(dose.strength),
            strength_unit=dose.strength_unit.value,
            quantity=float(dose.quantity),
            taken_at=dose.taken_at,
            mme=float(value) if value is not None else None,
        )


@strawberry.type
class PatientOpioidFields:
    """The opioid field of `Patient` (schema.accounts composes it)."""

    if TYPE_CHECKING:
        id: str

    @strawberry.field(description="Opioid use in morphine milligram equivalents (CDC 2022 factors).")
    async def opioid_use(self, info: Info[Context, None]) -> OpioidUseType | None:
        async def fetch(viewer: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, opioids.OpioidSummary]:
            return await opioids.opioid_summaries(viewer, ids, now=info.context.now(), policy=info.context.policy)

        summary = await loader(info, "opioid_summaries", fetch).load(uuid.UUID(str(self.id)))
        return OpioidUseType.from_summary(summary) if summary else None


@strawberry.input
class LogOpioidUseInput:
    idempotency_key: str | None = None
    drug: str = strawberry.field(description="A lower-case generic name, e.g. oxycodone or fentanyl patch.")
    strength: float
    strength_unit: str = strawberry.field(description="mg; mcg/hr for a fentanyl patch; mcg for buccal or nasal.")
    quantity: float = strawberry.field(description="Units taken (patches applied).")
    taken_at: datetime


LogResult = Annotated[OpioidDoseType | ValidationError | IdempotencyConflict, strawberry.union("LogOpioidUseResult")]


@strawberry.type
class LogOpioidUsePayload:
    result: LogResult
    safety_instructions: str | None = None
    crisis_resources: str | None = None


@strawberry.type
class OpioidMutation:
    @strawberry.mutation(description="Record an opioid intake (patients).")
    async def log_opioid_use(self, info: Info[Context, None], input: LogOpioidUseInput) -> LogOpioidUsePayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            taken_at = aware(input.taken_at, "takenAt")
            assert taken_at is not None
            data = opioids.NewOpioidDose(
                drug=input.drug,
                strength=decimal(input.strength, "strength"),
                strength_unit=input.strength_unit,
                quantity=decimal(input.quantity, "quantity"),
                taken_at=taken_at,
                idempotency_key=input.idempotency_key,
            )
            outcome = await opioids.log_opioid_use(viewer, data, now=info.context.now(), policy=info.context.policy)
            return outcome, await opioids.logged_dose(outcome.resource_id)

        result, advice = await written(call, OpioidDoseType.from_model)
        return LogOpioidUsePayload(result=result, **advice)
