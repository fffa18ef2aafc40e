"""What a patient reports between sessions, in the API: daily check-ins (CLINICAL.md §4), side
effects (§6), a new medication (§8); each screened before it is refused (§0), each with its advice.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.care import medications, plans
from models.reports import checkins, side_effects
from schema.context import Context
from schema.errors import IdempotencyConflict, NotFound, ValidationError
from schema.ids import global_id
from schema.mutations import RECORDED_AT, LenientInput, written
from schema.pagination import Connection, each, newest_first, paginate
from schema.permissions import viewer_of
from schema.plans import MedicationClass, TreatmentPlanType

SideEffectGrade = strawberry.enum(side_effects.Grade, name="SideEffectGrade")


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


_CHECK_INS = newest_first("checkins", "recorded_at")
_SIDE_EFFECTS = newest_first("side_effects", "onset_at")


@strawberry.type
class PatientReportFields:
    """The report fields of `Patient` (schema.accounts composes them), with the viewer's clinical access."""

    if TYPE_CHECKING:
        id: str  # provided by `Patient`, which this class is a base of

    @strawberry.field(description="Check-ins, most recently recorded first.")
    async def check_ins(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[CheckInType] | None:
        patient_id = uuid.UUID(str(self.id))

        async def fetch(limit: int, before: tuple[datetime, uuid.UUID] | None) -> list[checkins.CheckIn]:
            return await checkins.list_check_ins(viewer_of(info), patient_id, limit=limit, before=before)

        return await paginate(info.context, _CHECK_INS, first, after, fetch, each(CheckInType.from_model))

    @strawberry.field(description="Side-effect reports, most recent onset first.")
    async def side_effect_reports(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[SideEffectReportType] | None:
        patient_id = uuid.UUID(str(self.id))

        async def fetch(limit: int, before: tuple[datetime, uuid.UUID] | None) -> list[side_effects.SideEffectReport]:
            return await side_effects.list_side_effects(viewer_of(info), patient_id, limit=limit, before=before)

        return await paginate(info.context, _SIDE_EFFECTS, first, after, fetch, each(SideEffectReportType.from_model))


# ------------------------------------------------------------- inputs


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


# ------------------------------------------------------------ payloads

CheckInResult = Annotated[CheckInType | ValidationError | IdempotencyConflict, strawberry.union("SubmitCheckInResult")]
SideEffectResult = Annotated[
    SideEffectReportType | ValidationError | IdempotencyConflict, strawberry.union("ReportSideEffectResult")
]


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


# ------------------------------------------------------------ root fields


@strawberry.type
class ReportMutation:
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
            return outcome, await checkins.submitted_check_in(viewer, outcome)

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
