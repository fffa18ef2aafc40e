"""Dosing sessions: the session record, its start, completion and voiding. The pre-dose checks a
start must pass are `models.care.pre_dose`'s; the job that closes abandoned sessions is
`models.care.abandoned_sessions`'. The module stays a little over 400 lines: start, completion and
voiding share the session's record writes (`_open_session`, `record_session_written`).

The record carries what a REMS-style monitoring form asks for: dose, lot if known, pre- and
post-dose blood pressure, the treatment monitor, times and durations, the patient's ratings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.alerts import alert_rules
from models.alerts.alerts import raise_alerts
from models.care.dosing_records import DosingSession, SessionStatus
from models.care.medications import start_warnings
from models.care.plan_records import CURRENT_STATUSES, TreatmentPlan
from models.care.pre_dose import (
    BloodPressureReading,
    FailedCheck,
    SafetyCheckFailed,
    StartSession,
    dose_taken_offline,
    failed_safety_checks,
    reading_content,
    refusal_advice,
    safety_facts,
    session_reading_findings,
    start_findings,
    validate_reading,
    validate_start,
)
from models.identity.access import (
    Viewer,
    clinical_record,
    require_clinical_access,
    require_patient_self,
    treating_provider_patient,
)
from models.identity.accounts import Patient, Role
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, denied, record_now, record_system
from models.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.kernel.events import Operation, record_event
from models.kernel.idempotency import Outcome, request_fields, run_once
from models.kernel.pages import newest_first
from models.kernel.policy import ClinicPolicy
from models.kernel.text import kept_note
from models.outcomes.opioids import InteractionWarning
from models.safety.rules import Findings, Phase, crisis_findings
from models.safety.screen import Action, Submission, screened_write
from models.surveys.assignments import cancel_session_surveys, open_post_session_check_now, schedule_follow_up


@dataclass(frozen=True)
class CompleteSession:
    session_id: UUID | None
    back_to_baseline: bool
    dissociation: int
    sedation: int
    ended_at: datetime | None = None
    blood_pressure: BloodPressureReading | None = None
    notes: str = ""
    recorded_at: datetime | None = None
    idempotency_key: str | None = None
    problems: tuple[InvalidInput, ...] = ()


def _require_patient(viewer: Viewer, action: AuditAction) -> UUID:
    return require_patient_self(viewer, Forbidden("dosing sessions are logged by the patient"), action, "DosingSession")


async def start_dosing_session(viewer: Viewer, data: StartSession, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """Run the pre-dose checks (CLINICAL.md §2) and start the session, or refuse listing every
    failed check. The request is screened first (§0): a "yes" on the checklist or a dangerous
    reading raises its alert and returns its advice whatever else is wrong with it.

    A start replayed from an offline phone (`recorded_at`) is checked as of the device's time:
    the reading must be from the 30 minutes before it, the interval is counted from it, and it
    becomes the session's start; alerts and the audit carry the server's time. When its checks
    fail it is recorded all the same, with the failed checks, and alerts the care team (§2)."""
    patient_id = _require_patient(viewer, AuditAction.CREATE)
    plan = await TreatmentPlan.filter(patient_id=patient_id, status__in=CURRENT_STATUSES).first()
    ceiling = plan.bp_ceiling if plan else policy.default_bp_ceiling
    content = {"answeredYes": list(data.answered_yes), "bloodPressure": reading_content(data.blood_pressure)}
    submission = Submission(
        "startDosingSession", patient_id, content, start_findings(data, ceiling, policy),
        idempotency_key=data.idempotency_key, recorded_at=data.recorded_at,
    )  # fmt: skip
    return await screened_write(
        submission, lambda: _start(viewer, patient_id, data, now=now, policy=policy), record_type="DosingSession",
        now=now, policy=policy,
    )  # fmt: skip


@dataclass(frozen=True)
class StartedSession:
    """What `startDosingSession` answers with: the write's outcome, the session, and the CLINICAL.md §8
    warnings kept on it when it started (`start_warnings`; a retry answers with the same ones)."""

    outcome: Outcome
    session: DosingSession
    warnings: tuple[InteractionWarning, ...]


async def start_session_with_warnings(
    viewer: Viewer, data: StartSession, *, now: datetime, policy: ClinicPolicy
) -> StartedSession:
    """`start_dosing_session`, then the session as the viewer may read it, with its §8 warnings."""
    outcome = await start_dosing_session(viewer, data, now=now, policy=policy)
    session = await get_session(viewer, outcome.resource_id)
    warnings = tuple(InteractionWarning(kept["code"], kept["message"]) for kept in session.interaction_warnings)
    return StartedSession(outcome, session, warnings)


async def _start(
    viewer: Viewer, patient_id: UUID, data: StartSession, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    answered_yes = validate_start(data, now, policy)
    # As sent: a retry matches it whenever it comes (the checklist as the mapping it always was).
    request = {**request_fields(data), "checklist": dict(data.checklist)}
    started_at = data.recorded_at or now
    offline = dose_taken_offline(data, now, policy)

    async def write() -> Outcome:
        async with in_transaction():
            patient = await Patient.get(id=patient_id)
            plan = (
                await TreatmentPlan.filter(patient_id=patient_id, status__in=CURRENT_STATUSES)
                .select_for_update()
                .first()
            )
            facts = await safety_facts(patient, plan, data, answered_yes, started_at, policy)
            failures = failed_safety_checks(facts, policy)
            refusal: SafetyCheckFailed | None = None
            if not failures:
                session = await _open_session(viewer, patient, plan, data, started_at, now, failed=[], policy=policy)
            elif offline and (
                recorded := await _record_dose_taken_offline(
                    viewer, patient, plan, data, failures, started_at, now, policy
                )
            ):
                session = recorded
            else:
                await _refused(viewer, patient, failures, now=now)
                refusal = SafetyCheckFailed(failures, refusal_advice(failures))
        if refusal is not None:
            raise refusal
        return Outcome(session.id)

    try:
        return await run_once(viewer, "startDosingSession", data.idempotency_key, request, write, now=now)
    except IntegrityError as error:  # the one-session-in-progress index settled a race
        raise Conflict("you already have a session in progress: complete it first") from error


async def _refused(viewer: Viewer, patient: Patient, failures: list[FailedCheck], *, now: datetime) -> None:
    """The audit row of a refused start (inside its transaction); its alerts were raised by the screen."""
    codes = ",".join(failure.code for failure in failures)[:200]
    entry = AuditEntry(AuditAction.EXECUTE, "DosingSession", AuditOutcome.DENIED, patient.id, None, codes)
    await record_now(viewer, entry, now=now, trail=viewer.audit)


# A dose taken offline cannot become a session in progress while another one is (one at a time).
_CANNOT_RECORD = frozenset({"SESSION_IN_PROGRESS"})


async def _record_dose_taken_offline(
    viewer: Viewer,
    patient: Patient,
    plan: TreatmentPlan | None,
    data: StartSession,
    failures: list[FailedCheck],
    started_at: datetime,
    now: datetime,
    policy: ClinicPolicy,
) -> DosingSession | None:
    """CLINICAL.md §2, a dose taken offline: recorded despite its failed checks, which are kept on
    the session, with a DOSED_DESPITE_FAILED_CHECKS alert. None when it cannot be recorded (no
    plan ever, or another session in progress): it is then refused, and still alerts."""
    urgent = alert_rules.failed_checks_are_urgent(
        [failure.item for failure in failures if failure.item],
        data.blood_pressure.pressure if data.blood_pressure else None,
        policy.pre_dose_urgent,
    )
    codes = [failure.code for failure in failures]
    record_plan = plan or await TreatmentPlan.filter(patient_id=patient.id).order_by("-created_at").first()
    if record_plan is None or _CANNOT_RECORD & set(codes):
        spec = alert_rules.dosed_despite_failed_checks_alert(codes, urgent=urgent, recorded=False)
        attempt = uuid5(NAMESPACE_URL, f"offline-dose:{patient.id}:{started_at.isoformat()}")
        await raise_alerts(
            [spec], patient=patient, source_type="OfflineDose", source_id=attempt, now=now, policy=policy
        )
        return None
    session = await _open_session(viewer, patient, record_plan, data, started_at, now, failed=failures, policy=policy)
    spec = alert_rules.dosed_despite_failed_checks_alert(codes, urgent=urgent, recorded=True)
    await raise_alerts(
        [spec], patient=patient, source_type="DosingSession", source_id=session.id, now=now, policy=policy
    )
    return session


async def _open_session(
    viewer: Viewer, patient: Patient, plan: TreatmentPlan | None, data: StartSession, started_at: datetime,
    now: datetime, *, failed: list[FailedCheck], policy: ClinicPolicy,
) -> DosingSession:  # fmt: skip
    reading = data.blood_pressure
    # Every check passed (so there is a current plan and a recent reading), or the dose was taken
    # offline despite the checks in `failed` (its plan is the one it was taken under).
    assert plan is not None
    session = await DosingSession.create(
        patient=patient,
        plan=plan,
        status=SessionStatus.IN_PROGRESS,
        formulation=plan.formulation.value,
        dose_mg=data.dose_mg,
        lot_number=(data.lot_number or "").strip() or None,
        monitor_name=(data.monitor_name or "").strip() or None,
        checklist=dict(data.checklist),
        started_at=started_at,
        pre_systolic=reading.systolic if reading else None,
        pre_diastolic=reading.diastolic if reading else None,
        pre_measured_at=reading.measured_at if reading else None,
        pre_heart_rate=reading.heart_rate if reading else None,
        pre_spo2=reading.spo2 if reading else None,
        start_received_at=now,
        dosed_despite_failed_checks=bool(failed),
        failed_checks=[vars(check) for check in failed],
        interaction_warnings=[vars(warning) for warning in await start_warnings(plan, started_at, policy=policy)],
    )
    await record_session_written(viewer, session, "DosingSession.started", Operation.CREATED, now)
    return session


async def record_session_written(
    viewer: Viewer | None, session: DosingSession, event: str, operation: Operation, now: datetime
) -> None:
    """The event and the audit row of a session write (inside its transaction); `viewer` None for
    the service's own (an abandoned session)."""
    patient_id: UUID = session.patient_id  # type: ignore[attr-defined]
    await record_event(
        event,
        resource_type="DosingSession",
        resource_id=session.id,
        operation=operation,
        version=session.version,
        now=now,
        patient_id=patient_id,
        payload={
            "status": session.status.value,
            "endedAt": session.ended_at.isoformat() if session.ended_at else None,
        },
    )
    action = AuditAction.CREATE if operation is Operation.CREATED else AuditAction.UPDATE
    entry = AuditEntry(action, "DosingSession", AuditOutcome.SUCCESS, patient_id, str(session.id), event)
    if viewer is None:
        await record_system(entry, now=now)
    else:
        await record_now(viewer, entry, now=now, trail=viewer.audit)


