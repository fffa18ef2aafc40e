"""Offline replay (issue #11): a phone that was offline sends its queue in order when it
reconnects, each write with its idempotency key and the device's `recordedAt`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from jobs import clinical as clinical_jobs
from jobs import surveys as survey_jobs
from models.alerts.alerts import Alert, AlertStatus
from models.care.dosing_records import DosingSession, SessionStatus
from models.kernel.audit import ActorType, AuditEvent
from models.kernel.clock import ManualClock
from models.kernel.events import DomainEvent
from models.kernel.idempotency import IdempotencyKey
from models.reports.checkins import CheckIn
from models.reports.side_effects import SideEffectReport
from models.safety.screen import alerts_about
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment, SurveyResponse
from tests.conftest import Tokens, job_env
from tests.support.clinical import complete, no_contraindications, start
from tests.support.graphql import gql

ALEX = "alex@demo.test"

START = """
mutation Start($input: StartDosingSessionInput!) {
  startDosingSession(input: $input) {
    result { __typename ... on DosingSession { id status startedAt startReceivedAt
                                               preDoseBloodPressure { measuredAt }
                                               dosedDespiteFailedChecks failedChecks { code message } }
             ... on SafetyCheckFailed { failedChecks { code message } }
             ... on Error { message } ... on ValidationError { field } }
  }
}
"""

COMPLETE = """
mutation Complete($input: CompleteDosingSessionInput!) {
  completeDosingSession(input: $input) {
    result { __typename ... on DosingSession { id status startedAt endedAt completionReceivedAt }
             ... on Error { message } ... on ValidationError { field } }
  }
}
"""

CHECK_IN = """
mutation CheckIn($input: SubmitCheckInInput!) {
  submitCheckIn(input: $input) {
    result { __typename ... on CheckIn { id recordedAt receivedAt pain }
             ... on Error { message } ... on ValidationError { field } }
  }
}
"""

SIDE_EFFECT = """
mutation Report($input: ReportSideEffectInput!) {
  reportSideEffect(input: $input) {
    result { __typename ... on SideEffectReport { id code onsetAt recordedAt reportedAt sessionId }
             ... on Error { message } ... on ValidationError { field } }
    safetyInstructions
  }
}
"""

SURVEY = """
mutation Submit($input: SubmitSurveyResponseInput!) {
  submitSurveyResponse(input: $input) {
    result { __typename ... on SurveyResponse { id instrument totalScore recordedAt submittedAt assignmentId
                                                timing intendedAssignmentId }
             ... on Error { message } ... on ValidationError { field } }
  }
}
"""

MUTATIONS = {
    "startDosingSession": START,
    "completeDosingSession": COMPLETE,
    "submitCheckIn": CHECK_IN,
    "reportSideEffect": SIDE_EFFECT,
    "submitSurveyResponse": SURVEY,
}
SESSION = "<the id the server gave the replayed start>"


@dataclass
class Write:
    """One write of the phone's queue, as the app stored it while offline."""

    mutation: str
    recorded_at: datetime
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"alex-phone:{self.mutation}:{self.recorded_at.isoformat()}"


async def replay(client: httpx.AsyncClient, token: object, queue: list[Write]) -> list[dict[str, Any]]:
    """What the app does on reconnecting: each write in order, the session's id taken from the
    server's answer to the start (the phone only had its own placeholder)."""
    session_id: str | None = None
    answers = []
    for write in queue:
        values = {**write.values, "idempotencyKey": write.key, "recordedAt": write.recorded_at.isoformat()}
        if values.get("sessionId") == SESSION:
            values["sessionId"] = session_id
        body = await gql(client, MUTATIONS[write.mutation], {"input": values}, token=token)
        payload = body["data"][write.mutation]
        if write.mutation == "startDosingSession":
            session_id = payload["result"]["id"]
        answers.append(payload)
    return answers


def dose(measured_at: datetime) -> dict[str, Any]:
    """A start that passes every check when `measured_at` is within 30 minutes before its time."""
    return {
        "doseMg": 100,
        "monitorPresent": True,
        "monitorName": "Sam",
        "checklist": no_contraindications(),
        "bloodPressure": {"systolic": 120, "diastolic": 80, "measuredAt": measured_at.isoformat()},
    }


