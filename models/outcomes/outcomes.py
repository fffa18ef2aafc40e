"""Outcomes per patient and the provider panel's facts, for many patients in a fixed number of
queries (ARCHITECTURE.md decision 7: the statement count never grows with the rows).

Outcome definitions are CLINICAL.md §5's: the baseline is `models.outcomes.baselines`' (the same one the
pain alert compares against), never guessed; PHQ-9/GAD-7 response is a ≥ 50 %
reduction and remission a latest total < 5; a pain change (NRS, or PEG-3's score) of ≥ 30 % is
meaningful and ≥ 50 % substantial; adherence is surveys answered / surveys made available (expired count as not
answered).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from tortoise.functions import Count
from tortoise.queryset import ValuesListQuery

from models.alerts.alert_rules import Severity
from models.alerts.alerts import Alert, AlertStatus
from models.care.dosing_records import DosingSession, SessionStatus
from models.care.plan_records import CURRENT_STATUSES, TreatmentPlan
from models.identity.access import Viewer, clinical_patient_ids, clinical_patients
from models.kernel.policy import ClinicPolicy
from models.kernel.prepared import prepared, prepared_read
from models.outcomes.baselines import (
    RecordedValue,
    first_completed_sessions,
    latest_before_first_session,
    pain_baselines,
    pain_values,
)
from models.outcomes.opioids import summaries_for
from models.reports.side_effects import SideEffectReport
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment, SurveyResponse

ROLLING_DAYS = 7
# The instruments whose totals are outcomes, each against its own baseline (CLINICAL.md §5).
SCORED_OUTCOMES = ("PHQ-9", "GAD-7", "PEG-3")
REMISSION_BELOW = Decimal(5)


def percent_change(baseline: Decimal | None, latest: Decimal | None) -> Decimal | None:
    """Change from baseline in percent (negative is a reduction); None without both, or from 0."""
    if baseline is None or latest is None or baseline == 0:
        return None
    return ((latest - baseline) / baseline * 100).quantize(Decimal("0.1"))


def responded(baseline: Decimal | None, latest: Decimal | None) -> bool | None:
    """CLINICAL.md §5: response is a reduction of at least 50 % from baseline."""
    change = percent_change(baseline, latest)
    return None if change is None else change <= Decimal(-50)


def in_remission(latest: Decimal | None) -> bool | None:
    """CLINICAL.md §5: remission is a latest PHQ-9 / GAD-7 total below 5."""
    return None if latest is None else latest < REMISSION_BELOW


def pain_improvement(baseline: Decimal | None, latest: Decimal | None) -> str | None:
    """CLINICAL.md §5 (IMMPACT): SUBSTANTIAL (≥ 50 % less), MEANINGFUL (≥ 30 %), or NONE."""
    change = percent_change(baseline, latest)
    if change is None:
        return None
    if change <= Decimal(-50):
        return "SUBSTANTIAL"
    if change <= Decimal(-30):
        return "MEANINGFUL"
    return "NONE"


@dataclass(frozen=True)
class Measure:
    baseline: Decimal | None
    latest: Decimal | None
    series: list[tuple[date, Decimal]]

    @property
    def change_percent(self) -> Decimal | None:
        return percent_change(self.baseline, self.latest)

    @property
    def response(self) -> bool | None:
        return responded(self.baseline, self.latest)

    @property
    def remission(self) -> bool | None:
        return in_remission(self.latest)

    @property
    def pain_improvement(self) -> str | None:
        return pain_improvement(self.baseline, self.latest)


@dataclass
class PatientOutcomes:
    pain: Measure
    phq9: Measure
    gad7: Measure
    peg3: Measure
    mme_baseline: Decimal | None
    mme_current: Decimal
    mme_series: list[tuple[date, Decimal]]
    mme_left_out: tuple[str, ...]  # drugs without an MME factor left out of the MME figures
    sessions_completed: int
    sessions_planned: int | None
    surveys_answered: int
    surveys_sent: int
    side_effects: dict[str, int] = field(default_factory=dict)

    @property
    def mme_change(self) -> Decimal | None:
        """Current daily MME minus the baseline; None without a baseline."""
        return None if self.mme_baseline is None else self.mme_current - self.mme_baseline

    @property
    def survey_adherence(self) -> float | None:
        """CLINICAL.md §5: answered / made available (expired = unanswered), to three places; None
        when none were sent."""
        return round(self.surveys_answered / self.surveys_sent, 3) if self.surveys_sent else None


def _daily_means(values: list[RecordedValue], zone: str) -> list[tuple[date, Decimal]]:
    by_day: dict[date, list[Decimal]] = defaultdict(list)
    for value in values:
        by_day[value.recorded_at.astimezone(ZoneInfo(zone)).date()].append(value.value)
    return [(day, _mean(day_values)) for day, day_values in sorted(by_day.items())]


def _mean(values: list[Decimal]) -> Decimal:
    return (sum(values, Decimal(0)) / len(values)).quantize(Decimal("0.1"))


def _measure(values: list[RecordedValue], baseline: Decimal | None, zone: str, *, rolling: bool) -> Measure:
    """`values` oldest first by recording time."""
    latest: Decimal | None = None
    if values:
        if rolling:  # pain: the mean of the last 7 days with a value
            cutoff = values[-1].recorded_at - timedelta(days=ROLLING_DAYS)
            recent = [value.value for value in values if value.recorded_at > cutoff]
            latest = (sum(recent, Decimal(0)) / len(recent)).quantize(Decimal("0.1"))
        else:
            latest = values[-1].value
    return Measure(baseline, latest, _daily_means(values, zone))


def _in_time(value: RecordedValue) -> tuple[datetime, Decimal]:
    return (value.recorded_at, value.value)


def _score_baseline(
    values: list[RecordedValue], first_session: datetime | None, policy: ClinicPolicy
) -> Decimal | None:
    found = latest_before_first_session(values, first_session, policy.baseline_window)
    return found.value if found else None


async def outcomes_for(
    viewer: Viewer, patient_ids: list[UUID], *, now: datetime, policy: ClinicPolicy
) -> dict[UUID, PatientOutcomes]:
    """Outcomes of the patients whose clinical record the viewer may see, in ~15 queries."""
    allowed = await clinical_patients(viewer, patient_ids, "Outcomes")
    ids = list(allowed)
    first_sessions = await first_completed_sessions(ids)
    completed: dict[UUID, int] = defaultdict(int)
    for row in (
        await DosingSession.filter(patient_id__in=ids, status=SessionStatus.COMPLETED)
        .annotate(n=Count("id"))
        .group_by("patient_id")
        .values("patient_id", "n")
    ):
        completed[UUID(str(row["patient_id"]))] = int(row["n"])
    scores: dict[tuple[UUID, str], list[RecordedValue]] = defaultdict(list)
    responses = SurveyResponse.filter(patient_id__in=ids, instrument__in=SCORED_OUTCOMES, total_score__isnull=False)
    for key, instrument, submitted_at, recorded_at, total in await responses.values_list(
        "patient_id", "instrument", "submitted_at", "recorded_at", "total_score"
    ):
        scores[(key, instrument)].append(RecordedValue.of_response(recorded_at, submitted_at, total))
    pain = await pain_values(ids)
    pain_baseline = await pain_baselines(ids, policy=policy)  # the one the pain alert compares against
    planned = {
        plan.patient_id: plan.planned_sessions  # type: ignore[attr-defined]
        for plan in await TreatmentPlan.filter(patient_id__in=ids, status__in=CURRENT_STATUSES)
    }
    sent: dict[UUID, int] = defaultdict(int)
    answered: dict[UUID, int] = defaultdict(int)
    for row in (
        await SurveyAssignment.filter(
            patient_id__in=ids,
            status__in=[AssignmentStatus.AVAILABLE, AssignmentStatus.COMPLETED, AssignmentStatus.EXPIRED],
        )
        .annotate(n=Count("id"))
        .group_by("patient_id", "status")
        .values("patient_id", "status", "n")
    ):
        sent[UUID(str(row["patient_id"]))] += int(row["n"])
        if row["status"] == AssignmentStatus.COMPLETED:
            answered[UUID(str(row["patient_id"]))] += int(row["n"])
    grades: dict[UUID, dict[str, int]] = defaultdict(dict)
    for row in (
        await SideEffectReport.filter(patient_id__in=ids)
        .annotate(n=Count("id"))
        .group_by("patient_id", "grade")
        .values("patient_id", "grade", "n")
    ):
        grades[UUID(str(row["patient_id"]))][str(row["grade"])] = int(row["n"])
    opioids = await summaries_for(allowed, now=now, policy=policy)
    result = {}
    for patient_id, patient in allowed.items():
        zone, first = patient.time_zone, first_sessions.get(patient_id)
        baseline = pain_baseline.get(patient_id)
        phq9, gad7, peg3 = (sorted(scores[(patient_id, code)], key=_in_time) for code in SCORED_OUTCOMES)
        mme = opioids.get(patient_id)
        result[patient_id] = PatientOutcomes(
            pain=_measure(pain.get(patient_id, []), baseline.value if baseline else None, zone, rolling=True),
            phq9=_measure(phq9, _score_baseline(phq9, first, policy), zone, rolling=False),
            gad7=_measure(gad7, _score_baseline(gad7, first, policy), zone, rolling=False),
            peg3=_measure(peg3, _score_baseline(peg3, first, policy), zone, rolling=False),
            mme_baseline=mme.baseline_mme_per_day if mme else None,
            mme_current=mme.current_mme_per_day if mme else Decimal(0),
            mme_series=[(day, total.mme) for day, total in sorted(mme.daily.items())] if mme else [],
            mme_left_out=mme.left_out if mme else (),
            sessions_completed=completed[patient_id],
            sessions_planned=planned.get(patient_id),
            surveys_answered=answered[patient_id],
            surveys_sent=sent[patient_id],
            side_effects=grades[patient_id],
        )
    return result


@dataclass(frozen=True)
class PanelFacts:
    """What the provider panel shows beside each patient's name."""

    open_alerts: int
    highest_severity: Severity | None
    earliest_respond_by: datetime | None
    next_survey_due: datetime | None
    last_session_at: datetime | None


