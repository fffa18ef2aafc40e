"""Concomitant medications (CLINICAL.md §8) on the plan, their warnings at a session start, and the
structural contraindications that refuse a plan (§2)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.care.medications import INTERACTION_WARNINGS, interaction_warnings
from models.care.plan_records import ConcomitantMedication, MedicationClass, MedicationSource, TreatmentPlan
from models.care.plan_rules import STRUCTURAL_CONTRAINDICATIONS, provider_medication_list
from models.kernel.clock import ManualClock
from models.kernel.errors import InvalidInput
from tests.conftest import Tokens
from tests.support.clinical import START_SESSION, enrol_patient, patient_global_id, plan_of, start_input
from tests.support.graphql import gql

C = MedicationClass


@pytest.mark.parametrize(
    ("medication", "says"),
    [
        (C.BENZODIAZEPINE, "adds to sleepiness and may make ketamine work less well"),
        (C.NON_BENZODIAZEPINE_HYPNOTIC, "adds to sleepiness and may make ketamine work less well"),
        (C.OTHER_SEDATIVE, "adds to sleepiness and may make ketamine work less well"),
        (C.OPIOID, "add to sleepiness and can slow breathing"),
        (C.PSYCHOSTIMULANT, "can raise your blood pressure"),
        (C.MAOI, "can raise your blood pressure"),
        (C.LAMOTRIGINE, "may make ketamine work less well"),
        (C.MEMANTINE, "acts on the same receptor in the brain as ketamine"),
        (C.THEOPHYLLINE, "may make a seizure more likely"),
    ],
)
def test_each_medication_class_warns_as_section_8_says(medication: MedicationClass, says: str) -> None:
    [warning] = interaction_warnings([medication])
    assert warning.code == medication.value
    assert says in warning.message


def test_every_medication_class_has_its_warning() -> None:
    assert set(INTERACTION_WARNINGS) == set(MedicationClass)


def test_warnings_come_once_each_in_the_tables_order() -> None:
    given = [C.MAOI, C.BENZODIAZEPINE, C.MAOI, C.OPIOID]
    assert [warning.code for warning in interaction_warnings(given)] == ["OPIOID", "BENZODIAZEPINE", "MAOI"]
    assert interaction_warnings([]) == []


MONDAY = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def test_a_providers_list_keeps_what_is_known_adds_what_is_new_and_drops_what_is_left_out() -> None:
    reported = ConcomitantMedication(C.LAMOTRIGINE, MedicationSource.PATIENT, MONDAY, "started by neurologist")
    entered = ConcomitantMedication(C.OPIOID, MedicationSource.PROVIDER, MONDAY)
    later = MONDAY + timedelta(days=3)
    listed = provider_medication_list([reported, entered], (C.LAMOTRIGINE, C.MAOI), later)
    assert listed == [reported, ConcomitantMedication(C.MAOI, MedicationSource.PROVIDER, later)]


def test_a_class_listed_twice_is_refused_with_the_field_named() -> None:
    with pytest.raises(InvalidInput) as refused:
        provider_medication_list([], (C.MAOI, C.OPIOID, C.MAOI), MONDAY)
    assert refused.value.field == "concomitantMedications"
    assert "MAOI" in refused.value.message


# ---------------------------------------------------------------- over GraphQL

MEDICATIONS = """
query($id: ID!) {
  patient(id: $id) { treatmentPlan { id concomitantMedications { medicationClass source reportedAt note } } }
}
"""
UPDATE = """
mutation Update($input: UpdateTreatmentPlanInput!) {
  updateTreatmentPlan(input: $input) {
    result { __typename ... on TreatmentPlan { dose concomitantMedications { medicationClass source reportedAt } }
             ... on ValidationError { field message } }
  }
}
"""
CREATE = """
mutation Create($input: CreateTreatmentPlanInput!) {
  createTreatmentPlan(input: $input) {
    result { __typename ... on TreatmentPlan { concomitantMedications { medicationClass source } }
             ... on ValidationError { field message } }
  }
}
"""
END = """
mutation End($plan: ID!) {
  endTreatmentPlan(input: {planId: $plan, status: CANCELLED, reason: "new course"}) { result { __typename } }
}
"""


def entries(plan: dict[str, Any]) -> list[tuple[str, str, datetime]]:
    return [
        (e["medicationClass"], e["source"], datetime.fromisoformat(e["reportedAt"]))
        for e in plan["concomitantMedications"]
    ]


def plan_id_of(plan: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(relay.GlobalID.from_id(plan["id"]).node_id)


async def medications_of(client: httpx.AsyncClient, token: object, patient_id: str) -> dict[str, Any]:
    body = await gql(client, MEDICATIONS, {"id": patient_id}, token=token)
    plan: dict[str, Any] = body["data"]["patient"]["treatmentPlan"]
    return plan


async def update(client: httpx.AsyncClient, token: object, plan_id: str, **changes: Any) -> dict[str, Any]:
    body = await gql(client, UPDATE, {"input": {"planId": plan_id, **changes}}, token=token)
    result: dict[str, Any] = body["data"]["updateTreatmentPlan"]["result"]
    return result


async def test_a_provider_enters_medications_on_a_new_plan_and_the_patient_reads_them(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    email, patient_id = await enrol_patient(
        app, client, tokens, "Robin", concomitantMedications=["OPIOID", "BENZODIAZEPINE"]
    )
    when = clock.now()
    expected = [("OPIOID", "PROVIDER", when), ("BENZODIAZEPINE", "PROVIDER", when)]
    assert entries(await medications_of(client, tokens.user("dr.rivera@demo.test"), patient_id)) == expected
    mine = await gql(
        client,
        "{ me { patient { treatmentPlan { concomitantMedications { medicationClass source note } } } } }",
        token=tokens.user(email),
    )
    assert mine["data"]["me"]["patient"]["treatmentPlan"]["concomitantMedications"] == [
        {"medicationClass": "OPIOID", "source": "PROVIDER", "note": None},
        {"medicationClass": "BENZODIAZEPINE", "source": "PROVIDER", "note": None},
    ]


async def test_a_provider_updates_the_list_keeping_who_reported_each_class_and_when(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    rivera = tokens.fresh("dr.rivera@demo.test")
    _, patient_id = await enrol_patient(app, client, tokens, "Sasha", concomitantMedications=["OPIOID"])
    entered = clock.now()
    plan = await medications_of(client, rivera, patient_id)
    # The patient reported lamotrigine (the safety screen's report writes such an entry).
    with use_database(app.state.database):
        row = await TreatmentPlan.get(id=plan_id_of(plan))
        reported = ConcomitantMedication(C.LAMOTRIGINE, MedicationSource.PATIENT, clock.now(), "from neurology")
        row.concomitant_medications = [*row.concomitant_medications, reported.as_json()]
        await row.save(update_fields=["concomitant_medications"])
    clock.advance(timedelta(days=2))
    now = clock.now()

    changed = await update(client, rivera, plan["id"], concomitantMedications=["LAMOTRIGINE", "OPIOID", "MAOI"])
    assert entries(changed) == [
        ("OPIOID", "PROVIDER", entered),
        ("LAMOTRIGINE", "PATIENT", entered),
        ("MAOI", "PROVIDER", now),
    ]
    dose_only = await update(client, rivera, plan["id"], dose=200)
    assert (dose_only["dose"], entries(dose_only)) == (200, entries(changed))
    narrowed = await update(client, rivera, plan["id"], concomitantMedications=["MAOI"])
    assert entries(narrowed) == [("MAOI", "PROVIDER", now)]
    cleared = await update(client, rivera, plan["id"], concomitantMedications=[])
    assert cleared["concomitantMedications"] == []
    assert (await medications_of(client, rivera, patient_id))["concomitantMedications"] == []


async def test_a_class_listed_twice_is_a_validation_error_naming_the_field(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    rivera = tokens.user("dr.rivera@demo.test")
    _, patient_id = await enrol_patient(app, client, tokens, "Kim")
    plan = await medications_of(client, rivera, patient_id)
    refused = await update(client, rivera, plan["id"], concomitantMedications=["MAOI", "MAOI"])
    assert refused == {
        "__typename": "ValidationError",
        "field": "concomitantMedications",
        "message": "each class once; repeated: MAOI",
    }
    assert (await medications_of(client, rivera, patient_id))["concomitantMedications"] == []


async def test_known_hypersensitivity_to_ketamine_refuses_the_plan_naming_the_field(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    assert "KETAMINE_HYPERSENSITIVITY" in STRUCTURAL_CONTRAINDICATIONS
    rivera = tokens.user("dr.rivera@demo.test")
    blair = await patient_global_id(app, "blair@demo.test")
    await gql(client, END, {"plan": (await plan_of(client, rivera, blair))["id"]}, token=rivera)
    values = {"patientId": blair, "formulation": "SUBLINGUAL_TABLET", "setting": "AT_HOME", "dose": 100}
    body = await gql(
        client,
        CREATE,
        {"input": {**values, "plannedSessions": 6, "structuralContraindications": ["KETAMINE_HYPERSENSITIVITY"]}},
        token=rivera,
    )
    assert body["data"]["createTreatmentPlan"]["result"] == {
        "__typename": "ValidationError",
        "field": "structuralContraindications",
        "message": "a plan cannot be created while a contraindication is recorded: KETAMINE_HYPERSENSITIVITY",
    }
    assert (await plan_of(client, rivera, blair))["status"] == "CANCELLED"  # no new plan


LOG = """
mutation Log($input: LogOpioidUseInput!) { logOpioidUse(input: $input) { result { __typename } } }
"""


async def test_a_session_start_warns_of_each_medication_on_the_plan_and_a_recent_opioid(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    email, _ = await enrol_patient(
        app, client, tokens, "Robin", concomitantMedications=["THEOPHYLLINE", "OPIOID", "BENZODIAZEPINE"]
    )
    robin = tokens.fresh(email)
    taken = (clock.now() - timedelta(hours=1)).isoformat()
    dose = {"drug": "oxycodone", "strength": 5, "strengthUnit": "mg", "quantity": 1, "takenAt": taken}
    assert (await gql(client, LOG, {"input": dose}, token=robin))["data"]["logOpioidUse"]["result"]["__typename"] == (
        "OpioidDose"
    )
    query = START_SESSION.replace("crisisResources\n", "crisisResources\n    warnings { code message }\n")
    variables = {"input": start_input(clock.now(), idempotencyKey="start-with-medications")}
    started = (await gql(client, query, variables, token=robin))["data"]["startDosingSession"]
    assert started["result"]["__typename"] == "DosingSession"
    assert [w["code"] for w in started["warnings"]] == [
        "OPIOID_WITHIN_4_HOURS",
        "OPIOID",
        "BENZODIAZEPINE",
        "THEOPHYLLINE",
    ]
    assert [w["message"] for w in started["warnings"][1:]] == [
        INTERACTION_WARNINGS[C.OPIOID],
        INTERACTION_WARNINGS[C.BENZODIAZEPINE],
        INTERACTION_WARNINGS[C.THEOPHYLLINE],
    ]
    retried = (await gql(client, query, variables, token=robin))["data"]["startDosingSession"]
    assert retried == started


async def test_a_plan_without_medications_warns_of_nothing_at_the_start(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    email, _ = await enrol_patient(app, client, tokens, "Kim")
    query = START_SESSION.replace("crisisResources\n", "crisisResources\n    warnings { code }\n")
    started = (await gql(client, query, {"input": start_input(clock.now())}, token=tokens.user(email)))["data"]
    assert started["startDosingSession"]["result"]["__typename"] == "DosingSession"
    assert started["startDosingSession"]["warnings"] == []