def ended_early(started_at: datetime, ended_at: datetime, policy: ClinicPolicy) -> bool:
    """CLINICAL.md §3: the patient is monitored for at least 2 hours (`minimum_monitoring`, the
    label's); a session that ended sooner after its start ended early. The record is flagged (at
    home and in clinic), and a completion at home that early is accepted only with
    `backToBaseline: true` (`_validate_completion`)."""
    return ended_at - started_at < policy.minimum_monitoring


def _validate_completion(
    data: CompleteSession, session: DosingSession, now: datetime, policy: ClinicPolicy
) -> datetime:
    """CLINICAL.md §3: a completion's times and ratings; earlier than the minimum monitoring time
    (2 hours) after the start only with `backToBaseline: true`. Returns when the session ended."""
    policy.check_device_time("recordedAt", data.recorded_at, now)
    ended_at = data.ended_at or data.recorded_at or now
    policy.check_device_time("endedAt", ended_at, now)
    if data.recorded_at is not None and ended_at > data.recorded_at + policy.clock_skew:
        raise InvalidInput("endedAt", "endedAt is after recordedAt, the time the phone logged the end")
    if ended_at < session.started_at:
        raise InvalidInput("endedAt", "endedAt is before the session started")
    if ended_early(session.started_at, ended_at, policy) and not data.back_to_baseline:
        hours = policy.minimum_monitoring.total_seconds() / 3600
        raise InvalidInput(
            "endedAt",
            f"stay with your monitor for at least {hours:g} hours after dosing, until you feel like yourself",
        )
    for name, value in (("dissociation", data.dissociation), ("sedation", data.sedation)):
        if not 0 <= value <= 10:
            raise InvalidInput(name, f"{name} must be between 0 and 10")
    kept_note(data.notes, "notes")
    validate_reading(data.blood_pressure, "bloodPressure", now, policy)
    return ended_at


