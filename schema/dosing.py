"""Dosing sessions in the API: `startDosingSession` with its pre-dose checks (CLINICAL.md §2) and
interaction warnings (§8), `completeDosingSession` (§3), `voidDosingSession`, a patient's sessions.

`DosingSession.recordedBy` is a `Provider` (schema.accounts), whose care teams list patients, whose
sessions are these: the type is named lazily and its class found through the schema, so this module
imports nothing that imports it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.care import clinic_sessions, dosing, dosing_records, plan_records, pre_dose
from models.kernel.idempotency import Outcome
from schema.context import Context
from schema.errors import (
    Conflict,
    FailedCheck,
    IdempotencyConflict,
    NotFound,
    SafetyCheckFailed,
    ValidationError,
)
from schema.ids import node_id, node_type
from schema.loaders import loader
from schema.mutations import RECORDED_AT, LenientInput, decimal, payload, written
from schema.pagination import Connection, each, newest_first, paginate
from schema.permissions import viewer_of
from schema.plans import BloodPressureInput, BloodPressureType, CareSetting

if TYPE_CHECKING:
    # schema.accounts' `ProviderType`, which Strawberry resolves there (strawberry.lazy below).
    ProviderType = Any

DosingSessionStatus = strawberry.enum(dosing_records.SessionStatus, name="DosingSessionStatus")


def _reading_type(
    systolic: int | None, diastolic: int | None, measured_at: datetime | None, heart_rate: int | None, spo2: int | None
) -> BloodPressureType | None:
    if systolic is None or diastolic is None:
        return None
    return BloodPressureType(
        systolic=systolic, diastolic=diastolic, measured_at=measured_at, heart_rate=heart_rate, spo2=spo2
    )


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
        if self.recorded_by_id is None:
            return None
        provider = await loader(info, "session_recorders", clinic_sessions.recorders).load(self.recorded_by_id)
        return node_type(info, "Provider").from_model(provider) if provider else None

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


_SESSIONS = newest_first("sessions", "started_at")


@strawberry.type
class PatientDosingFields:
    """The sessions field of `Patient` (schema.accounts composes it), with the viewer's clinical access."""

    if TYPE_CHECKING:
        id: str  # provided by `Patient`, which this class is a base of

    @strawberry.field(description="Dosing sessions, newest first.")
    async def dosing_sessions(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[DosingSessionType] | None:
        patient_id = uuid.UUID(str(self.id))

        async def fetch(limit: int, before: tuple[datetime, uuid.UUID] | None) -> list[dosing_records.DosingSession]:
            return await dosing.list_sessions(viewer_of(info), patient_id, limit=limit, before=before)

        return await paginate(info.context, _SESSIONS, first, after, fetch, each(DosingSessionType.from_model))


# ------------------------------------------------------------- inputs


@strawberry.input
class ChecklistAnswerInput:
    code: str
    answer: bool


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
class VoidDosingSessionInput:
    session_id: strawberry.ID
    reason: str


def _reading(
    value: BloodPressureInput | None, field_name: str, read: LenientInput
) -> pre_dose.BloodPressureReading | None:
    if value is None:
        return None
    return pre_dose.BloodPressureReading(
        value.systolic,
        value.diastolic,
        read.time(value.measured_at, f"{field_name}.measuredAt"),
        heart_rate=value.heart_rate,
        spo2=value.spo2,
    )


# ------------------------------------------------------------ payloads

StartResult = Annotated[
    DosingSessionType | SafetyCheckFailed | ValidationError | NotFound | Conflict | IdempotencyConflict,
    strawberry.union("StartDosingSessionResult"),
]
CompleteResult = Annotated[
    DosingSessionType | ValidationError | NotFound | Conflict | IdempotencyConflict,
    strawberry.union("CompleteDosingSessionResult"),
]


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


# ------------------------------------------------------------ root fields


@strawberry.type
class DosingMutation:
    @strawberry.mutation(description="Run the pre-dose safety checks and start a session (patients).")
    async def start_dosing_session(
        self, info: Info[Context, None], input: StartDosingSessionInput
    ) -> StartDosingSessionPayload:
        viewer = viewer_of(info)

        async def call() -> tuple[Outcome, dosing.StartedSession]:
            read = LenientInput()
            data = pre_dose.StartSession(
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
            started = await dosing.start_session_with_warnings(
                viewer, data, now=info.context.now(), policy=info.context.policy
            )
            return started.outcome, started

        result, advice = await written(call, lambda started: started)
        if not isinstance(result, dosing.StartedSession):
            return StartDosingSessionPayload(result=result, warnings=[], **advice)
        warnings = [InteractionWarningType(code=warning.code, message=warning.message) for warning in result.warnings]
        return StartDosingSessionPayload(
            result=DosingSessionType.from_model(result.session), warnings=warnings, **advice
        )

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


@strawberry.type
class VoidSessionMutation:
    """`voidDosingSession`, apart from `DosingMutation` only because the published schema lists it after
    the report mutations (schema.reports)."""

    @strawberry.mutation(description="Mark a session entered in error; its open surveys are cancelled (providers).")
    async def void_dosing_session(
        self, info: Info[Context, None], input: VoidDosingSessionInput
    ) -> CompleteDosingSessionPayload:
        async def call() -> dosing_records.DosingSession:
            session_id = node_id(input.session_id, "DosingSession", "sessionId")
            return await dosing.void_dosing_session(viewer_of(info), session_id, input.reason, now=info.context.now())

        return await payload(CompleteDosingSessionPayload, call, DosingSessionType.from_model)
