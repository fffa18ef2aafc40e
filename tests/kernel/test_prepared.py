"""Prepared reads answer what the plain query answers, for every value, shape and connection."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.queryset import QuerySet, ValuesListQuery
from tortoise.transactions import in_transaction

from models.identity.accounts import Patient, User
from models.kernel import prepared as prepared_module
from models.kernel.pages import newest_first
from models.kernel.prepared import prepared, prepared_read
from models.reports.checkins import CheckIn
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment

pytestmark = pytest.mark.usefixtures("db")

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
built: list[str] = []


@prepared_read(CheckIn)
def _pain_at_least(patient_id: uuid.UUID, pain: int, since: datetime) -> QuerySet[CheckIn]:
    built.append("pain")
    return CheckIn.filter(patient_id=patient_id, pain__gte=pain, recorded_at__gte=since).order_by("recorded_at", "id")


@prepared_read(User)
def _emails(user_ids: list[uuid.UUID], active: bool) -> ValuesListQuery[Any]:
    built.append("emails")
    return User.filter(id__in=user_ids, is_active=active).order_by("email").values_list("email", "id")


@prepared_read(SurveyAssignment)
def _by_status(statuses: list[AssignmentStatus], session_id: uuid.UUID | None) -> QuerySet[SurveyAssignment]:
    return SurveyAssignment.filter(status__in=statuses, session_id=session_id).order_by("id")


async def _patients() -> list[Patient]:
    return list(await Patient.all().order_by("id"))


async def _add_check_ins(patient: Patient, count: int) -> list[CheckIn]:
    rows = [
        CheckIn(
            id=uuid.uuid4(),
            patient_id=patient.id,
            recorded_at=BASE + timedelta(hours=n % 5),  # repeated times: the id breaks ties
            received_at=BASE,
            pain=n % 10,
        )
        for n in range(count)
    ]
    await CheckIn.bulk_create(rows)
    return rows


async def test_a_prepared_read_answers_what_the_query_answers_for_each_call_s_values() -> None:
    first, second = (await _patients())[:2]
    await _add_check_ins(first, 12)
    await _add_check_ins(second, 7)
    built.clear()
    for patient in (first, second, first):
        for pain, since in ((0, BASE), (5, BASE + timedelta(hours=2)), (9, BASE - timedelta(days=1))):
            expected = await _pain_at_least(patient.id, pain, since)
            answered = await prepared(_pain_at_least, patient_id=patient.id, pain=pain, since=since)
            assert [c.id for c in answered] == [c.id for c in expected]
            assert [(c.pain, c.recorded_at, c.note) for c in answered] == [
                (c.pain, c.recorded_at, c.note) for c in expected
            ]
    # The plain calls built it 9 times; the prepared calls once in all, for the one shape.
    assert built.count("pain") == 9 + 1


async def test_a_list_s_length_and_a_shaping_value_are_shapes_of_their_own() -> None:
    users = list(await User.all().order_by("id"))
    built.clear()
    for chosen in (users[:1], users[:3], users[1:4], users[:1], [uuid.uuid4()]):
        ids = [u.id for u in chosen] if chosen and isinstance(chosen[0], User) else chosen
        for active in (True, False):
            expected = await _emails(ids, active)
            assert await prepared(_emails, user_ids=ids, active=active) == expected
    # 10 plain builds; prepared shapes: lengths 1 and 3, each active and inactive.
    assert built.count("emails") == 10 + 4


async def test_enum_lists_and_none_change_the_statement_and_are_answered_right() -> None:
    patient = (await _patients())[0]
    session = uuid.uuid4()
    for n, status in enumerate([AssignmentStatus.AVAILABLE, AssignmentStatus.SCHEDULED, AssignmentStatus.EXPIRED]):
        await SurveyAssignment.create(
            patient_id=patient.id, instrument=f"PAIN-NRS-{n}", status=status, session_id=session if n else None,
            available_at=BASE, expires_at=BASE, notify_at=BASE,
        )  # fmt: skip
    for statuses in ([AssignmentStatus.AVAILABLE], [AssignmentStatus.SCHEDULED, AssignmentStatus.EXPIRED]):
        for session_id in (None, session, uuid.uuid4()):
            expected = await _by_status(statuses, session_id)
            answered = await prepared(_by_status, statuses=statuses, session_id=session_id)
            assert [a.id for a in answered] == [a.id for a in expected]


async def test_pages_newest_first_walk_every_record_once_in_order() -> None:
    patient = (await _patients())[0]
    await _add_check_ins(patient, 23)
    everything = list(await CheckIn.filter(patient_id=patient.id).order_by("-recorded_at", "-id"))
    walked: list[CheckIn] = []
    before = None
    while True:
        page = await newest_first(CheckIn, "recorded_at", limit=5, before=before, patient_id=patient.id)
        walked.extend(page)
        if len(page) < 5:
            break
        before = (page[-1].recorded_at, page[-1].id)
    assert [c.id for c in walked] == [c.id for c in everything]


async def test_a_prepared_read_runs_on_the_transaction_s_connection() -> None:
    patient = (await _patients())[0]
    await prepared(_pain_at_least, patient_id=patient.id, pain=0, since=BASE)  # prepared outside
    async with in_transaction():
        (written,) = await _add_check_ins(patient, 1)
        inside = await prepared(_pain_at_least, patient_id=patient.id, pain=0, since=BASE)
        assert written.id in {c.id for c in inside}


async def test_a_shape_it_cannot_match_runs_as_a_plain_query_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    patient = (await _patients())[0]
    await _add_check_ins(patient, 4)
    naive = BASE.replace(tzinfo=None)  # Tortoise makes it aware: not the value it was given
    prepared_module._statements.clear()
    with caplog.at_level(logging.WARNING, logger="models.kernel.prepared"), pytest.warns(RuntimeWarning):
        answered = await prepared(_pain_at_least, patient_id=patient.id, pain=0, since=naive)
    assert "_pain_at_least runs unprepared" in caplog.text
    with pytest.warns(RuntimeWarning):
        assert [c.id for c in answered] == [c.id for c in await _pain_at_least(patient.id, 0, naive)]
    with pytest.warns(RuntimeWarning):
        again = await prepared(_pain_at_least, patient_id=patient.id, pain=0, since=naive)
    assert [c.id for c in again] == [c.id for c in answered]


async def test_values_of_an_unknown_kind_run_the_plain_query() -> None:
    users = list(await User.all().order_by("id"))
    ids = frozenset(u.id for u in users[:2])  # a set has no order: not a shape
    expected = await _emails(list(ids), True)
    assert sorted(await prepared(_emails, user_ids=ids, active=True)) == sorted(expected)


@prepared_read(SurveyAssignment)
def _by_status_text(status: str) -> QuerySet[SurveyAssignment]:
    return SurveyAssignment.filter(status=status).order_by("id")


async def test_a_value_the_query_refuses_as_a_stand_in_runs_the_plain_query(caplog: pytest.LogCaptureFixture) -> None:
    """Text where an enum member goes: the stand-in is no member, the real value is."""
    expected = await _by_status_text("AVAILABLE")
    with caplog.at_level(logging.WARNING, logger="models.kernel.prepared"):
        answered = await prepared(_by_status_text, status="AVAILABLE")
    assert [a.id for a in answered] == [a.id for a in expected]
    assert "_by_status_text runs unprepared" in caplog.text
