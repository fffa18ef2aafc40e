"""Clinic sessions over GraphQL (PRODUCT.md capability 12, CLINICAL.md §1): a provider of the
patient's care team records a dose given in clinic with the REMS monitoring form, and it is
followed like a session completed at home (alerts §2-§3, follow-up §6, FHIR and the change feed)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.alerts.alerts import Alert
from models.care.dosing_records import DosingSession
from models.kernel.audit import AuditEvent
from models.kernel.clock import ManualClock
from models.kernel.events import DomainEvent
from models.kernel.policy import EMERGENCY_INSTRUCTIONS
from tests.conftest import Tokens
from tests.support.clinical import START_SESSION, patient_global_id, start_input
from tests.support.graphql import gql
from tests.support.sync import SyncingClient

READING = "systolic diastolic heartRate spo2 measuredAt"
RECORD = f"""
mutation Record($input: RecordClinicSessionInput!) {{
  recordClinicSession(input: $input) {{
    result {{
      __typename
      ... on DosingSession {{
        id status setting formulation doseMg lotNumber monitorName startedAt endedAt durationMinutes endedEarly
        sedationObserved dissociationObserved respiratoryDepression readyToLeaveAt backToBaseline
        preDoseBloodPressure {{ {READING} }} atFortyMinutesBloodPressure {{ {READING} }}
        postDoseBloodPressure {{ {READING} }} recordedBy {{ id givenName familyName }}
      }}
      ... on Error {{ message }}
      ... on ValidationError {{ field }}
    }}
    safetyInstructions
    crisisResources
  }}
}}
"""
ASSIGNMENTS = """
query($id: ID!) {
  patient(id: $id) { surveyAssignments(first: 50) { edges { node { instrument status availableAt sessionId } } } }
}
"""
PLAN_ID = "query($id: ID!) { patient(id: $id) { treatmentPlan { id } } }"
PLAN_WRITE = "{ result { __typename ... on TreatmentPlan { id status } ... on Error { message } } }"


def form(now: datetime, patient_id: str, **changes: Any) -> dict[str, Any]:
    """A clinic session that ended 90 minutes ago after 2 h 30 of monitoring, all readings normal."""
    started = now - timedelta(hours=4)
    ended = started + timedelta(hours=2, minutes=30)
    values: dict[str, Any] = {
        "patientId": patient_id,
        "doseMg": 100,
        "lotNumber": "KET-7731",
        "startedAt": started.isoformat(),
        "endedAt": ended.isoformat(),
        "monitoredBy": "Jo Lee, RN",
        "readings": [
            reading("PRE", started - timedelta(minutes=10), 124, 78, heartRate=72, spo2=98),
            reading("AT_40_MIN", started + timedelta(minutes=40), 138, 86, heartRate=80, spo2=97),
            reading("POST", ended - timedelta(minutes=5), 128, 80, heartRate=74, spo2=98),
        ],
        "sedation": True,
        "dissociation": True,
        "respiratoryDepression": False,
        "readyToLeaveAt": ended.isoformat(),
        "notes": "Tolerated well.",
    }
    values.update(changes)
    return values


def reading(phase: str, at: datetime, systolic: int, diastolic: int, **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "systolic": systolic, "diastolic": diastolic, "measuredAt": at.isoformat(), **extra}


async def record(client: httpx.AsyncClient, token: object, values: dict[str, Any]) -> dict[str, Any]:
    body = await gql(client, RECORD, {"input": values}, token=token)
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["recordClinicSession"]
    return payload


def record_id(session: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(relay.GlobalID.from_id(session["id"]).node_id)


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def alerts_from(app: Starlette, session: dict[str, Any]) -> set[tuple[str, str]]:
    with use_database(app.state.database):
        alerts = await Alert.filter(source_type="DosingSession", source_id=record_id(session))
    return {(alert.kind.value, alert.severity.value) for alert in alerts}


async def sessions_of_alex(app: Starlette) -> int:
    with use_database(app.state.database):
        return await DosingSession.filter(patient__user__email="alex@demo.test").count()


async def new_plan(
    client: httpx.AsyncClient, tokens: Tokens, alex: str, formulation: str, setting: str, dose: float
) -> None:
    """Dr Rivera ends Alex's current plan and prescribes another."""
    rivera = tokens.fresh("dr.rivera@demo.test")
    current = (await gql(client, PLAN_ID, {"id": alex}, token=rivera))["data"]["patient"]["treatmentPlan"]["id"]
    ended = await gql(
        client,
        f'mutation($p: ID!) {{ endTreatmentPlan(input: {{planId: $p, status: COMPLETED, reason: "switch"}}) '
        f"{PLAN_WRITE} }}",
        {"p": current},
        token=rivera,
    )
    assert ended["data"]["endTreatmentPlan"]["result"]["status"] == "COMPLETED", ended
    created = await gql(
        client,
        f"mutation($i: CreateTreatmentPlanInput!) {{ createTreatmentPlan(input: $i) {PLAN_WRITE} }}",
        {"i": {"patientId": alex, "formulation": formulation, "setting": setting, "dose": dose, "plannedSessions": 6}},
        token=rivera,
    )
    assert created["data"]["createTreatmentPlan"]["result"]["status"] == "ACTIVE", created


