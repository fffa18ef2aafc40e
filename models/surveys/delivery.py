"""The survey jobs (CLINICAL.md §6, ARCHITECTURE.md decision 1): scheduled surveys open and their
patient is told, open ones are reminded and overdue ones expire (an unanswered post-session check
alerts the care team); the weekly surveys are scheduled while a plan is active, and the daily
check-in reminder goes out.

Short jobs claim due rows with conditional updates, so a restart loses nothing, a survey due
while the service was down is delivered when it is back, and replicas never send one twice.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.alerts import alert_rules
from models.alerts.alerts import raise_alerts
from models.care.plan_records import PlanStatus, TreatmentPlan
from models.identity.accounts import Patient
from models.kernel.policy import ClinicPolicy
from models.notifications import notifications
from models.notifications.quiet_hours import after_quiet_hours, in_quiet_hours
from models.reports.checkins import CheckIn
from models.surveys.assignments import create_assignment, move_assignment
from models.surveys.schedule import (
    DAILY_REMINDER_AT,
    POST_SESSION,
    WEEKLY_SURVEYS,
    WEEKLY_WINDOW,
    PlannedAssignment,
    breaks_quiet_hours,
    next_weekly_opening,
    notify_from,
    reminder_times,
    weekly_overlap,
)
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment

BATCH = 500


async def open_due_surveys(*, now: datetime, policy: ClinicPolicy) -> int:
    """Job: scheduled surveys whose time has come become available, and their patient is told.

    Rows are taken with SKIP LOCKED on PostgreSQL, so replicas share a backlog instead of
    fighting over the same batch; the conditional update in `move_assignment` is the final word anyway.
    """
    opened = 0
    async with in_transaction():
        due = (
            await SurveyAssignment.filter(status=AssignmentStatus.SCHEDULED, available_at__lte=now, expires_at__gt=now)
            .order_by("available_at")
            .limit(BATCH)
            .select_for_update(skip_locked=True)
        )
        patient_ids = {assignment.patient_id for assignment in due}  # type: ignore[attr-defined]
        patients = {patient.id: patient for patient in await Patient.filter(id__in=patient_ids)}
        users: dict[UUID, UUID] = {pid: patient.user_id for pid, patient in patients.items()}  # type: ignore[attr-defined]
        zones: dict[UUID, str] = {pid: patient.time_zone for pid, patient in patients.items()}
        for assignment in due:
            if not await move_assignment(assignment, AssignmentStatus.AVAILABLE, now):
                continue
            patient_id = assignment.patient_id  # type: ignore[attr-defined]
            await notifications.enqueue(
                users[patient_id],
                "SURVEY_AVAILABLE",
                f"survey/{assignment.id}",
                dedup_key=f"survey-available:{assignment.id}",
                now=now,
                not_before=notify_from(
                    assignment.instrument, max(assignment.notify_at, now), zones[patient_id], policy.quiet_hours
                ),
                quiet_hours_zone=None if breaks_quiet_hours(assignment.instrument) else zones[patient_id],
            )
            opened += 1
    return opened


async def send_reminders(*, now: datetime, policy: ClinicPolicy) -> int:
    """Job: remind about open surveys at their reminder times (each reminder once, never in
    quiet hours: one that falls due in them, e.g. after downtime, waits until 08:00 or is dropped
    if the survey closes first)."""
    reminded = 0
    due = (
        await SurveyAssignment.filter(status=AssignmentStatus.AVAILABLE, next_reminder_at__lte=now)
        .order_by("next_reminder_at")
        .limit(BATCH)
        .prefetch_related("patient__user")
    )
    for assignment in due:
        times = [datetime.fromisoformat(moment) for moment in assignment.reminder_times]
        number = assignment.reminders_sent
        following = times[number + 1] if number + 1 < len(times) else None
        zone = assignment.patient.time_zone
        send_at = after_quiet_hours(now, zone, policy.quiet_hours)
        async with in_transaction():
            claimed = await SurveyAssignment.filter(
                id=assignment.id, status=AssignmentStatus.AVAILABLE, reminders_sent=number
            ).update(reminders_sent=number + 1, next_reminder_at=following, updated_at=now)
            if claimed != 1:
                continue
            if assignment.expires_at - send_at > timedelta(minutes=15):  # a reminder as it closes is noise
                await notifications.enqueue(
                    assignment.patient.user.id,
                    "SURVEY_REMINDER",
                    f"survey/{assignment.id}",
                    dedup_key=f"survey-reminder:{assignment.id}:{number + 1}",
                    now=now,
                    not_before=send_at,
                    quiet_hours_zone=zone,
                )
                reminded += 1
    return reminded


async def expire_overdue_surveys(*, now: datetime, policy: ClinicPolicy) -> int:
    """Job: unanswered surveys past their window expire; an expired post-session check alerts
    the care team (CLINICAL.md §6: a safety check went unanswered)."""
    expired = 0
    overdue = (
        await SurveyAssignment.filter(
            status__in=[AssignmentStatus.SCHEDULED, AssignmentStatus.AVAILABLE], expires_at__lte=now
        )
        .order_by("expires_at")
        .limit(BATCH)
        .prefetch_related("patient")
    )
    for assignment in overdue:
        async with in_transaction():
            if not await move_assignment(assignment, AssignmentStatus.EXPIRED, now, next_reminder_at=None):
                continue
            if assignment.instrument == POST_SESSION:
                spec = alert_rules.unanswered_safety_check_alert(POST_SESSION)
                await raise_alerts(
                    [spec], patient=assignment.patient, source_type="SurveyAssignment", source_id=assignment.id,
                    now=now, policy=policy,
                )  # fmt: skip
        expired += 1
    return expired


async def schedule_recurring_surveys(*, now: datetime, policy: ClinicPolicy) -> int:
    """Job: make sure each patient with an ACTIVE plan has their next weekly surveys scheduled.

    The weekly PHQ-9 / GAD-7 is skipped when a session's own one is due within 3 days of it
    (CLINICAL.md §6). A recurrence key makes this idempotent across runs and replicas.
    """

    created = 0
    # A deactivated patient cannot answer: nothing is scheduled for them (models.identity.administration).
    active_plans = TreatmentPlan.filter(status=PlanStatus.ACTIVE, patient__user__is_active=True)
    for plan in await active_plans.prefetch_related("patient"):
        patient = plan.patient
        opening = next_weekly_opening(plan.created_at, now, patient.time_zone)
        for instrument in WEEKLY_SURVEYS:
            key = f"weekly:{patient.id}:{instrument}:{opening.date().isoformat()}"
            overlap = weekly_overlap(instrument, opening)
            near_session_survey = overlap is not None and await SurveyAssignment.exists(
                patient_id=patient.id,
                instrument=instrument,
                session_id__isnull=False,
                status__in=[AssignmentStatus.SCHEDULED, AssignmentStatus.AVAILABLE],
                available_at__gte=overlap[0],
                available_at__lte=overlap[1],
            )
            existing = await SurveyAssignment.get_or_none(recurrence_key=key)
            if existing is not None:
                # Cancelled by a hold that has since been lifted: the plan is active again.
                revive = existing.status is AssignmentStatus.CANCELLED and existing.available_at > now
                if revive and not near_session_survey:
                    revived = await move_assignment(
                        existing, AssignmentStatus.SCHEDULED, now, next_reminder_at=_first(existing)
                    )
                    created += int(revived)
                continue
            if near_session_survey:
                continue
            expires_at = opening + WEEKLY_WINDOW
            reminders = tuple(reminder_times(opening, expires_at, patient.time_zone, policy.quiet_hours))
            notify_at = notify_from(instrument, opening, patient.time_zone, policy.quiet_hours)
            planned = PlannedAssignment(instrument, opening, expires_at, notify_at, reminders)
            try:
                async with in_transaction():
                    await create_assignment(patient, planned, now=now, recurrence_key=key)
            except IntegrityError:
                continue  # another replica scheduled it
            created += 1
    return created


def _first(assignment: SurveyAssignment) -> datetime | None:
    return datetime.fromisoformat(assignment.reminder_times[0]) if assignment.reminder_times else None


async def remind_daily_check_ins(*, now: datetime, policy: ClinicPolicy) -> int:
    """CLINICAL.md §6, job: at 19:00 on the patient's clock, remind those with an ACTIVE plan who have not
    checked in today (once a day, never in quiet hours)."""

    reminded = 0
    active_plans = TreatmentPlan.filter(status=PlanStatus.ACTIVE, patient__user__is_active=True)
    for plan in await active_plans.prefetch_related("patient__user"):
        patient = plan.patient
        zone = ZoneInfo(patient.time_zone)
        local = now.astimezone(zone)
        due = datetime.combine(local.date(), DAILY_REMINDER_AT, tzinfo=zone)
        if not due <= local or in_quiet_hours(now, patient.time_zone, policy.quiet_hours):
            continue
        start_of_day = datetime.combine(local.date(), time(0, 0), tzinfo=zone)
        if await CheckIn.exists(patient_id=patient.id, recorded_at__gte=start_of_day):
            continue
        await notifications.enqueue(
            patient.user.id,
            "CHECK_IN_REMINDER",
            "check-in",
            dedup_key=f"check-in-reminder:{patient.id}:{local.date().isoformat()}",
            now=now,
            not_before=now,
        )
        reminded += 1
    return reminded
