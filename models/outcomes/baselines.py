"""Baselines (CLINICAL.md §5, outcome definitions): one rule, used by the pain alert, outcomes and
the provider panel.

A baseline is the latest value the patient recorded before their first completed dosing session,
at most `ClinicPolicy.baseline_window` (30 days by default) before it, by the time the patient
recorded it: a survey response's `recorded_at` when the phone sent one (an offline replay), else
its `submitted_at`; a check-in's `recorded_at`. When the server received it does not matter. For
pain, Pain NRS answers and check-in pain (both 0-10 NRS) count alike. No completed session, or no
value in the window, is no baseline: never guessed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from tortoise.expressions import Q
from tortoise.queryset import ValuesListQuery

from models.care.dosing_records import DosingSession, SessionStatus
from models.kernel.policy import ClinicPolicy
from models.kernel.prepared import prepared, prepared_read
from models.reports.checkins import CheckIn
from models.surveys.survey_records import SurveyResponse

PAIN_NRS = "PAIN-NRS"


@dataclass(frozen=True)
class RecordedValue:
    """A value, when the patient recorded it and when the server received it; `source` is the
    record's type (SurveyResponse, CheckIn)."""

    recorded_at: datetime
    received_at: datetime
    value: Decimal
    source: str

    @classmethod
    def of_response(cls, recorded_at: datetime | None, submitted_at: datetime, total: Decimal) -> RecordedValue:
        """A survey answer counts when the phone says it was given, else when it arrived."""
        return cls(recorded_at or submitted_at, submitted_at, Decimal(total), "SurveyResponse")

    @classmethod
    def of_check_in(cls, recorded_at: datetime, received_at: datetime, pain: int) -> RecordedValue:
        return cls(recorded_at, received_at, Decimal(pain), "CheckIn")


@dataclass(frozen=True)
class Baseline:
    value: Decimal
    recorded_at: datetime
    source: str
    first_session_at: datetime


def latest_before_first_session(
    values: Iterable[RecordedValue], first_session_at: datetime | None, window: timedelta
) -> Baseline | None:
    """CLINICAL.md §5: the latest value recorded before the first completed session and at most
    `window` before it (both ends by the patient's recording time; exactly `window` before still
    counts); when the server received it plays no part. None without a completed session or without
    a value in the window. Two values recorded at the same moment: the higher one (an order that
    does not depend on the query's)."""
    if first_session_at is None:
        return None
    earliest = first_session_at - window
    inside = [value for value in values if earliest <= value.recorded_at < first_session_at]
    if not inside:
        return None
    latest = max(inside, key=lambda value: (value.recorded_at, value.value))
    return Baseline(latest.value, latest.recorded_at, latest.source, first_session_at)


async def first_completed_sessions(patient_ids: list[UUID]) -> dict[UUID, datetime]:
    """When each patient's first completed dosing session started (one statement)."""
    first: dict[UUID, datetime] = {}
    for patient_id, started_at in await prepared(_completed_sessions, patient_ids=patient_ids):
        first.setdefault(patient_id, started_at)
    return first


@prepared_read(DosingSession)
def _completed_sessions(patient_ids: list[UUID]) -> ValuesListQuery[Any]:
    completed = DosingSession.filter(patient_id__in=patient_ids, status=SessionStatus.COMPLETED)
    return completed.order_by("started_at").values_list("patient_id", "started_at")


async def pain_values(
    patient_ids: list[UUID], *, recorded_from: datetime | None = None, recorded_before: datetime | None = None
) -> dict[UUID, list[RecordedValue]]:
    """Every pain value of these patients (Pain NRS answers and check-ins), oldest first by the
    time the patient recorded it, optionally only those recorded in [`recorded_from`,
    `recorded_before`) (two statements)."""
    found: dict[UUID, list[RecordedValue]] = defaultdict(list)
    window = {"patient_ids": patient_ids, "recorded_from": recorded_from, "recorded_before": recorded_before}
    for patient_id, recorded_at, submitted_at, total in await prepared(_pain_answers, **window):
        found[patient_id].append(RecordedValue.of_response(recorded_at, submitted_at, total))
    for patient_id, recorded_at, received_at, pain in await prepared(_check_in_pains, **window):
        found[patient_id].append(RecordedValue.of_check_in(recorded_at, received_at, pain))
    return {
        patient_id: sorted(values, key=lambda value: (value.recorded_at, value.value))
        for patient_id, values in found.items()
    }


@prepared_read(SurveyResponse)
def _pain_answers(
    patient_ids: list[UUID], recorded_from: datetime | None, recorded_before: datetime | None
) -> ValuesListQuery[Any]:
    """Scored Pain NRS answers, recorded (or, without a recording time, received) in the window."""
    responses = SurveyResponse.filter(patient_id__in=patient_ids, instrument=PAIN_NRS, total_score__isnull=False)
    if recorded_from is not None and recorded_before is not None:
        responses = responses.filter(
            Q(recorded_at__gte=recorded_from, recorded_at__lt=recorded_before)
            | Q(recorded_at__isnull=True, submitted_at__gte=recorded_from, submitted_at__lt=recorded_before)
        )
    return responses.values_list("patient_id", "recorded_at", "submitted_at", "total_score")


@prepared_read(CheckIn)
def _check_in_pains(
    patient_ids: list[UUID], recorded_from: datetime | None, recorded_before: datetime | None
) -> ValuesListQuery[Any]:
    check_ins = CheckIn.filter(patient_id__in=patient_ids)
    if recorded_from is not None and recorded_before is not None:
        check_ins = check_ins.filter(recorded_at__gte=recorded_from, recorded_at__lt=recorded_before)
    return check_ins.values_list("patient_id", "recorded_at", "received_at", "pain")


async def pain_baselines(patient_ids: list[UUID], *, policy: ClinicPolicy) -> dict[UUID, Baseline]:
    """The pain baseline of each patient who has one (CLINICAL.md §5), in three statements
    whatever the number of patients (the panel's outcomes); a patient without one is absent."""
    first_sessions = await first_completed_sessions(patient_ids)
    if not first_sessions:
        return {}
    values = await pain_values(
        list(first_sessions),
        recorded_from=min(first_sessions.values()) - policy.baseline_window,
        recorded_before=max(first_sessions.values()),
    )
    found = {
        patient_id: latest_before_first_session(values.get(patient_id, []), first, policy.baseline_window)
        for patient_id, first in first_sessions.items()
    }
    return {patient_id: baseline for patient_id, baseline in found.items() if baseline is not None}


async def pain_baseline(patient_id: UUID, *, policy: ClinicPolicy) -> Baseline | None:
    """One patient's pain baseline (CLINICAL.md §5), as the pain alert compares against it."""
    return (await pain_baselines([patient_id], policy=policy)).get(patient_id)