async def test_a_team_provider_records_a_clinic_session_and_its_follow_up_is_scheduled(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    values = form(clock.now(), alex)
    payload = await record(client, tokens.fresh("dr.rivera@demo.test"), values)
    session = payload["result"]
    assert session["__typename"] == "DosingSession", payload
    assert (session["status"], session["setting"], session["formulation"]) == (
        "COMPLETED",
        "CLINIC",
        "SUBLINGUAL_TABLET",
    )
    assert (session["doseMg"], session["lotNumber"], session["monitorName"]) == (100, "KET-7731", "Jo Lee, RN")
    assert (session["durationMinutes"], session["endedEarly"]) == (150, False)
    assert (session["sedationObserved"], session["dissociationObserved"], session["respiratoryDepression"]) == (
        True,
        True,
        False,
    )
    assert moment(session["readyToLeaveAt"]) == moment(values["endedAt"])
    assert session["backToBaseline"] is True
    readings = [
        session["preDoseBloodPressure"],
        session["atFortyMinutesBloodPressure"],
        session["postDoseBloodPressure"],
    ]
    assert [(r["systolic"], r["diastolic"], r["heartRate"], r["spo2"]) for r in readings] == [
        (124, 78, 72, 98),
        (138, 86, 80, 97),
        (128, 80, 74, 98),
    ]
    assert [moment(r["measuredAt"]) for r in readings] == [moment(r["measuredAt"]) for r in values["readings"]]
    assert (session["recordedBy"]["givenName"], session["recordedBy"]["familyName"]) == ("Maria", "Rivera")
    assert (payload["safetyInstructions"], payload["crisisResources"]) == (None, None)
    assert await alerts_from(app, session) == set()

    body = await gql(client, ASSIGNMENTS, {"id": alex}, token=tokens.fresh("dr.rivera@demo.test"))
    follow_up = {
        edge["node"]["instrument"]: moment(edge["node"]["availableAt"])
        for edge in body["data"]["patient"]["surveyAssignments"]["edges"]
        if edge["node"]["sessionId"] == session["id"]
    }
    ended = moment(values["endedAt"])
    assert follow_up == {
        "POST-SESSION": ended + timedelta(hours=2),
        "PAIN-NRS": ended + timedelta(hours=24),
        "PEG-3": ended + timedelta(hours=72),
        "PHQ-9": ended + timedelta(days=7),
        "GAD-7": ended + timedelta(days=7),
    }
    with use_database(app.state.database):
        event = await DomainEvent.get(resource_type="DosingSession", resource_id=record_id(session))
        audit = await AuditEvent.get(resource_type="DosingSession", resource_id=str(record_id(session)))
    assert (event.type, event.operation.value, event.payload) == (
        "DosingSession.completed",
        "CREATED",
        {"status": "COMPLETED", "endedAt": ended.isoformat()},
    )
    assert (audit.action, audit.outcome, audit.actor_role) == ("C", "SUCCESS", "PROVIDER")


async def test_a_clinic_only_plan_is_refused_at_home_and_recorded_by_the_clinic(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    await new_plan(client, tokens, alex, "INTRANASAL_ESKETAMINE", "CLINIC", 56)
    at_home = await gql(
        client, START_SESSION, {"input": start_input(clock.now(), doseMg=56)}, token=tokens.fresh("alex@demo.test")
    )
    refused = at_home["data"]["startDosingSession"]["result"]
    assert [check["code"] for check in refused["failedChecks"]] == ["CLINIC_ONLY"]
    payload = await record(client, tokens.fresh("dr.rivera@demo.test"), form(clock.now(), alex, doseMg=56))
    assert payload["result"]["formulation"] == "INTRANASAL_ESKETAMINE"
    assert payload["result"]["doseMg"] == 56


@pytest.mark.parametrize(
    ("formulation", "plan_dose", "accepted", "refused", "reason"),
    [
        ("INTRANASAL_ESKETAMINE", 56, 84, 60, "must be one of 28, 56, 84 mg"),
        ("SUBLINGUAL_TABLET", 200, 800, 900, "between 25 and 800 mg"),
        # Weight-based plans: doseMg is the total in mg, at most the per-kg maximum for a 250 kg patient.
        ("INTRAMUSCULAR", 0.5, 35, 251, "at most 1.0 mg/kg: 250 mg"),
        # An infusion's maximum is per hour, over the session's 2.5 hours: 2.0 mg/kg/h for 250 kg over 2.5 h is 1250 mg.
        ("INTRAVENOUS", 0.5, 1250, 1251, "at most 2.0 mg/kg per hour over 2.50 hours: 1250 mg"),
    ],
)
async def test_the_dose_is_checked_against_the_plans_formulation(
    client: httpx.AsyncClient,
    tokens: Tokens,
    clock: ManualClock,
    app: Starlette,
    formulation: str,
    plan_dose: float,
    accepted: float,
    refused: float,
    reason: str,
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    await new_plan(client, tokens, alex, formulation, "CLINIC", plan_dose)
    rivera = tokens.fresh("dr.rivera@demo.test")
    too_much = (await record(client, rivera, form(clock.now(), alex, doseMg=refused)))["result"]
    assert (too_much["__typename"], too_much["field"]) == ("ValidationError", "doseMg")
    assert reason in too_much["message"]
    given = (await record(client, rivera, form(clock.now(), alex, doseMg=accepted)))["result"]
    assert (given["status"], given["doseMg"]) == ("COMPLETED", accepted)


async def test_fhir_and_the_change_feed_carry_the_clinic_session(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    ehr = SyncingClient(app, client, tokens.client("demo-ehr"))
    await ehr.catch_up()
    alex = await patient_global_id(app, "alex@demo.test")
    values = form(clock.now(), alex)
    session = (await record(client, tokens.fresh("dr.rivera@demo.test"), values))["result"]
    query = 'query($id: ID!) { fhirResource(resourceType: "MedicationAdministration", id: $id) }'
    body = await gql(client, query, {"id": str(record_id(session))}, token=tokens.fresh("dr.rivera@demo.test"))
    resource = body["data"]["fhirResource"]
    MedicationAdministration.model_validate(resource)
    assert resource["status"] == "completed"
    assert resource["dosage"]["dose"] == {
        "value": 100.0,
        "unit": "mg",
        "system": "http://unitsofmeasure.org",
        "code": "mg",
    }
    assert moment(resource["effectivePeriod"]["start"]) == moment(values["startedAt"])
    assert moment(resource["effectivePeriod"]["end"]) == moment(values["endedAt"])

    seen = len(ehr.received)
    await ehr.catch_up()
    new = {key for key, _, _ in ehr.received[seen:]}
    assert ("MedicationAdministration", str(record_id(session))) in new
    assert ehr.copy[("MedicationAdministration", str(record_id(session)))] == resource
    assert ehr.copy[("Observation", f"{record_id(session)}-bp-pre")]["component"][0]["valueQuantity"]["value"] == 124


@pytest.mark.parametrize("who", ["alex@demo.test", "admin@demo.test", "demo-ehr"])
async def test_only_providers_record_clinic_sessions(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette, who: str
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    token = tokens.client("demo-ehr") if who == "demo-ehr" else tokens.user(who)
    body = await gql(client, RECORD, {"input": form(clock.now(), alex)}, token=token)
    assert [error["extensions"]["code"] for error in body["errors"]] == ["FORBIDDEN"]
    assert await sessions_of_alex(app) == 6


async def test_a_patient_of_another_team_looks_missing(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    nobody = str(relay.GlobalID("Patient", str(uuid.uuid4())))
    okafor = tokens.fresh("dr.okafor@demo.test")
    outside = (await record(client, okafor, form(clock.now(), alex)))["result"]
    missing = (await record(client, okafor, form(clock.now(), nobody)))["result"]
    assert outside == missing == {"__typename": "NotFound", "message": "patient not found"}
    assert await sessions_of_alex(app) == 6


def _readings(change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Callable[..., dict[str, Any]]:
    def changed(values: dict[str, Any], started: datetime, ended: datetime) -> dict[str, Any]:
        return {"readings": change(values["readings"])}

    return changed


def _set_reading(index: int, **fields: Any) -> Callable[..., dict[str, Any]]:
    return _readings(lambda readings: [{**r, **fields} if i == index else r for i, r in enumerate(readings)])


REFUSALS: dict[str, tuple[Callable[..., dict[str, Any]], str]] = {
    "patient id of another type": (lambda v, s, e: {"patientId": "not-an-id"}, "patientId"),
    "no dose": (lambda v, s, e: {"doseMg": 0}, "doseMg"),
    "dose with three decimals": (lambda v, s, e: {"doseMg": 100.005}, "doseMg"),
    "dose over the formulation's limit": (lambda v, s, e: {"doseMg": 801}, "doseMg"),
    "lot number too long": (lambda v, s, e: {"lotNumber": "L" * 65}, "lotNumber"),
    "start without offset": (lambda v, s, e: {"startedAt": s.replace(tzinfo=None).isoformat()}, "startedAt"),
    "start over 30 days ago": (
        lambda v, s, e: {"startedAt": (s - timedelta(days=31)).isoformat(), "readings": []},
        "startedAt",
    ),
    "end before the start": (lambda v, s, e: {"endedAt": (s - timedelta(minutes=1)).isoformat()}, "endedAt"),
    "end in the future": (lambda v, s, e: {"endedAt": (s + timedelta(hours=5)).isoformat()}, "endedAt"),
    "ready to leave before the start": (
        lambda v, s, e: {"readyToLeaveAt": (s - timedelta(minutes=1)).isoformat()},
        "readyToLeaveAt",
    ),
    "nobody monitored": (lambda v, s, e: {"monitoredBy": "  "}, "monitoredBy"),
    "monitor's name too long": (lambda v, s, e: {"monitoredBy": "M" * 101}, "monitoredBy"),
    "no pre-dose reading": (_readings(lambda readings: readings[1:]), "readings"),
    "a phase given twice": (_readings(lambda readings: [*readings, readings[2]]), "readings[3].phase"),
    "systolic a cuff cannot show": (_set_reading(0, systolic=310), "readings[0].systolic"),
    "diastolic a cuff cannot show": (_set_reading(1, diastolic=25), "readings[1].diastolic"),
    "diastolic above systolic": (_set_reading(0, systolic=90, diastolic=95), "readings[0].diastolic"),
    "heart rate implausible": (_set_reading(2, heartRate=10), "readings[2].heartRate"),
    "spo2 implausible": (_set_reading(1, spo2=45), "readings[1].spo2"),
    "reading time without offset": (
        lambda v, s, e: _set_reading(0, measuredAt=(s - timedelta(minutes=5)).replace(tzinfo=None).isoformat())(
            v, s, e
        ),
        "readings[0].measuredAt",
    ),
    "pre-dose reading 31 minutes before the start": (
        lambda v, s, e: _set_reading(0, measuredAt=(s - timedelta(minutes=31)).isoformat())(v, s, e),
        "readings[0].measuredAt",
    ),
    "pre-dose reading after the start": (
        lambda v, s, e: _set_reading(0, measuredAt=(s + timedelta(minutes=1)).isoformat())(v, s, e),
        "readings[0].measuredAt",
    ),
    "post-dose reading after the end": (
        lambda v, s, e: _set_reading(2, measuredAt=(e + timedelta(minutes=1)).isoformat())(v, s, e),
        "readings[2].measuredAt",
    ),
    "post-dose reading before the 40-minute one": (
        lambda v, s, e: _set_reading(2, measuredAt=(s + timedelta(minutes=30)).isoformat())(v, s, e),
        "readings[2].measuredAt",
    ),
    "notes too long": (lambda v, s, e: {"notes": "n" * 2001}, "notes"),
    "idempotency key too long": (lambda v, s, e: {"idempotencyKey": "k" * 129}, "idempotencyKey"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_each_refusal_names_its_field_and_writes_nothing(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette, case: str
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    values = form(clock.now(), alex)
    change, field = REFUSALS[case]
    values.update(change(values, moment(values["startedAt"]), moment(values["endedAt"])))
    result = (await record(client, tokens.fresh("dr.rivera@demo.test"), values))["result"]
    assert (result["__typename"], result["field"]) == ("ValidationError", field), result
    assert await sessions_of_alex(app) == 6


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("holdTreatmentPlan", "the patient's treatment plan is on hold (review labs): resume it before recording"),
        ("endTreatmentPlan", "the patient has no active treatment plan"),
    ],
)
async def test_a_plan_on_hold_or_ended_refuses_the_record_and_says_why(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette, action: str, message: str
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    rivera = tokens.fresh("dr.rivera@demo.test")
    plan = (await gql(client, PLAN_ID, {"id": alex}, token=rivera))["data"]["patient"]["treatmentPlan"]["id"]
    ending = ", status: COMPLETED" if action == "endTreatmentPlan" else ""
    changed = await gql(
        client,
        f'mutation($p: ID!) {{ {action}(input: {{planId: $p, reason: "review labs"{ending}}}) {PLAN_WRITE} }}',
        {"p": plan},
        token=rivera,
    )
    assert changed["data"][action]["result"]["__typename"] == "TreatmentPlan", changed
    result = (await record(client, rivera, form(clock.now(), alex)))["result"]
    assert result["__typename"] == "Conflict"
    assert result["message"].startswith(message)
    assert await sessions_of_alex(app) == 6


def _at(index: int, systolic: int, diastolic: int, **extra: Any) -> Callable[[dict[str, Any]], None]:
    def change(values: dict[str, Any]) -> None:
        values["readings"][index] |= {"systolic": systolic, "diastolic": diastolic, **extra}

    return change


ALERTING: dict[str, tuple[list[Callable[[dict[str, Any]], None]], set[tuple[str, str]], str | None]] = {
    # §3: post-dose ≥ 180/110 is hypertensive urgency.
    "post-dose 185/115": ([_at(2, 185, 115)], {("POST_DOSE_BP_HIGH", "URGENT")}, EMERGENCY_INSTRUCTIONS),
    # §2 breathing and oxygen: SpO2 90-93 % → HIGH, below 90 % → URGENT.
    "SpO2 91 at 40 minutes": ([_at(1, 138, 86, spo2=91)], {("LOW_OXYGEN_SATURATION", "HIGH")}, None),
    "SpO2 88 after": ([_at(2, 128, 80, spo2=88)], {("LOW_OXYGEN_SATURATION", "URGENT")}, EMERGENCY_INSTRUCTIONS),
    # A HIGH reading at 40 minutes does not hide an URGENT one at the end.
    "165/100 at 40 minutes, then 182/112": (
        [_at(1, 165, 100), _at(2, 182, 112)],
        {("POST_DOSE_BP_HIGH", "HIGH"), ("POST_DOSE_BP_HIGH", "URGENT")},
        EMERGENCY_INSTRUCTIONS,
    ),
    # §2: before dosing, at or over the plan's ceiling (140/90) → HIGH.
    "pre-dose 150/92": ([_at(0, 150, 92)], {("PRE_DOSE_BP_ABOVE_CEILING", "HIGH")}, None),
    "respiratory depression": (
        [lambda values: values.update(respiratoryDepression=True)],
        {("SIDE_EFFECT", "URGENT")},
        EMERGENCY_INSTRUCTIONS,
    ),
    # §3: not back to baseline (no time ready to leave) → HIGH.
    "never ready to leave": (
        [lambda values: values.update(readyToLeaveAt=None)],
        {("NOT_BACK_TO_BASELINE", "HIGH")},
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(ALERTING))
async def test_what_the_form_shows_alerts_the_care_team_and_advises(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette, case: str
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    values = form(clock.now(), alex)
    changes, alerts, instructions = ALERTING[case]
    for change in changes:
        change(values)
    payload = await record(client, tokens.fresh("dr.rivera@demo.test"), values)
    assert payload["result"]["status"] == "COMPLETED"
    assert await alerts_from(app, payload["result"]) == alerts
    assert payload["safetyInstructions"] == instructions


async def test_a_patient_not_ready_to_leave_gets_the_post_session_check_at_once(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    values = form(clock.now(), alex, readyToLeaveAt=None)
    session = (await record(client, tokens.fresh("dr.rivera@demo.test"), values))["result"]
    assert session["backToBaseline"] is False
    body = await gql(client, ASSIGNMENTS, {"id": alex}, token=tokens.fresh("alex@demo.test"))
    [check] = [
        edge["node"]
        for edge in body["data"]["patient"]["surveyAssignments"]["edges"]
        if edge["node"]["sessionId"] == session["id"] and edge["node"]["instrument"] == "POST-SESSION"
    ]
    assert moment(check["availableAt"]) == moment(values["endedAt"])


async def test_a_retry_with_its_key_returns_the_first_result_and_writes_nothing_new(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    values = form(clock.now(), alex, idempotencyKey="clinic-1")
    values["readings"][2] |= {"systolic": 185, "diastolic": 115}
    rivera = tokens.fresh("dr.rivera@demo.test")
    first = await record(client, rivera, values)
    clock.advance(timedelta(minutes=3))
    again = await record(client, rivera, values)
    assert again == first
    assert again["safetyInstructions"] == EMERGENCY_INSTRUCTIONS
    assert await sessions_of_alex(app) == 7
    with use_database(app.state.database):
        assert await Alert.filter(source_id=record_id(first["result"])).count() == 1
    other = await record(client, rivera, {**values, "doseMg": 120})
    assert other["result"]["__typename"] == "IdempotencyConflict"
    assert await sessions_of_alex(app) == 7


async def test_the_same_session_recorded_twice_is_refused_as_overlapping(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    rivera = tokens.fresh("dr.rivera@demo.test")
    first = (await record(client, rivera, form(clock.now(), alex)))["result"]
    again = (await record(client, rivera, form(clock.now(), alex, notes="entered again")))["result"]
    assert again["__typename"] == "Conflict"
    assert "overlaps" in again["message"]
    assert first["__typename"] == "DosingSession"
    assert await sessions_of_alex(app) == 7


async def test_a_session_monitored_under_two_hours_is_kept_and_marked_ended_early(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    alex = await patient_global_id(app, "alex@demo.test")
    values = form(clock.now(), alex)
    ended = moment(values["startedAt"]) + timedelta(minutes=90)
    values |= {"endedAt": ended.isoformat(), "readyToLeaveAt": ended.isoformat()}
    values["readings"][2]["measuredAt"] = (ended - timedelta(minutes=5)).isoformat()
    session = (await record(client, tokens.fresh("dr.rivera@demo.test"), values))["result"]
    assert (session["status"], session["durationMinutes"], session["endedEarly"]) == ("COMPLETED", 90, True)
