"""What the safety screen keeps: the safety content of a patient's request, as it was sent.

A screening is the source of the alerts it raised (CLINICAL.md §0: the safety content is kept as
the alert's source even when the record itself is not stored). When the write is accepted the
screening names the record it became; when it is refused it says why.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields

from models.identity.accounts import Patient
from models.kernel.base import Entity


class SafetyScreening(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="safety_screenings", on_delete=fields.RESTRICT
    )
    # The patient-side operation (e.g. startDosingSession) and the content it screened.
    operation = fields.CharField(max_length=64)
    content: dict[str, Any] = fields.JSONField()
    screened_at = fields.DatetimeField()
    # The phone's time, for a request replayed from an offline queue.
    recorded_at = fields.DatetimeField(null=True)
    advice: dict[str, Any] = fields.JSONField(default=dict)
    record_type = fields.CharField(max_length=64, null=True)
    record_id = fields.UUIDField(null=True)
    refusal = fields.CharField(max_length=500, null=True)

    class Meta:
        table = "safety_screening"
        indexes = (("patient_id", "screened_at"),)
