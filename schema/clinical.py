"""The clinical core in the API: treatment plans, dosing sessions, check-ins, side effects, alerts."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

if TYPE_CHECKING:
    from schema.accounts import PatientType, ProviderType

from models.alerts import alerts as alert_ops
from models.alerts.alert_rules import Severity as DomainSeverity
from models.alerts.alerts import AlertStatus as DomainAlertStatus
from models.care import clinic_sessions, dosing, dosing_records, medications, plan_records, plans
from models.identity import directory
from models.kernel import errors as domain
from models.kernel.policy import BloodPressure as DomainBloodPressure
from models.reports import checkins, side_effects
from models.safety import screen as screening
from schema.context import Context
from schema.errors import (
    BadUserInput,
    Conflict,
    FailedCheck,
    Forbidden,
    IdempotencyConflict,
    NotFound,
    RecordNotFound,
    SafetyCheckFailed,
    ValidationError,
)
from schema.loaders import loader
from schema.mutations import LenientInput, attempt, decimal, global_id, node_id, written
from schema.pagination import Connection, page_size
from schema.permissions import viewer_of

Formulation = strawberry.enum(plan_records.Formulation, name="Formulation")
CareSetting = strawberry.enum(plan_records.CareSetting, name="CareSetting")
DoseUnit = strawberry.enum(plan_records.DoseUnit, name="DoseUnit")
TreatmentPlanStatus = strawberry.enum(plan_records.PlanStatus, name="TreatmentPlanStatus")
DosingSessionStatus = strawberry.enum(dosing_records.SessionStatus, name="DosingSessionStatus")
SideEffectGrade = strawberry.enum(side_effects.Grade, name="SideEffectGrade")
AlertSeverity = strawberry.enum(DomainSeverity, name="AlertSeverity")
AlertStatus = strawberry.enum(DomainAlertStatus, name="AlertStatus")
MedicationClass = strawberry.enum(
    plan_records.MedicationClass, name="MedicationClass", description="Concomitant medication classes (CLINICAL.md §8)."
)
MedicationSource = strawberry.enum(
    plan_records.MedicationSource, name="MedicationSource", description="Who put a medication on the plan."
)


@strawberry.enum(name="PlanEnding")
class PlanEnding(Enum):
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


# ---------------------------------------------------------------- types


@strawberry.type(name="BloodPressure")
class BloodPressureType:
    systolic: int
    diastolic: int
    measured_at: datetime | None = None
    heart_rate: int | None = strawberry.field(default=None, description="Beats per minute, if measured.")
    spo2: int | None = strawberry.field(default=None, description="Oxygen saturation (pulse oximeter), %, if measured.")


def _reading_type(
    systolic: int | None, diastolic: int | None, measured_at: datetime | None, heart_rate: int | None, spo2: int | None
) -> BloodPressureType | None:
    if systolic is None or diastolic is None:
        return None
    return BloodPressureType(
        systolic=systolic, diastolic=diastolic, measured_at=measured_at, heart_rate=heart_rate, spo2=spo2
    )


@strawberry.type(name="ScheduledSurvey")
class ScheduledSurveyType:
    instrument: str
    offset_minutes: int
    window_minutes: int


@strawberry.type(name="ConcomitantMedication")
class ConcomitantMedicationType:
    medication_class: MedicationClass  # type: ignore[valid-type]
    source: MedicationSource  # type: ignore[valid-type]
    reported_at: datetime
    note: str | None


@strawberry.type(name="TreatmentPlanStatusChange")
class TreatmentPlanStatusChangeType:
    from_status: TreatmentPlanStatus | None  # type: ignore[valid-type]
    to_status: TreatmentPlanStatus  # type: ignore[valid-type]
    reason: str
    changed_at: datetime
    changed_by_system: bool


@strawberry.type(name="TreatmentPlan")
class TreatmentPlanType(relay.Node):
    id: relay.NodeID[str]
    formulation: Formulation  # type: ignore[valid-type]
    setting: CareSetting  # type: ignore[valid-type]
    dose: float
    dose_unit: DoseUnit  # type: ignore[valid-type]
    sessions_per_week: int
    min_hours_between_sessions: int
    planned_sessions: int
    monitor_required: bool
    blood_pressure_ceiling: BloodPressureType
    survey_schedule: list[ScheduledSurveyType]
    notes: str
    status: TreatmentPlanStatus  # type: ignore[valid-type]
    status_reason: str
    status_changed_at: datetime
    created_at: datetime
    concomitant_medications: list[ConcomitantMedicationType] = strawberry.field(
        description="Medication classes the patient takes; each returns its warning at every session start."
    )

    @classmethod
    def from_model(cls, plan: plan_records.TreatmentPlan) -> TreatmentPlanType:
        return cls(
            id=str(plan.id),
            formulation=plan.formulation,
            setting=plan.setting,
            dose=float(plan.dose),
            dose_unit=plan.dose_unit,
            sessions_per_week=plan.sessions_per_week,
            min_hours_between_sessions=plan.min_hours_between_sessions,
            planned_sessions=plan.planned_sessions,
            monitor_required=plan.monitor_required,
            blood_pressure_ceiling=BloodPressureType(
                systolic=plan.bp_ceiling_systolic, diastolic=plan.bp_ceiling_diastolic
            ),
            survey_schedule=[
                ScheduledSurveyType(
                    instrument=item.instrument,
                    offset_minutes=item.offset_minutes,
                    window_minutes=item.window_minutes,
                )
                for item in plan.schedule
            ],
            notes=plan.notes,
            status=plan.status,
            status_reason=plan.status_reason,
            status_changed_at=plan.status_changed_at,
            created_at=plan.created_at,
            concomitant_medications=[
                ConcomitantMedicationType(
                    medication_class=entry.medication_class,
                    source=entry.source,
                    reported_at=entry.reported_at,
                    note=entry.note,
                )
                for entry in plan.medications
            ],
        )

    @strawberry.field(description="Every status change, oldest first, with its reason.")
    async def status_history(self, info: Info[Context, None]) -> list[TreatmentPlanStatusChangeType]:
        history = await loader(info, "plan_histories", _histories).load(uuid.UUID(self.id))
        return [
            TreatmentPlanStatusChangeType(
                from_status=change.from_status,
                to_status=change.to_status,
                reason=change.reason,
                changed_at=change.changed_at,
                changed_by_system=change.changed_by_id is None,
            )
            for change in history or []
        ]


@strawberry.type(name="ChecklistAnswer")
class ChecklistAnswerType:
    code: str
    answer: bool


@strawberry.type(name="DosingSession")
class DosingSessionType(relay.Node):
    id: relay.NodeID[str]
    status: DosingSessionStatus  # type: ignore[valid-type]
    started_at: datetime
    ended_at: datetime | None
    dose_mg: float
    formulation: str
    lot_number: str | None
    monitor_name: str | None
    pre_dose_blood_pressure: BloodPressureType | None = strawberry.field(
        description="Null only for a dose taken offline without a reading (see failedChecks)."
    )
    post_dose_blood_pressure: BloodPressureType | None
    dissociation: int | None
    sedation: int | None
    back_to_baseline: bool | None
    ended_early: bool = strawberry.field(description="Completed before 2 hours, patient back to baseline.")
    notes: str
    duration_minutes: int | None
    checklist: list[ChecklistAnswerType]
    start_received_at: datetime | None = strawberry.field(
        description="When the server received the start (startedAt is the phone's time for a replayed one)."
    )
    completion_received_at: datetime | None = strawberry.field(
        description="When the server received the completion (endedAt is the phone's time)."
    )
    dosed_despite_failed_checks: bool = strawberry.field(
        default=False, description="A dose taken offline although pre-dose checks failed (CLINICAL.md section 2)."
    )
    failed_checks: list[FailedCheck] = strawberry.field(
        default_factory=list, description="The pre-dose checks a dose taken offline failed; empty otherwise."
    )
    setting: CareSetting = strawberry.field(  # type: ignore[valid-type]
        description="AT_HOME (logged by the patient) or CLINIC (recorded by a provider: recordClinicSession)."
    )
    at_forty_minutes_blood_pressure: BloodPressureType | None = strawberry.field(
        description="A clinic session's reading at about 40 minutes (REMS monitoring form)."
    )
    sedation_observed: bool | None = strawberry.field(description="Clinic sessions: sedation observed.")
    dissociation_observed: bool | None = strawberry.field(description="Clinic sessions: dissociation observed.")
    respiratory_depression: bool | None = strawberry.field(
        description="Clinic sessions: respiratory depression observed."
    )
    ready_to_leave_at: datetime | None = strawberry.field(
        description="Clinic sessions: when the patient was ready to leave."
    )
    recorded_by_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field(description="The provider who recorded a clinic session (null for one logged at home).")
    async def recorded_by(
        self, info: Info[Context, None]
    ) -> Annotated[ProviderType, strawberry.lazy("schema.accounts")] | None:
        from schema.accounts import ProviderType  # the accounts types import this module

        if self.recorded_by_id is None:
            return None
        provider = await loader(info, "session_recorders", clinic_sessions.recorders).load(self.recorded_by_id)
        return ProviderType.from_model(provider) if provider else None

    @classmethod
    def from_model(cls, session: dosing_records.DosingSession) -> DosingSessionType:
        duration = session.duration
        return cls(
            id=str(session.id),
            status=session.status,
            started_at=session.started_at,
            ended_at=session.ended_at,
            dose_mg=float(session.dose_mg),
            formulation=session.formulation,
            lot_number=session.lot_number,
            monitor_name=session.monitor_name,
            pre_dose_blood_pressure=_reading_type(
                session.pre_systolic,
                session.pre_diastolic,
                session.pre_measured_at,
                session.pre_heart_rate,
                session.pre_spo2,
            ),
            post_dose_blood_pressure=_reading_type(
                session.post_systolic,
                session.post_diastolic,
                session.post_measured_at,
                session.post_heart_rate,
                session.post_spo2,
            ),
            dissociation=session.dissociation,
            sedation=session.sedation,
            back_to_baseline=session.back_to_baseline,
            ended_early=session.ended_early,
            notes=session.notes,
            duration_minutes=int(duration.total_seconds() // 60) if duration else None,
            checklist=[ChecklistAnswerType(code=code, answer=answer) for code, answer in session.checklist.items()],
            start_received_at=session.start_received_at,
            completion_received_at=session.completion_received_at,
            dosed_despite_failed_checks=session.dosed_despite_failed_checks,
            failed_checks=[
                FailedCheck(code=check["code"], message=check["message"], item=check.get("item"))
                for check in session.failed_checks
            ],
            setting=plan_records.CareSetting(session.setting),
            at_forty_minutes_blood_pressure=_reading_type(
                session.mid_systolic,
                session.mid_diastolic,
                session.mid_measured_at,
                session.mid_heart_rate,
                session.mid_spo2,
            ),
            sedation_observed=session.sedation_observed,
            dissociation_observed=session.dissociation_observed,
            respiratory_depression=session.respiratory_depression,
            ready_to_leave_at=session.ready_to_leave_at,
            recorded_by_id=session.recorded_by_id,
        )


@strawberry.type(name="CheckIn")
class CheckInType(relay.Node):
    id: relay.NodeID[str]
    recorded_at: datetime
    received_at: datetime
    pain: int
    mood: int | None
    sleep: int | None
    note: str

    @classmethod
    def from_model(cls, check_in: checkins.CheckIn) -> CheckInType:
        return cls(
            id=str(check_in.id),
            recorded_at=check_in.recorded_at,
            received_at=check_in.received_at,
            pain=check_in.pain,
            mood=check_in.mood,
            sleep=check_in.sleep,
            note=check_in.note,
        )


@strawberry.type(name="SideEffectReport")
class SideEffectReportType(relay.Node):
    id: relay.NodeID[str]
    code: str
    label: str
    snomed_code: str | None
    grade: SideEffectGrade  # type: ignore[valid-type]
    onset_at: datetime
    resolved_at: datetime | None
    reported_at: datetime
    recorded_at: datetime | None = strawberry.field(
        description="When the patient reported it on the phone, if the app sent it (reportedAt: received)."
    )
    session_id: strawberry.ID | None
    note: str

    @classmethod
    def from_model(cls, report: side_effects.SideEffectReport) -> SideEffectReportType:
        entry = side_effects.CATALOGUE[report.code]
        session_id = report.session_id  # type: ignore[attr-defined]
        return cls(
            id=str(report.id),
            code=report.code,
            label=entry.label,
            snomed_code=entry.snomed,
            grade=report.grade,
            onset_at=report.onset_at,
            resolved_at=report.resolved_at,
            reported_at=report.reported_at,
            recorded_at=report.recorded_at,
            session_id=strawberry.ID(global_id("DosingSession", session_id)) if session_id else None,
            note=report.note,
        )


@strawberry.type(name="Alert")
class AlertType(relay.Node):
    id: relay.NodeID[str]
    kind: str
    severity: AlertSeverity  # type: ignore[valid-type]
    status: AlertStatus  # type: ignore[valid-type]
    summary: str
    source_type: str
    created_at: datetime
    respond_by: datetime
    acknowledged_at: datetime | None
    acknowledgement_note: str
    resolved_at: datetime | None
    resolution_note: str
    escalation_level: int
    patient_id: strawberry.Private[uuid.UUID]
    source_id: strawberry.Private[uuid.UUID | None] = None

    @classmethod
    def from_model(cls, alert: alert_ops.Alert) -> AlertType:
        return cls(
            id=str(alert.id),
            kind=alert.kind.value,
            severity=alert.severity,
            status=alert.status,
            summary=alert.summary,
            source_type=alert.source_type,
            created_at=alert.raised_at,
            respond_by=alert.respond_by,
            acknowledged_at=alert.acknowledged_at,
            acknowledgement_note=alert.acknowledgement_note,
            resolved_at=alert.resolved_at,
            resolution_note=alert.resolution_note,
            escalation_level=alert.escalation_level,
            patient_id=alert.patient_id,  # type: ignore[attr-defined]
            source_id=alert.source_id if alert.source_type == screening.SOURCE_TYPE else None,
        )

    @strawberry.field(
        description="For an alert raised by the safety screen (sourceType SafetyScreening): what the patient "
        "sent, kept even when the request was refused (CLINICAL.md section 0): the operation, its safety content, "
        "the record it became (recordType) or why it was refused (refusal)."
    )
    async def screened_content(self, info: Info[Context, None]) -> JSON | None:
        if self.source_id is None:
            return None
        found = await loader(info, "screenings", screening.screened_contents).load(self.source_id)
        return found  # type: ignore[return-value]

    @strawberry.field
    async def patient(
        self, info: Info[Context, None]
    ) -> Annotated[PatientType, strawberry.lazy("schema.accounts")] | None:
        from schema.accounts import PatientType  # the patient type carries this module's fields

        patient = await loader(info, "patients", directory.get_patients).load(self.patient_id)
        return PatientType.from_model(patient) if patient else None


async def _histories(viewer: Any, plan_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    return await plans.plan_histories(plan_ids)


# ------------------------------------------------------- patient fields


def cursor_time(raw: str) -> datetime:
    """A time inside a cursor: always with its offset (a forged naive one is refused)."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadUserInput("after is not a cursor this list issued") from None
    if moment.tzinfo is None:
        raise BadUserInput("after is not a cursor this list issued")
    return moment


