"""The treatment plan's tables and the values they hold: the plan, its status history, its settings,
its survey schedule and its concomitant medications. Operations on plans are `models.care.plans`'; this
module imports none of them, so every care area can read plans without importing their operations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tortoise import fields

from models.identity.accounts import Patient, Provider
from models.kernel.base import Entity
from models.kernel.policy import BloodPressure


class Formulation(StrEnum):
    SUBLINGUAL_TABLET = "SUBLINGUAL_TABLET"
    ORAL = "ORAL"
    INTRANASAL_KETAMINE = "INTRANASAL_KETAMINE"
    INTRANASAL_ESKETAMINE = "INTRANASAL_ESKETAMINE"
    INTRAMUSCULAR = "INTRAMUSCULAR"
    INTRAVENOUS = "INTRAVENOUS"


class CareSetting(StrEnum):
    AT_HOME = "AT_HOME"
    CLINIC = "CLINIC"


class DoseUnit(StrEnum):
    MG = "MG"
    MG_PER_KG = "MG_PER_KG"
    MG_PER_KG_PER_HOUR = "MG_PER_KG_PER_HOUR"


class PlanStatus(StrEnum):
    ACTIVE = "ACTIVE"
    ON_HOLD = "ON_HOLD"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


CURRENT_STATUSES = (PlanStatus.ACTIVE, PlanStatus.ON_HOLD)


class MedicationClass(StrEnum):
    """CLINICAL.md §8: the classes of concomitant medication a plan records (the REMS form's
    first four, then ours); their warnings are `models.care.medications`'."""

    BENZODIAZEPINE = "BENZODIAZEPINE"
    NON_BENZODIAZEPINE_HYPNOTIC = "NON_BENZODIAZEPINE_HYPNOTIC"
    PSYCHOSTIMULANT = "PSYCHOSTIMULANT"
    MAOI = "MAOI"
    OPIOID = "OPIOID"
    LAMOTRIGINE = "LAMOTRIGINE"
    MEMANTINE = "MEMANTINE"
    THEOPHYLLINE = "THEOPHYLLINE"  # or aminophylline
    OTHER_SEDATIVE = "OTHER_SEDATIVE"


class MedicationSource(StrEnum):
    PROVIDER = "PROVIDER"
    PATIENT = "PATIENT"


@dataclass(frozen=True)
class ConcomitantMedication:
    """One class of medication the patient takes, who put it on the plan and when."""

    medication_class: MedicationClass
    source: MedicationSource
    reported_at: datetime
    note: str | None = None

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> ConcomitantMedication:
        return cls(
            MedicationClass(entry["class"]),
            MedicationSource(entry["source"]),
            datetime.fromisoformat(entry["reportedAt"]),
            entry.get("note"),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "class": self.medication_class.value,
            "source": self.source.value,
            "reportedAt": self.reported_at.isoformat(),
            "note": self.note,
        }


@dataclass(frozen=True)
class ScheduledSurvey:
    """One follow-up survey: `offset_minutes` after the session ends, open for `window_minutes`."""

    instrument: str
    offset_minutes: int
    window_minutes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "offsetMinutes": self.offset_minutes,
            "windowMinutes": self.window_minutes,
        }


class TreatmentPlan(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="treatment_plans", on_delete=fields.RESTRICT
    )
    prescriber: fields.ForeignKeyRelation[Provider] = fields.ForeignKeyField(
        "ketafollow.Provider", related_name="treatment_plans", on_delete=fields.RESTRICT
    )
    formulation = fields.CharEnumField(Formulation, max_length=32)
    setting = fields.CharEnumField(CareSetting, max_length=16)
    dose = fields.DecimalField(max_digits=8, decimal_places=2)
    dose_unit = fields.CharEnumField(DoseUnit, max_length=24)
    sessions_per_week = fields.IntField()
    min_hours_between_sessions = fields.IntField()
    planned_sessions = fields.IntField()
    monitor_required = fields.BooleanField(default=True)
    bp_ceiling_systolic = fields.IntField()
    bp_ceiling_diastolic = fields.IntField()
    survey_schedule: list[dict[str, Any]] = fields.JSONField()
    notes = fields.TextField(default="")
    status = fields.CharEnumField(PlanStatus, max_length=16)
    status_reason = fields.CharField(max_length=500, default="")
    status_changed_at = fields.DatetimeField()
    version = fields.IntField(default=1)
    # CLINICAL.md §8: concomitant medications by class, entered by the provider or reported by the
    # patient: [{"class": code, "source": "PROVIDER" | "PATIENT", "reportedAt": iso time, "note": text}].
    concomitant_medications: list[dict[str, Any]] = fields.JSONField(default=list)

    class Meta:
        table = "treatment_plan"

    @property
    def bp_ceiling(self) -> BloodPressure:
        return BloodPressure(self.bp_ceiling_systolic, self.bp_ceiling_diastolic)

    @property
    def schedule(self) -> tuple[ScheduledSurvey, ...]:
        return tuple(
            ScheduledSurvey(item["instrument"], item["offsetMinutes"], item["windowMinutes"])
            for item in self.survey_schedule
        )

    @property
    def medications(self) -> list[ConcomitantMedication]:
        return [ConcomitantMedication.from_json(entry) for entry in self.concomitant_medications]


class TreatmentPlanStatusChange(Entity):
    plan: fields.ForeignKeyRelation[TreatmentPlan] = fields.ForeignKeyField(
        "ketafollow.TreatmentPlan", related_name="status_history", on_delete=fields.RESTRICT
    )
    from_status = fields.CharEnumField(PlanStatus, max_length=16, null=True)
    to_status = fields.CharEnumField(PlanStatus, max_length=16)
    reason = fields.CharField(max_length=500)
    changed_by_id = fields.UUIDField(null=True)
    changed_at = fields.DatetimeField()

    class Meta:
        table = "treatment_plan_status_change"
