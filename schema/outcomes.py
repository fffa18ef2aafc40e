"""Opioid use (MME) and outcomes in the API."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import opioids
from schema.context import Context
from schema.errors import IdempotencyConflict, ValidationError
from schema.loaders import loader
from schema.mutations import aware, decimal, written
from schema.permissions import viewer_of


@strawberry.type(name="DailyMme")
class DailyMmeType:
    date: date
    mme: float


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
    current_mme_per_day: float = strawberry.field(description="Average daily MME over the last 7 days.")
    baseline_mme_per_day: float | None = strawberry.field(description="7 days before the first session.")
    change_from_baseline: float | None
    flags: list[str] = strawberry.field(description="AT_OR_ABOVE_50 (reassess), AT_OR_ABOVE_90 (avoid or justify).")
    regimen: list[OpioidRegimenItemType]
    summary: strawberry.Private[opioids.OpioidSummary]

    @strawberry.field(description="MME per day in the patient's time zone, oldest first (at most 90 days).")
    def daily(self, days: int = 30) -> list[DailyMmeType]:
        wanted = max(1, min(days, opioids.SUMMARY_DAYS))
        ordered = sorted(self.summary.daily.items())[-wanted:]
        return [DailyMmeType(date=day, mme=float(mme)) for day, mme in ordered]

    @classmethod
    def from_summary(cls, summary: opioids.OpioidSummary) -> OpioidUseType:
        change = summary.change_from_baseline
        return cls(
            current_mme_per_day=float(summary.current_mme_per_day),
            baseline_mme_per_day=float(summary.baseline_mme_per_day)
            if summary.baseline_mme_per_day is not None
            else None,
            change_from_baseline=float(change) if change is not None else None,
            flags=summary.flags,
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
    mme: float | None

    @classmethod
    def from_model(cls, dose: opioids.OpioidDose) -> OpioidDoseType:
        mme = opioids.dose_mme(dose.drug, dose.strength, dose.quantity)
        return cls(
            id=str(dose.id),
            drug=dose.drug,
            strength=float(dose.strength),
            strength_unit=dose.strength_unit.value,
            quantity=float(dose.quantity),
            taken_at=dose.taken_at,
            mme=float(mme) if mme is not None else None,
        )


@strawberry.type
class PatientOutcomeFields:
    """Opioid and outcome fields of `Patient` (schema.accounts composes them)."""

    if TYPE_CHECKING:
        id: str

    @strawberry.field(description="Opioid use in morphine milligram equivalents (CDC 2022 factors).")
    async def opioid_use(self, info: Info[Context, None]) -> OpioidUseType | None:
        async def fetch(viewer: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, opioids.OpioidSummary]:
            return await opioids.opioid_summaries(viewer, ids, now=info.context.now())

        summary = await loader(info, "opioid_summaries", fetch).load(uuid.UUID(str(self.id)))
        return OpioidUseType.from_summary(summary) if summary else None


@strawberry.input
class LogOpioidUseInput:
    idempotency_key: str | None = None
    drug: str = strawberry.field(description="A lower-case generic name, e.g. oxycodone or fentanyl patch.")
    strength: float
    strength_unit: str = strawberry.field(description="mg, or mcg/hr for a fentanyl patch.")
    quantity: float = strawberry.field(description="Units taken (patches applied).")
    taken_at: datetime


LogResult = Annotated[OpioidDoseType | ValidationError | IdempotencyConflict, strawberry.union("LogOpioidUseResult")]


@strawberry.type
class LogOpioidUsePayload:
    result: LogResult
    safety_instructions: str | None = None
    crisis_resources: str | None = None


@strawberry.type
class OutcomesMutation:
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
            return outcome, await opioids.OpioidDose.get(id=outcome.resource_id)

        result, advice = await written(call, OpioidDoseType.from_model)
        return LogOpioidUsePayload(result=result, **advice)
