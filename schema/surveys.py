"""Surveys in the API: the instruments, a patient's assignments and responses, and answering."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.surveys import assignments, instruments, responses, survey_records
from schema.context import Context
from schema.errors import Conflict, IdempotencyConflict, NotFound, ValidationError
from schema.ids import global_id
from schema.mutations import LenientInput, written
from schema.pagination import Connection, each, newest_first, paginate
from schema.permissions import viewer_of

SurveyAssignmentStatus = strawberry.enum(survey_records.AssignmentStatus, name="SurveyAssignmentStatus")


@strawberry.type(name="InstrumentOption")
class InstrumentOptionType:
    value: int
    label: str


@strawberry.type(name="InstrumentItem")
class InstrumentItemType:
    link_id: str
    text: str
    loinc: str | None
    required: bool
    scored: bool
    options: list[InstrumentOptionType]


@strawberry.type(name="SeverityBand")
class SeverityBandType:
    name: str
    minimum: float
    maximum: float


@strawberry.type(name="Instrument")
class InstrumentType:
    code: str
    version: str
    title: str
    preamble: str
    source: str
    scoring: str = strawberry.field(description="sum, mean or none (item-level rules only).")
    loinc: str | None = strawberry.field(description="LOINC code of the total score, where one exists.")
    items: list[InstrumentItemType]
    bands: list[SeverityBandType]
    on_demand: bool = strawberry.field(description="May be taken at any time, without an assignment.")

    @classmethod
    def from_definition(cls, definition: instruments.InstrumentDefinition) -> InstrumentType:
        return cls(
            code=definition.code,
            version=definition.version,
            title=definition.title,
            preamble=definition.preamble,
            source=definition.source,
            scoring=definition.method,
            loinc=definition.loinc_total,
            items=[
                InstrumentItemType(
                    link_id=item.link_id,
                    text=item.text,
                    loinc=item.loinc,
                    required=item.required,
                    scored=item.scored,
                    options=[InstrumentOptionType(value=option.value, label=option.label) for option in item.options],
                )
                for item in definition.items
            ],
            bands=[
                SeverityBandType(name=b.name, minimum=float(b.minimum), maximum=float(b.maximum))
                for b in definition.bands
            ],
            on_demand=definition.code in instruments.ON_DEMAND,
        )


@strawberry.type(name="SurveyAssignment")
class SurveyAssignmentType(relay.Node):
    id: relay.NodeID[str]
    instrument: str
    status: SurveyAssignmentStatus  # type: ignore[valid-type]
    available_at: datetime
    expires_at: datetime
    completed_at: datetime | None
    session_id: strawberry.ID | None
    response_id: strawberry.ID | None

    @classmethod
    def from_model(cls, assignment: survey_records.SurveyAssignment) -> SurveyAssignmentType:
        return cls(
            id=str(assignment.id),
            instrument=assignment.instrument,
            status=assignment.status,
            available_at=assignment.available_at,
            expires_at=assignment.expires_at,
            completed_at=assignment.completed_at,
            session_id=strawberry.ID(global_id("DosingSession", assignment.session_id))
            if assignment.session_id
            else None,
            response_id=(
                strawberry.ID(global_id("SurveyResponse", assignment.response_id)) if assignment.response_id else None
            ),
        )


@strawberry.type(name="SurveyAnswer")
class SurveyAnswerType:
    link_id: str
    value: int


@strawberry.type(name="SurveyResponse")
class SurveyResponseType(relay.Node):
    id: relay.NodeID[str]
    instrument: str
    instrument_version: str
    total_score: float | None
    severity: str | None = strawberry.field(description="The band's name (CLINICAL.md §5), e.g. MODERATELY_SEVERE.")
    submitted_at: datetime
    recorded_at: datetime | None = strawberry.field(
        description="When the patient answered on the phone, if the app sent it (submittedAt: received)."
    )
    assignment_id: strawberry.ID | None
    answers: list[SurveyAnswerType]
    timing: str | None = strawberry.field(
        default=None,
        description="LATE or EARLY: an unscheduled response to an assignment that had expired or was not open yet "
        "(CLINICAL.md section 5); null when it answered its assignment or was taken at any time.",
    )
    intended_assignment_id: strawberry.ID | None = strawberry.field(
        default=None, description="The assignment a LATE or EARLY response was meant for (it keeps its status)."
    )
    session_id: strawberry.ID | None = strawberry.field(
        default=None, description="The dosing session a post-session check answers."
    )

    @classmethod
    def from_model(cls, response: survey_records.SurveyResponse) -> SurveyResponseType:
        return cls(
            id=str(response.id),
            instrument=response.instrument,
            instrument_version=response.instrument_version,
            total_score=float(response.total_score) if response.total_score is not None else None,
            severity=response.severity,
            submitted_at=response.submitted_at,
            recorded_at=response.recorded_at,
            assignment_id=(
                strawberry.ID(global_id("SurveyAssignment", response.assignment_id)) if response.assignment_id else None
            ),
            answers=[SurveyAnswerType(link_id=key, value=value) for key, value in response.answers.items()],
            timing=response.timing,
            intended_assignment_id=(
                strawberry.ID(global_id("SurveyAssignment", response.intended_assignment_id))
                if response.intended_assignment_id
                else None
            ),
            session_id=strawberry.ID(global_id("DosingSession", response.session_id)) if response.session_id else None,
        )


_ASSIGNMENTS = newest_first("assignments", "available_at")
_RESPONSES = newest_first("responses", "submitted_at")


@strawberry.type
class PatientSurveyFields:
    """Survey fields of `Patient` (schema.accounts composes them)."""

    if TYPE_CHECKING:
        id: str

    @strawberry.field(description="Surveys assigned to the patient, latest opening first.")
    async def survey_assignments(
        self,
        info: Info[Context, None],
        status: list[SurveyAssignmentStatus] | None = None,  # type: ignore[valid-type]
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[SurveyAssignmentType] | None:
        patient_id = uuid.UUID(str(self.id))

        async def fetch(limit: int, before: tuple[datetime, uuid.UUID] | None) -> list[survey_records.SurveyAssignment]:
            return await assignments.list_assignments(
                viewer_of(info), patient_id, statuses=status, limit=limit, before=before
            )

        return await paginate(info.context, _ASSIGNMENTS, first, after, fetch, each(SurveyAssignmentType.from_model))

    @strawberry.field(description="Scored survey responses, newest first.")
    async def survey_responses(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[SurveyResponseType] | None:
        patient_id = uuid.UUID(str(self.id))

        async def fetch(limit: int, before: tuple[datetime, uuid.UUID] | None) -> list[survey_records.SurveyResponse]:
            return await responses.list_responses(viewer_of(info), patient_id, limit=limit, before=before)

        return await paginate(info.context, _RESPONSES, first, after, fetch, each(SurveyResponseType.from_model))


@strawberry.input
class SurveyAnswerInput:
    link_id: str
    value: int


@strawberry.input
class SubmitSurveyResponseInput:
    idempotency_key: str | None = None
    assignment_id: strawberry.ID | None = None
    instrument: str | None = strawberry.field(
        default=None, description="PHQ-9, GAD-7, PAIN-NRS or PEG-3 taken without an assignment."
    )
    answers: list[SurveyAnswerInput]
    session_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The post-session check of this dosing session, when the phone never received its assignment "
        "(a session recorded offline).",
    )
    recorded_at: datetime | None = strawberry.field(
        default=None,
        description="When the patient answered on the phone, for answers sent late from an offline queue: an "
        "assigned survey counts when this is inside its window, even after it expired. At most 5 minutes ahead "
        "of the server and 30 days old by default.",
    )


SubmitResult = Annotated[
    SurveyResponseType | ValidationError | NotFound | Conflict | IdempotencyConflict,
    strawberry.union("SubmitSurveyResponseResult"),
]


@strawberry.type
class SubmitSurveyResponsePayload:
    result: SubmitResult
    safety_instructions: str | None = None
    crisis_resources: str | None = None


@strawberry.type
class SurveyQuery:
    @strawberry.field(description="The survey instruments, latest version of each.")
    async def instruments(self, info: Info[Context, None]) -> list[InstrumentType]:
        viewer_of(info)
        definitions = await instruments.current_definitions()
        return [InstrumentType.from_definition(definitions[code]) for code in sorted(definitions)]


@strawberry.type
class SurveyMutation:
    @strawberry.mutation(description="Answer an assigned survey, or take PHQ-9, GAD-7, PAIN-NRS or PEG-3 (patients).")
    async def submit_survey_response(
        self, info: Info[Context, None], input: SubmitSurveyResponseInput
    ) -> SubmitSurveyResponsePayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            read = LenientInput()
            data = responses.NewResponse(
                answers=tuple((answer.link_id, answer.value) for answer in input.answers),
                assignment_id=read.id(input.assignment_id, "SurveyAssignment", "assignmentId"),
                instrument=input.instrument,
                recorded_at=read.time(input.recorded_at, "recordedAt"),
                idempotency_key=input.idempotency_key,
                session_id=read.id(input.session_id, "DosingSession", "sessionId"),
                problems=read.problems,
            )
            outcome = await responses.submit_survey_response(
                viewer, data, now=info.context.now(), policy=info.context.policy
            )
            return outcome, await responses.submitted_response(viewer, outcome)

        result, advice = await written(call, SurveyResponseType.from_model)
        return SubmitSurveyResponsePayload(result=result, **advice)
