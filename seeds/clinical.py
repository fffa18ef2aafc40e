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

from models import alerts, checkins, dosing, plans, side_effects
from models.access import Viewer, load_user_viewer
from models.accounts import Patient, User
from models.audit import AuditTrail
from models.dosing import CHECKLIST, BloodPressureReading, CompleteSession, StartSession
from models.errors import DomainError
from models.idempotency import Outcome
from models.policy import ClinicPolicy


@dataclass(frozen=True)
class DemoCourse:
    patient: str
    provider: str
    formulation: plans.Formulation
    dose: Decimal
    planned_sessions: int
    session_days_ago: tuple[int, ...]
    pain_from: int
    pain_to: int


COURSES: tuple[DemoCourse, ...] = (
    DemoCourse("alex@demo.test", "dr.rivera@demo.test", plans.Formulation.SUBLINGUAL_TABLET, Decimal(100), 12,
               (40, 33, 26, 19, 12, 5), 7, 4),
    DemoCourse("blair@demo.test", "dr.rivera@demo.test", plans.Formulation.INTRANASAL_KETAMINE, Decimal(50), 8,
               (20, 13, 6), 7, 6),
    DemoCourse("casey@demo.test", "dr.okafor@demo.test", plans.Formulation.ORAL, Decimal(150), 10,
               (30, 23, 16, 9), 6, 5),
    DemoCourse("devon@demo.test", "dr.okafor@demo.test", plans.Formulation.SUBLINGUAL_TABLET, Decimal(200), 6,
               (10, 3), 8, 6),
)  # fmt: skip


async def _viewer(email: str) -> Viewer:
    user = await User.get(email=email)
    viewer = await load_user_viewer(user.id, AuditTrail(operation="seed"))
    if viewer is None:  # pragma: no cover - the demo users were just created
        raise RuntimeError(f"demo user {email} cannot act")
    return viewer


NO_CONTRAINDICATIONS = dict.fromkeys(CHECKLIST, False)


async def _session(patient: Viewer, course: DemoCourse, at: datetime, policy: ClinicPolicy) -> dosing.DosingSession:
    started = await dosing.start_dosing_session(
        patient,
        StartSession(
            dose_mg=course.dose, monitor_present=True, monitor_name="Sam (partner)",
            blood_pressure=BloodPressureReading(124, 78, at - timedelta(minutes=10)), checklist=NO_CONTRAINDICATIONS,
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
    return await dosing.DosingSession.get(id=started.resource_id)


async def load_clinical_demo(now: datetime, policy: ClinicPolicy) -> list[str]:
    """Write the demo history for each demo patient without a plan yet. Returns what was added."""
    added: list[str] = []
    first_day = now - timedelta(days=45)
    for course in COURSES:
        patient_row = await Patient.get(user__email=course.patient)
        if await plans.TreatmentPlan.exists(patient_id=patient_row.id):
            continue
        patient, provider = await _viewer(course.patient), await _viewer(course.provider)
        plan = await plans.create_treatment_plan(
            provider,
            plans.NewPlan(
                patient_id=patient_row.id,
                terms=plans.PlanTerms(
                    formulation=course.formulation, setting=plans.CareSetting.AT_HOME, dose=course.dose,
                    planned_sessions=course.planned_sessions,
                ),
                reason="initial course after intake assessment",
            ),
            now=first_day, policy=policy,
        )  # fmt: skip
        sessions = [
            await _session(patient, course, (now - timedelta(days=days)).replace(hour=23, minute=0), policy)
            for days in course.session_days_ago
        ]
        for day in range(45, 0, -1):
            progress = (45 - day) / 45
            pain = round(course.pain_from + (course.pain_to - course.pain_from) * progress)
            recorded = now - timedelta(days=day) + timedelta(hours=1)
            entry = checkins.NewCheckIn(recorded_at=recorded, pain=pain, mood=10 - pain, sleep=6)
            await checkins.submit_check_in(patient, entry, now=recorded + timedelta(minutes=5), policy=policy)
        await _story(course, patient, provider, plan, sessions, now, policy)
        added.append(f"clinical history of {course.patient}")
    return added


async def _story(
    course: DemoCourse,
    patient: Viewer,
    provider: Viewer,
    plan: plans.TreatmentPlan,
    sessions: list[dosing.DosingSession],
    now: datetime,
    policy: ClinicPolicy,
) -> None:
    """What makes each demo patient's chart worth opening."""
    if course.patient == "alex@demo.test":
        report = await _report(patient, "DIZZINESS", side_effects.Grade.MODERATE, sessions[3], policy)
        alert = await alerts.Alert.get(source_id=report.resource_id)
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
        alert = await alerts.Alert.get(source_id=report.resource_id)
        await alerts.acknowledge_alert(
            provider,
            alert.id,
            "Reviewing with Casey on video tomorrow.",
            now=sessions[-1].started_at + timedelta(hours=6),
        )


async def _report(
    patient: Viewer, code: str, grade: side_effects.Grade, session: dosing.DosingSession, policy: ClinicPolicy
) -> Outcome:
    at = session.started_at + timedelta(hours=1)
    return await side_effects.report_side_effect(
        patient,
        side_effects.NewSideEffect(code=code, grade=grade, onset_at=at, session_id=session.id),
        now=at + timedelta(minutes=20),
        policy=policy,
    )
