"""The safety screen (CLINICAL.md §0): screen first, refuse second.

Every patient-side write starts with `screen(...)`, before its input is validated, its timing,
plan state and idempotency key are checked. The screen raises the alerts the request's safety
content calls for, in a transaction of its own, and runs the safety actions that go with them (an
automatic hold, a post-session check due at once); `Screened.guard` then runs the write and gives
the screen's advice to the patient whatever its outcome: a refusal carries it too. A write calls
`screened_write`, which does both; one that needs the screen's alerts for its own advice (a
side effect's deadline) calls the two itself.

The screen keeps what it screened (`SafetyScreening`, the alerts' source). One request is screened
once: a retry with the same idempotency key and content, or the same content again within ten
minutes without a key, finds its screening and raises nothing new.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.alerts.alerts import Alert, raise_alerts
from models.identity.access import Viewer, clinical_patient_ids
from models.identity.accounts import Patient
from models.kernel.errors import DomainError
from models.kernel.faults import BackendUnavailable, is_backend_unavailable
from models.kernel.idempotency import Outcome, fingerprint
from models.kernel.policy import ClinicPolicy
from models.safety.models import SafetyScreening
from models.safety.rules import Findings

SOURCE_TYPE = "SafetyScreening"
# A request repeated without an idempotency key within this window is the same request (a retry).
SAME_REQUEST_WINDOW = timedelta(minutes=10)

Action = Callable[[Patient], Awaitable[None]]


@dataclass(frozen=True)
class Submission:
    """A patient's request as the screen sees it: its safety content (kept as sent) and what that
    content calls for. `actions` run once, with the alerts, in the screen's transaction."""

    operation: str
    patient_id: UUID
    content: dict[str, Any]
    findings: Findings
    idempotency_key: str | None = None
    recorded_at: datetime | None = None
    actions: Sequence[Action] = ()


@dataclass
class Screened:
    """The screen's outcome: its record (None when nothing called for one), the alerts it raised
    (or had raised for the same request before) and the advice for the patient."""

    screening_id: UUID | None
    alerts: list[Alert] = field(default_factory=list)
    advice: dict[str, Any] = field(default_factory=dict)

    async def guard(self, write: Awaitable[Outcome], *, record_type: str) -> Outcome:
        """CLINICAL.md §0: run the write: its outcome and any refusal both carry the screen's
        advice, and the screening says which record it became or why it was refused."""
        try:
            outcome = await write
        except DomainError as refusal:
            refusal.advice = {**refusal.advice, **self.advice}
            if self.screening_id is not None:
                await SafetyScreening.filter(id=self.screening_id, record_id__isnull=True).update(
                    refusal=f"{type(refusal).__name__}: {refusal.message}"[:500]
                )
            raise
        if self.screening_id is not None:
            await SafetyScreening.filter(id=self.screening_id, record_id__isnull=True).update(
                record_type=record_type, record_id=outcome.resource_id, refusal=None
            )
        return replace(outcome, advice={**outcome.advice, **self.advice})


def screening_id(submission: Submission, now: datetime) -> UUID:
    """One id per distinct request: its key (or, without one, a ten-minute window) and its content."""
    if submission.idempotency_key is not None:
        scope = f"key:{submission.idempotency_key}"
    else:
        scope = f"window:{int(now.timestamp() // SAME_REQUEST_WINDOW.total_seconds())}"
    digest = fingerprint(submission.content)
    return uuid5(NAMESPACE_URL, f"screening:{submission.patient_id}:{submission.operation}:{scope}:{digest}")


async def screen(submission: Submission, *, now: datetime, policy: ClinicPolicy) -> Screened:
    """CLINICAL.md §0: raise what the request's safety content calls for, before anything can
    refuse it, in a transaction of its own. Nothing is written when the content calls for nothing.

    When the database does not answer, nothing can be kept or raised: the request fails (the
    client is told to retry, and its retry is screened), but the advice the content calls for
    is worked out without the database and leaves with that answer (`BackendUnavailable`)."""
    findings = submission.findings
    if not findings.alerts and not submission.actions:
        return Screened(None, [], dict(findings.advice))
    try:
        return await _screen(submission, now=now, policy=policy)
    except Exception as error:
        if findings.advice and is_backend_unavailable(error):
            raise BackendUnavailable(dict(findings.advice)) from error
        raise


async def screened_write(
    submission: Submission, write: Callable[[], Awaitable[Outcome]], *, record_type: str, now: datetime,
    policy: ClinicPolicy,
) -> Outcome:  # fmt: skip
    """A patient-side write in one call (CLINICAL.md §0): `screen` its safety content, then run
    `write` under `Screened.guard`, so its outcome and any refusal carry the screen's advice."""
    screened = await screen(submission, now=now, policy=policy)
    return await screened.guard(write(), record_type=record_type)


async def _screen(submission: Submission, *, now: datetime, policy: ClinicPolicy) -> Screened:
    findings = submission.findings
    identity = screening_id(submission, now)
    if await SafetyScreening.exists(id=identity):
        return Screened(identity, await _alerts_of(identity), dict(findings.advice))
    try:
        async with in_transaction():
            patient = await Patient.get(id=submission.patient_id)
            await SafetyScreening.create(
                id=identity,
                patient=patient,
                operation=submission.operation,
                content=submission.content,
                screened_at=now,
                # A phone time without its offset is refused by the write; it is not kept here.
                recorded_at=submission.recorded_at
                if submission.recorded_at and submission.recorded_at.tzinfo
                else None,
                advice=findings.advice,
            )
            alerts = await raise_alerts(
                findings.alerts, patient=patient, source_type=SOURCE_TYPE, source_id=identity, now=now, policy=policy
            )
            for action in submission.actions:
                await action(patient)
    except IntegrityError:
        # The same request, sent twice at once: the other one screened it.
        if not await SafetyScreening.exists(id=identity):
            raise
        return Screened(identity, await _alerts_of(identity), dict(findings.advice))
    return Screened(identity, alerts, dict(findings.advice))


async def _alerts_of(identity: UUID) -> list[Alert]:
    return list(await Alert.filter(source_type=SOURCE_TYPE, source_id=identity).order_by("severity_rank"))


async def alerts_about(record_type: str, record_id: UUID) -> list[Alert]:
    """The alerts about a record: raised by the screening it came from, or about the record itself."""
    screenings = await SafetyScreening.filter(record_type=record_type, record_id=record_id).values_list("id", flat=True)
    by_screening = Alert.filter(source_type=SOURCE_TYPE, source_id__in=list(screenings))
    by_record = Alert.filter(source_type=record_type, source_id=record_id)
    found = {alert.id: alert for alert in [*await by_screening, *await by_record]}
    return sorted(found.values(), key=lambda alert: (alert.severity_rank, alert.raised_at))


async def screened_contents(viewer: Viewer, screening_ids: list[UUID]) -> dict[UUID, dict[str, Any]]:
    """What the screenings kept (the content an alert came from), for a viewer who may see the
    patient's clinical record (a DataLoader's batch)."""
    rows = await SafetyScreening.filter(id__in=screening_ids)
    patients: list[UUID] = [row.patient_id for row in rows]  # type: ignore[attr-defined]
    allowed = set(await clinical_patient_ids(viewer, patients, "SafetyScreening"))
    return {
        row.id: {"operation": row.operation, "content": row.content, "recordType": row.record_type,
                 "refusal": row.refusal}
        for row in rows
        if row.patient_id in allowed  # type: ignore[attr-defined]
    }  # fmt: skip
