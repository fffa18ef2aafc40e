"""Treatment plans in the API: the plan a provider prescribes (CLINICAL.md §1, its contraindications
§2, its concomitant medications §8), its status changes, and a patient's current plan.

The blood-pressure reading types live here too: a plan's ceiling is one, and schema.dosing reuses them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.care import plan_records, plan_rules, plans
from models.kernel.policy import BloodPressure as DomainBloodPressure
from schema.context import Context
from schema.errors import Conflict, NotFound, ValidationError
from schema.ids import node_id
from schema.loaders import loader
from schema.mutations import decimal, payload
from schema.permissions import viewer_of

Formulation = strawberry.enum(plan_records.Formulation, name="Formulation")
CareSetting = strawberry.enum(plan_records.CareSetting, name="CareSetting")
DoseUnit = strawberry.enum(plan_records.DoseUnit, name="DoseUnit")
TreatmentPlanStatus = strawberry.enum(plan_records.PlanStatus, name="TreatmentPlanStatus")
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


@strawberry.type(name="BloodPressure")
class BloodPressureType:
    systolic: int
    diastolic: int
    measured_at: datetime | None = None
    heart_rate: int | None = strawberry.field(default=None, description="Beats per minute, if measured.")
    spo2: int | None = strawberry.field(default=None, description="Oxygen saturation (pulse oximeter), %, if measured.")


@strawberry.input
class BloodPressureInput:
    systolic: int
    diastolic: int
    measured_at: datetime | None = strawberry.field(
        default=None, description="When the reading was taken; required before dosing (CLINICAL.md section 2)."
    )
    heart_rate: int | None = strawberry.field(default=None, description="Beats per minute, if measured.")
    spo2: int | None = strawberry.field(default=None, description="Oxygen saturation (pulse oximeter), %, if measured.")


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


async def _histories(viewer: Any, plan_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    return await plans.plan_histories(plan_ids)


@strawberry.type
class PatientPlanFields:
    """The plan field of `Patient` (schema.accounts composes it), with the viewer's clinical access."""

    if TYPE_CHECKING:
        id: str  # provided by `Patient`, which this class is a base of

    @strawberry.field(description="The current plan (ACTIVE or ON_HOLD), else the latest one.")
    async def treatment_plan(self, info: Info[Context, None]) -> TreatmentPlanType | None:
        plan = await loader(info, "current_plans", plans.current_plans).load(uuid.UUID(str(self.id)))
        return TreatmentPlanType.from_model(plan) if plan else None


# ------------------------------------------------------------- inputs


@strawberry.input
class ScheduledSurveyInput:
    instrument: str
    offset_minutes: int
    window_minutes: int


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
        + ", ".join(sorted(plan_rules.STRUCTURAL_CONTRAINDICATIONS))
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


# ------------------------------------------------------------ payloads

PlanResult = Annotated[
    TreatmentPlanType | ValidationError | NotFound | Conflict, strawberry.union("TreatmentPlanResult")
]


@strawberry.type
class TreatmentPlanPayload:
    result: PlanResult


# ------------------------------------------------------------ root fields


@strawberry.type
class PlanMutation:
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

        return await payload(TreatmentPlanPayload, call, TreatmentPlanType.from_model)

    @strawberry.mutation(description="Change a current plan's terms (providers).")
    async def update_treatment_plan(
        self, info: Info[Context, None], input: UpdateTreatmentPlanInput
    ) -> TreatmentPlanPayload:
        async def call() -> plan_records.TreatmentPlan:
            plan_id = node_id(input.plan_id, "TreatmentPlan", "planId")
            return await plans.update_treatment_plan(
                viewer_of(info), plan_id, _terms(input), now=info.context.now(), policy=info.context.policy
            )

        return await payload(TreatmentPlanPayload, call, TreatmentPlanType.from_model)

    @strawberry.mutation(description="Put an active plan on hold: no session can start (providers).")
    async def hold_treatment_plan(
        self, info: Info[Context, None], input: TreatmentPlanStatusInput
    ) -> TreatmentPlanPayload:
        return await _set_status(info, input.plan_id, plan_records.PlanStatus.ON_HOLD, input.reason)

    @strawberry.mutation(description="Resume a plan on hold (providers).")
    async def resume_treatment_plan(
        self, info: Info[Context, None], input: TreatmentPlanStatusInput
    ) -> TreatmentPlanPayload:
        return await _set_status(info, input.plan_id, plan_records.PlanStatus.ACTIVE, input.reason)

    @strawberry.mutation(description="Complete or cancel a plan (providers).")
    async def end_treatment_plan(self, info: Info[Context, None], input: EndTreatmentPlanInput) -> TreatmentPlanPayload:
        status = plan_records.PlanStatus(input.status.value)
        return await _set_status(info, input.plan_id, status, input.reason)


async def _set_status(
    info: Info[Context, None], raw_plan_id: str, status: plan_records.PlanStatus, reason: str
) -> TreatmentPlanPayload:
    async def call() -> plan_records.TreatmentPlan:
        plan_id = node_id(raw_plan_id, "TreatmentPlan", "planId")
        return await plans.set_treatment_plan_status(viewer_of(info), plan_id, status, reason, now=info.context.now())

    return await payload(TreatmentPlanPayload, call, TreatmentPlanType.from_model)