class PanelFact(StrEnum):
    """A fact of `panel_facts`, read only when a field asks for it (one query each)."""

    ALERTS = "alerts"
    NEXT_SURVEY = "next_survey"
    LAST_SESSION = "last_session"


@prepared_read(Alert)
def _open_alerts(patient_ids: list[UUID]) -> ValuesListQuery[Any]:
    """The patients' open and acknowledged alerts, the most urgent first (panel facts)."""
    open_alerts = Alert.filter(patient_id__in=patient_ids, status__in=[AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED])
    return open_alerts.order_by("severity_rank", "respond_by").values_list("patient_id", "severity", "respond_by")


@prepared_read(SurveyAssignment)
def _open_surveys(patient_ids: list[UUID], now: datetime) -> ValuesListQuery[Any]:
    """The patients' surveys still to answer, the earliest opening first (panel facts)."""
    return (
        SurveyAssignment.filter(
            patient_id__in=patient_ids,
            status__in=[AssignmentStatus.SCHEDULED, AssignmentStatus.AVAILABLE],
            expires_at__gt=now,
        )
        .order_by("available_at")
        .values_list("patient_id", "available_at")
    )


@prepared_read(DosingSession)
def _sessions_newest_first(patient_ids: list[UUID]) -> ValuesListQuery[Any]:
    """The patients' sessions not entered in error, the latest first (panel facts)."""
    valid = DosingSession.filter(patient_id__in=patient_ids).exclude(status=SessionStatus.ENTERED_IN_ERROR)
    return valid.order_by("-started_at").values_list("patient_id", "started_at")


