"""GraphQL operations of the clinical core, as the apps send them, and small helpers for tests."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.care.pre_dose import CHECKLIST
from models.identity.accounts import NewUser, Patient, Role, create_user
from tests.conftest import Tokens, start_logins
from tests.support.graphql import gql

START_SESSION = """
mutation Start($input: StartDosingSessionInput!) {
  startDosingSession(input: $input) {
    result {
      __typename
      ... on DosingSession { id status startedAt doseMg monitorName preDoseBloodPressure { systolic diastolic } }
      ... on SafetyCheckFailed { message failedChecks { code message item } }
      ... on Error { message }
      ... on ValidationError { field }
    }
    safetyInstructions
    crisisResources
  }
}
"""

COMPLETE_SESSION = """
mutation Complete($input: CompleteDosingSessionInput!) {
  completeDosingSession(input: $input) {
    result {
      __typename
      ... on DosingSession { id status endedAt endedEarly durationMinutes backToBaseline
                             postDoseBloodPressure { systolic diastolic } }
      ... on Error { message }
      ... on ValidationError { field }
    }
    safetyInstructions
    crisisResources
  }
}
"""

REPORT_SIDE_EFFECT = """
mutation Report($input: ReportSideEffectInput!) {
  reportSideEffect(input: $input) {
    result { __typename ... on SideEffectReport { id code grade }
             ... on Error { message } ... on ValidationError { field } }
    safetyInstructions
    crisisResources
  }
}
"""

SUBMIT_CHECK_IN = """
mutation CheckIn($input: SubmitCheckInInput!) {
  submitCheckIn(input: $input) {
    result { __typename ... on CheckIn { id pain recordedAt receivedAt } ... on Error { message }
             ... on ValidationError { field } }
    crisisResources
  }
}
"""

ALERTS = """
query Alerts($status: [AlertStatus!]) {
  alerts(status: $status, first: 50) {
    edges { node { id kind severity status summary respondBy escalationLevel patient { givenName } } }
  }
}
"""

PLAN = """
query Plan($id: ID!) {
  patient(id: $id) {
    treatmentPlan { id status statusReason dose planned: plannedSessions
                    statusHistory { fromStatus toStatus reason changedBySystem } }
  }
}
"""


def no_contraindications(**yes: bool) -> list[dict[str, Any]]:
    return [{"code": code, "answer": yes.get(code, False)} for code in CHECKLIST]


def start_input(now: datetime, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "doseMg": 100,
        "monitorPresent": True,
        "monitorName": "Sam",
        "bloodPressure": {"systolic": 122, "diastolic": 78, "measuredAt": (now - timedelta(minutes=5)).isoformat()},
        "checklist": no_contraindications(),
    }
    values.update(changes)
    return values


async def start(client: httpx.AsyncClient, token: object, now: datetime, **changes: Any) -> dict[str, Any]:
    body = await gql(client, START_SESSION, {"input": start_input(now, **changes)}, token=token)
    payload: dict[str, Any] = body["data"]["startDosingSession"]
    return payload


async def complete(client: httpx.AsyncClient, token: object, session_id: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"sessionId": session_id, "dissociation": 4, "sedation": 3, "backToBaseline": True}
    values.update(changes)
    body = await gql(client, COMPLETE_SESSION, {"input": values}, token=token)
    payload: dict[str, Any] = body["data"]["completeDosingSession"]
    return payload


async def patient_global_id(app: Starlette, email: str) -> str:
    with use_database(app.state.database):
        patient = await Patient.get(user__email=email)
    return str(relay.GlobalID("Patient", str(patient.id)))


async def plan_of(client: httpx.AsyncClient, token: object, patient_id: str) -> dict[str, Any]:
    body = await gql(client, PLAN, {"id": patient_id}, token=token)
    plan: dict[str, Any] = body["data"]["patient"]["treatmentPlan"]
    return plan


CREATE_PLAN = """
mutation Create($input: CreateTreatmentPlanInput!) {
  createTreatmentPlan(input: $input) {
    result { __typename ... on TreatmentPlan { id status } ... on Error { message } ... on ValidationError { field } }
  }
}
"""


async def enrol_patient(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, given_name: str, **plan: Any
) -> tuple[str, str]:
    """A new patient of the North team with an active plan from Dr Rivera and no history at all:
    (their e-mail, which `tokens` now signs in, and their Patient id)."""
    email = f"{given_name.lower()}@example.test"
    with use_database(app.state.database):
        user = await create_user(
            NewUser(
                email=email, role=Role.PATIENT, given_name=given_name, family_name="Example",
                birth_date=date(1980, 5, 17), time_zone="America/New_York", care_team="North",
            ),
            password_hash="not-used",
            today=tokens.clock.now().date(),
        )  # fmt: skip
        patient = await Patient.get(user_id=user.id)
        tokens.user_ids[email] = user.id
        tokens.logins.update(await start_logins({email: user.id}, tokens.clock.now()))
    patient_id = str(relay.GlobalID("Patient", str(patient.id)))
    values = {"patientId": patient_id, "formulation": "SUBLINGUAL_TABLET", "setting": "AT_HOME", "dose": 150}
    body = await gql(
        client,
        CREATE_PLAN,
        {"input": {**values, "plannedSessions": 8, **plan}},
        token=tokens.user("dr.rivera@demo.test"),
    )
    assert body["data"]["createTreatmentPlan"]["result"]["__typename"] == "TreatmentPlan", body
    return email, patient_id
