"""Survey assignments and responses: the follow-up schedule after each session, and the jobs that
open, remind and expire surveys (CLINICAL.md §5-6, ARCHITECTURE.md decision 1).

The database is the source of truth: completing a session inserts its assignments in the same
transaction; short jobs claim due rows with conditional updates, so a restart loses nothing, a
survey due while the service was down is delivered when it is back, and replicas never send one
twice. Times are computed in the patient's time zone (DST-correct) and stored in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models.alerts import alert_rules
from models.alerts.alerts import raise_alerts, resolve_automatically
from models.care.dosing_records import DosingSession
from models.care.plan_records import PlanStatus, ScheduledSurvey, TreatmentPlan
from models.identity.access import Viewer
from models.identity.accounts import Patient, Role
from models.identity.directory import require_clinical_access, require_clinical_record
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, denied, record_now
from models.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.kernel.events import Operation, record_event
from models.kernel.idempotency import Outcome, run_once
from models.kernel.policy import EMERGENCY_INSTRUCTIONS, ClinicPolicy
from models.notifications import notifications
from models.notifications.quiet_hours import QuietHours, after_quiet_hours, in_quiet_hours
from models.outcomes.baselines import pain_baseline
from models.reports.checkins import CheckIn
from models.safety.rules import Findings
from models.safety.screen import Submission, screen
from models.surveys.instruments import (
    ON_DEMAND,
    InstrumentDefinition,
    alert_spec,
    current_definitions,
    definition_of,
    score,
    screen_answers,
)
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment, SurveyResponse

POST_SESSION = "POST-SESSION"
# The default plan's post-session window (CLINICAL.md §6), for a plan that does not schedule one.
DEFAULT_POST_SESSION_WINDOW_MINUTES = 6 * 60
BATCH = 500
# CLINICAL.md §6: reminders at half the window and 2 h before expiry.
LAST_REMINDER_BEFORE_EXPIRY = timedelta(hours=2)


# ------------------------------------------------------------------ pure schedule rules


def reminder_times(available_at: datetime, expires_at: datetime, time_zone: str, quiet: QuietHours) -> list[datetime]:
    """At most two reminders, at half the window and 2 h before expiry, never in quiet hours
    (moved to their end, dropped if that is past expiry) (CLINICAL.md §6)."""
    wanted = [available_at + (expires_at - available_at) / 2, expires_at - LAST_REMINDER_BEFORE_EXPIRY]
    times: list[datetime] = []
    for moment in wanted:
        shifted = after_quiet_hours(moment, time_zone, quiet)
        if available_at < shifted < expires_at and shifted not in times:
            times.append(shifted)
    return sorted(times)


def after_offset(moment: datetime, minutes: int, time_zone: str) -> datetime:
    """`moment` plus an offset: whole days on the patient's wall clock (a survey "7 days later"
    opens at the same local time across a DST change), anything shorter in elapsed time."""
    if minutes % (24 * 60):
        return moment + timedelta(minutes=minutes)
    zone = ZoneInfo(time_zone)
    local = moment.astimezone(zone).replace(tzinfo=None) + timedelta(minutes=minutes)
    return local.replace(tzinfo=zone).astimezone(moment.tzinfo)


@dataclass(frozen=True)
class PlannedAssignment:
    instrument: str
    available_at: datetime
    expires_at: datetime
    notify_at: datetime
    reminders: tuple[datetime, ...]


def follow_up_schedule(
    ended_at: datetime, schedule: tuple[ScheduledSurvey, ...], *, back_to_baseline: bool, time_zone: str,
    quiet: QuietHours,
) -> list[PlannedAssignment]:  # fmt: skip
    """The surveys a completed session calls for (CLINICAL.md §6): each at its offset after the
    session's end, open for its window. The post-session check is due at once when the patient
    was not back to baseline, and it is a safety check: its notification ignores quiet hours."""
    planned = []
    for item in schedule:
        due_at_once = item.instrument == POST_SESSION and not back_to_baseline
        available_at = ended_at if due_at_once else after_offset(ended_at, item.offset_minutes, time_zone)
        expires_at = after_offset(available_at, item.window_minutes, time_zone)
        notify_at = (
            available_at if item.instrument == POST_SESSION else after_quiet_hours(available_at, time_zone, quiet)
        )
        planned.append(
            PlannedAssignment(
                item.instrument,
                available_at,
                expires_at,
                min(notify_at, expires_at),
                tuple(reminder_times(available_at, expires_at, time_zone, quiet)),
            )
        )
    return planned


# ------------------------------------------------------------------ writes


async def _event(assignment: SurveyAssignment, event: str, operation: Operation, now: datetime) -> None:
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
        assignment = await SurveyAssignment.create(
            patient=patient,
            instrument=planned.instrument,
            session_id=session_id,
            available_at=planned.available_at,
            expires_at=planned.expires_at,
            notify_at=planned.notify_at,
            reminder_times=[moment.isoformat() for moment in planned.reminders],
            next_reminder_at=planned.reminders[0] if planned.reminders else None,
        )
        await _event(assignment, "SurveyAssignment.scheduled", Operation.CREATED, now)
        created.append(assignment)
        if planned.instrument == POST_SESSION:
            await _answered_before_assigned(assignment, now)
        if planned.instrument in ("PHQ-9", "GAD-7"):
            for weekly in await SurveyAssignment.filter(
                patient_id=patient.id,
                instrument=planned.instrument,
                recurrence_key__isnull=False,
                status=AssignmentStatus.SCHEDULED,
                available_at__gte=planned.available_at - SKIP_WEEKLY_IF_SESSION_SURVEY_WITHIN,
                available_at__lte=planned.available_at + SKIP_WEEKLY_IF_SESSION_SURVEY_WITHIN,
            ):
                await _move(weekly, AssignmentStatus.CANCELLED, now, next_reminder_at=None)
    return created


async def open_post_session_check_now(
    patient: Patient, *, session_id: UUID, now: datetime, policy: ClinicPolicy
) -> SurveyAssignment | None:
    """CLINICAL.md §3: a patient not back to baseline gets the post-session check at once, also
    when the completion that said so is refused (the safety screen runs this). Open for the
    plan's post-session window; its notification ignores quiet hours (a safety check). None when
    the session already has one."""

    if await SurveyAssignment.exists(session_id=session_id, instrument=POST_SESSION):
        return None
    session = await DosingSession.get(id=session_id).prefetch_related("plan")
    window = next(
        (item.window_minutes for item in session.plan.schedule if item.instrument == POST_SESSION),
        DEFAULT_POST_SESSION_WINDOW_MINUTES,
    )
    expires_at = after_offset(now, window, patient.time_zone)
    reminders = reminder_times(now, expires_at, patient.time_zone, policy.quiet_hours)
    assignment = await SurveyAssignment.create(
        patient=patient,
        instrument=POST_SESSION,
        session_id=session_id,
        available_at=now,
        expires_at=expires_at,
        notify_at=now,
        reminder_times=[moment.isoformat() for moment in reminders],
        next_reminder_at=reminders[0] if reminders else None,
    )
    await _event(assignment, "SurveyAssignment.scheduled", Operation.CREATED, now)
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
    await _move(
        assignment, AssignmentStatus.COMPLETED, now, completed_at=response.answered_at, response_id=response.id,
        next_reminder_at=None,
    )  # fmt: skip


async def cancel_session_surveys(session_id: UUID, *, now: datetime) -> int:
    """A voided session cancels its surveys not yet answered or expired (CLINICAL.md §6)."""
    cancelled = 0
    for assignment in await SurveyAssignment.filter(
        session_id=session_id, status__in=[AssignmentStatus.SCHEDULED, AssignmentStatus.AVAILABLE]
    ):
        if await _move(assignment, AssignmentStatus.CANCELLED, now, next_reminder_at=None):
            cancelled += 1
    return cancelled


_CLOSED = (AssignmentStatus.COMPLETED, AssignmentStatus.EXPIRED, AssignmentStatus.CANCELLED)


async def _move(assignment: SurveyAssignment, to: AssignmentStatus, now: datetime, **changes: Any) -> bool:
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


def _notify_from(assignment: SurveyAssignment, moment: datetime, time_zone: str, quiet: QuietHours) -> datetime:
    """When a survey's notification may go out: never in quiet hours, except the post-session
    check (a safety check), CLINICAL.md §6."""
    return moment if assignment.instrument == POST_SESSION else after_quiet_hours(moment, time_zone, quiet)


async def open_due_surveys(*, now: datetime, policy: ClinicPolicy) -> int:
    """Job: scheduled surveys whose time has come become available, and their patient is told.

    Rows are taken with SKIP LOCKED on PostgreSQL, so replicas share a backlog instead of
    fighting over the same batch; the conditional update in `_move` is the final word anyway.
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
            if not await _move(assignment, AssignmentStatus.AVAILABLE, now):
                continue
            patient_id = assignment.patient_id  # type: ignore[attr-defined]
            await notifications.enqueue(
                users[patient_id],
                "SURVEY_AVAILABLE",
                f"survey/{assignment.id}",
                dedup_key=f"survey-available:{assignment.id}",
                now=now,
                not_before=_notify_from(
                    assignment, max(assignment.notify_at, now), zones[patient_id], policy.quiet_hours
                ),
                quiet_hours_zone=None if assignment.instrument == POST_SESSION else zones[patient_id],
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
            if not await _move(assignment, AssignmentStatus.EXPIRED, now, next_reminder_at=None):
                continue
            if assignment.instrument == POST_SESSION:
                spec = alert_rules.unanswered_safety_check_alert(POST_SESSION)
                await raise_alerts(
                    [spec], patient=assignment.patient, source_type="SurveyAssignment", source_id=assignment.id,
                    now=now, policy=policy,
                )  # fmt: skip
        expired += 1
    return expired


# ------------------------------------------------------------------ recurring surveys

# CLINICAL.md §6: weekly PHQ-9, GAD-7 and safety survey while the plan is ACTIVE (opening on the
# plan's weekday at 10:00 local, open 72 h), and a daily check-in reminder at 19:00 local.
WEEKLY_SURVEYS = ("PHQ-9", "GAD-7", "WEEKLY-SAFETY")
WEEKLY_OPENS_AT = time(10, 0)
WEEKLY_WINDOW = timedelta(hours=72)
SKIP_WEEKLY_IF_SESSION_SURVEY_WITHIN = timedelta(days=3)
DAILY_REMINDER_AT = time(19, 0)


def next_weekly_opening(plan_start: datetime, now: datetime, time_zone: str) -> datetime:
    """The next weekly opening at or after `now`: the plan's weekday, 10:00 on the patient's clock."""
    zone = ZoneInfo(time_zone)
    anchor = plan_start.astimezone(zone).date()
    today = now.astimezone(zone).date()
    days_ahead = (anchor.weekday() - today.weekday()) % 7
    opening = datetime.combine(today + timedelta(days=days_ahead), WEEKLY_OPENS_AT, tzinfo=zone)
    if opening < now:
        opening = datetime.combine(opening.date() + timedelta(days=7), WEEKLY_OPENS_AT, tzinfo=zone)
    return opening.astimezone(now.tzinfo)


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
            near_session_survey = instrument != "WEEKLY-SAFETY" and await SurveyAssignment.exists(
                patient_id=patient.id,
                instrument=instrument,
                session_id__isnull=False,
                status__in=[AssignmentStatus.SCHEDULED, AssignmentStatus.AVAILABLE],
                available_at__gte=opening - SKIP_WEEKLY_IF_SESSION_SURVEY_WITHIN,
                available_at__lte=opening + SKIP_WEEKLY_IF_SESSION_SURVEY_WITHIN,
            )
            existing = await SurveyAssignment.get_or_none(recurrence_key=key)
            if existing is not None:
                # Cancelled by a hold that has since been lifted: the plan is active again.
                revive = existing.status is AssignmentStatus.CANCELLED and existing.available_at > now
                if revive and not near_session_survey:
                    revived = await _move(existing, AssignmentStatus.SCHEDULED, now, next_reminder_at=_first(existing))
                    created += int(revived)
                continue
            if near_session_survey:
                continue
            expires_at = opening + WEEKLY_WINDOW
            reminders = reminder_times(opening, expires_at, patient.time_zone, policy.quiet_hours)
            try:
                async with in_transaction():
                    assignment = await SurveyAssignment.create(
                        patient=patient,
                        instrument=instrument,
                        recurrence_key=key,
                        available_at=opening,
                        expires_at=expires_at,
                        notify_at=after_quiet_hours(opening, patient.time_zone, policy.quiet_hours),
                        reminder_times=[moment.isoformat() for moment in reminders],
                        next_reminder_at=reminders[0] if reminders else None,
                    )
                    await _event(assignment, "SurveyAssignment.scheduled", Operation.CREATED, now)
            except IntegrityError:
                continue  # another replica scheduled it
            created += 1
    return created


def _first(assignment: SurveyAssignment) -> datetime | None:
    return datetime.fromisoformat(assignment.reminder_times[0]) if assignment.reminder_times else None


async def cancel_recurring_surveys(patient_id: UUID, *, now: datetime) -> int:
    """A plan leaving ACTIVE cancels the recurring surveys not yet open (CLINICAL.md §6)."""
    cancelled = 0
    for assignment in await SurveyAssignment.filter(
        patient_id=patient_id, recurrence_key__isnull=False, status=AssignmentStatus.SCHEDULED
    ):
        if await _move(assignment, AssignmentStatus.CANCELLED, now, next_reminder_at=None):
            cancelled += 1
    return cancelled


async def cancel_surveys_of_deactivated_patient(patient_id: UUID, *, now: datetime) -> int:
    """A deactivated patient cannot answer (models.identity.administration): their scheduled and open
    surveys are cancelled, with their queued notifications, but the post-session check of a
    session, whose expiry alerts the care team (CLINICAL.md §6). Returns how many."""
    cancelled = 0
    for assignment in await SurveyAssignment.filter(
        patient_id=patient_id, status__in=[AssignmentStatus.SCHEDULED, AssignmentStatus.AVAILABLE]
    ).exclude(instrument=POST_SESSION):
        if await _move(assignment, AssignmentStatus.CANCELLED, now, next_reminder_at=None):
            cancelled += 1
    return cancelled


async def remind_daily_check_ins(*, now: datetime, policy: ClinicPolicy) -> int:
    """Job: at 19:00 on the patient's clock, remind those with an ACTIVE plan who have not
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


# ------------------------------------------------------------------ responses


@dataclass(frozen=True)
class NewResponse:
    # The answers as sent, (linkId, value) in order: an item answered twice is refused, but every
    # value is screened first (CLINICAL.md §0).
    answers: tuple[tuple[str, int], ...]
    assignment_id: UUID | None = None
    instrument: str | None = None
    recorded_at: datetime | None = None
    idempotency_key: str | None = None
    # The post-session check of a session, when the phone never had its assignment (CLINICAL.md §5).
    session_id: UUID | None = None
    # Input the API could not read (an id of another type, a time without its offset).
    problems: tuple[InvalidInput, ...] = ()


def response_advice(definition: InstrumentDefinition, fired: tuple[Any, ...], policy: ClinicPolicy) -> dict[str, Any]:
    advice: dict[str, Any] = {}
    kinds = {rule.advice for rule in fired}
    if "emergency" in kinds:
        advice["safetyInstructions"] = EMERGENCY_INSTRUCTIONS
    if "crisis" in kinds:
        advice["crisisResources"] = policy.crisis_text()
    return advice


async def _instruments_answered(patient_id: UUID, data: NewResponse) -> list[InstrumentDefinition]:
    """Which instrument the answers are for, as far as the request tells, without refusing
    anything (the screen runs before validation): the assignment's, the session's post-session
    check, or the instrument named. When the request does not tell (an assignment that is not
    the patient's, an unknown instrument), every instrument: a false alarm is acceptable, a
    missed one is not (CLINICAL.md §0)."""
    definitions = await current_definitions()
    code = data.instrument
    if data.assignment_id is not None:
        assignment = await SurveyAssignment.get_or_none(id=data.assignment_id, patient_id=patient_id)
        code = assignment.instrument if assignment else None
    elif data.session_id is not None and code is None:
        code = POST_SESSION
    if code in definitions:
        return [definitions[code]]
    return [definitions[known] for known in sorted(definitions)]


async def answer_findings(
    patient_id: UUID, data: NewResponse, policy: ClinicPolicy
) -> tuple[Findings, InstrumentDefinition | None]:
    """CLINICAL.md §0 and §5: what the answers call for, whether or not the response is complete,
    in range, on time or for an open assignment. Returns the instrument, when it is known."""

    candidates = await _instruments_answered(patient_id, data)
    findings = Findings()
    for definition in candidates:
        baseline = await pain_baseline(patient_id, policy=policy) if definition.code == "PAIN-NRS" else None
        fired = screen_answers(definition, data.answers, baseline=baseline.value if baseline else None)
        for rule in fired:
            findings.add(alert_spec(definition, rule))
        findings.merge(Findings(advice=response_advice(definition, fired, policy)))
    return findings, candidates[0] if len(candidates) == 1 else None


async def submit_survey_response(viewer: Viewer, data: NewResponse, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """Score a patient's answers on the server. The answers are screened first (CLINICAL.md §0):
    PHQ-9 item 9, chest pain, self-harm, blood in urine raise their alerts and return their
    advice even when the response is then refused (incomplete, out of range, not open).

    Timing never discards an answer (§5): answers to an assignment that had expired or was not
    open yet are kept as an unscheduled response of its instrument, LATE or EARLY.

    A post-session check that expired while the phone was offline, answered inside its window,
    closes the "unanswered safety check" alert its expiry raised, unless a provider has already
    taken it (see `models.alerts.alerts.resolve_automatically`).
    """
    if not viewer.is_role(Role.PATIENT) or viewer.patient_id is None:
        raise denied(viewer, Forbidden("surveys are answered by the patient"), AuditAction.CREATE, "SurveyResponse")
    patient_id = viewer.patient_id
    findings, definition = await answer_findings(patient_id, data, policy)
    content = {
        "instrument": definition.code if definition else data.instrument,
        "answers": [[link_id, value] for link_id, value in data.answers],
        "assignmentId": str(data.assignment_id) if data.assignment_id else None,
        "sessionId": str(data.session_id) if data.session_id else None,
    }
    submission = Submission(
        "submitSurveyResponse", patient_id, content, findings, idempotency_key=data.idempotency_key,
        recorded_at=data.recorded_at,
    )  # fmt: skip
    screened = await screen(submission, now=now, policy=policy)
    return await screened.guard(_submit(viewer, patient_id, data, now=now, policy=policy), record_type="SurveyResponse")


def _answers(data: NewResponse) -> dict[str, int]:
    answers: dict[str, int] = {}
    for link_id, value in data.answers:
        if link_id in answers:
            raise InvalidInput(f"answers.{link_id}", f"item {link_id} is answered twice")
        answers[link_id] = value
    return answers


@dataclass(frozen=True)
class _Target:
    """What a response answers: an assignment on time, or (unscheduled) an instrument, perhaps
    late or early for an assignment, perhaps the post-session check of a session."""

    instrument: str
    assignment: SurveyAssignment | None = None
    timing: str | None = None
    intended: SurveyAssignment | None = None
    session_id: UUID | None = None


async def _target(viewer: Viewer, patient_id: UUID, data: NewResponse, now: datetime) -> _Target:
    """The assignment being answered (locked for this transaction) or the unscheduled response.

    Answers from an offline phone (`recorded_at`) are judged by the time the patient gave them:
    inside the survey's window they count, even when they arrive after it closed (an expired
    survey becomes answered); outside it, like answers sent while it is not open, they are kept
    as an unscheduled response, LATE or EARLY (CLINICAL.md §5)."""
    assignment = None
    if data.assignment_id is not None:
        assignment = (
            await SurveyAssignment.filter(id=data.assignment_id, patient_id=patient_id).select_for_update().first()
        )
        if assignment is None:  # another patient's or none at all: one answer, audited
            refusal = NotFound("survey assignment")
            raise denied(viewer, refusal, AuditAction.UPDATE, "SurveyAssignment", resource_id=data.assignment_id)
    elif data.session_id is not None:
        if not await DosingSession.exists(id=data.session_id, patient_id=patient_id):
            refusal = NotFound("dosing session")
            raise denied(viewer, refusal, AuditAction.UPDATE, "DosingSession", resource_id=data.session_id)
        if data.instrument not in (None, POST_SESSION):
            raise InvalidInput("instrument", f"a session's survey is the {POST_SESSION} check, not {data.instrument}")
        assignment = (
            await SurveyAssignment.filter(session_id=data.session_id, instrument=POST_SESSION)
            .select_for_update()
            .first()
        )
        if assignment is None:  # the phone never had it: kept, and it answers the check once made
            return _Target(POST_SESSION, session_id=data.session_id)
    else:
        if data.instrument not in ON_DEMAND:
            on_demand = ", ".join(sorted(ON_DEMAND))
            raise InvalidInput(
                "instrument", f"give an assignmentId, a sessionId, or an instrument taken at any time: {on_demand}"
            )
        return _Target(data.instrument)
    if data.instrument is not None and data.instrument != assignment.instrument:
        raise InvalidInput("instrument", f"this assignment is a {assignment.instrument}, not a {data.instrument}")
    if assignment.status is AssignmentStatus.COMPLETED:
        raise Conflict("this survey is already answered")
    if assignment.status is AssignmentStatus.CANCELLED:
        raise Conflict("this survey is cancelled")
    answered_at = data.recorded_at or now
    if answered_at >= assignment.expires_at or (
        data.recorded_at is None and assignment.status is AssignmentStatus.EXPIRED
    ):
        return _Target(assignment.instrument, timing="LATE", intended=assignment, session_id=assignment.session_id)
    if answered_at < assignment.available_at:
        return _Target(assignment.instrument, timing="EARLY", intended=assignment, session_id=assignment.session_id)
    # AVAILABLE, SCHEDULED whose time has come (the open job may lag), or EXPIRED while the phone
    # held answers given inside the window.
    return _Target(assignment.instrument, assignment=assignment, session_id=assignment.session_id)


async def _submit(
    viewer: Viewer, patient_id: UUID, data: NewResponse, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    if data.problems:
        raise data.problems[0]
    answers = _answers(data)
    if data.recorded_at is not None and (problem := policy.device_time_problem("recordedAt", data.recorded_at, now)):
        raise InvalidInput("recordedAt", problem)
    answered_at = data.recorded_at or now

    async def write() -> Outcome:
        async with in_transaction():
            target = await _target(viewer, patient_id, data, now)
            definition = await definition_of(target.instrument)
            result = score(definition, answers)
            assignment = target.assignment
            response = await SurveyResponse.create(
                patient_id=patient_id,
                assignment_id=assignment.id if assignment else None,
                instrument=definition.code,
                instrument_version=definition.version,
                answers=answers,
                total_score=result.total,
                severity=result.severity,
                submitted_at=now,
                recorded_at=data.recorded_at,
                timing=target.timing,
                intended_assignment_id=target.intended.id if target.intended else None,
                session_id=target.session_id,
            )
            if assignment is not None:
                was_expired = assignment.status is AssignmentStatus.EXPIRED
                answered = await _move(
                    assignment, AssignmentStatus.COMPLETED, now, completed_at=answered_at, response_id=response.id,
                    next_reminder_at=None,
                )  # fmt: skip
                if not answered:  # a job moved it after it was read: nothing of this answer is kept
                    raise Conflict("this survey changed while it was being answered: send the answers again")
                if was_expired:
                    await resolve_automatically(
                        kind=alert_rules.AlertKind.SAFETY_CHECK_UNANSWERED, source_type="SurveyAssignment",
                        source_id=assignment.id, now=now,
                        note=f"Answered on the patient's phone at {answered_at.isoformat()}, inside the window, "
                        f"and received at {now.isoformat()} after the survey expired.",
                    )  # fmt: skip
            await record_event(
                "SurveyResponse.created", resource_type="SurveyResponse", resource_id=response.id,
                operation=Operation.CREATED, version=1, now=now, patient_id=patient_id,
                payload={"instrument": definition.code},
            )  # fmt: skip
            entry = AuditEntry(AuditAction.CREATE, "SurveyResponse", AuditOutcome.SUCCESS, patient_id, str(response.id))
            await record_now(viewer, entry, now=now, trail=viewer.audit)
        return Outcome(response.id)

    request: dict[str, Any] = {
        "answers": answers,
        "assignment": str(data.assignment_id),
        "instrument": data.instrument,
    }
    if data.recorded_at is not None:
        request["recorded_at"] = data.recorded_at
    if data.session_id is not None:
        request["session"] = str(data.session_id)
    return await run_once(viewer, "submitSurveyResponse", data.idempotency_key, request, write, now=now)


async def list_assignments(
    viewer: Viewer, patient_id: UUID, *, statuses: list[AssignmentStatus] | None, limit: int,
    before: tuple[datetime, UUID] | None = None,
) -> list[SurveyAssignment]:  # fmt: skip
    """A patient's assignments, latest opening first."""
    await require_clinical_access(viewer, patient_id, "SurveyAssignment")
    query = SurveyAssignment.filter(patient_id=patient_id)
    if statuses:
        query = query.filter(status__in=statuses)
    if before is not None:
        query = query.filter(Q(available_at__lt=before[0]) | Q(available_at=before[0], id__lt=before[1]))
    return list(await query.order_by("-available_at", "-id").limit(limit))


async def list_responses(
    viewer: Viewer, patient_id: UUID, *, limit: int, before: tuple[datetime, UUID] | None = None
) -> list[SurveyResponse]:
    """A patient's scored responses, newest first."""
    await require_clinical_access(viewer, patient_id, "SurveyResponse")
    query = SurveyResponse.filter(patient_id=patient_id)
    if before is not None:
        query = query.filter(Q(submitted_at__lt=before[0]) | Q(submitted_at=before[0], id__lt=before[1]))
    return list(await query.order_by("-submitted_at", "-id").limit(limit))


async def get_response(viewer: Viewer, response_id: UUID) -> SurveyResponse:
    response = await SurveyResponse.get_or_none(id=response_id)
    if response is None:
        raise NotFound("survey response")
    refusal = NotFound("survey response")
    await require_clinical_record(viewer, response.patient_id, "SurveyResponse", refusal)  # type: ignore[attr-defined]
    return response


async def opened_assignment(patient_id: UUID, assignment_id: UUID) -> SurveyAssignment | None:
    """The patient's own assignment an event announced, or None if it is not theirs (live feed)."""
    return await SurveyAssignment.get_or_none(id=assignment_id, patient_id=patient_id)