def answers(*values: int) -> list[dict[str, Any]]:
    return [{"linkId": str(index + 1), "value": value} for index, value in enumerate(values)]


def assignment_id(assignment: SurveyAssignment) -> str:
    return str(relay.GlobalID("SurveyAssignment", str(assignment.id)))


async def complete_a_session_online(client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock) -> datetime:
    """Alex doses while online; returns the session's end."""
    alex = tokens.fresh(ALEX)
    session = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(hours=2, minutes=30))
    assert (await complete(client, alex, session["id"]))["result"]["status"] == "COMPLETED"
    return clock.now()


async def follow_up(app: Starlette, instrument: str) -> SurveyAssignment:
    with use_database(app.state.database):
        return (
            await SurveyAssignment.filter(patient__user__email=ALEX, instrument=instrument)
            .order_by("-created_at")
            .first()
        )  # type: ignore[return-value]


async def test_a_days_queue_replayed_twice_at_once_is_stored_once_with_the_phones_times(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    ended = await complete_a_session_online(client, tokens, clock)
    pain_survey = await follow_up(app, "PAIN-NRS")  # open from ended + 24 h to ended + 48 h
    clock.set(ended + timedelta(hours=24, minutes=30))
    with use_database(app.state.database):
        await survey_jobs.open_due_surveys(job_env(clock))
    # The phone learns of the pain survey, then is offline for a day; it reconnects after the
    # survey expired.
    reconnected = ended + timedelta(hours=49)

    def at(hours: float) -> datetime:
        return reconnected - timedelta(hours=24) + timedelta(hours=hours)

    queue = [
        Write("submitCheckIn", at(0.5), {"pain": 5, "mood": 6, "sleep": 7}),
        Write("reportSideEffect", at(1.25), {"code": "NAUSEA", "grade": "MILD", "onsetAt": at(1).isoformat()}),
        Write("submitSurveyResponse", at(2), {"assignmentId": assignment_id(pain_survey), "answers": answers(5)}),
        Write("submitCheckIn", at(4), {"pain": 4}),
        Write("submitSurveyResponse", at(5), {"instrument": "PHQ-9", "answers": answers(1, 1, 1, 0, 0, 1, 0, 0, 0)}),
        Write("reportSideEffect", at(6.5), {"code": "HEADACHE", "grade": "MODERATE", "onsetAt": at(6).isoformat()}),
        Write("submitCheckIn", at(8), {"pain": 4, "note": "walked to the shop"}),
        Write("submitSurveyResponse", at(9), {"instrument": "GAD-7", "answers": answers(1, 0, 1, 0, 0, 1, 0)}),
        Write("submitCheckIn", at(12), {"pain": 3}),
        Write("reportSideEffect", at(13.2), {"code": "DIZZINESS", "grade": "MILD", "onsetAt": at(13).isoformat()}),
        Write("submitCheckIn", at(16), {"pain": 4}),
        Write("submitSurveyResponse", at(17), {"instrument": "PEG-3", "answers": answers(4, 3, 4)}),
        Write("submitCheckIn", at(20), {"pain": 5}),
        Write("startDosingSession", at(21), dose(measured_at=at(21) - timedelta(minutes=6))),
        Write(
            "reportSideEffect",
            at(21.6),
            {"code": "DISSOCIATION", "grade": "MILD", "onsetAt": at(21.5).isoformat(), "sessionId": SESSION},
        ),
        Write("submitCheckIn", at(22), {"pain": 2}),
        Write(
            "completeDosingSession",
            at(23.5),
            {
                "sessionId": SESSION,
                "endedAt": at(23.4).isoformat(),
                "dissociation": 4,
                "sedation": 3,
                "backToBaseline": True,
                "bloodPressure": {"systolic": 128, "diastolic": 82},
            },
        ),
        Write(
            "reportSideEffect",
            at(23.6),
            {"code": "SEDATION", "grade": "MILD", "onsetAt": at(22.5).isoformat(), "sessionId": SESSION},
        ),
        Write("submitCheckIn", at(23.7), {"pain": 2, "sleep": 8}),
        Write("submitSurveyResponse", at(23.8), {"instrument": "PAIN-NRS", "answers": answers(2)}),
    ]
    assert {write.mutation for write in queue} == set(MUTATIONS)

    clock.set(reconnected)
    with use_database(app.state.database):
        await survey_jobs.expire_overdue_surveys(job_env(clock))
        assert (await SurveyAssignment.get(id=pain_survey.id)).status is AssignmentStatus.EXPIRED
        before = {
            model: await model.filter(patient__user__email=ALEX).count()
            for model in (CheckIn, SideEffectReport, SurveyResponse, DosingSession)
        }
    alex = tokens.fresh(ALEX)
    first, second = await asyncio.gather(replay(client, alex, queue), replay(client, alex, queue))

    assert second == first
    for write, payload in zip(queue, first, strict=True):
        assert payload["result"]["__typename"] in {"CheckIn", "SideEffectReport", "SurveyResponse", "DosingSession"}, (
            write,
            payload,
        )
    by_kind: dict[str, list[tuple[Write, dict[str, Any]]]] = {}
    for write, payload in zip(queue, first, strict=True):
        by_kind.setdefault(write.mutation, []).append((write, payload["result"]))
    with use_database(app.state.database):
        after = {model: await model.filter(patient__user__email=ALEX).count() for model in before}
        assert after[CheckIn] == before[CheckIn] + len(by_kind["submitCheckIn"])
        assert after[SideEffectReport] == before[SideEffectReport] + len(by_kind["reportSideEffect"])
        assert after[SurveyResponse] == before[SurveyResponse] + len(by_kind["submitSurveyResponse"])
        assert after[DosingSession] == before[DosingSession] + 1
        assert await IdempotencyKey.filter(key__startswith="alex-phone:").count() == len(queue)

        for write, result in by_kind["submitCheckIn"]:
            row = await CheckIn.get(id=relay.GlobalID.from_id(result["id"]).node_id)
            assert (row.recorded_at, row.received_at) == (write.recorded_at, reconnected)
        for write, result in by_kind["reportSideEffect"]:
            report = await SideEffectReport.get(id=relay.GlobalID.from_id(result["id"]).node_id)
            assert report.recorded_at == write.recorded_at
            assert report.onset_at == datetime.fromisoformat(write.values["onsetAt"])
            assert report.reported_at == reconnected
            # The moderate headache raised its routine alert once, at arrival.
            raised = [alert.raised_at for alert in await alerts_about("SideEffectReport", report.id)]
            assert raised == ([reconnected] if write.values["grade"] == "MODERATE" else [])
        for write, result in by_kind["submitSurveyResponse"]:
            response = await SurveyResponse.get(id=relay.GlobalID.from_id(result["id"]).node_id)
            assert (response.recorded_at, response.submitted_at) == (write.recorded_at, reconnected)

        # The pain survey that expired while the phone was offline was answered in its window.
        answered = await SurveyAssignment.get(id=pain_survey.id)
        assert answered.status is AssignmentStatus.COMPLETED
        assert answered.completed_at == at(2)
        assert str(answered.response_id) == relay.GlobalID.from_id(by_kind["submitSurveyResponse"][0][1]["id"]).node_id

        # The session carries the phone's times, and its follow-up counts from the phone's end.
        [(_, started)] = by_kind["startDosingSession"]
        session = await DosingSession.get(id=relay.GlobalID.from_id(started["id"]).node_id)
        assert session.status is SessionStatus.COMPLETED
        assert (session.started_at, session.ended_at) == (at(21), at(23.4))
        assert (session.start_received_at, session.completion_received_at) == (reconnected, reconnected)
        post = await SurveyAssignment.get(session_id=session.id, instrument="POST-SESSION")
        assert post.available_at == at(23.4) + timedelta(hours=2)
        for _, result in by_kind["reportSideEffect"][3:]:
            assert result["sessionId"] == started["id"]

        # Each record was announced once on the change feed.
        for kind, results in by_kind.items():
            event = {"submitCheckIn": "CheckIn.created", "reportSideEffect": "SideEffectReport.created",
                     "submitSurveyResponse": "SurveyResponse.created",
                     "startDosingSession": "DosingSession.started",
                     "completeDosingSession": "DosingSession.completed"}[kind]  # fmt: skip
            for _, result in results:
                resource_id = relay.GlobalID.from_id(result["id"]).node_id
                assert await DomainEvent.filter(type=event, resource_id=resource_id).count() == 1, (kind, result)


async def expired_post_session_check(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> tuple[SurveyAssignment, datetime]:
    """Alex's post-session check, opened and then expired (window ended + 2 h to ended + 8 h)."""
    ended = await complete_a_session_online(client, tokens, clock)
    clock.set(ended + timedelta(hours=2))
    with use_database(app.state.database):
        await survey_jobs.open_due_surveys(job_env(clock))
        clock.set(ended + timedelta(hours=8, minutes=1))
        await survey_jobs.expire_overdue_surveys(job_env(clock))
    post = await follow_up(app, "POST-SESSION")
    assert post.status is AssignmentStatus.EXPIRED
    return post, ended


BACK_TO_USUAL = answers(1, 0, 0, 0, 0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("acknowledged", [False, True], ids=["alert open", "alert taken by a provider"])
async def test_a_post_session_check_answered_offline_in_its_window_counts_after_it_expired(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette, acknowledged: bool
) -> None:
    post, ended = await expired_post_session_check(client, tokens, clock, app)
    with use_database(app.state.database):
        alert = await Alert.get(kind="SAFETY_CHECK_UNANSWERED", source_id=post.id)
    assert alert.status is AlertStatus.OPEN
    if acknowledged:
        body = await gql(
            client,
            "mutation($input: AlertActionInput!) { acknowledgeAlert(input: $input) { result { __typename } } }",
            {"input": {"alertId": str(relay.GlobalID("Alert", str(alert.id))), "note": "calling Alex"}},
            token=tokens.fresh("dr.rivera@demo.test"),
        )
        assert body["data"]["acknowledgeAlert"]["result"]["__typename"] == "Alert"
    clock.set(ended + timedelta(hours=20))
    answered_at = ended + timedelta(hours=3)
    values = {"assignmentId": assignment_id(post), "answers": BACK_TO_USUAL, "recordedAt": answered_at.isoformat()}
    body = await gql(client, SURVEY, {"input": values}, token=tokens.fresh(ALEX))
    result = body["data"]["submitSurveyResponse"]["result"]
    assert result["__typename"] == "SurveyResponse"
    assert result["recordedAt"] == answered_at.isoformat()
    assert result["submittedAt"] == clock.now().isoformat()
    with use_database(app.state.database):
        post = await SurveyAssignment.get(id=post.id)
        assert post.status is AssignmentStatus.COMPLETED
        assert post.completed_at == answered_at
        alert = await Alert.get(id=alert.id)
        resolved_by_the_service = await AuditEvent.filter(
            resource_type="Alert", resource_id=str(alert.id), actor_type=ActorType.SYSTEM
        ).exists()
        announced = await DomainEvent.filter(type="Alert.resolved", resource_id=alert.id).count()
    if acknowledged:  # the provider who took it closes it
        assert alert.status is AlertStatus.ACKNOWLEDGED
        assert (resolved_by_the_service, announced) == (False, 0)
    else:
        assert alert.status is AlertStatus.RESOLVED
        assert alert.resolved_at == clock.now()
        assert alert.resolved_by_id is None
        assert answered_at.isoformat() in alert.resolution_note
        assert (resolved_by_the_service, announced) == (True, 1)


async def test_answers_given_outside_the_window_are_kept_as_unscheduled_early_or_late_responses(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    # CLINICAL.md §5: timing never discards an answer; the assignment keeps its status.
    post, ended = await expired_post_session_check(client, tokens, clock, app)
    clock.set(ended + timedelta(hours=20))
    kept = []
    for answered_at, timing in (
        (ended + timedelta(hours=1, minutes=59), "EARLY"),
        (ended + timedelta(hours=8), "LATE"),
    ):
        values = {"assignmentId": assignment_id(post), "answers": BACK_TO_USUAL, "recordedAt": answered_at.isoformat()}
        body = await gql(client, SURVEY, {"input": values}, token=tokens.fresh(ALEX))
        result = body["data"]["submitSurveyResponse"]["result"]
        assert (result["instrument"], result["assignmentId"], result["timing"]) == ("POST-SESSION", None, timing)
        assert result["intendedAssignmentId"] == assignment_id(post)
        kept.append(result["id"])
    # Without the phone's time, answers to an expired survey are late.
    values = {"assignmentId": assignment_id(post), "answers": BACK_TO_USUAL}
    body = await gql(client, SURVEY, {"input": values}, token=tokens.fresh(ALEX))
    assert body["data"]["submitSurveyResponse"]["result"]["timing"] == "LATE"
    with use_database(app.state.database):
        assert (await SurveyAssignment.get(id=post.id)).status is AssignmentStatus.EXPIRED
        assert await SurveyResponse.filter(intended_assignment_id=post.id).count() == 3
        assert not await SurveyResponse.filter(assignment_id=post.id).exists()
        alert = await Alert.get(kind="SAFETY_CHECK_UNANSWERED", source_id=post.id)
    assert alert.status is AlertStatus.OPEN


@pytest.mark.parametrize("mutation", ["submitCheckIn", "reportSideEffect", "submitSurveyResponse",
                                      "startDosingSession", "completeDosingSession"])  # fmt: skip
@pytest.mark.parametrize(
    ("offset", "problem"),
    [
        (timedelta(minutes=6), "recordedAt is in the future"),
        (-timedelta(days=31), "recordedAt is more than 30 days ago"),
    ],
    ids=["six minutes ahead", "31 days old"],
)
async def test_a_phone_time_in_the_future_or_too_old_is_refused(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette, mutation: str,
    offset: timedelta, problem: str,
) -> None:  # fmt: skip
    now = clock.now()
    session_id = None
    if mutation == "completeDosingSession":
        session_id = (await start(client, tokens.fresh(ALEX), now))["result"]["id"]
    values = {
        "submitCheckIn": {"pain": 3},
        "reportSideEffect": {"code": "NAUSEA", "grade": "MILD", "onsetAt": now.isoformat()},
        "submitSurveyResponse": {"instrument": "PAIN-NRS", "answers": answers(3)},
        "startDosingSession": dose(measured_at=now),
        "completeDosingSession": {"sessionId": session_id, "dissociation": 2, "sedation": 2, "backToBaseline": True},
    }[mutation]  # fmt: skip
    values = {**values, "recordedAt": (now + offset).isoformat(), "idempotencyKey": f"bad-clock-{mutation}"}
    body = await gql(client, MUTATIONS[mutation], {"input": values}, token=tokens.fresh(ALEX))
    result = body["data"][mutation]["result"]
    assert result["__typename"] == "ValidationError"
    assert result["field"] == "recordedAt"
    assert result["message"].startswith(problem)
    with use_database(app.state.database):
        assert not await IdempotencyKey.filter(key=f"bad-clock-{mutation}").exists()


async def test_a_replayed_start_is_checked_at_the_phones_time_and_not_abandoned_on_arrival(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = tokens.fresh(ALEX)
    started_offline = clock.now() - timedelta(hours=20)
    values = {**dose(started_offline - timedelta(minutes=5)), "recordedAt": started_offline.isoformat()}
    body = await gql(client, START, {"input": values}, token=alex)
    session = body["data"]["startDosingSession"]["result"]
    assert session["status"] == "IN_PROGRESS"
    assert (session["dosedDespiteFailedChecks"], session["failedChecks"]) == (False, [])
    assert (session["startedAt"], session["startReceivedAt"]) == (started_offline.isoformat(), clock.now().isoformat())

    # Past the 6-hour limit on arrival: its completion may be next in the queue, so the job waits.
    with use_database(app.state.database):
        assert await clinical_jobs.close_abandoned_sessions(job_env(clock)) == 0
        clock.advance(timedelta(minutes=11))
        assert await clinical_jobs.close_abandoned_sessions(job_env(clock)) == 1
        row = await DosingSession.get(id=relay.GlobalID.from_id(session["id"]).node_id)
    assert row.status is SessionStatus.ABANDONED


async def test_a_dose_taken_offline_with_a_reading_taken_later_is_recorded_with_bp_missing(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    # A reading taken just now is fresh for the server, but 20 hours after the dose (CLINICAL.md §2).
    started_offline = clock.now() - timedelta(hours=20)
    values = {**dose(clock.now() - timedelta(minutes=5)), "recordedAt": started_offline.isoformat()}
    body = await gql(client, START, {"input": values}, token=tokens.fresh(ALEX))
    session = body["data"]["startDosingSession"]["result"]
    assert (session["__typename"], session["status"], session["dosedDespiteFailedChecks"]) == (
        "DosingSession", "IN_PROGRESS", True,
    )  # fmt: skip
    assert [check["code"] for check in session["failedChecks"]] == ["BP_MISSING"]
    with use_database(app.state.database):
        [alert] = await Alert.filter(kind="DOSED_DESPITE_FAILED_CHECKS")
    assert (alert.severity.value, alert.source_type) == ("HIGH", "DosingSession")
    assert "BP_MISSING" in alert.summary


async def test_a_replayed_start_too_close_before_a_later_session_is_recorded_as_too_soon(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    online_start = clock.now()
    await complete_a_session_online(client, tokens, clock)
    started_offline = online_start - timedelta(hours=24)
    values = {**dose(started_offline - timedelta(minutes=5)), "recordedAt": started_offline.isoformat()}
    body = await gql(client, START, {"input": values}, token=tokens.fresh(ALEX))
    session = body["data"]["startDosingSession"]["result"]
    assert session["dosedDespiteFailedChecks"] is True
    [check] = session["failedChecks"]
    assert check["code"] == "TOO_SOON"
    assert "another session started 24.0 hours after this one" in check["message"]


FHIR = "query($t: String!, $id: ID!) { fhirResource(resourceType: $t, id: $id) }"


async def test_the_ehr_sees_a_replayed_answer_and_report_at_the_phones_time(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh(ALEX)
    answered_at = clock.now() - timedelta(hours=10)
    values = {
        "instrument": "PHQ-9",
        "answers": answers(1, 1, 1, 0, 0, 1, 0, 0, 0),
        "recordedAt": answered_at.isoformat(),
    }
    body = await gql(client, SURVEY, {"input": values}, token=alex)
    response_id = relay.GlobalID.from_id(body["data"]["submitSurveyResponse"]["result"]["id"]).node_id
    reported_at = clock.now() - timedelta(hours=9)
    onset = {"code": "NAUSEA", "grade": "MILD", "onsetAt": (reported_at - timedelta(hours=1)).isoformat()}
    body = await gql(client, SIDE_EFFECT, {"input": {**onset, "recordedAt": reported_at.isoformat()}}, token=alex)
    report_id = relay.GlobalID.from_id(body["data"]["reportSideEffect"]["result"]["id"]).node_id

    async def fhir(resource_type: str, resource_id: str) -> dict[str, Any]:
        body = await gql(client, FHIR, {"t": resource_type, "id": resource_id}, token=alex)
        resource: dict[str, Any] = body["data"]["fhirResource"]
        return resource

    assert (await fhir("QuestionnaireResponse", response_id))["authored"] == answered_at.isoformat()
    total = await fhir("Observation", f"{response_id}-total")
    assert (total["effectiveDateTime"], total["issued"]) == (answered_at.isoformat(), clock.now().isoformat())
    assert (await fhir("AdverseEvent", report_id))["recordedDate"] == reported_at.isoformat()


async def test_a_replayed_answer_takes_its_place_in_the_outcomes_by_the_phones_time(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh(ALEX)
    online = {"instrument": "PHQ-9", "answers": answers(1, 1, 1, 0, 0, 0, 0, 0, 0)}
    assert (await gql(client, SURVEY, {"input": online}, token=alex))["data"]["submitSurveyResponse"]["result"][
        "totalScore"
    ] == 3
    replayed = {
        "instrument": "PHQ-9",
        "answers": answers(2, 2, 2, 2, 1, 1, 1, 1, 0),
        "recordedAt": (clock.now() - timedelta(hours=10)).isoformat(),
    }
    assert (await gql(client, SURVEY, {"input": replayed}, token=alex))["data"]["submitSurveyResponse"]["result"][
        "totalScore"
    ] == 12
    body = await gql(client, "{ me { patient { outcomes { phq9 { latest } } } } }", token=alex)
    assert body["data"]["me"]["patient"]["outcomes"]["phq9"]["latest"] == 3  # answered before the online one
