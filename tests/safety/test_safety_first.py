"""CLINICAL.md §0, a safety signal is never lost: for every patient-side mutation and every reason it
can refuse a request, a refused request that carries a safety signal still raises its alert (of
the right severity, for the care team to see in their queue) and returns its advice.

Each case below is one refusal reason of one mutation, sent with safety content over GraphQL as the
app sends it; the care team's queue is read through GraphQL as their provider reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from graphql import build_schema
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.alerts.alerts import Alert
from models.care.dosing_records import DosingSession
from models.care.plan_records import PlanStatus, TreatmentPlan
from models.kernel.clock import ManualClock
from models.kernel.policy import EMERGENCY_INSTRUCTIONS
from models.safety.models import SafetyScreening
from models.surveys.survey_records import SurveyAssignment
from schema import export_schema
from tests.conftest import Tokens
from tests.support.clinical import no_contraindications, start, start_input
from tests.support.graphql import gql

ALEX = "alex@demo.test"
ADVICE = {
    "startDosingSession": "safetyInstructions crisisResources",
    "completeDosingSession": "safetyInstructions crisisResources",
    "submitCheckIn": "safetyInstructions crisisResources",
    "reportSideEffect": "safetyInstructions crisisResources",
    "submitSurveyResponse": "safetyInstructions crisisResources",
    "sendMessage": "crisisResources",
    "createMessageThread": "crisisResources",
    "reportNewMedication": "safetyInstructions crisisResources",
}
INPUT_TYPES = {name: f"{name[0].upper()}{name[1:]}Input" for name in ADVICE}
QUEUE = "{ alerts(status: [OPEN], first: 100) { edges { node { kind severity summary patient { id } } } } }"
NEW_THREAD = (
    'mutation { createMessageThread(input: { subject: "Question" }) { result { ... on MessageThread { id } } } }'
)
CRISIS = "crisis"
EMERGENCY = "emergency"
CARE = "care"  # what to do now, short of an emergency
TOLD = "told"  # what the care team will do


@dataclass
class World:
    client: httpx.AsyncClient
    tokens: Tokens
    clock: ManualClock
    app: Starlette

    @property
    def alex(self) -> str:
        return self.tokens.fresh(ALEX)

    async def session_in_progress(self) -> str:
        session_id: str = (await start(self.client, self.alex, self.clock.now()))["result"]["id"]
        return session_id

    async def completed_session(self) -> str:
        session_id = await self.session_in_progress()
        self.clock.advance(timedelta(hours=2, minutes=30))
        completion = {"sessionId": session_id, "dissociation": 2, "sedation": 2, "backToBaseline": True}
        await self.send("completeDosingSession", completion)
        return session_id

    async def assignment(self, instrument: str) -> str:
        await self.completed_session()
        with use_database(self.app.state.database):
            row = (
                await SurveyAssignment.filter(patient__user__email=ALEX, instrument=instrument)
                .order_by("-created_at")
                .first()
            )
        assert row is not None
        return str(relay.GlobalID("SurveyAssignment", str(row.id)))

    async def thread(self, email: str = ALEX) -> str:
        body = await gql(self.client, NEW_THREAD, token=self.tokens.fresh(email))
        thread_id: str = body["data"]["createMessageThread"]["result"]["id"]
        return thread_id

    async def other_patients_thread(self) -> str:
        return await self.thread("blair@demo.test")

    async def send(self, mutation: str, values: dict[str, Any]) -> dict[str, Any]:
        document = (
            f"mutation($input: {INPUT_TYPES[mutation]}!) {{ {mutation}(input: $input) {{ "
            "result { __typename ... on Node { id } ... on Error { message } ... on ValidationError { field } } "
            f"{ADVICE[mutation]} }} }}"
        )
        body = await gql(self.client, document, {"input": values}, token=self.alex)
        assert "errors" not in body, body
        payload: dict[str, Any] = body["data"][mutation]
        return payload

    async def queue(self) -> list[tuple[str, str, str]]:
        body = await gql(self.client, QUEUE, token=self.tokens.fresh("dr.rivera@demo.test"))
        return [
            (edge["node"]["kind"], edge["node"]["severity"], edge["node"]["summary"])
            for edge in body["data"]["alerts"]["edges"]
        ]


Arrange = Callable[[World], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Case:
    """One refusal reason of one mutation, sent with a safety signal."""

    mutation: str
    refusal: str  # the result's __typename
    arrange: Arrange
    alert: tuple[str, str]  # (kind, severity) the care team must see
    advice: str  # EMERGENCY or CRISIS
    field: str | None = None  # the ValidationError's field, when it names one


def at(world: World, **delta: float) -> str:
    return (world.clock.now() + timedelta(**delta)).isoformat()


def suicidal(**changes: bool) -> list[dict[str, Any]]:
    return no_contraindications(SUICIDAL_THOUGHTS=True, **changes)


def start_case(**changes: Any) -> Arrange:
    async def arrange(world: World) -> dict[str, Any]:
        values = start_input(world.clock.now(), checklist=suicidal())
        values.update({key: (value(world) if callable(value) else value) for key, value in changes.items()})
        return values

    return arrange


def incomplete(world: World) -> list[dict[str, Any]]:
    return [item for item in suicidal() if item["code"] != "WILL_DRIVE"]


async def already_in_progress(world: World) -> dict[str, Any]:
    await world.session_in_progress()
    world.clock.advance(timedelta(minutes=30))
    return start_input(world.clock.now(), checklist=suicidal())


async def idempotency_conflict_start(world: World) -> dict[str, Any]:
    await world.send("startDosingSession", {**start_input(world.clock.now()), "idempotencyKey": "k-1"})
    world.clock.advance(timedelta(minutes=1))
    return {**start_input(world.clock.now(), checklist=suicidal()), "idempotencyKey": "k-1"}


def completion(**changes: Any) -> Arrange:
    async def arrange(world: World) -> dict[str, Any]:
        session_id = await world.session_in_progress()
        values = {"sessionId": session_id, "dissociation": 2, "sedation": 2, "backToBaseline": False}
        values.update({key: (value(world) if callable(value) else value) for key, value in changes.items()})
        return values

    return arrange


async def completed_already(world: World) -> dict[str, Any]:
    session_id = await world.completed_session()
    return {"sessionId": session_id, "dissociation": 2, "sedation": 2, "backToBaseline": True,
            "bloodPressure": {"systolic": 190, "diastolic": 112}}  # fmt: skip


async def someone_elses_session(world: World) -> dict[str, Any]:
    with use_database(world.app.state.database):
        session = await DosingSession.filter(patient__user__email="blair@demo.test").first()
    assert session is not None
    session_id = str(relay.GlobalID("DosingSession", str(session.id)))
    return {"sessionId": session_id, "dissociation": 2, "sedation": 2, "backToBaseline": True, "notes": "I want to die"}


def plan_changed(then: dict[str, Any] | None = None, **changes: Any) -> Arrange:
    async def arrange(world: World) -> dict[str, Any]:
        with use_database(world.app.state.database):
            await TreatmentPlan.filter(patient__user__email=ALEX, status=PlanStatus.ACTIVE).update(**changes)
        return then if then is not None else start_input(world.clock.now(), checklist=suicidal())

    return arrange


async def idempotency_conflict_medication(world: World) -> dict[str, Any]:
    await world.send("reportNewMedication", {"medicationClass": "OPIOID", "idempotencyKey": "n-1"})
    return {"medicationClass": "OPIOID", "note": "tramadol, I want to end it all", "idempotencyKey": "n-1"}


async def too_soon(world: World) -> dict[str, Any]:
    session_id = await world.completed_session()
    assert session_id
    world.clock.advance(timedelta(hours=1))
    return start_input(world.clock.now(), checklist=suicidal())


def check_in(**changes: Any) -> Arrange:
    async def arrange(world: World) -> dict[str, Any]:
        values: dict[str, Any] = {"recordedAt": at(world), "pain": 6, "note": "I can\u2019t go on like this"}
        values.update({key: (value(world) if callable(value) else value) for key, value in changes.items()})
        return values

    return arrange


def side_effect(**changes: Any) -> Arrange:
    async def arrange(world: World) -> dict[str, Any]:
        values: dict[str, Any] = {"code": "CHEST_PAIN", "grade": "MILD", "onsetAt": at(world, minutes=-10)}
        values.update({key: (value(world) if callable(value) else value) for key, value in changes.items()})
        return values

    return arrange


def phq9(*values: int) -> list[dict[str, Any]]:
    return [{"linkId": str(index + 1), "value": value} for index, value in enumerate(values)]


def survey(**changes: Any) -> Arrange:
    async def arrange(world: World) -> dict[str, Any]:
        values: dict[str, Any] = {"instrument": "PHQ-9", "answers": phq9(1, 1, 1, 1, 1, 1, 1, 1, 2)}
        for key, value in changes.items():
            values[key] = await value(world) if callable(value) else value
        return values

    return arrange


def post_session_chest_pain() -> list[dict[str, Any]]:
    # Post-session check: back to usual self, symptoms none, chest pain or trouble breathing yes.
    return [{"linkId": str(item), "value": value} for item, value in
            ((1, 1), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0), (9, 1), (10, 0))]  # fmt: skip


async def answered_post_session_check(world: World) -> dict[str, Any]:
    assignment = await world.assignment("POST-SESSION")
    world.clock.advance(timedelta(hours=2))
    calm = [{**answer, "value": 0} if answer["linkId"] == "9" else answer for answer in post_session_chest_pain()]
    await world.send("submitSurveyResponse", {"assignmentId": assignment, "answers": calm})
    return {"assignmentId": assignment, "answers": post_session_chest_pain()}


async def cancelled_post_session_check(world: World) -> dict[str, Any]:
    assignment = await world.assignment("POST-SESSION")
    with use_database(world.app.state.database):
        await SurveyAssignment.filter(id=relay.GlobalID.from_id(assignment).node_id).update(status="CANCELLED")
    return {"assignmentId": assignment, "answers": post_session_chest_pain()}


async def someone_elses_assignment(world: World) -> dict[str, Any]:
    with use_database(world.app.state.database):
        row = await SurveyAssignment.filter(patient__user__email="blair@demo.test").first()
    assert row is not None
    return {
        "assignmentId": str(relay.GlobalID("SurveyAssignment", str(row.id))),
        "answers": phq9(0, 0, 0, 0, 0, 0, 0, 0, 3),
    }


async def idempotency_conflict_survey(world: World) -> dict[str, Any]:
    await world.send("submitSurveyResponse", {"instrument": "PHQ-9", "answers": phq9(0, 0, 0, 0, 0, 0, 0, 0, 0),
                                              "idempotencyKey": "s-1"})  # fmt: skip
    return {"instrument": "PHQ-9", "answers": phq9(0, 0, 0, 0, 0, 0, 0, 0, 1), "idempotencyKey": "s-1"}


def message(**changes: Any) -> Arrange:
    async def arrange(world: World) -> dict[str, Any]:
        values: dict[str, Any] = {"body": "Honestly I want to kill my\u00adself"}
        for key, value in changes.items():
            values[key] = await value(world) if callable(value) else value
        if "threadId" not in values:
            values["threadId"] = await world.thread()
        return values

    return arrange


async def idempotency_conflict_message(world: World) -> dict[str, Any]:
    thread = await world.thread()
    await world.send("sendMessage", {"threadId": thread, "body": "hello", "idempotencyKey": "m-1"})
    return {"threadId": thread, "body": "I want to end my life", "idempotencyKey": "m-1"}


def constant(value: Any) -> Callable[[World], Awaitable[Any]]:
    async def arrange(world: World) -> Any:
        return value

    return arrange


CHECKLIST_YES = ("PRE_DOSE_CHECKLIST", "URGENT")
HIGH_PRE_DOSE = ("PRE_DOSE_BP_ABOVE_CEILING", "URGENT")
NOT_BASELINE = ("NOT_BACK_TO_BASELINE", "HIGH")
CRISIS_WORDING = ("CRISIS_LANGUAGE", "URGENT")
SURVEY_URGENT = ("SURVEY_ANSWER", "URGENT")
SIDE_EFFECT_URGENT = ("SIDE_EFFECT", "URGENT")
URGENCY = {"systolic": 190, "diastolic": 115}

CASES: dict[str, Case] = {
    # -- startDosingSession: every input refusal, every failed check, a reused key
    "start: checklist incomplete": Case(
        "startDosingSession", "ValidationError", start_case(checklist=incomplete), CHECKLIST_YES, CRISIS, "checklist"
    ),
    "start: checklist item twice": Case(
        "startDosingSession",
        "ValidationError",
        start_case(checklist=lambda w: [*no_contraindications(), {"code": "SUICIDAL_THOUGHTS", "answer": True}]),
        CHECKLIST_YES,
        CRISIS,
        "checklist",
    ),
    "start: unknown checklist item": Case(
        "startDosingSession",
        "ValidationError",
        start_case(checklist=lambda w: [*suicidal(), {"code": "MADE_UP", "answer": False}]),
        CHECKLIST_YES,
        CRISIS,
        "checklist",
    ),
    "start: dose out of range": Case(
        "startDosingSession", "ValidationError", start_case(doseMg=5000), CHECKLIST_YES, CRISIS, "doseMg"
    ),
    "start: monitor name too long": Case(
        "startDosingSession", "ValidationError", start_case(monitorName="S" * 101), CHECKLIST_YES, CRISIS, "monitorName"
    ),
    "start: lot number too long": Case(
        "startDosingSession", "ValidationError", start_case(lotNumber="L" * 65), CHECKLIST_YES, CRISIS, "lotNumber"
    ),
    "start: implausible reading": Case(
        "startDosingSession",
        "ValidationError",
        start_case(
            checklist=lambda w: no_contraindications(),
            bloodPressure=lambda w: {"systolic": 310, "diastolic": 120, "measuredAt": at(w, minutes=-2)},
        ),
        HIGH_PRE_DOSE,
        EMERGENCY,
        "bloodPressure",
    ),
    "start: SpO2 out of range": Case(
        "startDosingSession",
        "ValidationError",
        start_case(
            bloodPressure=lambda w: {"systolic": 120, "diastolic": 80, "spo2": 40, "measuredAt": at(w, minutes=-2)}
        ),
        ("LOW_OXYGEN_SATURATION", "URGENT"),
        EMERGENCY,
        "bloodPressure.spo2",
    ),
    "start: reading in the future": Case(
        "startDosingSession",
        "ValidationError",
        start_case(
            checklist=lambda w: no_contraindications(),
            bloodPressure=lambda w: {**URGENCY, "measuredAt": at(w, hours=1)},
        ),
        HIGH_PRE_DOSE,
        EMERGENCY,
        "bloodPressure",
    ),
    "start: time without offset": Case(
        "startDosingSession",
        "ValidationError",
        start_case(recordedAt=lambda w: w.clock.now().replace(tzinfo=None).isoformat()),
        CHECKLIST_YES,
        CRISIS,
        "recordedAt",
    ),
    "start: phone time in the future": Case(
        "startDosingSession",
        "ValidationError",
        start_case(recordedAt=lambda w: at(w, hours=2)),
        CHECKLIST_YES,
        CRISIS,
        "recordedAt",
    ),
    "start: phone time too old": Case(
        "startDosingSession",
        "ValidationError",
        start_case(recordedAt=lambda w: at(w, days=-40)),
        CHECKLIST_YES,
        CRISIS,
        "recordedAt",
    ),
    "start: monitor not confirmed": Case(
        "startDosingSession", "SafetyCheckFailed", start_case(monitorPresent=False), CHECKLIST_YES, CRISIS
    ),
    "start: stale reading": Case(
        "startDosingSession",
        "SafetyCheckFailed",
        start_case(
            checklist=lambda w: no_contraindications(),
            bloodPressure=lambda w: {"systolic": 210, "diastolic": 125, "measuredAt": at(w, hours=-3)},
        ),
        HIGH_PRE_DOSE,
        EMERGENCY,
    ),
    "start: reading without its time": Case(
        "startDosingSession",
        "SafetyCheckFailed",
        start_case(checklist=lambda w: no_contraindications(), bloodPressure=URGENCY),
        HIGH_PRE_DOSE,
        EMERGENCY,
    ),
    "start: over the ceiling": Case(
        "startDosingSession",
        "SafetyCheckFailed",
        start_case(
            checklist=lambda w: no_contraindications(CHEST_PAIN_OR_SOB=True),
            bloodPressure=lambda w: {"systolic": 150, "diastolic": 92, "measuredAt": at(w, minutes=-2)},
        ),
        CHECKLIST_YES,
        EMERGENCY,
    ),
    "start: dose above plan": Case(
        "startDosingSession", "SafetyCheckFailed", start_case(doseMg=150), CHECKLIST_YES, CRISIS
    ),
    "start: session in progress": Case(
        "startDosingSession", "SafetyCheckFailed", already_in_progress, CHECKLIST_YES, CRISIS
    ),
    "start: plan on hold": Case(
        "startDosingSession", "SafetyCheckFailed", plan_changed(status=PlanStatus.ON_HOLD), CHECKLIST_YES, CRISIS
    ),
    "start: no active plan": Case(
        "startDosingSession", "SafetyCheckFailed", plan_changed(status=PlanStatus.COMPLETED), CHECKLIST_YES, CRISIS
    ),
    "start: clinic only": Case(
        "startDosingSession", "SafetyCheckFailed", plan_changed(setting="CLINIC"), CHECKLIST_YES, CRISIS
    ),
    "start: sessions used up": Case(
        "startDosingSession", "SafetyCheckFailed", plan_changed(planned_sessions=1), CHECKLIST_YES, CRISIS
    ),
    "start: too soon": Case("startDosingSession", "SafetyCheckFailed", too_soon, CHECKLIST_YES, CRISIS),
    "start: key reused for another start": Case(
        "startDosingSession", "IdempotencyConflict", idempotency_conflict_start, CHECKLIST_YES, CRISIS
    ),
    # -- completeDosingSession
    "complete: too early, not back to baseline": Case(
        "completeDosingSession", "ValidationError", completion(), NOT_BASELINE, CARE, "endedAt"
    ),
    "complete: rating out of range": Case(
        "completeDosingSession",
        "ValidationError",
        completion(backToBaseline=True, dissociation=11, bloodPressure=URGENCY),
        ("POST_DOSE_BP_HIGH", "URGENT"),
        EMERGENCY,
        "dissociation",
    ),
    "complete: notes too long": Case(
        "completeDosingSession",
        "ValidationError",
        completion(backToBaseline=True, notes="I want to die. " + "x" * 2000),
        CRISIS_WORDING,
        CRISIS,
        "notes",
    ),
    "complete: malformed session id": Case(
        "completeDosingSession",
        "ValidationError",
        completion(sessionId="not-an-id", bloodPressure={"systolic": 120, "diastolic": 80, "spo2": 85}),
        ("LOW_OXYGEN_SATURATION", "URGENT"),
        EMERGENCY,
        "sessionId",
    ),
    "complete: ended before it started": Case(
        "completeDosingSession",
        "ValidationError",
        completion(backToBaseline=True, endedAt=lambda w: at(w, hours=-1), notes="can't breathe"),
        CRISIS_WORDING,
        CRISIS,
        "endedAt",
    ),
    "complete: phone time too old": Case(
        "completeDosingSession",
        "ValidationError",
        completion(recordedAt=lambda w: at(w, days=-40), bloodPressure=URGENCY),
        ("POST_DOSE_BP_HIGH", "URGENT"),
        EMERGENCY,
        "recordedAt",
    ),
    "complete: already completed": Case(
        "completeDosingSession", "Conflict", completed_already, ("POST_DOSE_BP_HIGH", "URGENT"), EMERGENCY
    ),
    "complete: not the patient's session": Case(
        "completeDosingSession", "NotFound", someone_elses_session, CRISIS_WORDING, CRISIS
    ),
    # -- submitCheckIn
    "check-in: pain out of range": Case(
        "submitCheckIn", "ValidationError", check_in(pain=11), CRISIS_WORDING, CRISIS, "pain"
    ),
    "check-in: note too long": Case(
        "submitCheckIn",
        "ValidationError",
        check_in(note="I want to end my life " * 100),
        CRISIS_WORDING,
        CRISIS,
        "note",
    ),
    "check-in: time without offset": Case(
        "submitCheckIn",
        "ValidationError",
        check_in(recordedAt=lambda w: w.clock.now().replace(tzinfo=None).isoformat()),
        CRISIS_WORDING,
        CRISIS,
        "recordedAt",
    ),
    "check-in: phone time in the future": Case(
        "submitCheckIn",
        "ValidationError",
        check_in(recordedAt=lambda w: at(w, hours=1)),
        CRISIS_WORDING,
        CRISIS,
        "recordedAt",
    ),
    # -- reportSideEffect
    "side effect: unknown code": Case(
        "reportSideEffect",
        "ValidationError",
        side_effect(code="HEART_ATTACK", grade="LIFE_THREATENING"),
        SIDE_EFFECT_URGENT,
        EMERGENCY,
        "code",
    ),
    "side effect: OTHER without a note": Case(
        "reportSideEffect",
        "ValidationError",
        side_effect(code="OTHER", grade="LIFE_THREATENING"),
        SIDE_EFFECT_URGENT,
        EMERGENCY,
        "note",
    ),
    "side effect: note too long": Case(
        "reportSideEffect", "ValidationError", side_effect(note="x" * 2001), SIDE_EFFECT_URGENT, EMERGENCY, "note"
    ),
    "side effect: onset in the future": Case(
        "reportSideEffect",
        "ValidationError",
        side_effect(onsetAt=lambda w: at(w, hours=2)),
        SIDE_EFFECT_URGENT,
        EMERGENCY,
        "onsetAt",
    ),
    "side effect: resolved before onset": Case(
        "reportSideEffect",
        "ValidationError",
        side_effect(code="SHORTNESS_OF_BREATH", resolvedAt=lambda w: at(w, hours=-5)),
        SIDE_EFFECT_URGENT,
        EMERGENCY,
        "resolvedAt",
    ),
    "side effect: malformed session id": Case(
        "reportSideEffect",
        "ValidationError",
        side_effect(code="SUICIDAL_THOUGHTS", sessionId="nope"),
        SIDE_EFFECT_URGENT,
        CRISIS,
        "sessionId",
    ),
    "side effect: a session that is not theirs": Case(
        "reportSideEffect",
        "ValidationError",
        side_effect(sessionId=lambda w: str(relay.GlobalID("DosingSession", "8a3c1c9e-0000-4000-8000-000000000000"))),
        SIDE_EFFECT_URGENT,
        EMERGENCY,
        "sessionId",
    ),
    "side effect: crisis wording, time without offset": Case(
        "reportSideEffect",
        "ValidationError",
        side_effect(
            code="NAUSEA", note="I took an overdose", onsetAt=lambda w: w.clock.now().replace(tzinfo=None).isoformat()
        ),
        CRISIS_WORDING,
        CRISIS,
        "onsetAt",
    ),
    # -- submitSurveyResponse
    "survey: incomplete PHQ-9": Case(
        "submitSurveyResponse",
        "ValidationError",
        survey(answers=[{"linkId": "9", "value": 1}]),
        SURVEY_URGENT,
        CRISIS,
        "answers.1",
    ),
    "survey: value out of range": Case(
        "submitSurveyResponse",
        "ValidationError",
        survey(answers=phq9(0, 0, 0, 0, 0, 0, 0, 0, 7)),
        SURVEY_URGENT,
        CRISIS,
        "answers.9",
    ),
    "survey: unknown item": Case(
        "submitSurveyResponse",
        "ValidationError",
        survey(answers=[*phq9(0, 0, 0, 0, 0, 0, 0, 0, 1), {"linkId": "11", "value": 0}]),
        SURVEY_URGENT,
        CRISIS,
        "answers.11",
    ),
    "survey: item answered twice": Case(
        "submitSurveyResponse",
        "ValidationError",
        survey(answers=[*phq9(0, 0, 0, 0, 0, 0, 0, 0, 0), {"linkId": "9", "value": 3}]),
        SURVEY_URGENT,
        CRISIS,
        "answers.9",
    ),
    "survey: not taken at any time": Case(
        "submitSurveyResponse",
        "ValidationError",
        survey(instrument="POST-SESSION", answers=post_session_chest_pain()),
        SURVEY_URGENT,
        EMERGENCY,
        "instrument",
    ),
    "survey: wrong instrument for the assignment": Case(
        "submitSurveyResponse",
        "ValidationError",
        survey(
            assignmentId=lambda w: w.assignment("POST-SESSION"), instrument="PHQ-9", answers=post_session_chest_pain()
        ),
        SURVEY_URGENT,
        EMERGENCY,
        "instrument",
    ),
    "survey: malformed assignment id": Case(
        "submitSurveyResponse", "ValidationError", survey(assignmentId="garbage"), SURVEY_URGENT, CRISIS, "assignmentId"
    ),
    "survey: phone time in the future": Case(
        "submitSurveyResponse",
        "ValidationError",
        survey(recordedAt=lambda w: constant(at(w, hours=1))(w)),
        SURVEY_URGENT,
        CRISIS,
        "recordedAt",
    ),
    "survey: already answered": Case(
        "submitSurveyResponse", "Conflict", answered_post_session_check, SURVEY_URGENT, EMERGENCY
    ),
    "survey: cancelled": Case(
        "submitSurveyResponse", "Conflict", cancelled_post_session_check, SURVEY_URGENT, EMERGENCY
    ),
    "survey: someone else's assignment": Case(
        "submitSurveyResponse", "NotFound", someone_elses_assignment, SURVEY_URGENT, CRISIS
    ),
    "survey: key reused for other answers": Case(
        "submitSurveyResponse", "IdempotencyConflict", idempotency_conflict_survey, SURVEY_URGENT, CRISIS
    ),
    # -- sendMessage
    "message: too long": Case(
        "sendMessage", "ValidationError", message(body=constant("I want to die " * 400)), CRISIS_WORDING, CRISIS, "body"
    ),
    "message: malformed thread id": Case(
        "sendMessage", "ValidationError", message(threadId=constant("garbage")), CRISIS_WORDING, CRISIS, "threadId"
    ),
    "message: reply to a message of another thread": Case(
        "sendMessage",
        "ValidationError",
        message(replyToId=constant(str(relay.GlobalID("Message", "8a3c1c9e-0000-4000-8000-000000000000")))),
        CRISIS_WORDING,
        CRISIS,
        "replyToId",
    ),
    "message: someone else's thread": Case(
        "sendMessage", "NotFound", message(threadId=lambda w: w.other_patients_thread()), CRISIS_WORDING, CRISIS
    ),
    "message: key reused for another message": Case(
        "sendMessage", "IdempotencyConflict", idempotency_conflict_message, CRISIS_WORDING, CRISIS
    ),
    # -- reportNewMedication
    "medication: note too long": Case(
        "reportNewMedication",
        "ValidationError",
        constant({"medicationClass": "MAOI", "note": "x" * 501}),
        ("NEW_MEDICATION", "ROUTINE"),
        TOLD,
        "note",
    ),
    "medication: no current plan": Case(
        "reportNewMedication",
        "NotFound",
        plan_changed(status=PlanStatus.CANCELLED, then={"medicationClass": "BENZODIAZEPINE"}),
        ("NEW_MEDICATION", "ROUTINE"),
        TOLD,
    ),
    "medication: crisis wording, key reused": Case(
        "reportNewMedication", "IdempotencyConflict", idempotency_conflict_medication, CRISIS_WORDING, CRISIS
    ),
    # -- createMessageThread
    "thread: subject too long": Case(
        "createMessageThread",
        "ValidationError",
        constant({"subject": "I want to end it all " * 10}),
        CRISIS_WORDING,
        CRISIS,
        "subject",
    ),
}

# Mutations a patient may call that carry no safety content: nothing to screen (say why).
NO_SAFETY_CONTENT = {
    "grantDataSharingConsent": "a consent to share the record with an EHR client",
    "revokeDataSharingConsent": "a consent to share the record with an EHR client",
    "logOpioidUse": "a dose of a prescribed opioid: information for the clinician (CLINICAL.md §10), no alert rule",
    "markThreadRead": "a read receipt",
    "registerDevice": "a push token",
    "unregisterDevice": "a push token",
    "changePassword": "one's own password",
    "endLogin": "one's own login",
    "endOtherLogins": "one's own logins",
}
# A second factor (models.identity.totp): codes, no free text.
NO_SAFETY_CONTENT.update(
    {
        "startTotpEnrollment": "one's own second factor",
        "confirmTotpEnrollment": "one's own second factor: a 6-digit code",
        "disableTotp": "one's own second factor: a code or a recovery code",
    }
)
# Mutations a patient may never call (providers, admins): FORBIDDEN for them.
STAFF_ONLY = {
    "createTreatmentPlan", "updateTreatmentPlan", "holdTreatmentPlan", "resumeTreatmentPlan", "endTreatmentPlan",
    "voidDosingSession", "acknowledgeAlert", "resolveAlert", "recordClinicSession",
    "invitePatient", "inviteProvider", "resendInvitation", "revokeInvitation",
}  # fmt: skip
# Administration (admins only): accounts, care teams, transfers, EHR clients.
STAFF_ONLY |= {
    "deactivateUser", "reactivateUser", "createCareTeam", "transferPatient",
    "registerApiClient", "rotateApiClientSecret", "deactivateApiClient",
}  # fmt: skip


def test_every_mutation_is_screened_for_a_patient_or_says_why_it_need_not_be() -> None:
    mutation_type = build_schema(export_schema()).mutation_type
    assert mutation_type is not None
    mutations = set(mutation_type.fields)
    screened = {case.mutation for case in CASES.values()}
    unclassified = mutations - screened - set(NO_SAFETY_CONTENT) - STAFF_ONLY
    assert not unclassified, f"classify these mutations for CLINICAL.md §0: {sorted(unclassified)}"
    assert screened == set(ADVICE), "every screened mutation has refusal cases"


@pytest.mark.parametrize("name", list(CASES))
async def test_a_refused_request_still_raises_its_alert_and_returns_its_advice(
    name: str, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    case = CASES[name]
    world = World(client, tokens, clock, app)
    values = await case.arrange(world)
    before = await world.queue()
    payload = await world.send(case.mutation, values)

    result = payload["result"]
    assert result["__typename"] == case.refusal, result
    if case.field is not None:
        assert result["field"] == case.field, result
    kind, severity = case.alert
    raised = [alert for alert in await world.queue() if alert not in before]
    assert any((alert[0], alert[1]) == (kind, severity) for alert in raised), raised
    if case.advice == EMERGENCY:
        assert payload["safetyInstructions"] == EMERGENCY_INSTRUCTIONS
    elif case.advice == CARE:
        assert "call 911" in payload["safetyInstructions"]
    elif case.advice == TOLD:
        assert "care team" in payload["safetyInstructions"]
    else:
        assert "988" in payload["crisisResources"]


async def test_a_refused_completion_not_back_to_baseline_makes_the_post_session_check_due_at_once(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    world = World(client, tokens, clock, app)
    values = await completion()(world)  # ten minutes in: too early, and not back to baseline
    clock.advance(timedelta(minutes=10))
    payload = await world.send("completeDosingSession", values)
    assert payload["result"]["field"] == "endedAt"
    session_id = relay.GlobalID.from_id(values["sessionId"]).node_id
    with use_database(app.state.database):
        [check] = await SurveyAssignment.filter(session_id=session_id, instrument="POST-SESSION")
    assert check.available_at == clock.now()
    assert check.notify_at == clock.now()
    # The completion that follows keeps that check and schedules the rest.
    clock.advance(timedelta(hours=2))
    done = await world.send("completeDosingSession", {**values, "backToBaseline": True})
    assert done["result"]["__typename"] == "DosingSession"
    with use_database(app.state.database):
        instruments = await SurveyAssignment.filter(session_id=session_id).values_list("instrument", flat=True)
    assert sorted(instruments).count("POST-SESSION") == 1
    assert {"PAIN-NRS", "PEG-3", "PHQ-9", "GAD-7"} <= set(instruments)


async def test_a_refused_severe_side_effect_still_holds_the_plan(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    world = World(client, tokens, clock, app)
    payload = await world.send(
        "reportSideEffect", await side_effect(code="HALLUCINATIONS", grade="SEVERE", note="x" * 2001)(world)
    )
    assert payload["result"]["field"] == "note"
    assert "will respond by" in payload["safetyInstructions"]
    with use_database(app.state.database):
        plan = await TreatmentPlan.get(patient__user__email=ALEX, status__in=[PlanStatus.ACTIVE, PlanStatus.ON_HOLD])
    assert plan.status is PlanStatus.ON_HOLD
    assert "Hallucinations reported as SEVERE" in plan.status_reason


async def test_a_request_is_screened_once_however_often_it_is_retried(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    world = World(client, tokens, clock, app)
    values = {**start_input(clock.now(), checklist=incomplete(world)), "idempotencyKey": "retry-1"}
    without_key = {key: value for key, value in values.items() if key != "idempotencyKey"}
    screened = []
    for request in (values, values, values, without_key, without_key):
        payload = await world.send("startDosingSession", request)
        assert payload["result"]["field"] == "checklist"
        assert "988" in payload["crisisResources"]
        with use_database(app.state.database):
            alerts = await Alert.filter(kind="PRE_DOSE_CHECKLIST", patient__user__email=ALEX, raised_at=clock.now())
            screenings = await SafetyScreening.filter(operation="startDosingSession", screened_at=clock.now())
        screened.append((len(alerts), len(screenings)))
        clock.advance(timedelta(minutes=1))
    # Retries of one request (the same key, or no key within ten minutes) raise nothing new; the
    # request without a key is another request.
    assert screened == [(1, 1), (0, 0), (0, 0), (1, 1), (0, 0)]
    with use_database(app.state.database):
        kept = await SafetyScreening.filter(operation="startDosingSession", patient__user__email=ALEX)
    assert len(kept) == 2
    assert all(screening.refusal and screening.refusal.startswith("InvalidInput") for screening in kept)
    assert all(screening.content["answeredYes"] == ["SUICIDAL_THOUGHTS"] for screening in kept)


async def test_an_accepted_write_names_the_record_its_screening_became(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    world = World(client, tokens, clock, app)
    payload = await world.send("submitCheckIn", await check_in()(world))
    assert payload["result"]["__typename"] == "CheckIn"
    assert "988" in payload["crisisResources"]
    with use_database(app.state.database):
        [screening] = await SafetyScreening.filter(operation="submitCheckIn", screened_at=clock.now())
    assert (screening.record_type, str(screening.record_id)) == (
        "CheckIn",
        relay.GlobalID.from_id(payload["result"]["id"]).node_id,
    )
    assert screening.refusal is None
    assert screening.content == {"note": "I can\u2019t go on like this"}


async def test_the_care_team_reads_what_a_refused_request_said_on_its_alert(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    world = World(client, tokens, clock, app)
    answers = [{"linkId": "9", "value": 2}]  # PHQ-9 item 9 alone: refused as incomplete
    payload = await world.send("submitSurveyResponse", {"instrument": "PHQ-9", "answers": answers})
    assert payload["result"]["field"] == "answers.1"
    query = "{ alerts(status: [OPEN], first: 100) { edges { node { kind sourceType screenedContent } } } }"
    for email, visible in (("dr.rivera@demo.test", True), ("dr.okafor@demo.test", False)):
        body = await gql(client, query, token=tokens.fresh(email))
        mine = [
            edge["node"] for edge in body["data"]["alerts"]["edges"] if edge["node"]["sourceType"] == "SafetyScreening"
        ]
        if not visible:  # another care team's provider does not even see the alert
            assert all(
                node["screenedContent"]["content"].get("answers") != [["9", 2]]
                for node in mine
                if node["screenedContent"]
            )
            continue
        [alert] = [node for node in mine if node["kind"] == "SURVEY_ANSWER"]
        assert alert["screenedContent"]["operation"] == "submitSurveyResponse"
        assert alert["screenedContent"]["content"]["answers"] == [["9", 2]]
        assert alert["screenedContent"]["refusal"].startswith("InvalidInput")


async def test_a_new_medication_reported_by_the_patient_joins_the_plan_and_every_start_warns_of_it(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    world = World(client, tokens, clock, app)
    payload = await world.send("reportNewMedication", {"medicationClass": "MAOI", "note": "phenelzine"})
    assert payload["result"]["__typename"] == "TreatmentPlan"
    assert ("NEW_MEDICATION", "ROUTINE", "Patient reported a new medication: MAOI (phenelzine).") in await world.queue()
    again = await world.send("reportNewMedication", {"medicationClass": "MAOI", "note": "phenelzine"})
    assert again["result"]["__typename"] == "TreatmentPlan"
    with use_database(app.state.database):
        plan = await TreatmentPlan.get(patient__user__email=ALEX, status=PlanStatus.ACTIVE)
    [reported] = [entry for entry in plan.medications if entry.medication_class.value == "MAOI"]
    assert (reported.source.value, reported.note) == ("PATIENT", "phenelzine")
    started = await gql(
        client,
        "mutation($input: StartDosingSessionInput!) { startDosingSession(input: $input) { "
        "result { __typename ... on DosingSession { id } } warnings { code message } } }",
        {"input": start_input(clock.now())},
        token=world.alex,
    )
    payload = started["data"]["startDosingSession"]
    assert payload["result"]["__typename"] == "DosingSession"
    assert "MAOI" in [warning["code"] for warning in payload["warnings"]]
    with use_database(app.state.database):
        session = await DosingSession.get(id=relay.GlobalID.from_id(payload["result"]["id"]).node_id)
    assert [warning["code"] for warning in session.interaction_warnings] == [w["code"] for w in payload["warnings"]]
