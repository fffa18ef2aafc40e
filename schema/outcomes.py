"""Opioid use (MME) and outcomes in the API."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.messaging import messaging
from models.outcomes import opioids, outcomes
from models.outcomes.mme import dose_mme
from models.outcomes.outcomes import Measure, PanelFact, PanelFacts, PatientOutcomes
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


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


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
class PatientOutcomeFields:
    """Opioid and outcome fields of `Patient` (schema.accounts composes them)."""

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
            return outcome, await opioids.logged_dose(outcome.resource_id)

        result, advice = await written(call, OpioidDoseType.from_model)
        return LogOpioidUsePayload(result=result, **advice)


@strawberry.type(name="SeriesPoint")
class SeriesPointType:
    date: date
    value: float


@strawberry.type(name="ScoreOutcome")
class ScoreOutcomeType:
    baseline: float | None = strawberry.field(description="Latest before the first session (30 days at most).")
    latest: float | None
    change_percent: float | None
    response: bool | None = strawberry.field(description="A reduction of 50 % or more (PHQ-9, GAD-7).")
    remission: bool | None = strawberry.field(description="Latest total below 5 (PHQ-9, GAD-7).")


@strawberry.type(name="PainOutcome")
class PainOutcomeType:
    baseline: float | None
    latest_rolling_average: float | None = strawberry.field(description="Mean of the last 7 days with a value.")
    change_percent: float | None
    improvement: str | None = strawberry.field(description="SUBSTANTIAL (50 %+), MEANINGFUL (30 %+) or NONE.")


@strawberry.type(name="GradeCount")
class GradeCountType:
    grade: str
    count: int


@strawberry.type(name="Outcomes")
class OutcomesType:
    pain: PainOutcomeType
    phq9: ScoreOutcomeType
    gad7: ScoreOutcomeType
    mme_baseline: float | None
    mme_current: float = strawberry.field(description="MME of the last 24 hours (as `OpioidUse.currentMmePerDay`).")
    mme_change: float | None
    sessions_completed: int
    sessions_planned: int | None
    surveys_answered: int
    surveys_sent: int
    survey_adherence: float | None = strawberry.field(description="Answered / made available (expired = unanswered).")
    side_effects_by_grade: list[GradeCountType]
    pain_series: list[SeriesPointType]
    phq9_series: list[SeriesPointType]
    gad7_series: list[SeriesPointType]
    mme_series: list[SeriesPointType]
    mme_incomplete: bool = strawberry.field(description="A drug without an MME factor is left out of the MME figures.")
    mme_unconverted_drugs: list[str] = strawberry.field(description="The drugs left out of the MME figures.")

    @classmethod
    def from_outcomes(cls, found: PatientOutcomes) -> OutcomesType:
        def score(measure: Measure) -> ScoreOutcomeType:
            return ScoreOutcomeType(
                baseline=_float(measure.baseline),
                latest=_float(measure.latest),
                change_percent=_float(measure.change_percent),
                response=measure.response,
                remission=measure.remission,
            )

        def series(points: list[Any]) -> list[SeriesPointType]:
            return [SeriesPointType(date=day, value=float(value)) for day, value in points]

        return cls(
            pain=PainOutcomeType(
                baseline=_float(found.pain.baseline),
                latest_rolling_average=_float(found.pain.latest),
                change_percent=_float(found.pain.change_percent),
                improvement=found.pain.pain_improvement,
            ),
            phq9=score(found.phq9),
            gad7=score(found.gad7),
            mme_baseline=_float(found.mme_baseline),
            mme_current=float(found.mme_current),
            mme_change=_float(found.mme_change),
            sessions_completed=found.sessions_completed,
            sessions_planned=found.sessions_planned,
            surveys_answered=found.surveys_answered,
            surveys_sent=found.surveys_sent,
            survey_adherence=found.survey_adherence,
            side_effects_by_grade=[GradeCountType(grade=g, count=n) for g, n in sorted(found.side_effects.items())],
            pain_series=series(found.pain.series),
            phq9_series=series(found.phq9.series),
            gad7_series=series(found.gad7.series),
            mme_series=series(found.mme_series),
            mme_incomplete=bool(found.mme_left_out),
            mme_unconverted_drugs=list(found.mme_left_out),
        )


@strawberry.type
class PatientPanelFields:
    """What the provider panel shows beside each patient (schema.accounts composes them)."""

    if TYPE_CHECKING:
        id: str

    @strawberry.field(description="Outcomes and their series for charts (CLINICAL.md §5 definitions).")
    async def outcomes(self, info: Info[Context, None]) -> OutcomesType | None:
        async def fetch(viewer: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, PatientOutcomes]:
            return await outcomes.outcomes_for(viewer, ids, now=info.context.now(), policy=info.context.policy)

        found = await loader(info, "outcomes", fetch).load(uuid.UUID(str(self.id)))
        return OutcomesType.from_outcomes(found) if found else None

    async def _facts(self, info: Info[Context, None], fact: PanelFact) -> PanelFacts | None:
        """The patient's panel facts, read only for the facts the query selects: the loader is keyed
        by (patient, fact), so one batch reads what its fields asked for, in one query each."""

        async def fetch(viewer: Any, keys: list[tuple[uuid.UUID, PanelFact]]) -> dict[Any, PanelFacts]:
            patient_ids = list(dict.fromkeys(patient_id for patient_id, _ in keys))
            wanted = frozenset(wanted for _, wanted in keys)
            found = await outcomes.panel_facts(viewer, patient_ids, now=info.context.now(), wanted=wanted)
            return {key: found[key[0]] for key in keys if key[0] in found}

        facts: PanelFacts | None = await loader(info, "panel_facts", fetch).load((uuid.UUID(str(self.id)), fact))
        return facts

    @strawberry.field(description="Open and acknowledged alerts (the care team's).")
    async def open_alert_count(self, info: Info[Context, None]) -> int | None:
        facts = await self._facts(info, PanelFact.ALERTS)
        return facts.open_alerts if facts else None

    @strawberry.field
    async def highest_alert_severity(self, info: Info[Context, None]) -> str | None:
        facts = await self._facts(info, PanelFact.ALERTS)
        return facts.highest_severity.value if facts and facts.highest_severity else None

    @strawberry.field
    async def next_survey_due_at(self, info: Info[Context, None]) -> datetime | None:
        facts = await self._facts(info, PanelFact.NEXT_SURVEY)
        return facts.next_survey_due if facts else None

    @strawberry.field
    async def last_session_at(self, info: Info[Context, None]) -> datetime | None:
        facts = await self._facts(info, PanelFact.LAST_SESSION)
        return facts.last_session_at if facts else None

    @strawberry.field(description="Messages in this patient's threads you have not read.")
    async def unread_messages(self, info: Info[Context, None]) -> int:
        count: int | None = await loader(info, "unread_by_patient", messaging.unread_by_patient).load(
            uuid.UUID(str(self.id))
        )
        return count or 0
