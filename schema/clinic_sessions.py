"""Clinic sessions in the API (PRODUCT.md capability 12): `recordClinicSession`, a provider's
record of a dose given in clinic with the REMS monitoring form's fields (CLINICAL.md §1)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from models.care import clinic_sessions, dosing
from models.safety.rules import Phase
from schema.context import Context
from schema.dosing import DosingSessionType
from schema.errors import Conflict, IdempotencyConflict, NotFound, ValidationError
from schema.ids import node_id
from schema.mutations import decimal, written
from schema.permissions import viewer_of

ReadingPhase = strawberry.enum(
    Phase, name="ReadingPhase", description="Before dosing, at about 40 minutes, or at the end of monitoring."
)


@strawberry.input
class ClinicReadingInput:
    phase: ReadingPhase  # type: ignore[valid-type]
    systolic: int
    diastolic: int
    heart_rate: int | None = strawberry.field(default=None, description="Beats per minute, if measured.")
    spo2: int | None = strawberry.field(default=None, description="Oxygen saturation (pulse oximeter), %, if measured.")
    measured_at: datetime = strawberry.field(
        description="PRE: before startedAt, within the pre-dose window (default 30 minutes); the others between "
        "startedAt and endedAt."
    )


@strawberry.input
class RecordClinicSessionInput:
    idempotency_key: str | None = None
    patient_id: strawberry.ID
    dose_mg: float = strawberry.field(
        description="The total given, in mg (also for weight-based IM and IV plans), within the plan's limits."
    )
    lot_number: str | None = None
    started_at: datetime
    ended_at: datetime
    monitored_by: str = strawberry.field(description="Who monitored the patient.")
    readings: list[ClinicReadingInput] = strawberry.field(description="One per phase; PRE is required.")
    sedation: bool = strawberry.field(description="Sedation observed.")
    dissociation: bool = strawberry.field(description="Dissociation observed.")
    respiratory_depression: bool = strawberry.field(description="Respiratory depression observed (URGENT alert).")
    ready_to_leave_at: datetime | None = strawberry.field(
        default=None,
        description="When the patient was ready to leave; without it the patient was not back to baseline "
        "(HIGH alert, post-session check due at once).",
    )
    notes: str = ""


RecordClinicSessionResult = Annotated[
    DosingSessionType | ValidationError | NotFound | Conflict | IdempotencyConflict,
    strawberry.union("RecordClinicSessionResult"),
]


@strawberry.type
class RecordClinicSessionPayload:
    result: RecordClinicSessionResult
    safety_instructions: str | None = None
    crisis_resources: str | None = None


def _form(input: RecordClinicSessionInput) -> clinic_sessions.ClinicSession:
    return clinic_sessions.ClinicSession(
        patient_id=node_id(input.patient_id, "Patient", "patientId"),
        dose_mg=decimal(input.dose_mg, "doseMg"),
        started_at=input.started_at,
        ended_at=input.ended_at,
        monitored_by=input.monitored_by,
        readings=tuple(
            clinic_sessions.ClinicReading(
                phase=reading.phase,
                systolic=reading.systolic,
                diastolic=reading.diastolic,
                measured_at=reading.measured_at,
                heart_rate=reading.heart_rate,
                spo2=reading.spo2,
            )
            for reading in input.readings
        ),
        sedation=input.sedation,
        dissociation=input.dissociation,
        respiratory_depression=input.respiratory_depression,
        ready_to_leave_at=input.ready_to_leave_at,
        lot_number=input.lot_number,
        notes=input.notes,
        idempotency_key=input.idempotency_key,
    )


@strawberry.type
class ClinicSessionMutation:
    @strawberry.mutation(
        description="Record a session given in clinic, with the REMS monitoring form (providers of the patient's "
        "care team); it follows the at-home session's alerts and follow-up schedule."
    )
    async def record_clinic_session(
        self, info: Info[Context, None], input: RecordClinicSessionInput
    ) -> RecordClinicSessionPayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            outcome = await clinic_sessions.record_clinic_session(
                viewer, _form(input), now=info.context.now(), policy=info.context.policy
            )
            return outcome, await dosing.get_session(viewer, outcome.resource_id)

        result, advice = await written(call, DosingSessionType.from_model)
        return RecordClinicSessionPayload(result=result, **advice)
