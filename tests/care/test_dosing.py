"""Dosing sessions over GraphQL: the safety gate, completion, abandonment, and retries."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from jobs import clinical as clinical_jobs
from models.alerts.alerts import Alert
from models.care.dosing_records import DosingSession, SessionStatus
from models.kernel.clock import ManualClock
from models.kernel.events import DomainEvent
from models.kernel.policy import EMERGENCY_INSTRUCTIONS
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment
from tests.conftest import Tokens, job_env
from tests.support.clinical import COMPLETE_SESSION, START_SESSION, complete, no_contraindications, start, start_input
from tests.support.graphql import gql


async def alerts_of(app: Starlette, email: str) -> list[Alert]:
    with use_database(app.state.database):
        return list(await Alert.filter(patient__user__email=email).order_by("raised_at", "severity_rank"))


async def test_a_session_that_passes_every_check_starts_and_completes(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = tokens.fresh("alex@demo.test")
    started = await start(client, alex, clock.now(), lotNumber="KET-2291")
    session = started["result"]
    assert session["__typename"] == "DosingSession"
    assert session["status"] == "IN_PROGRESS"
    assert session["doseMg"] == 100
    assert session["preDoseBloodPressure"] == {"systolic": 122, "diastolic": 78}
    clock.advance(timedelta(hours=2, minutes=15))
    done = await complete(client, alex, session["id"], bloodPressure={"systolic": 130, "diastolic": 82})
    assert done["result"]["status"] == "COMPLETED"
    assert done["result"]["durationMinutes"] == 135
    assert done["result"]["endedEarly"] is False
    assert done["safetyInstructions"] is None
    with use_database(app.state.database):
        types = (
            await DomainEvent.filter(resource_type="DosingSession")
            .order_by("-seq")
            .limit(2)
            .values_list("type", flat=True)
        )
    assert list(types) == ["DosingSession.completed", "DosingSession.started"]


async def test_blood_pressure_over_the_ceiling_refuses_and_alerts_the_care_team(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    reading = {"systolic": 146, "diastolic": 84, "measuredAt": (clock.now() - timedelta(minutes=2)).isoformat()}
    refused = await start(client, tokens.fresh("alex@demo.test"), clock.now(), bloodPressure=reading)
    assert refused["result"]["__typename"] == "SafetyCheckFailed"
    assert [check["code"] for check in refused["result"]["failedChecks"]] == ["BP_ABOVE_CEILING"]
    assert "146/84" in refused["result"]["failedChecks"][0]["message"]
    assert refused["safetyInstructions"].startswith("Do not dose today")
    [alert] = [a for a in await alerts_of(app, "alex@demo.test") if a.kind.value == "PRE_DOSE_BP_ABOVE_CEILING"]
    assert alert.severity.value == "HIGH"
    assert alert.respond_by == clock.now() + timedelta(hours=4)
    with use_database(app.state.database):
        assert not await DosingSession.filter(status=SessionStatus.IN_PROGRESS).exists()


async def test_every_failed_check_is_listed_at_once(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    # Casey's plan is on hold (severe side effect in the demo history).
    refused = await start(
        client,
        tokens.fresh("casey@demo.test"),
        clock.now(),
        monitorPresent=False,
        bloodPressure=None,
        checklist=no_contraindications(ATE_RECENTLY=True, WILL_DRIVE=True),
    )
    checks = refused["result"]["failedChecks"]
    assert [(check["code"], check["item"]) for check in checks] == [
        ("PLAN_ON_HOLD", None),
        ("MONITOR_NOT_CONFIRMED", None),
        ("BP_MISSING", None),
        ("CONTRAINDICATION", "ATE_RECENTLY"),
        ("CONTRAINDICATION", "WILL_DRIVE"),
    ]


async def test_thoughts_of_self_harm_refuse_and_return_crisis_resources(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    refused = await start(
        client, tokens.fresh("alex@demo.test"), clock.now(), checklist=no_contraindications(SUICIDAL_THOUGHTS=True)
    )
    assert refused["result"]["__typename"] == "SafetyCheckFailed"
    assert "988" in refused["crisisResources"]
    [alert] = [a for a in await alerts_of(app, "alex@demo.test") if a.kind.value == "PRE_DOSE_CHECKLIST"]
    assert alert.severity.value == "URGENT"
    assert alert.respond_by == clock.now() + timedelta(minutes=15)


async def test_a_second_session_is_refused_while_one_is_in_progress_and_too_soon_after(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh("alex@demo.test")
    first = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(minutes=30))
    again = await start(client, alex, clock.now())
    assert [c["code"] for c in again["result"]["failedChecks"]] == ["SESSION_IN_PROGRESS", "TOO_SOON"]
    clock.advance(timedelta(hours=2))
    await complete(client, alex, first["id"])
    later = await start(client, alex, clock.now())
    assert [c["code"] for c in later["result"]["failedChecks"]] == ["TOO_SOON"]
    clock.advance(timedelta(hours=46))
    assert (await start(client, alex, clock.now()))["result"]["__typename"] == "DosingSession"


async def test_a_dose_above_the_plan_is_refused_and_does_not_hide_an_urgent_answer(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    refused = await start(
        client,
        tokens.fresh("alex@demo.test"),
        clock.now(),
        doseMg=150,
        checklist=no_contraindications(SUICIDAL_THOUGHTS=True),
    )
    checks = [(check["code"], check["item"]) for check in refused["result"]["failedChecks"]]
    assert checks == [("DOSE_ABOVE_PLAN", None), ("CONTRAINDICATION", "SUICIDAL_THOUGHTS")]
    assert "more than your plan's 100 mg" in refused["result"]["failedChecks"][0]["message"]
    assert "988" in refused["crisisResources"]
    assert [
        a.severity.value for a in await alerts_of(app, "alex@demo.test") if a.kind.value == "PRE_DOSE_CHECKLIST"
    ] == ["URGENT"]


async def test_a_reading_sent_without_its_time_is_missing_but_still_alerts_on_its_values(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    # CLINICAL.md §2: measuredAt is required before dosing; a reading is a reading all the same (§0).
    refused = await start(
        client, tokens.fresh("alex@demo.test"), clock.now(), bloodPressure={"systolic": 195, "diastolic": 118}
    )
    assert [check["code"] for check in refused["result"]["failedChecks"]] == ["BP_MISSING"]
    assert refused["safetyInstructions"] == EMERGENCY_INSTRUCTIONS
    [alert] = [a for a in await alerts_of(app, "alex@demo.test") if a.status.value == "OPEN"]
    assert (alert.kind.value, alert.severity.value) == ("PRE_DOSE_BP_ABOVE_CEILING", "URGENT")
    assert "195/118" in alert.summary


async def test_a_resolved_alert_does_not_silence_the_same_answer_later(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    yes = no_contraindications(SUICIDAL_THOUGHTS=True)
    await start(client, tokens.fresh("alex@demo.test"), clock.now(), checklist=yes)
    [first] = [a for a in await alerts_of(app, "alex@demo.test") if a.kind.value == "PRE_DOSE_CHECKLIST"]
    resolve = 'mutation($id: ID!) { resolveAlert(input: {alertId: $id, note: "called"}) { result { __typename } } }'
    await gql(
        client, resolve, {"id": str(relay.GlobalID("Alert", str(first.id)))}, token=tokens.fresh("dr.rivera@demo.test")
    )
    clock.advance(timedelta(minutes=1))
    await start(client, tokens.fresh("alex@demo.test"), clock.now(), checklist=yes)
    statuses = sorted(
        a.status.value for a in await alerts_of(app, "alex@demo.test") if a.kind.value == "PRE_DOSE_CHECKLIST"
    )
    assert statuses == ["OPEN", "RESOLVED"]


async def test_an_incomplete_checklist_or_a_time_without_offset_is_refused(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh("alex@demo.test")
    partial = await start(client, alex, clock.now(), checklist=no_contraindications()[:3])
    assert partial["result"]["field"] == "checklist"
    assert "PREGNANT" in partial["result"]["message"]
    naive = {"systolic": 120, "diastolic": 80, "measuredAt": "2026-11-25T14:58:00"}
    unzoned = await start(client, alex, clock.now(), bloodPressure=naive)
    assert unzoned["result"]["field"] == "bloodPressure.measuredAt"


async def test_ending_before_two_hours_needs_the_patient_back_to_baseline(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh("alex@demo.test")
    session = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(minutes=70))
    too_early = await complete(client, alex, session["id"], backToBaseline=False)
    assert too_early["result"]["__typename"] == "ValidationError"
    assert too_early["result"]["field"] == "endedAt"
    early = await complete(client, alex, session["id"], backToBaseline=True)
    assert early["result"]["endedEarly"] is True


async def test_a_dangerous_post_dose_reading_and_crisis_words_alert_and_advise(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = tokens.fresh("alex@demo.test")
    session = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(hours=3))
    done = await complete(
        client,
        alex,
        session["id"],
        backToBaseline=False,
        bloodPressure={"systolic": 184, "diastolic": 104},
        notes="Honestly I feel like I can\u2019t go on.",
    )
    assert done["safetyInstructions"].startswith("Call 911")
    assert "988" in done["crisisResources"]
    raised = {(a.kind.value, a.severity.value) for a in await alerts_of(app, "alex@demo.test")}
    assert {("POST_DOSE_BP_HIGH", "URGENT"), ("NOT_BACK_TO_BASELINE", "HIGH"), ("CRISIS_LANGUAGE", "URGENT")} <= raised
    [crisis] = [a for a in await alerts_of(app, "alex@demo.test") if a.kind.value == "CRISIS_LANGUAGE"]
    assert "can't go on" in crisis.summary


async def test_completing_twice_or_someone_elses_session_is_refused(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh("alex@demo.test")
    session = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(hours=3))
    await complete(client, alex, session["id"])
    twice = await complete(client, alex, session["id"])
    assert twice["result"] == {"__typename": "Conflict", "message": "the session is already completed"}
    stranger = await complete(client, tokens.fresh("blair@demo.test"), session["id"])
    assert stranger["result"]["__typename"] == "NotFound"


async def test_ten_concurrent_retries_with_one_key_start_one_session(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = tokens.fresh("alex@demo.test")
    variables = {"input": {**start_input(clock.now()), "idempotencyKey": "phone-7f3a-start-1"}}
    bodies = await asyncio.gather(*(gql(client, START_SESSION, variables, token=alex) for _ in range(10)))
    results = [body["data"]["startDosingSession"]["result"] for body in bodies]
    assert {result["__typename"] for result in results} == {"DosingSession"}
    assert len({result["id"] for result in results}) == 1
    with use_database(app.state.database):
        assert (
            await DosingSession.filter(patient__user__email="alex@demo.test", status=SessionStatus.IN_PROGRESS).count()
            == 1
        )
    changed = {"input": {**start_input(clock.now(), doseMg=90), "idempotencyKey": "phone-7f3a-start-1"}}
    conflict = await gql(client, START_SESSION, changed, token=alex)
    assert conflict["data"]["startDosingSession"]["result"] == {
        "__typename": "IdempotencyConflict",
        "message": "this idempotencyKey was already used for a different request",
    }


async def test_a_retried_refusal_is_replayed_without_raising_its_alerts_again(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = tokens.fresh("alex@demo.test")
    reading = {"systolic": 150, "diastolic": 95, "measuredAt": clock.now().isoformat()}
    variables: dict[str, Any] = {
        "input": {**start_input(clock.now(), bloodPressure=reading), "idempotencyKey": "retry-1"}
    }
    first, second = [await gql(client, START_SESSION, variables, token=alex) for _ in range(2)]
    assert first == second
    assert first["data"]["startDosingSession"]["result"]["__typename"] == "SafetyCheckFailed"
    assert len([a for a in await alerts_of(app, "alex@demo.test") if a.kind.value == "PRE_DOSE_BP_ABOVE_CEILING"]) == 1


async def test_a_completion_retried_with_its_key_returns_the_first_result(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh("alex@demo.test")
    session = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(hours=3))
    variables = {
        "input": {
            "sessionId": session["id"],
            "dissociation": 2,
            "sedation": 2,
            "backToBaseline": True,
            "idempotencyKey": "c-1",
        }
    }
    first = await gql(client, COMPLETE_SESSION, variables, token=alex)
    second = await gql(client, COMPLETE_SESSION, variables, token=alex)
    assert first == second
    assert first["data"]["completeDosingSession"]["result"]["status"] == "COMPLETED"


async def test_a_session_left_in_progress_is_closed_as_abandoned_and_the_team_alerted(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    session = (await start(client, tokens.fresh("alex@demo.test"), clock.now()))["result"]
    clock.advance(timedelta(hours=5, minutes=59))
    with use_database(app.state.database):
        assert await clinical_jobs.close_abandoned_sessions(job_env(clock)) == 0
        clock.advance(timedelta(minutes=2))
        assert await clinical_jobs.close_abandoned_sessions(job_env(clock)) == 1
        assert await clinical_jobs.close_abandoned_sessions(job_env(clock)) == 0
    [alert] = [a for a in await alerts_of(app, "alex@demo.test") if a.kind.value == "SESSION_ABANDONED"]
    assert alert.severity.value == "HIGH"
    late = await complete(client, tokens.fresh("alex@demo.test"), session["id"], notes="i just want to die")
    assert late["result"] == {"__typename": "Conflict", "message": "the session is already abandoned"}
    # The refusal does not swallow what the patient wrote.
    assert "988" in late["crisisResources"]
    assert any(a.kind.value == "CRISIS_LANGUAGE" for a in await alerts_of(app, "alex@demo.test"))


async def test_a_provider_voids_a_session_entered_in_error_and_its_surveys_are_cancelled(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = tokens.fresh("alex@demo.test")
    session = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(hours=3))
    await complete(client, alex, session["id"])
    void = (
        "mutation($s: ID!, $r: String!) { voidDosingSession(input: {sessionId: $s, reason: $r}) "
        "{ result { __typename ... on DosingSession { status notes } ... on Error { message } } } }"
    )
    refused = await gql(
        client, void, {"s": session["id"], "r": "logged twice"}, token=tokens.fresh("dr.okafor@demo.test")
    )
    assert refused["data"]["voidDosingSession"]["result"]["__typename"] == "NotFound"
    voided = await gql(
        client, void, {"s": session["id"], "r": "logged twice"}, token=tokens.fresh("dr.rivera@demo.test")
    )
    assert voided["data"]["voidDosingSession"]["result"]["status"] == "ENTERED_IN_ERROR"
    assert "[entered in error: logged twice]" in voided["data"]["voidDosingSession"]["result"]["notes"]
    with use_database(app.state.database):
        statuses = await SurveyAssignment.filter(
            session_id=uuid.UUID(relay.GlobalID.from_id(session["id"]).node_id)
        ).values_list("status", flat=True)
    assert set(statuses) == {AssignmentStatus.CANCELLED}
    # The voided session does not make the next one "too soon".
    assert (await start(client, alex, clock.now()))["result"]["__typename"] == "DosingSession"
