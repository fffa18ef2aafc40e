"""FHIR R4 resources: every seeded record, fetched through the API, validates against the R4
models of fhir.resources (R4B package), with the codes CLINICAL.md gives; access is the chart's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhir.resources.R4B.adverseevent import AdverseEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.alerts.alerts import Alert
from models.care.dosing_records import DosingSession
from models.care.plan_records import TreatmentPlan
from models.identity.accounts import CareTeam, DataSharingConsent, Patient, Provider
from models.kernel.clock import ManualClock
from models.messaging.messaging import Message
from models.outcomes.opioids import OpioidDose
from models.reports.checkins import CheckIn
from models.reports.side_effects import SideEffectReport
from models.surveys.survey_records import SurveyResponse
from tests.conftest import Tokens
from tests.support.clinical import REPORT_SIDE_EFFECT
from tests.support.fhir import MID_DOSE, MODELS, record_clinic_readings
from tests.support.graphql import gql

QUERY = "query($t: String!, $id: ID!) { fhirResource(resourceType: $t, id: $id) }"


async def seeded_ids(app: Starlette) -> list[tuple[str, str]]:
    with use_database(app.state.database):
        ids = [("Patient", str(p.id)) for p in await Patient.all()]
        for session in await DosingSession.all():
            ids.append(("MedicationAdministration", str(session.id)))
            ids.append(("Observation", f"{session.id}-bp-pre"))
            if session.post_systolic is not None:
                ids.append(("Observation", f"{session.id}-bp-post"))
        for response in await SurveyResponse.all():
            ids.append(("QuestionnaireResponse", str(response.id)))
            if response.total_score is not None:
                ids.append(("Observation", f"{response.id}-total"))
        ids += [("Observation", str(c.id)) for c in await CheckIn.all()]
        ids += [("AdverseEvent", str(r.id)) for r in await SideEffectReport.all()]
        ids += [("Flag", str(a.id)) for a in await Alert.all()]
        ids += [("Communication", str(m.id)) for m in await Message.all()]
        ids += [("Practitioner", str(p.id)) for p in await Provider.all()]
        ids += [("CareTeam", str(t.id)) for t in await CareTeam.all()]
        ids += [("MedicationStatement", str(d.id)) for d in await OpioidDose.all()]
        for plan in await TreatmentPlan.all():
            ids += [("CarePlan", str(plan.id)), ("MedicationRequest", str(plan.id))]
        ids += [("Consent", str(c.id)) for c in await DataSharingConsent.all()]
    return ids


async def fetch(client: httpx.AsyncClient, token: str, resource_type: str, resource_id: str) -> dict[str, Any]:
    return await gql(client, QUERY, {"t": resource_type, "id": resource_id}, token=token)


async def test_every_seeded_record_is_valid_fhir_r4(client: httpx.AsyncClient, tokens: Tokens, app: Starlette) -> None:
    providers = [tokens.user("dr.rivera@demo.test"), tokens.user("dr.okafor@demo.test")]  # North, South
    validated: set[tuple[str, str]] = set()
    ids = await seeded_ids(app)
    for (resource_type, resource_id), provider in [(record, p) for record in ids for p in providers]:
        body = await fetch(client, provider, resource_type, resource_id)
        if "errors" in body:  # another care team's patient: the same answer as a missing record
            assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            continue
        resource = body["data"]["fhirResource"]
        assert resource["resourceType"] == resource_type
        assert resource["id"] == resource_id
        MODELS[resource_type].model_validate(resource)
        validated.add((resource_type, resource_id))
    assert validated == set(ids)  # each record by its own team's provider
    assert {kind for kind, _ in ids} == set(MODELS)  # the demo has a record of each kind


async def test_a_blood_pressure_reading_carries_the_loinc_codes(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    with use_database(app.state.database):
        session = await DosingSession.filter(patient__user__email="alex@demo.test").first()
    assert session is not None
    body = await fetch(client, tokens.user("alex@demo.test"), "Observation", f"{session.id}-bp-pre")
    observation = body["data"]["fhirResource"]
    assert observation["code"]["coding"][0]["code"] == "85354-9"
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in observation["component"]}
    assert components["8480-6"] == {
        "value": session.pre_systolic,
        "unit": "mmHg",
        "system": "http://unitsofmeasure.org",
        "code": "mm[Hg]",
    }
    assert components["8462-4"]["value"] == session.pre_diastolic
    assert observation["partOf"] == [{"reference": f"MedicationAdministration/{session.id}"}]


async def test_a_side_effect_names_its_snomed_code_and_suspect_session(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    with use_database(app.state.database):
        report = await SideEffectReport.filter(session_id__not_isnull=True).first()
        assert report is not None
        email = (await Patient.get(id=report.patient_id).prefetch_related("user")).user.email  # type: ignore[attr-defined]
    body = await fetch(client, tokens.user(email), "AdverseEvent", str(report.id))
    event = body["data"]["fhirResource"]
    assert event["event"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert event["suspectEntity"] == [{"instance": {"reference": f"MedicationAdministration/{report.session_id}"}}]  # type: ignore[attr-defined]


SIDE_EFFECT_CODES = "https://ketafollow.example/fhir/CodeSystem/side-effects"


@pytest.mark.parametrize(
    ("code", "label", "not_this_diagnosis"),
    [
        ("DISSOCIATION", "Dissociation", "44376007"),  # dissociative disorder
        ("URINARY_SYMPTOMS", "Urinary urgency, frequency or pain", "49650001"),  # dysuria: pain only
        ("SLOW_OR_SHALLOW_BREATHING", "Slow or shallow breathing", None),
    ],
)
async def test_a_symptom_without_a_fitting_snomed_concept_carries_our_local_code_and_no_diagnosis(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, code: str, label: str, not_this_diagnosis: str | None
) -> None:
    alex = tokens.user("alex@demo.test")
    report = {"code": code, "grade": "MILD", "onsetAt": clock.now().isoformat()}
    body = await gql(client, REPORT_SIDE_EFFECT, {"input": report}, token=alex)
    report_id = relay.GlobalID.from_id(body["data"]["reportSideEffect"]["result"]["id"]).node_id
    event = (await fetch(client, alex, "AdverseEvent", report_id))["data"]["fhirResource"]
    AdverseEvent.model_validate(event)
    assert event["event"] == {"coding": [{"system": SIDE_EFFECT_CODES, "code": code, "display": label}], "text": label}
    assert "snomed" not in str(event)
    if not_this_diagnosis:
        assert not_this_diagnosis not in str(event)


HEART_RATE = {
    "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
    "text": "Heart rate",
}
SPO2_NAME = "Oxygen saturation in Arterial blood by Pulse oximetry"
SPO2 = {
    "coding": [
        {"system": "http://loinc.org", "code": "59408-5", "display": SPO2_NAME},
        {"system": "http://loinc.org", "code": "2708-6", "display": "Oxygen saturation in Arterial blood"},
    ],
    "text": SPO2_NAME,
}
PER_MINUTE = {"unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
PERCENT = {"unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}


@pytest.mark.parametrize(
    ("reading", "code", "value"),
    [
        ("hr-pre", HEART_RATE, {"value": 72, **PER_MINUTE}),
        ("hr-mid", HEART_RATE, {"value": 88, **PER_MINUTE}),
        ("hr-post", HEART_RATE, {"value": 64, **PER_MINUTE}),
        ("spo2-pre", SPO2, {"value": 98, **PERCENT}),
        ("spo2-mid", SPO2, {"value": 93, **PERCENT}),
        ("spo2-post", SPO2, {"value": 97, **PERCENT}),
    ],
)
async def test_heart_rate_and_spo2_of_each_phase_are_vital_sign_observations_of_the_session(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, reading: str, code: dict[str, Any], value: Any
) -> None:
    session = await record_clinic_readings(app, "alex@demo.test")
    body = await fetch(client, tokens.user("dr.rivera@demo.test"), "Observation", f"{session.id}-{reading}")
    observation = body["data"]["fhirResource"]
    Observation.model_validate(observation)
    assert observation["id"] == f"{session.id}-{reading}"
    assert observation["code"] == code
    assert observation["valueQuantity"] == value
    assert observation["category"][0]["coding"][0]["code"] == "vital-signs"
    assert observation["partOf"] == [{"reference": f"MedicationAdministration/{session.id}"}]
    assert observation["subject"] == {"reference": f"Patient/{session.patient_id}"}  # type: ignore[attr-defined]
    measured = {"pre": session.pre_measured_at, "mid": session.mid_measured_at, "post": session.post_measured_at}
    moment = measured[reading.rsplit("-", 1)[1]]
    assert moment is not None
    assert observation["effectiveDateTime"] == moment.isoformat()


async def test_the_40_minute_blood_pressure_of_a_clinic_session_is_an_observation_too(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    session = await record_clinic_readings(app, "alex@demo.test")
    body = await fetch(client, tokens.user("dr.rivera@demo.test"), "Observation", f"{session.id}-bp-mid")
    observation = body["data"]["fhirResource"]
    Observation.model_validate(observation)
    assert observation["code"]["coding"][0]["code"] == "85354-9"
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in observation["component"]}
    assert components == {"8480-6": 150, "8462-4": 92}
    assert observation["effectiveDateTime"] == (session.started_at + MID_DOSE).isoformat()


async def test_a_reading_whose_time_is_unknown_is_exported_without_one_rather_than_dropped(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    with use_database(app.state.database):
        session = await DosingSession.filter(patient__user__email="alex@demo.test").first()
        assert session is not None
        await DosingSession.filter(id=session.id).update(mid_heart_rate=110, mid_measured_at=None)
    body = await fetch(client, tokens.user("dr.rivera@demo.test"), "Observation", f"{session.id}-hr-mid")
    observation = body["data"]["fhirResource"]
    Observation.model_validate(observation)
    assert observation["valueQuantity"]["value"] == 110
    assert "effectiveDateTime" not in observation


@pytest.mark.parametrize("reading", ["hr-pre", "spo2-post", "bp-mid", "hr-mid", "spo2-mid"])
async def test_a_reading_that_was_not_taken_is_not_found(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, reading: str
) -> None:
    with use_database(app.state.database):
        session = await DosingSession.filter(
            patient__user__email="alex@demo.test", post_systolic__not_isnull=True
        ).first()
    assert session is not None
    body = await fetch(client, tokens.user("dr.rivera@demo.test"), "Observation", f"{session.id}-{reading}")
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_every_reading_of_a_session_comes_with_it_in_the_patients_bundle(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    session = await record_clinic_readings(app, "alex@demo.test")
    query = "query($id: ID!) { fhirPatientBundle(patientId: $id) }"
    patient_id = str(relay.GlobalID("Patient", str(session.patient_id)))  # type: ignore[attr-defined]
    bundle = (await gql(client, query, {"id": patient_id}, token=tokens.user("dr.rivera@demo.test")))["data"][
        "fhirPatientBundle"
    ]
    Bundle.model_validate(bundle)
    readings = {
        entry["resource"]["id"]: entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["id"].startswith(f"{session.id}-")
    }
    assert set(readings) == {
        f"{session.id}-{kind}-{phase}" for kind in ("bp", "hr", "spo2") for phase in ("pre", "mid", "post")
    }
    for observation in readings.values():
        Observation.model_validate(observation)
        assert observation["partOf"] == [{"reference": f"MedicationAdministration/{session.id}"}]


@pytest.mark.parametrize(
    ("resource_type", "resource_id", "code"),
    [
        ("Medication", "x", "BAD_USER_INPUT"),
        ("Patient", "not-a-uuid", "NOT_FOUND"),
        ("Observation", "00000000-0000-0000-0000-000000000000-bp-during", "NOT_FOUND"),
        ("Observation", "00000000-0000-0000-0000-000000000000-hr-pre", "NOT_FOUND"),
        ("Observation", "00000000-0000-0000-0000-000000000000-pulse-pre", "NOT_FOUND"),
        ("Flag", "00000000-0000-0000-0000-000000000000", "NOT_FOUND"),
    ],
)
async def test_bad_requests_are_named(
    client: httpx.AsyncClient, tokens: Tokens, resource_type: str, resource_id: str, code: str
) -> None:
    body = await fetch(client, tokens.user("dr.rivera@demo.test"), resource_type, resource_id)
    assert body["errors"][0]["extensions"]["code"] == code
    assert body["data"] is None


async def test_another_patients_record_is_not_found(client: httpx.AsyncClient, tokens: Tokens, app: Starlette) -> None:
    with use_database(app.state.database):
        alex = await Patient.get(user__email="alex@demo.test")
    mine = await fetch(client, tokens.user("alex@demo.test"), "Patient", str(alex.id))
    assert mine["data"]["fhirResource"]["name"][0]["given"] == ["Alex"]
    theirs = await fetch(client, tokens.user("blair@demo.test"), "Patient", str(alex.id))
    assert theirs["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_patients_record_is_a_valid_collection_bundle(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    with use_database(app.state.database):
        alex = await Patient.get(user__email="alex@demo.test")
        sessions = await DosingSession.filter(patient=alex).count()
        reports = await SideEffectReport.filter(patient=alex).count()
    patient_id = str(relay.GlobalID("Patient", str(alex.id)))
    query = "query($id: ID!) { fhirPatientBundle(patientId: $id) }"
    body = await gql(client, query, {"id": patient_id}, token=tokens.user("alex@demo.test"))
    bundle = body["data"]["fhirPatientBundle"]
    Bundle.model_validate(bundle)
    kinds = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
    assert kinds[0] == "Patient"
    assert kinds.count("MedicationAdministration") == sessions
    assert kinds.count("AdverseEvent") == reports
    assert bundle["total"] == len(kinds)
    subjects = {entry["resource"]["subject"]["reference"] for entry in bundle["entry"][1:]}
    assert subjects == {f"Patient/{alex.id}"}  # nobody else's records


async def test_a_phq9_total_is_an_observation_derived_from_its_answers(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    with use_database(app.state.database):
        response = await SurveyResponse.filter(patient__user__email="alex@demo.test", instrument="PHQ-9").first()
    assert response is not None and response.total_score is not None
    alex = tokens.user("alex@demo.test")
    total = (await fetch(client, alex, "Observation", f"{response.id}-total"))["data"]["fhirResource"]
    assert total["code"]["coding"][0]["system"] == "http://loinc.org"
    assert total["code"]["coding"][0]["code"] == "44261-6"
    assert total["valueQuantity"]["value"] == float(response.total_score)
    assert total["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{response.id}"}]
    answers = (await fetch(client, alex, "QuestionnaireResponse", str(response.id)))["data"]["fhirResource"]
    assert answers["questionnaire"] == f"urn:ketafollow:Questionnaire:PHQ-9|{response.instrument_version}"
    assert len(answers["item"]) == len(response.answers)


async def test_a_message_is_a_communication_between_patient_and_team(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    with use_database(app.state.database):
        alex = await Patient.get(user__email="alex@demo.test")
        mine = await Message.filter(thread__patient=alex, sender_id=alex.user_id).first()  # type: ignore[attr-defined]
    assert mine is not None
    body = await fetch(client, tokens.user("dr.rivera@demo.test"), "Communication", str(mine.id))
    message = body["data"]["fhirResource"]
    assert message["sender"] == {"reference": f"Patient/{alex.id}"}
    assert message["recipient"] == [{"reference": f"CareTeam/{alex.care_team_id}"}]  # type: ignore[attr-defined]
    assert message["payload"] == [{"contentString": mine.body}]


async def test_a_care_team_lists_its_practitioners(client: httpx.AsyncClient, tokens: Tokens, app: Starlette) -> None:
    with use_database(app.state.database):
        north = await CareTeam.get(name="North")
        members = await Provider.filter(care_teams__id=north.id)
    body = await fetch(client, tokens.user("alex@demo.test"), "CareTeam", str(north.id))
    team = body["data"]["fhirResource"]
    assert team["name"] == "North"
    assert {p["member"]["reference"] for p in team["participant"]} == {f"Practitioner/{p.id}" for p in members}
    other = await fetch(client, tokens.user("casey@demo.test"), "CareTeam", str(north.id))
    assert other["errors"][0]["extensions"]["code"] == "NOT_FOUND"  # Casey is in South


async def test_a_check_in_is_a_pain_observation(client: httpx.AsyncClient, tokens: Tokens, app: Starlette) -> None:
    with use_database(app.state.database):
        check_in = await CheckIn.filter(patient__user__email="alex@demo.test").first()
    assert check_in is not None
    body = await fetch(client, tokens.user("alex@demo.test"), "Observation", str(check_in.id))
    observation = body["data"]["fhirResource"]
    assert observation["code"]["coding"][0]["code"] == "72514-3"
    assert observation["valueInteger"] == check_in.pain


async def test_an_opioid_dose_is_a_medication_statement_with_its_rxnorm_code(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    with use_database(app.state.database):
        dose = await OpioidDose.filter(patient__user__email="alex@demo.test", drug="oxycodone").first()
    assert dose is not None
    body = await fetch(client, tokens.user("alex@demo.test"), "MedicationStatement", str(dose.id))
    statement = body["data"]["fhirResource"]
    assert statement["medicationCodeableConcept"]["coding"][0] == {
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
        "code": "7804",
        "display": "oxycodone",
    }
    assert statement["effectiveDateTime"] == dose.taken_at.isoformat()
