"""Outcomes in the API (CLINICAL.md §5 definitions): a patient's measures and their series for
charts, and what the provider panel shows beside each patient. Opioid use is schema.opioids."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import strawberry
from strawberry.types import Info

from models.messaging import messaging
from models.outcomes import outcomes
from models.outcomes.outcomes import Measure, PanelFact, PanelFacts, PatientOutcomes
from schema.context import Context
from schema.loaders import loader


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


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


@strawberry.type(name="PegOutcome")
class PegOutcomeType:
    baseline: float | None = strawberry.field(description="Latest score before the first session (30 days at most).")
    latest: float | None = strawberry.field(description="The latest PEG-3 score (the mean of its 3 items).")
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
    peg3: PegOutcomeType = strawberry.field(description="PEG-3 (pain intensity and interference), CLINICAL.md §5.")
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
    peg3_series: list[SeriesPointType]
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
            peg3=PegOutcomeType(
                baseline=_float(found.peg3.baseline),
                latest=_float(found.peg3.latest),
                change_percent=_float(found.peg3.change_percent),
                improvement=found.peg3.pain_improvement,
            ),
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
            peg3_series=series(found.peg3.series),
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