NOT_BACK_TO_BASELINE_ADVICE = (
    "Stay with your treatment monitor until you feel like yourself; do not drive. Your care team has been "
    "told and will check on you. If you feel unsafe or unwell, call 911."
)


def completion_findings(data: CompleteSession, policy: ClinicPolicy) -> Findings:
    """CLINICAL.md §0, §3 and §7: what a completion's content calls for, whatever else is wrong
    with it: the post-dose reading, crisis wording in the notes, and not being back to baseline."""
    findings = session_reading_findings(data.blood_pressure, Phase.POST, policy)
    findings.merge(crisis_findings(data.notes, "session notes", policy))
    if not data.back_to_baseline:
        findings.add(alert_rules.not_back_to_baseline_alert(data.back_to_baseline))
        findings.advice.setdefault("safetyInstructions", NOT_BACK_TO_BASELINE_ADVICE)
    return findings


async def complete_dosing_session(
    viewer: Viewer, data: CompleteSession, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    """Close a session (CLINICAL.md §3): post-dose readings, ratings; the follow-up surveys are
    scheduled in the same transaction. The request is screened first (§0): a dangerous reading,
    crisis wording or "not back to baseline" alerts the care team even when the completion itself
    is refused (too early, late, not found), and "not back to baseline" makes the post-session
    check due at once."""
    patient_id = _require_patient(viewer, AuditAction.UPDATE)
    session = await DosingSession.get_or_none(id=data.session_id, patient_id=patient_id) if data.session_id else None
    actions: list[Action] = []
    if not data.back_to_baseline and session is not None and session.status is SessionStatus.IN_PROGRESS:
        session_id = session.id

        async def check_now(patient: Patient) -> None:
            await open_post_session_check_now(patient, session_id=session_id, now=now, policy=policy)

        actions.append(check_now)
    content = {
        "sessionId": str(data.session_id) if data.session_id else None,
        "backToBaseline": data.back_to_baseline,
        "bloodPressure": reading_content(data.blood_pressure),
        "notes": data.notes,
    }
    submission = Submission(
        "completeDosingSession", patient_id, content, completion_findings(data, policy),
        idempotency_key=data.idempotency_key, recorded_at=data.recorded_at, actions=actions,
    )  # fmt: skip
    return await screened_write(
        submission, lambda: _complete(viewer, patient_id, data, now=now, policy=policy),
        record_type="DosingSession", now=now, policy=policy,
    )  # fmt: skip


async def _complete(
    viewer: Viewer, patient_id: UUID, data: CompleteSession, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    if data.problems:
        raise data.problems[0]
    session = await DosingSession.get_or_none(id=data.session_id, patient_id=patient_id)
    if session is None:  # another patient's or none at all: one answer, audited
        refusal = NotFound("dosing session")
        raise denied(viewer, refusal, AuditAction.UPDATE, "DosingSession", resource_id=data.session_id)

    async def write() -> Outcome:
        async with in_transaction():
            current = await DosingSession.filter(id=session.id).select_for_update().first()
            assert current is not None
            if current.status is not SessionStatus.IN_PROGRESS:
                raise Conflict(f"the session is already {current.status.value.lower().replace('_', ' ')}")
            ended_at = _validate_completion(data, current, now, policy)
            reading = data.blood_pressure
            current.status = SessionStatus.COMPLETED
            current.ended_at = ended_at
            current.ended_early = ended_early(current.started_at, ended_at, policy)
            current.post_systolic = reading.systolic if reading else None
            current.post_diastolic = reading.diastolic if reading else None
            current.post_measured_at = (reading.measured_at or ended_at) if reading else None
            current.post_heart_rate = reading.heart_rate if reading else None
            current.post_spo2 = reading.spo2 if reading else None
            current.dissociation, current.sedation = data.dissociation, data.sedation
            current.back_to_baseline = data.back_to_baseline
            current.notes = kept_note(data.notes, "notes")
            current.completion_received_at = now
            current.version += 1
            await current.save()
            patient = await Patient.get(id=patient_id)
            plan = await TreatmentPlan.get(id=current.plan_id)  # type: ignore[attr-defined]
            await schedule_follow_up(
                patient, current.id, ended_at, plan.schedule, back_to_baseline=data.back_to_baseline, now=now,
                policy=policy,
            )  # fmt: skip
            await record_session_written(viewer, current, "DosingSession.completed", Operation.UPDATED, now)
        return Outcome(current.id)

    return await run_once(viewer, "completeDosingSession", data.idempotency_key, request_fields(data), write, now=now)


async def void_dosing_session(viewer: Viewer, session_id: UUID, reason: str, *, now: datetime) -> DosingSession:
    """A provider of the patient's care team marks a session entered in error (CLINICAL.md §12:
    corrections never delete). Its follow-up surveys not yet answered are cancelled (§6)."""
    if not viewer.is_role(Role.PROVIDER):
        refusal = Forbidden("only the patient's providers may void a session")
        raise denied(viewer, refusal, AuditAction.UPDATE, "DosingSession", resource_id=session_id)
    cleaned = " ".join(reason.split())
    if not cleaned or len(cleaned) > 500:
        raise InvalidInput("reason", "say why the session is void (1 to 500 characters)")
    session = await DosingSession.get_or_none(id=session_id)
    if session is None:
        raise denied(viewer, NotFound("dosing session"), AuditAction.UPDATE, "DosingSession", resource_id=session_id)
    await treating_provider_patient(
        viewer, session.patient_id, refusal=NotFound("dosing session"), resource_type="DosingSession",  # type: ignore[attr-defined]
        resource_id=session_id,
    )  # fmt: skip
    async with in_transaction():
        current = await DosingSession.filter(id=session_id).select_for_update().first()
        assert current is not None
        if current.status is SessionStatus.ENTERED_IN_ERROR:
            return current
        if current.status is SessionStatus.IN_PROGRESS:
            raise Conflict("a session in progress cannot be voided: complete it first")
        current.status = SessionStatus.ENTERED_IN_ERROR
        current.notes = f"{current.notes}\n[entered in error: {cleaned}]".strip()
        current.version += 1
        await current.save(update_fields=["status", "notes", "version", "updated_at"])
        await cancel_session_surveys(current.id, now=now)
        await record_session_written(viewer, current, "DosingSession.voided", Operation.UPDATED, now)
    return current


async def get_session(viewer: Viewer, session_id: UUID) -> DosingSession:
    return await clinical_record(viewer, DosingSession, session_id, NotFound("dosing session"))


async def list_sessions(
    viewer: Viewer, patient_id: UUID, *, limit: int, before: tuple[datetime, UUID] | None = None
) -> list[DosingSession]:
    """A patient's sessions, newest first."""
    await require_clinical_access(viewer, patient_id, "DosingSession")
    return await newest_first(DosingSession, "started_at", limit=limit, before=before, patient_id=patient_id)