async def panel_facts(
    viewer: Viewer, patient_ids: list[UUID], *, now: datetime, wanted: frozenset[PanelFact] = frozenset(PanelFact)
) -> dict[UUID, PanelFacts]:
    """Open alerts, next survey and last session per patient, one query for each fact in `wanted`
    (the patient's home screen shows the next survey: it reads no alerts nor sessions). Alerts are
    the care team's work queue: only providers of the patient's team get them. Facts not wanted
    are left empty."""
    ids = await clinical_patient_ids(viewer, patient_ids, "Panel")
    alerts: dict[UUID, list[tuple[Severity, datetime]]] = defaultdict(list)
    if PanelFact.ALERTS in wanted:
        for patient_id, severity, respond_by in await prepared(_open_alerts, patient_ids=ids):
            alerts[patient_id].append((severity, respond_by))
    next_due: dict[UUID, datetime] = {}
    if PanelFact.NEXT_SURVEY in wanted:
        for patient_id, available_at in await prepared(_open_surveys, patient_ids=ids, now=now):
            next_due.setdefault(patient_id, available_at)
    last_session: dict[UUID, datetime] = {}
    if PanelFact.LAST_SESSION in wanted:
        for patient_id, started_at in await prepared(_sessions_newest_first, patient_ids=ids):
            last_session.setdefault(patient_id, started_at)
    return {
        patient_id: PanelFacts(
            open_alerts=len(alerts[patient_id]),
            highest_severity=alerts[patient_id][0][0] if alerts[patient_id] else None,
            earliest_respond_by=alerts[patient_id][0][1] if alerts[patient_id] else None,
            next_survey_due=next_due.get(patient_id),
            last_session_at=last_session.get(patient_id),
        )
        for patient_id in ids
    }
