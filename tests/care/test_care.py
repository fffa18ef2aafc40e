"""Plans, check-ins, side-effect reports and the alert queue, over GraphQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from jobs import clinical as clinical_jobs
from models.alerts.alerts import Alert, AlertEscalation
from models.kernel.clock import ManualClock
from models.reports.checkins import CheckIn
from tests.conftest import Tokens, job_env
from tests.support.clinical import ALERTS, REPORT_SIDE_EFFECT, SUBMIT_CHECK_IN, patient_global_id, plan_of, start
from tests.support.graphql import gql

CREATE_PLAN = """
mutation Create($input: CreateTreatmentPlanInput!) {
  createTreatmentPlan(input: $input) {
    result { __typename ... on TreatmentPlan { id status dose doseUnit bloodPressureCeiling { systolic diastolic }
                                             surveySchedule { instrument offsetMinutes windowMinutes } }
             ... on Error { message } ... on ValidationError { field } }
  }
}
"""
SET_STATUS = """
mutation Hold($plan: ID!, $reason: String!) {
  holdTreatmentPlan(input: {planId: $plan, reason: $reason}) { result { __typename ... on TreatmentPlan { status } } }
}
"""
RESUME = """
mutation Resume($plan: ID!) {
  resumeTreatmentPlan(input: {planId: $plan, reason: "reviewed by phone"}) {
    result { __typename ... on TreatmentPlan { status } }
  }
}
"""
END = """
mutation End($plan: ID!) {
  endTreatmentPlan(input: {planId: $plan, status: CANCELLED, reason: "patient moved"}) {
    result { __typename ... on TreatmentPlan { status } }
  }
}
"""
ACKNOWLEDGE = """
mutation Ack($alert: ID!) { acknowledgeAlert(input: {alertId: $alert, note: "calling now"}) {
  result { __typename ... on Alert { status } ... on Error { message } } } }
"""
RESOLVE = """
mutation Resolve($alert: ID!, $note: String) { resolveAlert(input: {alertId: $alert, note: $note}) {
  result { __typename ... on Alert { status resolutionNote }
           ... on Error { message } ... on ValidationError { field } } } }