def _before(info: Info[Context, None], kind: str, after: str | None) -> tuple[datetime, uuid.UUID] | None:
    if after is None:
        return None
    moment, raw_id = info.context.cursors.open(kind, after, 2)
    try:
        return cursor_time(moment), uuid.UUID(raw_id)
    except ValueError:
        raise BadUserInput("after is not a cursor this list issued") from None


async def patient_page(
    info: Info[Context, None],
    kind: str,
    moment: str,
    fetch: Callable[..., Awaitable[list[Any]]],
    convert: Callable[[Any], Any],
    patient_id: uuid.UUID,
    first: int | None,
    after: str | None,
) -> Connection[Any]:
    """One page of a patient's clinical list, newest first, or NOT_FOUND for viewers without access."""
    limit = page_size(first, info.context.max_page_size)
    try:
        rows = await fetch(viewer_of(info), patient_id, limit=limit + 1, before=_before(info, kind, after))
    except domain.NotFound as refusal:
        raise RecordNotFound(refusal.message) from refusal
    page = rows[:limit]
    return Connection[Any].build(
        [convert(row) for row in page],
        [info.context.cursors.at(kind, [getattr(row, moment).isoformat(), str(row.id)]) for row in page],
        has_next_page=len(rows) > limit,
        after=after,
    )


