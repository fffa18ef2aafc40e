"""Survey responses (CLINICAL.md §0, §5): a patient's answers are screened first, then scored on
the server against the assignment they answer, or kept as an unscheduled response of their
instrument when they come early or late: timing never discards an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from tortoise.transactions import in_transaction

from models.alerts import alert_rules
from models.alerts.alerts import resolve_automatically
from models.care.dosing_records import DosingSession
from models.identity.access import Viewer, clinical_record, require_clinical_access, require_patient_self
from models.kernel.audit import AuditAction, denied
from models.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.kernel.events import record_created
from models.kernel.idempotency import Outcome, answered_record, run_once
from models.kernel.pages import newest_first
from models.kernel.policy import EMERGENCY_INSTRUCTIONS, ClinicPolicy
from models.outcomes.baselines import pain_baseline
from models.safety.rules import Findings
from models.safety.screen import Submission, screened_write
from models.surveys.assignments import move_assignment
from models.surveys.instruments import (
    ON_DEMAND,
    InstrumentDefinition,
    alert_spec,
    current_definitions,
    definition_of,
    score,
    screen_answers,
)
from models.surveys.schedule import POST_SESSION
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment, SurveyResponse


@dataclass(frozen=True)
class NewResponse:
    # The answers as sent, (linkId, value) in order: an item answered twice is refused, but every
    # value is screened first (CLINICAL.md §0).
    answers: tuple[tuple[str, int], ...]
    assignment_id: UUID | None = None
    instrument: str | None = None
    recorded_at: datetime | None = None
    idempotency_key: str | None = None
    # The post-session check of a session, when the phone never had its assignment (CLINICAL.md §5).
    session_id: UUID | None = None
    # Input the API could not read (an id of another type, a time without its offset).
    problems: tuple[InvalidInput, ...] = ()


def response_advice(definition: InstrumentDefinition, fired: tuple[Any, ...], policy: ClinicPolicy) -> dict[str, Any]:
    """CLINICAL.md §5 (and §7): what the patient is told when an instrument's rules fire: the
    emergency instructions, the crisis resources, or both."""
    advice: dict[str, Any] = {}
    kinds = {rule.advice for rule in fired}
    if "emergency" in kinds:
        advice["safetyInstructions"] = EMERGENCY_INSTRUCTIONS
    if "crisis" in kinds:
        advice["crisisResources"] = policy.crisis_text()
    return advice


async def _instruments_answered(patient_id: UUID, data: NewResponse) -> list[InstrumentDefinition]:
    """Which instrument the answers are for, as far as the request tells, without refusing
    anything (the screen runs before validation): the assignment's, the session's post-session
    check, or the instrument named. When the request does not tell (an assignment that is not
    the patient's, an unknown instrument), every instrument: a false alarm is acceptable, a
    missed one is not (CLINICAL.md §0)."""
    definitions = await current_definitions()
    code = data.instrument
    if data.assignment_id is not None:
        assignment = await SurveyAssignment.get_or_none(id=data.assignment_id, patient_id=patient_id)
        code = assignment.instrument if assignment else None
    elif data.session_id is not None and code is None:
        code = POST_SESSION
    if code in definitions:
        return [definitions[code]]
    return [definitions[known] for known in sorted(definitions)]


async def answer_findings(
    patient_id: UUID, data: NewResponse, policy: ClinicPolicy
) -> tuple[Findings, InstrumentDefinition | None]:
    """CLINICAL.md §0 and §5: what the answers call for, whether or not the response is complete,
    in range, on time or for an open assignment. Returns the instrument, when it is known."""

    candidates = await _instruments_answered(patient_id, data)
    findings = Findings()
    for definition in candidates:
        baseline = await pain_baseline(patient_id, policy=policy) if definition.code == "PAIN-NRS" else None
        fired = screen_answers(definition, data.answers, baseline=baseline.value if baseline else None)
        for rule in fired:
            findings.add(alert_spec(definition, rule))
        findings.merge(Findings(advice=response_advice(definition, fired, policy)))
    return findings, candidates[0] if len(candidates) == 1 else None


async def submit_survey_response(viewer: Viewer, data: NewResponse, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """Score a patient's answers on the server. The answers are screened first (CLINICAL.md §0):
    PHQ-9 item 9, chest pain, self-harm, blood in urine raise their alerts and return their
    advice even when the response is then refused (incomplete, out of range, not open).

    Timing never discards an answer (§5): answers to an assignment that had expired or was not
    open yet are kept as an unscheduled response of its instrument, LATE or EARLY.

    A post-session check that expired while the phone was offline, answered inside its window,
    closes the "unanswered safety check" alert its expiry raised, unless a provider has already
    taken it (see `models.alerts.alerts.resolve_automatically`).
    """
    refusal = Forbidden("surveys are answered by the patient")
    patient_id = require_patient_self(viewer, refusal, AuditAction.CREATE, "SurveyResponse")
    findings, definition = await answer_findings(patient_id, data, policy)
    content = {
        "instrument": definition.code if definition else data.instrument,
        "answers": [[link_id, value] for link_id, value in data.answers],
        "assignmentId": str(data.assignment_id) if data.assignment_id else None,
        "sessionId": str(data.session_id) if data.session_id else None,
    }
    submission = Submission(
        "submitSurveyResponse", patient_id, content, findings, idempotency_key=data.idempotency_key,
        recorded_at=data.recorded_at,
    )  # fmt: skip
    return await screened_write(
        submission, lambda: _submit(viewer, patient_id, data, now=now, policy=policy), record_type="SurveyResponse",
        now=now, policy=policy,
    )  # fmt: skip


def _answers(data: NewResponse) -> dict[str, int]:
    answers: dict[str, int] = {}
    for link_id, value in data.answers:
        if link_id in answers:
            raise InvalidInput(f"answers.{link_id}", f"item {link_id} is answered twice")
        answers[link_id] = value
    return answers


@dataclass(frozen=True)
class _Target:
    """What a response answers: an assignment on time, or (unscheduled) an instrument, perhaps
    late or early for an assignment, perhaps the post-session check of a session."""

    instrument: str
    assignment: SurveyAssignment | None = None
    timing: str | None = None
    intended: SurveyAssignment | None = None
    session_id: UUID | None = None


async def _target(viewer: Viewer, patient_id: UUID, data: NewResponse, now: datetime) -> _Target:
    """The assignment being answered (locked for this transaction) or the unscheduled response.

    Answers from an offline phone (`recorded_at`) are judged by the time the patient gave them:
    inside the survey's window they count, even when they arrive after it closed (an expired
    survey becomes answered); outside it, like answers sent while it is not open, they are kept
    as an unscheduled response, LATE or EARLY (CLINICAL.md §5)."""
    assignment = None
    if data.assignment_id is not None:
        assignment = (
            await SurveyAssignment.filter(id=data.assignment_id, patient_id=patient_id).select_for_update().first()
        )
        if assignment is None:  # another patient's or none at all: one answer, audited
            refusal = NotFound("survey assignment")
            raise denied(viewer, refusal, AuditAction.UPDATE, "SurveyAssignment", resource_id=data.assignment_id)
    elif data.session_id is not None:
        if not await DosingSession.exists(id=data.session_id, patient_id=patient_id):
            refusal = NotFound("dosing session")
            raise denied(viewer, refusal, AuditAction.UPDATE, "DosingSession", resource_id=data.session_id)
        if data.instrument not in (None, POST_SESSION):
            raise InvalidInput("instrument", f"a session's survey is the {POST_SESSION} check, not {data.instrument}")
        assignment = (
            await SurveyAssignment.filter(session_id=data.session_id, instrument=POST_SESSION)
            .select_for_update()
            .first()
        )
        if assignment is None:  # the phone never had it: kept, and it answers the check once made
            return _Target(POST_SESSION, session_id=data.session_id)
    else:
        if data.instrument not in ON_DEMAND:
            on_demand = ", ".join(sorted(ON_DEMAND))
            raise InvalidInput(
                "instrument", f"give an assignmentId, a sessionId, or an instrument taken at any time: {on_demand}"
            )
        return _Target(data.instrument)
    if data.instrument is not None and data.instrument != assignment.instrument:
        raise InvalidInput("instrument", f"this assignment is a {assignment.instrument}, not a {data.instrument}")
    if assignment.status is AssignmentStatus.COMPLETED:
        raise Conflict("this survey is already answered")
    if assignment.status is AssignmentStatus.CANCELLED:
        raise Conflict("this survey is cancelled")
    answered_at = data.recorded_at or now
    if answered_at >= assignment.expires_at or (
        data.recorded_at is None and assignment.status is AssignmentStatus.EXPIRED
    ):
        return _Target(assignment.instrument, timing="LATE", intended=assignment, session_id=assignment.session_id)
    if answered_at < assignment.available_at:
        return _Target(assignment.instrument, timing="EARLY", intended=assignment, session_id=assignment.session_id)
    # AVAILABLE, SCHEDULED whose time has come (the open job may lag), or EXPIRED while the phone
    # held answers given inside the window.
    return _Target(assignment.instrument, assignment=assignment, session_id=assignment.session_id)


async def _submit(
    viewer: Viewer, patient_id: UUID, data: NewResponse, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    if data.problems:
        raise data.problems[0]
    answers = _answers(data)
    policy.check_device_time("recordedAt", data.recorded_at, now)
    answered_at = data.recorded_at or now

    async def write() -> Outcome:
        async with in_transaction():
            target = await _target(viewer, patient_id, data, now)
            definition = await definition_of(target.instrument)
            result = score(definition, answers)
            assignment = target.assignment
            response = await SurveyResponse.create(
                patient_id=patient_id,
                assignment_id=assignment.id if assignment else None,
                instrument=definition.code,
                instrument_version=definition.version,
                answers=answers,
                total_score=result.total,
                severity=result.severity,
                submitted_at=now,
                recorded_at=data.recorded_at,
                timing=target.timing,
                intended_assignment_id=target.intended.id if target.intended else None,
                session_id=target.session_id,
            )
            if assignment is not None:
                was_expired = assignment.status is AssignmentStatus.EXPIRED
                answered = await move_assignment(
                    assignment, AssignmentStatus.COMPLETED, now, completed_at=answered_at, response_id=response.id,
                    next_reminder_at=None,
                )  # fmt: skip
                if not answered:  # a job moved it after it was read: nothing of this answer is kept
                    raise Conflict("this survey changed while it was being answered: send the answers again")
                if was_expired:
                    await resolve_automatically(
                        kind=alert_rules.AlertKind.SAFETY_CHECK_UNANSWERED, source_type="SurveyAssignment",
                        source_id=assignment.id, now=now,
                        note=f"Answered on the patient's phone at {answered_at.isoformat()}, inside the window, "
                        f"and received at {now.isoformat()} after the survey expired.",
                    )  # fmt: skip
            payload = {"instrument": definition.code}
            await record_created(
                viewer, "SurveyResponse", response.id, patient_id, now=now, payload=payload, returned=True
            )
        return Outcome(response.id, record=response)

    request: dict[str, Any] = {
        "answers": answers,
        "assignment": str(data.assignment_id),
        "instrument": data.instrument,
    }
    if data.recorded_at is not None:
        request["recorded_at"] = data.recorded_at
    if data.session_id is not None:
        request["session"] = str(data.session_id)
    return await run_once(viewer, "submitSurveyResponse", data.idempotency_key, request, write, now=now)


async def list_responses(
    viewer: Viewer, patient_id: UUID, *, limit: int, before: tuple[datetime, UUID] | None = None
) -> list[SurveyResponse]:
    """A patient's scored responses, newest first."""
    await require_clinical_access(viewer, patient_id, "SurveyResponse")
    return await newest_first(SurveyResponse, "submitted_at", limit=limit, before=before, patient_id=patient_id)


async def get_response(viewer: Viewer, response_id: UUID) -> SurveyResponse:
    return await clinical_record(viewer, SurveyResponse, response_id, NotFound("survey response"))


async def submitted_response(viewer: Viewer, outcome: Outcome) -> SurveyResponse:
    """The response `submit_survey_response` answered with: as this request wrote it, or, for a
    retry answered from the idempotency key, read by its id."""
    return await answered_record(outcome, SurveyResponse, lambda: get_response(viewer, outcome.resource_id))
