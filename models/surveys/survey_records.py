"""The survey tables: assignments (what a patient is asked, when) and responses (what they answered).
Operations on surveys are in `models.surveys.assignments`, `delivery` and `responses`; this module
imports none of them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from tortoise import fields

from models.identity.accounts import Patient
from models.kernel.base import Entity


class AssignmentStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    AVAILABLE = "AVAILABLE"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


class SurveyAssignment(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="survey_assignments", on_delete=fields.RESTRICT
    )
    instrument = fields.CharField(max_length=32)
    session_id = fields.UUIDField(null=True, db_index=True)
    # Recurring surveys (weekly while the plan is active): one per patient, instrument and week.
    recurrence_key = fields.CharField(max_length=120, null=True, unique=True)
    status = fields.CharEnumField(AssignmentStatus, max_length=16, default=AssignmentStatus.SCHEDULED)
    available_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    notify_at = fields.DatetimeField()
    reminder_times: list[str] = fields.JSONField(default=list)
    reminders_sent = fields.IntField(default=0)
    next_reminder_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    response_id = fields.UUIDField(null=True)
    version = fields.IntField(default=1)

    class Meta:
        table = "survey_assignment"
        unique_together = (("session_id", "instrument"),)
        indexes = (("status", "available_at"), ("status", "expires_at"), ("status", "next_reminder_at"))


class SurveyResponse(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="survey_responses", on_delete=fields.RESTRICT
    )
    assignment_id = fields.UUIDField(null=True, unique=True)
    instrument = fields.CharField(max_length=32)
    instrument_version = fields.CharField(max_length=16)
    answers: dict[str, int] = fields.JSONField()
    total_score = fields.DecimalField(max_digits=6, decimal_places=1, null=True)
    severity = fields.CharField(max_length=32, null=True)
    submitted_at = fields.DatetimeField()
    # When the patient answered on the phone (sent by an app replaying its offline queue);
    # `submitted_at` is when the server received the answers.
    recorded_at = fields.DatetimeField(null=True)
    # CLINICAL.md §5: timing never discards an answer. An answer to an assignment that had expired
    # or was not open yet is kept as an unscheduled response of the instrument, LATE or EARLY,
    # naming the assignment it was meant for (which keeps its status).
    timing = fields.CharField(max_length=8, null=True)
    intended_assignment_id = fields.UUIDField(null=True)
    # The session a post-session check answers (also when the phone never had its assignment).
    session_id = fields.UUIDField(null=True)

    class Meta:
        table = "survey_response"
        indexes = (("patient_id", "instrument", "submitted_at"),)

    @property
    def answered_at(self) -> datetime:
        """When the patient gave the answers: the phone's time if it sent one, else the receipt."""
        return self.recorded_at or self.submitted_at
