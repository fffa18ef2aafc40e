"""The dosing session's table and its status. Operations on sessions are `models.care.dosing`'; this module
imports none of them, so surveys, baselines and opioids can read sessions without importing them."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from tortoise import fields

from models.care.plan_records import TreatmentPlan
from models.identity.accounts import Patient
from models.kernel.base import Entity


class SessionStatus(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    ABANDONED = "ABANDONED"
    # A record made by mistake: kept (never deleted, CLINICAL.md §12), not counted, surveys cancelled.
    ENTERED_IN_ERROR = "ENTERED_IN_ERROR"


class DosingSession(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="dosing_sessions", on_delete=fields.RESTRICT
    )
    plan: fields.ForeignKeyRelation[TreatmentPlan] = fields.ForeignKeyField(
        "ketafollow.TreatmentPlan", related_name="dosing_sessions", on_delete=fields.RESTRICT
    )
    status = fields.CharEnumField(SessionStatus, max_length=16)
    formulation = fields.CharField(max_length=32)
    dose_mg = fields.DecimalField(max_digits=8, decimal_places=2)
    lot_number = fields.CharField(max_length=64, null=True)
    monitor_name = fields.CharField(max_length=100, null=True)
    checklist: dict[str, bool] = fields.JSONField()
    # The device's times (`recordedAt` from an offline phone) or, without them, the server's.
    started_at = fields.DatetimeField()
    # Null only on a dose taken offline without a reading (BP_MISSING among its failedChecks).
    pre_systolic = fields.IntField(null=True)
    pre_diastolic = fields.IntField(null=True)
    pre_measured_at = fields.DatetimeField(null=True)
    pre_heart_rate = fields.IntField(null=True)
    pre_spo2 = fields.IntField(null=True)
    # A clinic session's reading at about 40 minutes (REMS monitoring form, CLINICAL.md §1).
    mid_systolic = fields.IntField(null=True)
    mid_diastolic = fields.IntField(null=True)
    mid_heart_rate = fields.IntField(null=True)
    mid_spo2 = fields.IntField(null=True)
    mid_measured_at = fields.DatetimeField(null=True)
    ended_at = fields.DatetimeField(null=True)
    post_systolic = fields.IntField(null=True)
    post_diastolic = fields.IntField(null=True)
    post_measured_at = fields.DatetimeField(null=True)
    post_heart_rate = fields.IntField(null=True)
    post_spo2 = fields.IntField(null=True)
    dissociation = fields.IntField(null=True)
    sedation = fields.IntField(null=True)
    back_to_baseline = fields.BooleanField(null=True)
    ended_early = fields.BooleanField(default=False)
    notes = fields.TextField(default="")
    version = fields.IntField(default=1)
    # When the server received the start and the completion (null on sessions logged before
    # these were kept): a session replayed from an offline phone started before it was received.
    start_received_at = fields.DatetimeField(null=True)
    completion_received_at = fields.DatetimeField(null=True)
    # AT_HOME (logged by the patient) or CLINIC (recorded by a provider of the care team, who is
    # `recorded_by_id`, with the REMS form's observations: each yes/no).
    setting = fields.CharField(max_length=16, default="AT_HOME")
    recorded_by_id = fields.UUIDField(null=True)
    sedation_observed = fields.BooleanField(null=True)
    dissociation_observed = fields.BooleanField(null=True)
    respiratory_depression = fields.BooleanField(null=True)
    ready_to_leave_at = fields.DatetimeField(null=True)
    # CLINICAL.md §2: a dose taken offline is recorded even when its checks failed; they are kept here.
    dosed_despite_failed_checks = fields.BooleanField(default=False)
    failed_checks: list[dict[str, Any]] = fields.JSONField(default=list)
    # CLINICAL.md §8: the interaction warnings shown at the start, kept as the REMS form does.
    interaction_warnings: list[dict[str, Any]] = fields.JSONField(default=list)

    class Meta:
        table = "dosing_session"
        indexes = (("patient_id", "started_at"),)

    @property
    def duration(self) -> timedelta | None:
        return self.ended_at - self.started_at if self.ended_at else None