"""


async def create_plan(client: httpx.AsyncClient, token: object, patient: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "patientId": patient,
        "formulation": "SUBLINGUAL_TABLET",
        "setting": "AT_HOME",
        "dose": 150,
        "plannedSessions": 8,
    }
    values.update(changes)
    body = await gql(client, CREATE_PLAN, {"input": values}, token=token)
    result: dict[str, Any] = body["data"]["createTreatmentPlan"]["result"]
    return result


async def test_a_provider_prescribes_a_plan_with_clinical_defaults(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    rivera = tokens.user("dr.rivera@demo.test")
    blair = await patient_global_id(app, "blair@demo.test")
    current = await plan_of(client, rivera, blair)
    assert (await gql(client, END, {"plan": current["id"]}, token=rivera))["data"]["endTreatmentPlan"]["result"][
        "status"
    ] == "CANCELLED"
    plan = await create_plan(client, rivera, blair)
    assert plan["status"] == "ACTIVE"
    assert plan["doseUnit"] == "MG"
    assert plan["bloodPressureCeiling"] == {"systolic": 140, "diastolic": 90}
    assert [item["instrument"] for item in plan["surveySchedule"]] == [
        "POST-SESSION",
        "PAIN-NRS",
        "PEG-3",
        "PHQ-9",
        "GAD-7",
    ]


async def test_a_second_current_plan_is_a_conflict(client: httpx.AsyncClient, tokens: Tokens, app: Starlette) -> None:
    refused = await create_plan(
        client, tokens.user("dr.rivera@demo.test"), await patient_global_id(app, "alex@demo.test")
    )
    assert refused == {
        "__typename": "Conflict",
        "message": "the patient already has a current plan: complete or cancel it first",
    }


async def test_doses_outside_the_formulation_limits_are_refused_with_the_limit_named(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    rivera = tokens.user("dr.rivera@demo.test")
    blair = await patient_global_id(app, "blair@demo.test")
    await gql(client, END, {"plan": (await plan_of(client, rivera, blair))["id"]}, token=rivera)
    too_much = await create_plan(client, rivera, blair, dose=900)
    assert too_much == {
        "__typename": "ValidationError",
        "message": "SUBLINGUAL_TABLET dose must be between 25 and 800 mg",
        "field": "dose",
    }
    spravato = await create_plan(client, rivera, blair, formulation="INTRANASAL_ESKETAMINE", setting="CLINIC", dose=40)
    assert spravato["message"] == "INTRANASAL_ESKETAMINE dose must be one of 28, 56, 84 mg"
    at_home_iv = await create_plan(client, rivera, blair, formulation="INTRAVENOUS", dose=0.5)
    assert at_home_iv["message"] == "INTRAVENOUS is given in clinic only"
    ceiling = await create_plan(client, rivera, blair, bloodPressureCeiling={"systolic": 170, "diastolic": 95})
    assert ceiling["field"] == "bloodPressureCeiling"
    contraindicated = await create_plan(client, rivera, blair, structuralContraindications=["ACTIVE_PSYCHOSIS"])
    assert contraindicated["field"] == "structuralContraindications"
    assert (await create_plan(client, rivera, blair, plannedSessions=0))["field"] == "plannedSessions"
    assert (await create_plan(client, rivera, blair, dose=100.125))["field"] == "dose"
    twice = [{"instrument": "PHQ-9", "offsetMinutes": 10080, "windowMinutes": 4320}] * 2
    assert (await create_plan(client, rivera, blair, surveySchedule=twice))["field"] == "surveySchedule"


async def test_an_admin_sees_who_a_patient_is_but_not_their_clinical_record(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    query = (
        "query($id: ID!) { patient(id: $id) { givenName treatmentPlan { id } "
        "dosingSessions { edges { node { id } } } } }"
    )
    body = await gql(
        client, query, {"id": await patient_global_id(app, "alex@demo.test")}, token=tokens.user("admin@demo.test")
    )
    assert body["data"]["patient"] == {"givenName": "Alex", "treatmentPlan": None, "dosingSessions": None}
    assert [error["extensions"]["code"] for error in body["errors"]] == ["NOT_FOUND"]


async def test_a_plan_on_hold_refuses_sessions_until_resumed_and_keeps_its_history(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    rivera = tokens.fresh("dr.rivera@demo.test")
    alex_id = await patient_global_id(app, "alex@demo.test")
    plan = await plan_of(client, rivera, alex_id)
    held = await gql(client, SET_STATUS, {"plan": plan["id"], "reason": "BP review"}, token=rivera)
    assert held["data"]["holdTreatmentPlan"]["result"]["status"] == "ON_HOLD"
    refused = await start(client, tokens.fresh("alex@demo.test"), clock.now())
    assert [c["code"] for c in refused["result"]["failedChecks"]] == ["PLAN_ON_HOLD"]
    await gql(client, RESUME, {"plan": plan["id"]}, token=rivera)
    assert (await start(client, tokens.fresh("alex@demo.test"), clock.now()))["result"]["__typename"] == "DosingSession"
    history = (await plan_of(client, rivera, alex_id))["statusHistory"]
    assert [(h["fromStatus"], h["toStatus"], h["reason"]) for h in history] == [
        (None, "ACTIVE", "initial course after intake assessment"),
        ("ACTIVE", "ON_HOLD", "BP review"),
        ("ON_HOLD", "ACTIVE", "reviewed by phone"),
    ]


async def test_a_severe_side_effect_alerts_holds_the_plan_and_says_when_the_team_will_respond(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    report = {"code": "CONFUSION", "grade": "SEVERE", "onsetAt": (clock.now() - timedelta(hours=1)).isoformat()}
    body = await gql(client, REPORT_SIDE_EFFECT, {"input": report}, token=tokens.user("alex@demo.test"))
    payload = body["data"]["reportSideEffect"]
    assert payload["result"]["grade"] == "SEVERE"
    assert payload["safetyInstructions"].startswith(
        "Your care team has been told and will respond by Wed 25 Nov, 14:00 EST"
    )
    plan = await plan_of(client, tokens.user("dr.rivera@demo.test"), await patient_global_id(app, "alex@demo.test"))
    assert plan["status"] == "ON_HOLD"
    assert plan["statusHistory"][-1]["changedBySystem"] is True
    queue = await gql(client, ALERTS, {"status": ["OPEN"]}, token=tokens.user("dr.rivera@demo.test"))
    summaries = [(e["node"]["severity"], e["node"]["summary"]) for e in queue["data"]["alerts"]["edges"]]
    assert ("HIGH", "Confusion reported as SEVERE.") in summaries


async def test_chest_pain_at_any_grade_is_urgent_and_means_call_911(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    report = {"code": "CHEST_PAIN", "grade": "MILD", "onsetAt": clock.now().isoformat()}
    body = await gql(client, REPORT_SIDE_EFFECT, {"input": report}, token=tokens.user("devon@demo.test"))
    assert body["data"]["reportSideEffect"]["safetyInstructions"].startswith("Call 911")
    with use_database(app.state.database):
        alert = await Alert.get(patient__user__email="devon@demo.test", kind="SIDE_EFFECT")
    assert alert.severity.value == "URGENT"


async def test_slow_or_shallow_breathing_at_any_grade_is_urgent_holds_the_plan_and_means_call_911(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    report = {"code": "SLOW_OR_SHALLOW_BREATHING", "grade": "MILD", "onsetAt": clock.now().isoformat()}
    body = await gql(client, REPORT_SIDE_EFFECT, {"input": report}, token=tokens.user("alex@demo.test"))
    payload = body["data"]["reportSideEffect"]
    assert payload["result"]["code"] == "SLOW_OR_SHALLOW_BREATHING"
    assert payload["safetyInstructions"].startswith("Call 911 (emergency services) now")
    plan = await plan_of(client, tokens.user("dr.rivera@demo.test"), await patient_global_id(app, "alex@demo.test"))
    assert plan["status"] == "ON_HOLD"
    queue = await gql(client, ALERTS, {"status": ["OPEN"]}, token=tokens.user("dr.rivera@demo.test"))
    summaries = [(e["node"]["severity"], e["node"]["summary"]) for e in queue["data"]["alerts"]["edges"]]
    assert ("URGENT", "Slow or shallow breathing reported as MILD.") in summaries


async def test_a_side_effect_report_is_checked(client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock) -> None:
    alex = tokens.user("alex@demo.test")
    cases = [
        ({"code": "ITCHY_EARS", "grade": "MILD", "onsetAt": clock.now().isoformat()}, "code"),
        ({"code": "OTHER", "grade": "MILD", "onsetAt": clock.now().isoformat()}, "note"),
        ({"code": "NAUSEA", "grade": "MILD", "onsetAt": (clock.now() + timedelta(hours=2)).isoformat()}, "onsetAt"),
        (
            {
                "code": "NAUSEA",
                "grade": "MILD",
                "onsetAt": clock.now().isoformat(),
                "sessionId": "RG9zaW5nU2Vzc2lvbjox",
            },
            "sessionId",
        ),
    ]
    for report, field in cases:
        body = await gql(client, REPORT_SIDE_EFFECT, {"input": report}, token=alex)
        assert body["data"]["reportSideEffect"]["result"]["field"] == field, report


async def test_check_ins_from_an_offline_phone_keep_their_recorded_time(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    recorded = clock.now() - timedelta(hours=9)
    body = await gql(
        client,
        SUBMIT_CHECK_IN,
        {"input": {"recordedAt": recorded.isoformat(), "pain": 5}},
        token=tokens.user("alex@demo.test"),
    )
    check_in = body["data"]["submitCheckIn"]["result"]
    assert check_in["recordedAt"] == recorded.isoformat()
    assert check_in["receivedAt"] == clock.now().isoformat()


async def test_absurd_check_ins_are_refused(client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock) -> None:
    alex = tokens.user("alex@demo.test")
    for values, field in (
        ({"recordedAt": (clock.now() + timedelta(hours=1)).isoformat(), "pain": 3}, "recordedAt"),
        ({"recordedAt": (clock.now() - timedelta(days=40)).isoformat(), "pain": 3}, "recordedAt"),
        ({"recordedAt": clock.now().isoformat(), "pain": 11}, "pain"),
        ({"recordedAt": clock.now().isoformat(), "pain": 3, "mood": -1}, "mood"),
    ):
        body = await gql(client, SUBMIT_CHECK_IN, {"input": values}, token=alex)
        assert body["data"]["submitCheckIn"]["result"]["field"] == field


async def test_ten_concurrent_check_in_retries_make_one_row(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    values = {"recordedAt": clock.now().isoformat(), "pain": 4, "note": "slept well", "idempotencyKey": "ci-2026-11-25"}
    alex = tokens.user("alex@demo.test")
    with use_database(app.state.database):
        before = await CheckIn.filter(patient__user__email="alex@demo.test").count()
    bodies = await asyncio.gather(*(gql(client, SUBMIT_CHECK_IN, {"input": values}, token=alex) for _ in range(10)))
    assert len({body["data"]["submitCheckIn"]["result"]["id"] for body in bodies}) == 1
    with use_database(app.state.database):
        assert await CheckIn.filter(patient__user__email="alex@demo.test").count() == before + 1


async def test_crisis_words_in_a_check_in_alert_the_team_and_answer_with_crisis_resources(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    values = {"recordedAt": clock.now().isoformat(), "pain": 8, "note": "Some days I think I'd be BETTER OFF DEAD."}
    body = await gql(client, SUBMIT_CHECK_IN, {"input": values}, token=tokens.user("alex@demo.test"))
    assert "988" in body["data"]["submitCheckIn"]["crisisResources"]
    with use_database(app.state.database):
        alert = await Alert.get(patient__user__email="alex@demo.test", kind="CRISIS_LANGUAGE")
    assert alert.severity.value == "URGENT"
    assert '"better off dead"' in alert.summary


async def test_the_alert_queue_is_ordered_by_urgency_and_holds_only_the_providers_patients(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    await gql(
        client,
        REPORT_SIDE_EFFECT,
        {"input": {"code": "NAUSEA", "grade": "MODERATE", "onsetAt": clock.now().isoformat()}},
        token=tokens.user("alex@demo.test"),
    )
    await gql(
        client,
        REPORT_SIDE_EFFECT,
        {"input": {"code": "SHORTNESS_OF_BREATH", "grade": "MILD", "onsetAt": clock.now().isoformat()}},
        token=tokens.user("blair@demo.test"),
    )
    queue = await gql(client, ALERTS, {"status": ["OPEN"]}, token=tokens.user("dr.rivera@demo.test"))
    rows = [(e["node"]["severity"], e["node"]["patient"]["givenName"]) for e in queue["data"]["alerts"]["edges"]]
    assert rows == [("URGENT", "Blair"), ("HIGH", "Blair"), ("ROUTINE", "Alex")]
    other_team = await gql(client, ALERTS, {"status": ["OPEN"]}, token=tokens.user("dr.okafor@demo.test"))
    assert {e["node"]["patient"]["givenName"] for e in other_team["data"]["alerts"]["edges"]} <= {"Casey", "Devon"}


async def test_a_provider_acknowledges_then_resolves_with_a_note(client: httpx.AsyncClient, tokens: Tokens) -> None:
    rivera = tokens.user("dr.rivera@demo.test")
    queue = await gql(client, ALERTS, {"status": ["OPEN"]}, token=rivera)
    alert_id = queue["data"]["alerts"]["edges"][0]["node"]["id"]
    acknowledged = await gql(client, ACKNOWLEDGE, {"alert": alert_id}, token=rivera)
    assert acknowledged["data"]["acknowledgeAlert"]["result"]["status"] == "ACKNOWLEDGED"
    no_note = await gql(client, RESOLVE, {"alert": alert_id, "note": "  "}, token=rivera)
    assert no_note["data"]["resolveAlert"]["result"]["field"] == "note"
    resolved = await gql(client, RESOLVE, {"alert": alert_id, "note": "BP rechecked 128/80"}, token=rivera)
    assert resolved["data"]["resolveAlert"]["result"] == {
        "__typename": "Alert",
        "status": "RESOLVED",
        "resolutionNote": "BP rechecked 128/80",
    }
    other_team = await gql(client, ACKNOWLEDGE, {"alert": alert_id}, token=tokens.user("dr.okafor@demo.test"))
    assert other_team["data"]["acknowledgeAlert"]["result"]["__typename"] == "NotFound"


async def test_an_unacknowledged_urgent_alert_is_escalated_to_the_team_then_on_call(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    await gql(
        client,
        REPORT_SIDE_EFFECT,
        {"input": {"code": "BLOOD_IN_URINE", "grade": "MILD", "onsetAt": clock.now().isoformat()}},
        token=tokens.user("alex@demo.test"),
    )
    with use_database(app.state.database):
        alert = await Alert.get(patient__user__email="alex@demo.test", kind="SIDE_EFFECT", severity="URGENT")
        clock.advance(timedelta(minutes=14))
        await clinical_jobs.escalate_overdue_alerts(job_env(clock))
        assert not await AlertEscalation.filter(alert=alert).exists()
        clock.advance(timedelta(minutes=2))
        await clinical_jobs.escalate_overdue_alerts(job_env(clock))
        first = await AlertEscalation.filter(alert=alert).prefetch_related("provider")
        assert [(e.level, e.provider.family_name if e.provider else None) for e in first] == [(1, "Rivera")]
        clock.advance(timedelta(minutes=16))
        await clinical_jobs.escalate_overdue_alerts(job_env(clock))
        await clinical_jobs.escalate_overdue_alerts(job_env(clock))  # a second replica: nothing more
        levels = sorted((e.level, e.contact) for e in await AlertEscalation.filter(alert=alert))
    assert levels == [(1, None), (2, "clinic on-call contact (not configured)")]
    queue = await gql(client, ALERTS, {"status": ["OPEN"]}, token=tokens.fresh("dr.rivera@demo.test"))
    node = next(
        e["node"]
        for e in queue["data"]["alerts"]["edges"]
        if e["node"]["id"] == str(relay.GlobalID("Alert", str(alert.id)))
    )
    assert node["escalationLevel"] == 2


async def test_the_app_runs_the_clinical_jobs_on_its_scheduler(app: Starlette) -> None:
    scheduler = app.state.scheduler
    assert {job.id for job in scheduler.get_jobs()} >= {"close_abandoned_sessions", "escalate_overdue_alerts"}
    job = scheduler.get_job("escalate_overdue_alerts")
    assert job.trigger.interval == timedelta(seconds=30)
