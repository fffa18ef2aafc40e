"""The demo clinic's clinical history, written through the domain operations themselves, so the
demo data obeys every rule real data does (safety checks, alerts, holds, audit, events).

Timeline, relative to the moment of seeding:
- Alex (North): sublingual ketamine, 6 of 12 sessions done, pain falling; a moderate dizziness
  report whose routine alert Dr Rivera resolved.
- Blair (North): intranasal ketamine, 3 sessions; yesterday's dose refused for blood pressure over
  the ceiling: the open alert.
- Casey (South): oral ketamine, 4 sessions, then severe hallucinations: plan on hold, alert
  acknowledged by Dr Okafor.
- Devon (South): sublingual ketamine, 2 sessions so far.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from tortoise.transactions import in_transaction

from models.alerts import alerts
from models.care import dosing, dosing_records, plan_records, plans
from models.care.dosing import CompleteSession
from models.care.pre_dose import CHECKLIST, BloodPressureReading, StartSession
from models.identity.access import Viewer, load_user_viewer
from models.identity.accounts import Patient, User
from models.kernel.audit import AuditTrail
from models.kernel.errors import DomainError
from models.kernel.idempotency import Outcome
from models.kernel.policy import ClinicPolicy
from models.messaging import messaging
from models.notifications.notifications import Notification, NotificationStatus
from models.outcomes import opioids
from models.reports import checkins, side_effects
from models.safety.screen import alerts_about
from models.surveys import delivery, responses, survey_records


@dataclass(frozen=True)
class DemoCourse:
    patient: str
    provider: str
    formulation: plan_records.Formulation
    dose: Decimal
    planned_sessions: int
    session_days_ago: tuple[int, ...]
    pain_from: int
    pain_to: int
    mood_from: int  # PHQ-9 total at baseline
    mood_to: int  # PHQ-9 total by the latest survey


COURSES: tuple[DemoCourse, ...] = (
    DemoCourse("alex@demo.test", "dr.rivera@demo.test", plan_records.Formulation.SUBLINGUAL_TABLET, Decimal(100), 12,
               (40, 33, 26, 19, 12, 5), 7, 4, 16, 6),
    DemoCourse("blair@demo.test", "dr.rivera@demo.test", plan_records.Formulation.INTRANASAL_KETAMINE, Decimal(50), 8,
               (20, 13, 6), 7, 6, 14, 13),
    DemoCourse("casey@demo.test", "dr.okafor@demo.test", plan_records.Formulation.ORAL, Decimal(150), 10,
               (30, 23, 16, 9), 6, 5, 12, 11),
    DemoCourse("devon@demo.test", "dr.okafor@demo.test", plan_records.Formulation.SUBLINGUAL_TABLET, Decimal(200), 6,
               (10, 3), 8, 6, 18, 15),
)  # fmt: skip


async def _viewer(email: str) -> Viewer:
    user = await User.get(email=email)
    viewer = await load_user_viewer(user.id, AuditTrail(operation="seed"))
    if viewer is None:  # pragma: no cover - the demo users were just created
        raise RuntimeError(f"demo user {email} cannot act")
    return viewer


NO_CONTRAINDICATIONS = tuple((code, False) for code in CHECKLIST)


async def _session(
    patient: Viewer, course: DemoCourse, at: datetime, policy: ClinicPolicy
) -> dosing_records.DosingSession:
    started = await dosing.start_dosing_session(
        patient,
        StartSession(
            dose_mg=course.dose, monitor_present=True, monitor_name="Sam (partner)",
            blood_pressure=BloodPressureReading(124, 78, at - timedelta(minutes=10)),
            checklist=NO_CONTRAINDICATIONS,
        ),
        now=at, policy=policy,
    )  # fmt: skip
    ended = at + timedelta(hours=2, minutes=30)
    await dosing.complete_dosing_session(
        patient,
        CompleteSession(
            session_id=started.resource_id, back_to_baseline=True, dissociation=5, sedation=3,
            blood_pressure=BloodPressureReading(132, 84, ended), ended_at=ended,
        ),
        now=ended, policy=policy,
    )  # fmt: skip
    return await dosing_records.DosingSession.get(id=started.resource_id)


async def load_clinical_demo(now: datetime, policy: ClinicPolicy) -> list[str]:
    """Write the demo history for each demo patient without a plan yet. Returns what was added."""
    added: list[str] = []
    first_day = now - timedelta(days=45)
    for course in COURSES:
        patient_row = await Patient.get(user__email=course.patient)
        if await plan_records.TreatmentPlan.exists(patient_id=patient_row.id):
            continue
        # One transaction per patient: a crash mid-seed leaves no half-written chart behind.
        async with in_transaction():
            patient, provider = await _viewer(course.patient), await _viewer(course.provider)
            plan = await plans.create_treatment_plan(
                provider,
                plans.NewPlan(
                    patient_id=patient_row.id,
                    terms=plans.PlanTerms(
                        formulation=course.formulation, setting=plan_records.CareSetting.AT_HOME, dose=course.dose,
                        planned_sessions=course.planned_sessions,
                    ),
                    reason="initial course after intake assessment",
                ),
                now=first_day, policy=policy,
            )  # fmt: skip
            first_session = (now - timedelta(days=course.session_days_ago[0])).replace(hour=23, minute=0)
            await _baseline(patient, course, first_session - timedelta(days=2), policy)
            sessions = [
                await _session(patient, course, (now - timedelta(days=days)).replace(hour=23, minute=0), policy)
                for days in course.session_days_ago
            ]
            await _answer_follow_ups(patient, patient_row, course, now, policy)
            for day in range(45, 0, -1):
                progress = (45 - day) / 45
                pain = round(course.pain_from + (course.pain_to - course.pain_from) * progress)
                recorded = now - timedelta(days=day) + timedelta(hours=1)
                entry = checkins.NewCheckIn(recorded_at=recorded, pain=pain, mood=10 - pain, sleep=6)
                await checkins.submit_check_in(patient, entry, now=recorded + timedelta(minutes=5), policy=policy)
            await _story(course, patient, provider, plan, sessions, now, policy)
            await _conversation(course, patient, provider, now, policy)
            await _opioid_history(course, patient, now, policy)
        added.append(f"clinical history of {course.patient}")
    # The notifications of this made-up past went out back then: none is pending now.
    await Notification.filter(status=NotificationStatus.PENDING, created_at__lte=now).update(
        status=NotificationStatus.SENT, sent_at=now
    )
    return added


def _answers(instrument: str, course: DemoCourse, progress: float) -> dict[str, int]:
    """Plausible answers on the course's trajectory (`progress` 0 at baseline, 1 by now)."""
    pain = round(course.pain_from + (course.pain_to - course.pain_from) * progress)
    phq9 = round(course.mood_from + (course.mood_to - course.mood_from) * progress)
    if instrument == "PHQ-9":  # spread the total over items 1-8 (item 9, self-harm, stays 0)
        return {str(i + 1): min(3, max(0, (phq9 - i + 7) // 8)) for i in range(8)} | {"9": 0, "10": 1}
    if instrument == "GAD-7":
        gad7 = round(phq9 * 0.7)
        return {str(i + 1): min(3, max(0, (gad7 - i + 6) // 7)) for i in range(7)}
    if instrument == "PAIN-NRS":
        return {"1": pain}
    if instrument == "PEG-3":
        return {"1": pain, "2": min(10, pain + 1), "3": pain}
    if instrument == "POST-SESSION":
        return {"1": 1, "2": 1, "3": 0, "4": 1, "5": 0, "6": 1, "7": 0, "8": 0, "9": 0, "10": 0}
    return {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}


async def _baseline(patient: Viewer, course: DemoCourse, at: datetime, policy: ClinicPolicy) -> None:
    """Baseline scores two days before the first session (CLINICAL.md §5 outcome definitions)."""
    for code in ("PAIN-NRS", "PHQ-9", "GAD-7", "PEG-3"):
        response = responses.NewResponse(answers=tuple(_answers(code, course, 0.0).items()), instrument=code)
        await responses.submit_survey_response(patient, response, now=at, policy=policy)


async def _answer_follow_ups(
    patient: Viewer, patient_row: Patient, course: DemoCourse, now: datetime, policy: ClinicPolicy
) -> None:
    """Answer the follow-up surveys whose time has come, as the patient would; Devon's latest stays
    open and one of Blair's PEG-3 expired unanswered (so the demo shows every state)."""
    due = await survey_records.SurveyAssignment.filter(patient_id=patient_row.id, available_at__lt=now).order_by(
        "available_at"
    )
    skipped_one = False
    for index, assignment in enumerate(due):
        await delivery.open_due_surveys(now=assignment.available_at, policy=policy)
        answered_at = assignment.available_at + timedelta(minutes=40)
        if answered_at >= now or (course.patient == "devon@demo.test" and index == len(due) - 1):
            continue
        if course.patient == "blair@demo.test" and assignment.instrument == "PEG-3" and not skipped_one:
            skipped_one = True
            continue
        response = responses.NewResponse(
            answers=tuple(_answers(assignment.instrument, course, (index + 1) / len(due)).items()),
            assignment_id=assignment.id,
        )
        await responses.submit_survey_response(patient, response, now=answered_at, policy=policy)
    await delivery.expire_overdue_surveys(now=now, policy=policy)


CONVERSATIONS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "alex@demo.test": (
        "Questions about my sessions",
        [
            ("patient", "Is it normal to feel a bit foggy the morning after a session?"),
            ("provider", "A little fogginess the next morning is common. Tell us if it lasts past midday."),
            ("patient", "Thanks, it cleared by 10am."),
            ("provider", "Good. Your pain scores are trending down nicely; keep logging your check-ins."),
        ],
    ),
    "blair@demo.test": (
        "Blood pressure before sessions",
        [
            ("patient", "My blood pressure was high again before my session yesterday."),
            ("provider", "Thanks for not dosing. Please rest 10 minutes and re-measure before the next session."),
        ],
    ),
}


# (drug, strength, unit, intakes a day at the start, at the end, every n days): Alex tapers
# oxycodone as pain falls; Blair's tramadol stays flat; Casey wears a fentanyl patch.
OPIOIDS: dict[str, tuple[str, int, str, int, int, int]] = {
    "alex@demo.test": ("oxycodone", 10, "mg", 4, 2, 1),
    "blair@demo.test": ("tramadol", 50, "mg", 3, 3, 1),
    "casey@demo.test": ("fentanyl patch", 25, "mcg/hr", 1, 1, 3),
}


async def _opioid_history(course: DemoCourse, patient: Viewer, now: datetime, policy: ClinicPolicy) -> None:
    if course.patient not in OPIOIDS:
        return
    drug, strength, unit, start, end, every = OPIOIDS[course.patient]
    for day in range(29, 0, -every):
        per_day = round(start + (end - start) * (29 - day) / 29)
        for n in range(per_day):
            taken = now - timedelta(days=day) + timedelta(hours=4 * n)
            dose = opioids.NewOpioidDose(drug, Decimal(strength), unit, Decimal(1), taken)
            await opioids.log_opioid_use(patient, dose, now=taken + timedelta(minutes=1), policy=policy)


async def _conversation(
    course: DemoCourse, patient: Viewer, provider: Viewer, now: datetime, policy: ClinicPolicy
) -> None:
    """A thread for the demo patients who have one; the provider's last reply is unread."""
    if course.patient not in CONVERSATIONS:
        return
    subject, lines = CONVERSATIONS[course.patient]
    at = now - timedelta(days=2)
    thread = (await messaging.create_thread(patient, subject, patient_id=None, now=at, policy=policy)).resource_id
    for index, (who, body) in enumerate(lines):
        at += timedelta(hours=3)
        author = patient if who == "patient" else provider
        await messaging.send_message(author, messaging.NewMessage(thread, body), now=at, policy=policy)
        if index < len(lines) - 1:
            await messaging.mark_thread_read(patient, thread, now=at + timedelta(minutes=30))
            await messaging.mark_thread_read(provider, thread, now=at + timedelta(minutes=30))


async def _story(
    course: DemoCourse,
    patient: Viewer,
    provider: Viewer,
    plan: plan_records.TreatmentPlan,
    sessions: list[dosing_records.DosingSession],
    now: datetime,
    policy: ClinicPolicy,
) -> None:
    """What makes each demo patient's chart worth opening."""
    if course.patient == "alex@demo.test":
        report = await _report(patient, "DIZZINESS", side_effects.Grade.MODERATE, sessions[3], policy)
        [alert] = await alerts_about("SideEffectReport", report.resource_id)
        await alerts.resolve_alert(
            provider, alert.id, "Called Alex: dizziness settled after an hour; advised to sit during sessions.",
            now=sessions[3].started_at + timedelta(hours=20),
        )  # fmt: skip
    elif course.patient == "blair@demo.test":
        attempt = now - timedelta(days=1)
        with contextlib.suppress(DomainError):  # refused, as intended: its alert is the open one
            await dosing.start_dosing_session(
                patient,
                StartSession(
                    dose_mg=course.dose, monitor_present=True, monitor_name="Jordan (sister)",
                    blood_pressure=BloodPressureReading(152, 96, attempt - timedelta(minutes=5)),
                    checklist=NO_CONTRAINDICATIONS,
                ),
                now=attempt, policy=policy,
            )  # fmt: skip
    elif course.patient == "casey@demo.test":
        report = await _report(patient, "HALLUCINATIONS", side_effects.Grade.SEVERE, sessions[-1], policy)
        [alert] = await alerts_about("SideEffectReport", report.resource_id)
        await alerts.acknowledge_alert(
            provider,
            alert.id,
            "Reviewing with Casey on video tomorrow.",
            now=sessions[-1].started_at + timedelta(hours=6),
        )


async def _report(
    patient: Viewer, code: str, grade: side_effects.Grade, session: dosing_records.DosingSession, policy: ClinicPolicy
) -> Outcome:
    at = session.started_at + timedelta(hours=1)
    return await side_effects.report_side_effect(
        patient,
        side_effects.NewSideEffect(code=code, grade=grade, onset_at=at, session_id=session.id),
        now=at + timedelta(minutes=20),
        policy=policy,
    )
