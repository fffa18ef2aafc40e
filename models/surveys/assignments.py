"""Survey assignments: the follow-up surveys a completed session inserts, the post-session check
made due at once, and the transitions every assignment goes through (CLINICAL.md §5-6,
ARCHITECTURE.md decision 1).

The database is the source of truth: completing a session inserts its assignments in the same
transaction, and every transition is claimed with a conditional update (`move_assignment`), so
replicas and jobs never move one twice. The jobs that open, remind and expire them are
`models.surveys.delivery`'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from tortoise.queryset import QuerySet

from models.care.dosing_records import DosingSession
from models.care.plan_records import ScheduledSurvey
from models.identity.access import Viewer, require_clinical_access
from models.identity.accounts import Patient
from models.kernel.events import Operation, record_event
from models.kernel.pages import newest_first
from models.kernel.policy import ClinicPolicy
from models.notifications import notifications
from models.surveys.schedule import (
    DEFAULT_POST_SESSION_WINDOW_MINUTES,
    POST_SESSION,
    PlannedAssignment,
    after_offset,
    follow_up_schedule,
    notify_from,
    reminder_times,
    weekly_overlap,
)
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment, SurveyResponse


async def _event(assignment: SurveyAssignment, event: str, operation: Operation, now: datetime) -> None:
    """An assignment's event in the outbox (the live feed tells the patient's phone)."""
    await record_event(
        event,
        resource_type="SurveyAssignment",
        resource_id=assignment.id,
        operation=operation,
        version=assignment.version,
        now=now,
        patient_id=assignment.patient_id,  # type: ignore[attr-defined]
        payload={"instrument": assignment.instrument, "status": assignment.status.value},
    )


async def create_assignment(
    patient: Patient, planned: PlannedAssignment, *, now: datetime, session_id: UUID | None = None,
    recurrence_key: str | None = None,
) -> SurveyAssignment:  # fmt: skip
    """Insert one assignment as `planned`, its reminders due in turn, with its event (inside the
    caller's transaction)."""
    assignment = await SurveyAssignment.create(
        patient=patient,
        instrument=planned.instrument,
        session_id=session_id,
        recurrence_key=recurrence_key,
        available_at=planned.available_at,
        expires_at=planned.expires_at,
        notify_at=planned.notify_at,
        reminder_times=[moment.isoformat() for moment in planned.reminders],
        next_reminder_at=planned.reminders[0] if planned.reminders else None,
    )
    await _event(assignment, "SurveyAssignment.scheduled", Operation.CREATED, now)
    return assignment


async def schedule_follow_up(
    patient: Patient, session_id: UUID, ended_at: datetime, schedule: tuple[ScheduledSurvey, ...], *,
    back_to_baseline: bool, now: datetime, policy: ClinicPolicy,
) -> list[SurveyAssignment]:  # fmt: skip
    """Insert a completed session's assignments (inside `completeDosingSession`'s transaction).

    A weekly PHQ-9 or GAD-7 not yet open within 3 days of the session's own is cancelled: the
    patient answers one, not two (CLINICAL.md §6).
    """
    created = []
    # A post-session check already made due at once (the safety screen, CLINICAL.md §3) stands.
    existing = {
        str(code) for code in await SurveyAssignment.filter(session_id=session_id).values_list("instrument", flat=True)
    }
    for planned in follow_up_schedule(
        ended_at, schedule, back_to_baseline=back_to_baseline, time_zone=patient.time_zone, quiet=policy.quiet_hours
    ):
        if planned.instrument in existing:
            continue
        assignment = await create_assignment(patient, planned, now=now, session_id=session_id)
        created.append(assignment)
        if planned.instrument == POST_SESSION:
            await _answered_before_assigned(assignment, now)
        if (overlap := weekly_overlap(planned.instrument, planned.available_at)) is not None:
            for weekly in await SurveyAssignment.filter(
                patient_id=patient.id,
                instrument=planned.instrument,
                recurrence_key__isnull=False,
                status=AssignmentStatus.SCHEDULED,
                available_at__gte=overlap[0],
                available_at__lte=overlap[1],
            ):
                await move_assignment(weekly, AssignmentStatus.CANCELLED, now, next_reminder_at=None)
    return created


async def open_post_session_check_now(
    patient: Patient, *, session_id: UUID, now: datetime, policy: ClinicPolicy
) -> SurveyAssignment | None:
    """CLINICAL.md §3: a patient not back to baseline gets the post-session check at once, also
    when the completion that said so is refused (the safety screen runs this). Open for the
    plan's post-session window; its notification ignores quiet hours (`notify_from`, §6). None when
    the session already has one."""

    if await SurveyAssignment.exists(session_id=session_id, instrument=POST_SESSION):
        return None
    session = await DosingSession.get(id=session_id).prefetch_related("plan")
    window = next(
        (item.window_minutes for item in session.plan.schedule if item.instrument == POST_SESSION),
        DEFAULT_POST_SESSION_WINDOW_MINUTES,
    )
    expires_at = after_offset(now, window, patient.time_zone)
    reminders = tuple(reminder_times(now, expires_at, patient.time_zone, policy.quiet_hours))
    notify_at = notify_from(POST_SESSION, now, patient.time_zone, policy.quiet_hours)
    planned = PlannedAssignment(POST_SESSION, now, expires_at, notify_at, reminders)
    assignment = await create_assignment(patient, planned, now=now, session_id=session_id)
    await _answered_before_assigned(assignment, now)
    return assignment


async def _answered_before_assigned(assignment: SurveyAssignment, now: datetime) -> None:
    """A post-session check answered with the session's id before its assignment existed (the
    phone was offline: CLINICAL.md §5) answers the assignment when it is made."""
    response = (
        await SurveyResponse.filter(session_id=assignment.session_id, instrument=POST_SESSION, assignment_id=None)
        .order_by("submitted_at")
        .first()
    )
    if response is None:
        return
    await SurveyResponse.filter(id=response.id).update(assignment_id=assignment.id, timing=None)
    await move_assignment(
        assignment, AssignmentStatus.COMPLETED, now, completed_at=response.answered_at, response_id=response.id,
        next_reminder_at=None,
    )  # fmt: skip


_NOT_YET_ANSWERED = (AssignmentStatus.SCHEDULED, AssignmentStatus.AVAILABLE)


async def cancel_session_surveys(session_id: UUID, *, now: datetime) -> int:
    """A voided session cancels its surveys not yet answered or expired (CLINICAL.md §6)."""
    return await _cancel(SurveyAssignment.filter(session_id=session_id, status__in=_NOT_YET_ANSWERED), now)


_CLOSED = (AssignmentStatus.COMPLETED, AssignmentStatus.EXPIRED, AssignmentStatus.CANCELLED)


async def move_assignment(assignment: SurveyAssignment, to: AssignmentStatus, now: datetime, **changes: Any) -> bool:
    """Claim a transition with a conditional update; False if another worker moved it first.

    A survey that closes takes its queued notifications with it: nobody is told that a check-in
    is ready once it was answered, expired or cancelled.
    """
    claimed = await SurveyAssignment.filter(
        id=assignment.id, status=assignment.status, version=assignment.version
    ).update(status=to, version=assignment.version + 1, updated_at=now, **changes)
    if claimed != 1:
        return False
    assignment.status, assignment.version = to, assignment.version + 1
    for name, value in changes.items():
        setattr(assignment, name, value)
    if to in _CLOSED:
        await notifications.cancel_pending(
            prefixes=[f"survey-available:{assignment.id}", f"survey-reminder:{assignment.id}:"]
        )
    await _event(assignment, f"SurveyAssignment.{to.value.lower()}", Operation.UPDATED, now)
    return True


async def cancel_recurring_surveys(patient_id: UUID, *, now: datetime) -> int:
    """A plan leaving ACTIVE cancels the recurring surveys not yet open (CLINICAL.md §6)."""
    not_open = SurveyAssignment.filter(
        patient_id=patient_id, recurrence_key__isnull=False, status=AssignmentStatus.SCHEDULED
    )
    return await _cancel(not_open, now)


async def cancel_surveys_of_deactivated_patient(patient_id: UUID, *, now: datetime) -> int:
    """A deactivated patient cannot answer (models.identity.administration): their scheduled and open
    surveys are cancelled, with their queued notifications, but the post-session check of a
    session, whose expiry alerts the care team (CLINICAL.md §6). Returns how many."""
    pending = SurveyAssignment.filter(patient_id=patient_id, status__in=_NOT_YET_ANSWERED)
    return await _cancel(pending.exclude(instrument=POST_SESSION), now)


async def _cancel(assignments: QuerySet[SurveyAssignment], now: datetime) -> int:
    """Cancel each of `assignments` (with its queued notifications); how many this call moved."""
    cancelled = 0
    for assignment in await assignments:
        if await move_assignment(assignment, AssignmentStatus.CANCELLED, now, next_reminder_at=None):
            cancelled += 1
    return cancelled


async def list_assignments(
    viewer: Viewer, patient_id: UUID, *, statuses: list[AssignmentStatus] | None, limit: int,
    before: tuple[datetime, UUID] | None = None,
) -> list[SurveyAssignment]:  # fmt: skip
    """A patient's assignments, latest opening first."""
    await require_clinical_access(viewer, patient_id, "SurveyAssignment")
    chosen: dict[str, Any] = {"status__in": list(statuses)} if statuses else {}
    return await newest_first(
        SurveyAssignment, "available_at", limit=limit, before=before, patient_id=patient_id, **chosen
    )


async def opened_assignment(patient_id: UUID, assignment_id: UUID) -> SurveyAssignment | None:
    """The patient's own assignment an event announced, or None if it is not theirs (live feed)."""
    return await SurveyAssignment.get_or_none(id=assignment_id, patient_id=patient_id)