@strawberry.type
class PatientClinicalFields:
    """Clinical fields of `Patient`, resolved with the viewer's clinical access (models.identity.directory)."""

    if TYPE_CHECKING:
        id: str  # provided by `Patient` (schema.accounts), which this class is a base of

    @strawberry.field(description="The current plan (ACTIVE or ON_HOLD), else the latest one.")
    async def treatment_plan(self, info: Info[Context, None]) -> TreatmentPlanType | None:
        plan = await loader(info, "current_plans", plans.current_plans).load(uuid.UUID(str(self.id)))
        return TreatmentPlanType.from_model(plan) if plan else None

    @strawberry.field(description="Dosing sessions, newest first.")
    async def dosing_sessions(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[DosingSessionType] | None:
        patient_id = uuid.UUID(str(self.id))
        return await patient_page(
            info, "sessions", "started_at", dosing.list_sessions, DosingSessionType.from_model, patient_id, first, after
        )

    @strawberry.field(description="Check-ins, most recently recorded first.")
    async def check_ins(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[CheckInType] | None:
        patient_id = uuid.UUID(str(self.id))
        return await patient_page(
            info, "checkins", "recorded_at", checkins.list_check_ins, CheckInType.from_model, patient_id, first, after
        )

    @strawberry.field(description="Side-effect reports, most recent onset first.")
    async def side_effect_reports(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[SideEffectReportType] | None:
        patient_id = uuid.UUID(str(self.id))
        return await patient_page(
            info,
            "side_effects",
            "onset_at",
            side_effects.list_side_effects,
            SideEffectReportType.from_model,
            patient_id,
            first,
            after,
        )


# ------------------------------------------------------------- inputs

RECORDED_AT = (
    "When the patient did this on the phone, for writes sent late from an offline queue (by default at "
    "most 5 minutes ahead of the server and 30 days old). Without it, the server's time."
)


@strawberry.input
class BloodPressureInput:
    systolic: int
    diastolic: int
    measured_at: datetime | None = strawberry.field(
        default=None, description="When the reading was taken; required before dosing (CLINICAL.md section 2)."
    )
    heart_rate: int | None = strawberry.field(default=None, description="Beats per minute, if measured.")
    spo2: int | None = strawberry.field(default=None, description="Oxygen saturation (pulse oximeter), %, if measured.")


@strawberry.input
class ScheduledSurveyInput:
    instrument: str
    offset_minutes: int
    window_minutes: int


@strawberry.input
class ChecklistAnswerInput:
    code: str
    answer: bool


MEDICATIONS = (
    "The classes the patient takes, in full (CLINICAL.md §8): a class already on the plan keeps who reported it "
    "and when, a new one is entered by you, a class left out is taken off. Omit it to leave them as they are."
)


@strawberry.input
class CreateTreatmentPlanInput:
    patient_id: strawberry.ID
    formulation: Formulation  # type: ignore[valid-type]
    setting: CareSetting  # type: ignore[valid-type]
    dose: float = strawberry.field(description="mg (IM: mg/kg; IV: mg/kg per hour), within the formulation's limits.")
    planned_sessions: int
    sessions_per_week: int | None = None
    min_hours_between_sessions: int | None = None
    monitor_required: bool | None = None
    blood_pressure_ceiling: BloodPressureInput | None = None
    survey_schedule: list[ScheduledSurveyInput] | None = None
    structural_contraindications: list[str] = strawberry.field(
        default_factory=list,
        description="Recorded contraindications (CLINICAL.md section 2); any one refuses the plan: "
        + ", ".join(sorted(plans.STRUCTURAL_CONTRAINDICATIONS))
        + ".",
    )
    concomitant_medications: list[MedicationClass] | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description=MEDICATIONS
    )
    notes: str | None = None
    reason: str = "plan created"


@strawberry.input
class UpdateTreatmentPlanInput:
    plan_id: strawberry.ID
    setting: CareSetting | None = None  # type: ignore[valid-type]
    dose: float | None = None
    planned_sessions: int | None = None
    sessions_per_week: int | None = None
    min_hours_between_sessions: int | None = None
    monitor_required: bool | None = None
    blood_pressure_ceiling: BloodPressureInput | None = None
    survey_schedule: list[ScheduledSurveyInput] | None = None
    concomitant_medications: list[MedicationClass] | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description=MEDICATIONS
    )
    notes: str | None = None


@strawberry.input
class TreatmentPlanStatusInput:
    plan_id: strawberry.ID
    reason: str


@strawberry.input
class EndTreatmentPlanInput:
    plan_id: strawberry.ID
    status: PlanEnding
    reason: str


@strawberry.input
class StartDosingSessionInput:
    idempotency_key: str | None = None
    dose_mg: float
    monitor_present: bool
    monitor_name: str | None = None
    blood_pressure: BloodPressureInput | None = None
    checklist: list[ChecklistAnswerInput]
    lot_number: str | None = None
    recorded_at: datetime | None = strawberry.field(default=None, description=RECORDED_AT)


@strawberry.input
class CompleteDosingSessionInput:
    idempotency_key: str | None = None
    session_id: strawberry.ID
    ended_at: datetime | None = None
    blood_pressure: BloodPressureInput | None = None
    dissociation: int
    sedation: int
    back_to_baseline: bool
    notes: str = ""
    recorded_at: datetime | None = strawberry.field(default=None, description=RECORDED_AT)


@strawberry.input
class SubmitCheckInInput:
    idempotency_key: str | None = None
    recorded_at: datetime
    pain: int
    mood: int | None = None
    sleep: int | None = None
    note: str = ""


@strawberry.input
class ReportSideEffectInput:
    idempotency_key: str | None = None
    code: str
    grade: SideEffectGrade  # type: ignore[valid-type]
    onset_at: datetime
    session_id: strawberry.ID | None = None
    resolved_at: datetime | None = None
    note: str = ""
    recorded_at: datetime | None = strawberry.field(default=None, description=RECORDED_AT)


@strawberry.input
class ReportNewMedicationInput:
    idempotency_key: str | None = None
    medication_class: MedicationClass  # type: ignore[valid-type]
    note: str = strawberry.field(default="", description="The medicine's name or anything the care team should know.")


@strawberry.input
class VoidDosingSessionInput:
    session_id: strawberry.ID
    reason: str


@strawberry.input
class AlertActionInput:
    alert_id: strawberry.ID
    note: str | None = None


def _terms(data: CreateTreatmentPlanInput | UpdateTreatmentPlanInput) -> plans.PlanTerms:
    ceiling = data.blood_pressure_ceiling
    schedule = data.survey_schedule
    return plans.PlanTerms(
        formulation=getattr(data, "formulation", None),
        setting=data.setting,
        dose=decimal(data.dose, "dose") if data.dose is not None else None,
        sessions_per_week=data.sessions_per_week,
        min_hours_between_sessions=data.min_hours_between_sessions,
        planned_sessions=data.planned_sessions,
        monitor_required=data.monitor_required,
        bp_ceiling=DomainBloodPressure(ceiling.systolic, ceiling.diastolic) if ceiling else None,
        survey_schedule=(
            tuple(plan_records.ScheduledSurvey(s.instrument, s.offset_minutes, s.window_minutes) for s in schedule)
            if schedule is not None
            else None
        ),
        notes=data.notes,
        concomitant_medications=(
            tuple(data.concomitant_medications) if data.concomitant_medications is not None else None
        ),
    )


def _reading(
    value: BloodPressureInput | None, field_name: str, read: LenientInput
) -> dosing.BloodPressureReading | None:
    if value is None:
        return None
    return dosing.BloodPressureReading(
        value.systolic,
        value.diastolic,
        read.time(value.measured_at, f"{field_name}.measuredAt"),
        heart_rate=value.heart_rate,
        spo2=value.spo2,
    )


# ------------------------------------------------------------ payloads

PlanResult = Annotated[
    TreatmentPlanType | ValidationError | NotFound | Conflict, strawberry.union("TreatmentPlanResult")
]
StartResult = Annotated[
    DosingSessionType | SafetyCheckFailed | ValidationError | NotFound | Conflict | IdempotencyConflict,
    strawberry.union("StartDosingSessionResult"),
]
CompleteResult = Annotated[
    DosingSessionType | ValidationError | NotFound | Conflict | IdempotencyConflict,
    strawberry.union("CompleteDosingSessionResult"),
]
CheckInResult = Annotated[CheckInType | ValidationError | IdempotencyConflict, strawberry.union("SubmitCheckInResult")]
SideEffectResult = Annotated[
    SideEffectReportType | ValidationError | IdempotencyConflict, strawberry.union("ReportSideEffectResult")
]
AlertResult = Annotated[AlertType | ValidationError | NotFound | Conflict, strawberry.union("AlertResult")]


@strawberry.type
class TreatmentPlanPayload:
    result: PlanResult


@strawberry.type(name="InteractionWarning")
class InteractionWarningType:
    code: str = strawberry.field(description="e.g. OPIOID_WITHIN_4_HOURS")
    message: str


@strawberry.type
class StartDosingSessionPayload:
    result: StartResult
    safety_instructions: str | None = None
    crisis_resources: str | None = None
    warnings: list[InteractionWarningType] = strawberry.field(
        default_factory=list, description="CLINICAL.md §8 interactions to know before dosing (not refusals)."
    )


@strawberry.type
class CompleteDosingSessionPayload:
    result: CompleteResult
    safety_instructions: str | None = None
    crisis_resources: str | None = None


@strawberry.type
class SubmitCheckInPayload:
    result: CheckInResult
    safety_instructions: str | None = None
    crisis_resources: str | None = None


@strawberry.type
class ReportSideEffectPayload:
    result: SideEffectResult
    safety_instructions: str | None = None
    crisis_resources: str | None = None


@strawberry.type
class ReportNewMedicationPayload:
    result: Annotated[
        TreatmentPlanType | ValidationError | NotFound | IdempotencyConflict,
        strawberry.union("ReportNewMedicationResult"),
    ]
    safety_instructions: str | None = None
    crisis_resources: str | None = None


@strawberry.type
class AlertPayload:
    result: AlertResult


async def _plan_payload(call: Any) -> TreatmentPlanPayload:
    outcome = await attempt(call)
    if outcome.error is not None:
        return TreatmentPlanPayload(result=outcome.error)  # type: ignore[arg-type]
    assert outcome.value is not None
    return TreatmentPlanPayload(result=TreatmentPlanType.from_model(outcome.value))


# ------------------------------------------------------------ root fields

_ALERT_CURSOR = "alerts"


@strawberry.type
class ClinicalQuery:
    @strawberry.field(description="Your care teams' alerts, most urgent first (providers).")
    async def alerts(
        self,
        info: Info[Context, None],
        status: list[AlertStatus] | None = None,  # type: ignore[valid-type]
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AlertType]:
        from models.kernel import errors as domain
        from schema.errors import BadUserInput

        limit = page_size(first, info.context.max_page_size)
        position = None
        if after is not None:
            rank, respond, raw_id = info.context.cursors.open(_ALERT_CURSOR, after, 3)
            try:
                position = alert_ops.AlertCursor(int(rank), cursor_time(respond), uuid.UUID(raw_id))
            except ValueError:
                raise BadUserInput("after is not a cursor this list issued") from None
        try:
            rows = await alert_ops.list_alerts(viewer_of(info), statuses=status, limit=limit + 1, after=position)
        except domain.Forbidden as refusal:
            raise Forbidden(refusal.message) from refusal
        page = rows[:limit]
        return Connection[AlertType].build(
            [AlertType.from_model(alert) for alert in page],
            [
                info.context.cursors.at(_ALERT_CURSOR, [str(a.severity_rank), a.respond_by.isoformat(), str(a.id)])
                for a in page
            ],
            has_next_page=len(rows) > limit,
            after=after,
        )


@strawberry.type
class ClinicalMutation:
    @strawberry.mutation(description="Prescribe a plan for a patient of your care team (providers).")
    async def create_treatment_plan(
        self, info: Info[Context, None], input: CreateTreatmentPlanInput
    ) -> TreatmentPlanPayload:
        async def call() -> plan_records.TreatmentPlan:
            data = plans.NewPlan(
                patient_id=node_id(input.patient_id, "Patient", "patientId"),
                terms=_terms(input),
                structural_contraindications=tuple(input.structural_contraindications),
                reason=input.reason,
            )
            return await plans.create_treatment_plan(
                viewer_of(info), data, now=info.context.now(), policy=info.context.policy
            )

        return await _plan_payload(call)

    @strawberry.mutation(description="Change a current plan's terms (providers).")
    async def update_treatment_plan(
        self, info: Info[Context, None], input: UpdateTreatmentPlanInput
    ) -> TreatmentPlanPayload:
        async def call() -> plan_records.TreatmentPlan:
            plan_id = node_id(input.plan_id, "TreatmentPlan", "planId")
            return await plans.update_treatment_plan(
                viewer_of(info), plan_id, _terms(input), now=info.context.now(), policy=info.context.policy
            )

        return await _plan_payload(call)

    @strawberry.mutation(description="Put an active plan on hold: no session can start (providers).")
    async def hold_treatment_plan(
        self, info: Info[Context, None], input: TreatmentPlanStatusInput
    ) -> TreatmentPlanPayload:
        return await _plan_payload(
            lambda: _set_status(info, input.plan_id, plan_records.PlanStatus.ON_HOLD, input.reason)
        )

    @strawberry.mutation(description="Resume a plan on hold (providers).")
    async def resume_treatment_plan(
        self, info: Info[Context, None], input: TreatmentPlanStatusInput
    ) -> TreatmentPlanPayload:
        return await _plan_payload(
            lambda: _set_status(info, input.plan_id, plan_records.PlanStatus.ACTIVE, input.reason)
        )

    @strawberry.mutation(description="Complete or cancel a plan (providers).")
    async def end_treatment_plan(self, info: Info[Context, None], input: EndTreatmentPlanInput) -> TreatmentPlanPayload:
        status = plan_records.PlanStatus(input.status.value)
        return await _plan_payload(lambda: _set_status(info, input.plan_id, status, input.reason))

    @strawberry.mutation(description="Run the pre-dose safety checks and start a session (patients).")
    async def start_dosing_session(
        self, info: Info[Context, None], input: StartDosingSessionInput
    ) -> StartDosingSessionPayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            read = LenientInput()
            data = dosing.StartSession(
                dose_mg=decimal(input.dose_mg, "doseMg"),
                monitor_present=input.monitor_present,
                monitor_name=input.monitor_name,
                blood_pressure=_reading(input.blood_pressure, "bloodPressure", read),
                checklist=tuple((answer.code, answer.answer) for answer in input.checklist),
                lot_number=input.lot_number,
                recorded_at=read.time(input.recorded_at, "recordedAt"),
                idempotency_key=input.idempotency_key,
                problems=read.problems,
            )
            outcome = await dosing.start_dosing_session(
                viewer, data, now=info.context.now(), policy=info.context.policy
            )
            session = await dosing.get_session(viewer, outcome.resource_id)
            found = session.interaction_warnings
            warnings.extend(InteractionWarningType(code=w["code"], message=w["message"]) for w in found)
            return outcome, session

        warnings: list[InteractionWarningType] = []
        result, advice = await written(call, DosingSessionType.from_model)
        return StartDosingSessionPayload(result=result, warnings=warnings, **advice)

    @strawberry.mutation(description="Close a session: post-dose readings and ratings (patients).")
    async def complete_dosing_session(
        self, info: Info[Context, None], input: CompleteDosingSessionInput
    ) -> CompleteDosingSessionPayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            read = LenientInput()
            data = dosing.CompleteSession(
                session_id=read.id(input.session_id, "DosingSession", "sessionId"),
                back_to_baseline=input.back_to_baseline,
                dissociation=input.dissociation,
                sedation=input.sedation,
                ended_at=read.time(input.ended_at, "endedAt"),
                blood_pressure=_reading(input.blood_pressure, "bloodPressure", read),
                notes=input.notes,
                recorded_at=read.time(input.recorded_at, "recordedAt"),
                idempotency_key=input.idempotency_key,
                problems=read.problems,
            )
            outcome = await dosing.complete_dosing_session(
                viewer, data, now=info.context.now(), policy=info.context.policy
            )
            return outcome, await dosing.get_session(viewer, outcome.resource_id)

        result, advice = await written(call, DosingSessionType.from_model)
        return CompleteDosingSessionPayload(result=result, **advice)

    @strawberry.mutation(description="Daily check-in, also sent late from an offline phone (patients).")
    async def submit_check_in(self, info: Info[Context, None], input: SubmitCheckInInput) -> SubmitCheckInPayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            read = LenientInput()
            recorded_at = read.time(input.recorded_at, "recordedAt")
            assert recorded_at is not None
            data = checkins.NewCheckIn(
                recorded_at=recorded_at, pain=input.pain, mood=input.mood, sleep=input.sleep, note=input.note,
                idempotency_key=input.idempotency_key, problems=read.problems,
            )  # fmt: skip
            outcome = await checkins.submit_check_in(viewer, data, now=info.context.now(), policy=info.context.policy)
            return outcome, await checkins.get_check_in(viewer, outcome.resource_id)

        result, advice = await written(call, CheckInType.from_model)
        return SubmitCheckInPayload(result=result, **advice)

    @strawberry.mutation(description="Report a side effect; the payload says what to do now (patients).")
    async def report_side_effect(
        self, info: Info[Context, None], input: ReportSideEffectInput
    ) -> ReportSideEffectPayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            read = LenientInput()
            data = side_effects.NewSideEffect(
                code=input.code,
                grade=input.grade,
                onset_at=read.time(input.onset_at, "onsetAt"),
                session_id=read.id(input.session_id, "DosingSession", "sessionId"),
                resolved_at=read.time(input.resolved_at, "resolvedAt"),
                note=input.note,
                recorded_at=read.time(input.recorded_at, "recordedAt"),
                idempotency_key=input.idempotency_key,
                problems=read.problems,
            )
            outcome = await side_effects.report_side_effect(
                viewer, data, now=info.context.now(), policy=info.context.policy
            )
            return outcome, await side_effects.get_side_effect(viewer, outcome.resource_id)

        result, advice = await written(call, SideEffectReportType.from_model)
        return ReportSideEffectPayload(result=result, **advice)

    @strawberry.mutation(
        description="Tell the care team about a medication you started (patients): it joins your plan's "
        "concomitant medications and the team reviews it (CLINICAL.md section 8)."
    )
    async def report_new_medication(
        self, info: Info[Context, None], input: ReportNewMedicationInput
    ) -> ReportNewMedicationPayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            data = medications.NewMedication(
                medication_class=input.medication_class, note=input.note, idempotency_key=input.idempotency_key
            )
            outcome = await medications.report_new_medication(
                viewer, data, now=info.context.now(), policy=info.context.policy
            )
            return outcome, await plans.get_plan(viewer, outcome.resource_id)

        result, advice = await written(call, TreatmentPlanType.from_model)
        return ReportNewMedicationPayload(result=result, **advice)

    @strawberry.mutation(description="Mark a session entered in error; its open surveys are cancelled (providers).")
    async def void_dosing_session(
        self, info: Info[Context, None], input: VoidDosingSessionInput
    ) -> CompleteDosingSessionPayload:
        async def call() -> dosing_records.DosingSession:
            session_id = node_id(input.session_id, "DosingSession", "sessionId")
            return await dosing.void_dosing_session(viewer_of(info), session_id, input.reason, now=info.context.now())

        result = await attempt(call)
        if result.error is not None:
            return CompleteDosingSessionPayload(result=result.error)  # type: ignore[arg-type]
        assert result.value is not None
        return CompleteDosingSessionPayload(result=DosingSessionType.from_model(result.value))

    @strawberry.mutation(description="Take an alert (providers of the patient's care team).")
    async def acknowledge_alert(self, info: Info[Context, None], input: AlertActionInput) -> AlertPayload:
        return await _alert_payload(info, input, alert_ops.acknowledge_alert)

    @strawberry.mutation(description="Close an alert, saying how (providers of the patient's care team).")
    async def resolve_alert(self, info: Info[Context, None], input: AlertActionInput) -> AlertPayload:
        return await _alert_payload(info, input, alert_ops.resolve_alert)


async def _set_status(
    info: Info[Context, None], raw_plan_id: str, status: plan_records.PlanStatus, reason: str
) -> plan_records.TreatmentPlan:
    plan_id = node_id(raw_plan_id, "TreatmentPlan", "planId")
    return await plans.set_treatment_plan_status(viewer_of(info), plan_id, status, reason, now=info.context.now())


async def _alert_payload(info: Info[Context, None], input: AlertActionInput, operation: Any) -> AlertPayload:
    async def call() -> alert_ops.Alert:
        alert_id = node_id(input.alert_id, "Alert", "alertId")
        alert: alert_ops.Alert = await operation(viewer_of(info), alert_id, input.note, now=info.context.now())
        return alert

    result = await attempt(call)
    if result.error is not None:
        return AlertPayload(result=result.error)  # type: ignore[arg-type]
    assert result.value is not None
    return AlertPayload(result=AlertType.from_model(result.value))
