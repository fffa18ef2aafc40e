"""Daily check-ins: pain (0-10 NRS), mood, sleep and a note, often sent late from an offline phone.

`recorded_at` is the device's time (when the patient answered), `received_at` the server's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from tortoise import fields
from tortoise.transactions import in_transaction

from models.identity.access import Viewer, clinical_record, require_clinical_access, require_patient_self
from models.identity.accounts import Patient
from models.kernel.audit import AuditAction
from models.kernel.base import Entity
from models.kernel.errors import Forbidden, InvalidInput, NotFound
from models.kernel.events import record_created
from models.kernel.idempotency import Outcome, answered_record, request_fields, run_once
from models.kernel.pages import newest_first
from models.kernel.policy import ClinicPolicy
from models.kernel.text import kept_note
from models.safety.rules import crisis_findings
from models.safety.screen import Submission, screened_write


class CheckIn(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="check_ins", on_delete=fields.RESTRICT
    )
    recorded_at = fields.DatetimeField()
    received_at = fields.DatetimeField()
    pain = fields.IntField()
    mood = fields.IntField(null=True)
    sleep = fields.IntField(null=True)
    note = fields.TextField(default="")

    class Meta:
        table = "check_in"
        indexes = (("patient_id", "recorded_at"),)


@dataclass(frozen=True)
class NewCheckIn:
    recorded_at: datetime
    pain: int
    mood: int | None = None
    sleep: int | None = None
    note: str = ""
    idempotency_key: str | None = None
    # Input the API could not read (a time without its offset): refused after the screen.
    problems: tuple[InvalidInput, ...] = ()


def check_in_problem(data: NewCheckIn, now: datetime, policy: ClinicPolicy) -> tuple[str, str] | None:
    """(field, why) for a check-in that cannot be right, or None. Scales are 0-10 (pain: NRS,
    0 no pain; mood and sleep quality: 0 worst, 10 best)."""
    for name, value in (("pain", data.pain), ("mood", data.mood), ("sleep", data.sleep)):
        if value is not None and not 0 <= value <= 10:
            return name, f"{name} must be between 0 and 10"
    if problem := policy.device_time_problem("recordedAt", data.recorded_at, now):
        return "recordedAt", problem
    try:
        kept_note(data.note)
    except InvalidInput as refused:
        return refused.field, refused.message
    return None


async def submit_check_in(viewer: Viewer, data: NewCheckIn, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """Store the patient's check-in. The note is screened first (CLINICAL.md §0, §7): crisis
    wording alerts the care team and returns crisis resources even when the check-in is refused."""
    refusal = Forbidden("check-ins are submitted by the patient")
    patient_id = require_patient_self(viewer, refusal, AuditAction.CREATE, "CheckIn")
    submission = Submission(
        "submitCheckIn", patient_id, {"note": data.note}, crisis_findings(data.note, "a check-in note", policy),
        idempotency_key=data.idempotency_key, recorded_at=None if data.problems else data.recorded_at,
    )  # fmt: skip
    return await screened_write(
        submission, lambda: _submit(viewer, patient_id, data, now=now, policy=policy), record_type="CheckIn",
        now=now, policy=policy,
    )  # fmt: skip


async def _submit(
    viewer: Viewer, patient_id: UUID, data: NewCheckIn, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    if data.problems:
        raise data.problems[0]
    if problem := check_in_problem(data, now, policy):
        raise InvalidInput(*problem)

    async def write() -> Outcome:
        async with in_transaction():
            check_in = await CheckIn.create(
                patient_id=patient_id,
                recorded_at=data.recorded_at,
                received_at=now,
                pain=data.pain,
                mood=data.mood,
                sleep=data.sleep,
                note=kept_note(data.note),
            )
            await record_created(viewer, "CheckIn", check_in.id, patient_id, now=now, returned=True)
        return Outcome(check_in.id, record=check_in)

    return await run_once(viewer, "submitCheckIn", data.idempotency_key, request_fields(data), write, now=now)


async def list_check_ins(
    viewer: Viewer, patient_id: UUID, *, limit: int, before: tuple[datetime, UUID] | None = None
) -> list[CheckIn]:
    """A patient's check-ins, most recently recorded first."""
    await require_clinical_access(viewer, patient_id, "CheckIn")
    return await newest_first(CheckIn, "recorded_at", limit=limit, before=before, patient_id=patient_id)


async def get_check_in(viewer: Viewer, check_in_id: UUID) -> CheckIn:
    return await clinical_record(viewer, CheckIn, check_in_id, NotFound("check-in"))


async def submitted_check_in(viewer: Viewer, outcome: Outcome) -> CheckIn:
    """The check-in `submit_check_in` answered with: as this request wrote it (its read audited
    with its creation), or, for a retry answered from the idempotency key, read by its id."""
    return await answered_record(outcome, CheckIn, lambda: get_check_in(viewer, outcome.resource_id))
