"""The EHR change feed: a client that pages through `changes` and applies each change as an upsert
ends with exactly the server's state, never skipping a change nor receiving one twice, whatever
the page size, the filters, the writers running meanwhile, or the order transactions commit in."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from fhir.resources.R4B.questionnaire import Questionnaire
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.alerts.alerts import Alert
from models.ehr import changes
from models.ehr.changes import FEED_RESOURCE_TYPES
from models.identity.accounts import ApiClient, DataSharingConsent, Patient
from models.kernel.audit import AuditEvent
from models.messaging.messaging import MessageThread
from models.surveys.instruments import Instrument
from schema.fhir import ResourceType
from tests.conftest import ON_POSTGRES, Tokens, _asyncpg_dsn
from tests.support.clinical import SUBMIT_CHECK_IN
from tests.support.fhir import MODELS, record_clinic_readings
from tests.support.graphql import gql
from tests.support.sync import CHANGES, Key, SyncingClient

BUNDLE = "query($id: ID!) { fhirPatientBundle(patientId: $id) }"
CONSENT = 'query($id: ID!) { fhirResource(resourceType: "Consent", id: $id) }'


async def server_state(client: httpx.AsyncClient, token: str, app: Starlette, client_id: str) -> dict[Key, Any]:
    """What the client may see now: each consented patient's Bundle, and its own consents."""
    with use_database(app.state.database):
        api_client = await ApiClient.get(client_id=client_id).prefetch_related("care_teams")
        teams = [team.id for team in api_client.care_teams]
        patients = await Patient.filter(
            care_team_id__in=teams, data_sharing_consents__api_client_id=api_client.id,
            data_sharing_consents__revoked_at=None,
        )  # fmt: skip
        consents = await DataSharingConsent.filter(api_client_id=api_client.id)
    state: dict[Key, Any] = {}
    for patient in patients:
        body = await gql(client, BUNDLE, {"id": str(patient.id)}, token=token)
        for entry in body["data"]["fhirPatientBundle"]["entry"]:
            state[(entry["resource"]["resourceType"], entry["resource"]["id"])] = entry["resource"]
    for consent in consents:
        body = await gql(client, CONSENT, {"id": str(consent.id)}, token=token)
        state[("Consent", str(consent.id))] = body["data"]["fhirResource"]
    return state


async def check_in(client: httpx.AsyncClient, token: object, when: Any, pain: int) -> None:
    variables = {"input": {"idempotencyKey": str(uuid.uuid4()), "recordedAt": when.isoformat(), "pain": pain}}
    body = await gql(client, SUBMIT_CHECK_IN, variables, token=token)
    assert body["data"]["submitCheckIn"]["result"]["__typename"] == "CheckIn", body


async def test_a_full_sync_is_the_servers_state_in_valid_fhir_r4(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    token = tokens.client("demo-ehr")
    ehr = SyncingClient(app, client, token)
    await ehr.catch_up()
    assert ehr.copy == await server_state(client, token, app, "demo-ehr")
    assert len(ehr.received) == len({key for key, _, _ in ehr.received}), "a resource came twice"
    for (resource_type, _), resource in ehr.copy.items():
        MODELS[resource_type].model_validate(resource)
    kinds = {resource_type for resource_type, _ in ehr.copy}
    assert kinds >= {"Patient", "Consent", "CarePlan", "MedicationRequest", "MedicationAdministration", "Flag"}
    sequences = [sequence for _, sequence, _ in ehr.received]
    assert sequences == sorted(sequences)  # SQLite and PostgreSQL alike, with no writer running
    south = {resource["id"] for (kind, _), resource in ehr.copy.items() if kind == "Patient"}
    with use_database(app.state.database):
        assert south == {str(p.id) for p in await Patient.filter(user__email__in=["alex@demo.test", "blair@demo.test"])}
    before = len(ehr.received)
    assert not await ehr.pull()
    assert len(ehr.received) == before  # resuming at the end gives nothing more


async def test_a_session_brings_the_observations_of_all_its_readings_into_the_feed(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    session = await record_clinic_readings(app, "alex@demo.test")
    token = tokens.client("demo-ehr")
    ehr = SyncingClient(app, client, token, page=7)
    await ehr.catch_up()
    readings = {resource_id: resource for (kind, resource_id), resource in ehr.copy.items() if kind == "Observation"}
    expected = {f"{session.id}-{kind}-{phase}" for kind in ("bp", "hr", "spo2") for phase in ("pre", "mid", "post")}
    assert expected <= set(readings)
    for resource_id in expected:
        MODELS["Observation"].model_validate(readings[resource_id])
        assert readings[resource_id]["partOf"] == [{"reference": f"MedicationAdministration/{session.id}"}]
    codes = {readings[f"{session.id}-{kind}-mid"]["code"]["coding"][0]["code"] for kind in ("bp", "hr", "spo2")}
    assert codes == {"85354-9", "8867-4", "59408-5"}
    assert ehr.copy == await server_state(client, token, app, "demo-ehr")  # the same as the patient's Bundle


@pytest.mark.parametrize("page", [1, 2, 3, 7])
async def test_every_page_size_yields_the_same_changes_in_the_same_order(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, page: int
) -> None:
    token = tokens.client("demo-ehr")
    whole, paged = SyncingClient(app, client, token, page=100), SyncingClient(app, client, token, page=page)
    await whole.catch_up()
    # Small pages take long: read the first 40 changes, which split events with several resources.
    while len(paged.received) < 40 and await paged.pull():
        pass
    assert paged.received == whole.received[: len(paged.received)]


@pytest.mark.parametrize("page", [1, 2, 5])
async def test_a_page_reads_the_feed_once(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    """Every event brings at least one change, so the events after a cursor fill a page in one query
    (the event at the cursor, which the query starts at, counted): no second batch read and dropped."""
    queries = 0
    after = changes._EventQuery.after

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal queries
        queries += 1
        return await after(self, *args, **kwargs)

    monkeypatch.setattr(changes._EventQuery, "after", counted)
    ehr = SyncingClient(app, client, tokens.client("demo-ehr"), page=page)
    while len(ehr.received) < 40 and await ehr.pull():
        pass
    assert ehr.pages > 1
    assert queries == ehr.pages


async def test_resource_types_narrow_the_feed_and_together_make_all_of_it(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    token = tokens.client("demo-ehr")
    whole = SyncingClient(app, client, token, page=100)
    await whole.catch_up()
    union: dict[Key, Any] = {}
    for group in (["Patient", "Consent", "Observation"], ["MedicationAdministration", "Flag", "CarePlan"]):
        narrow = SyncingClient(app, client, token, page=100, types=group)
        await narrow.catch_up()
        assert {kind for kind, _ in narrow.copy} == set(group)
        union |= narrow.copy
    assert union == {key: value for key, value in whole.copy.items() if key[0] != "MedicationRequest" and key[0] in {
        "Patient", "Consent", "Observation", "MedicationAdministration", "Flag", "CarePlan"}}  # fmt: skip
    assert {member.value for member in ResourceType} == set(FEED_RESOURCE_TYPES)


async def test_a_changed_record_comes_again_once_at_its_new_version(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    token = tokens.client("demo-ehr")
    ehr = SyncingClient(app, client, token)
    await ehr.catch_up()
    with use_database(app.state.database):
        alert = await Alert.filter(patient__care_team__name="North", status="OPEN").first()
    assert alert is not None
    mutation = (
        'mutation($id: ID!) { acknowledgeAlert(input: { alertId: $id, note: "seen" }) { result { __typename } } }'
    )
    alert_id = str(relay.GlobalID("Alert", str(alert.id)))
    await gql(client, mutation, {"id": alert_id}, token=tokens.user("dr.rivera@demo.test"))
    await gql(
        client,
        mutation.replace("acknowledgeAlert", "resolveAlert"),
        {"id": alert_id},
        token=tokens.user("dr.rivera@demo.test"),
    )
    before = len(ehr.received)
    await ehr.catch_up()
    new = ehr.received[before:]
    assert [(key, version) for key, _, version in new] == [(("Flag", str(alert.id)), alert.version + 2)]
    assert ehr.copy[("Flag", str(alert.id))]["status"] == "inactive"


async def test_a_revoked_consent_is_the_last_change_of_that_patient(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    token = tokens.client("demo-ehr")
    ehr = SyncingClient(app, client, token)
    await ehr.catch_up()
    blair = tokens.user("blair@demo.test")
    now = tokens.clock.now()
    await check_in(client, blair, now - timedelta(minutes=5), 6)  # not yet pulled when she revokes
    revoke = 'mutation { revokeDataSharingConsent(input: { clientId: "demo-ehr" }) { result { __typename } } }'
    assert (await gql(client, revoke, token=blair))["data"]["revokeDataSharingConsent"]["result"]["__typename"]
    await check_in(client, blair, now - timedelta(minutes=1), 7)
    await check_in(client, tokens.user("alex@demo.test"), now - timedelta(minutes=1), 3)
    before = len(ehr.received)
    await ehr.catch_up()
    new = [key for key, _, _ in ehr.received[before:]]
    with use_database(app.state.database):
        consent = await DataSharingConsent.get(patient__user__email="blair@demo.test")
    assert ("Consent", str(consent.id)) in new
    assert ehr.copy[("Consent", str(consent.id))]["status"] == "inactive"
    assert [kind for kind, _ in new] == ["Consent", "Observation"]  # neither of Blair's check-ins
    observation = next(key for key in new if key[0] == "Observation")
    assert ehr.copy[observation]["valueInteger"] == 3  # Alex's, not either of Blair's


async def test_each_page_is_audited_once_per_patient_on_it(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    ehr = SyncingClient(app, client, tokens.client("demo-ehr"), page=100)
    await ehr.pull()
    patients = {ref for resource in ehr.copy.values() if (ref := _patient_of(resource))}
    with use_database(app.state.database):
        rows = await AuditEvent.filter(resource_type="Change", actor_type="API_CLIENT")
    assert sorted(str(row.patient_id) for row in rows) == sorted(patients)


def _patient_of(resource: dict[str, Any]) -> str | None:
    if resource["resourceType"] == "Patient":
        return str(resource["id"])
    reference = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return reference.removeprefix("Patient/") or None


@pytest.mark.parametrize(
    ("who", "code"),
    [("dr.rivera@demo.test", "FORBIDDEN"), ("alex@demo.test", "FORBIDDEN"), ("admin@demo.test", "FORBIDDEN")],
)
async def test_people_do_not_read_the_feed(client: httpx.AsyncClient, tokens: Tokens, who: str, code: str) -> None:
    body = await gql(client, CHANGES, {}, token=tokens.user(who))
    assert body["errors"][0]["extensions"]["code"] == code
    assert body["data"] is None


async def test_scopes_decide_which_resources_a_client_receives(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    patients_only = SyncingClient(app, client, tokens.client("demo-ehr", frozenset({"changes:read", "patients:read"})))
    await patients_only.catch_up()
    assert {kind for kind, _ in patients_only.copy} == {"Patient", "Consent"}
    body = await gql(client, CHANGES, {}, token=tokens.client("demo-ehr", frozenset({"clinical:read"})))
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "changes:read" in body["errors"][0]["message"]


@pytest.mark.parametrize("scopes", [{"changes:read"}, {"changes:read", "clinical:read"}])
async def test_a_client_without_patients_read_receives_no_consent_for_it_names_the_patient(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, scopes: set[str]
) -> None:
    blind = SyncingClient(app, client, tokens.client("demo-ehr", frozenset(scopes)))
    await blind.catch_up()
    assert blind.copy == {}
    body = await gql(client, CHANGES, {"types": ["Consent"]}, token=tokens.client("demo-ehr", frozenset(scopes)))
    assert body["data"]["changes"]["edges"] == []


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"after": "not-a-cursor"}, "after is not a cursor this list issued"),
        ({"after": "WyJhbGVydHMiLCIxIiwiMiIsIjMiXQ"}, "after is not a cursor this list issued"),
        ({"first": 0}, "first must be between 1 and 100"),
        ({"types": []}, "resourceTypes must name at least one resource type"),
    ],
)
async def test_bad_arguments_are_named(
    client: httpx.AsyncClient, tokens: Tokens, variables: dict[str, Any], problem: str
) -> None:
    body = await gql(client, CHANGES, variables, token=tokens.client("demo-ehr"))
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert problem in body["errors"][0]["message"]


async def test_questionnaires_and_audit_events_are_fhir_too(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    query = "query($t: String!, $id: ID!) { fhirResource(resourceType: $t, id: $id) }"
    with use_database(app.state.database):
        instruments = await Instrument.all()
        audited = await AuditEvent.filter(patient_id__not_isnull=True).first()
    assert audited is not None
    for row in instruments:
        body = await gql(
            client,
            query,
            {"t": "Questionnaire", "id": f"{row.code}-{row.version}"},
            token=tokens.user("alex@demo.test"),
        )
        Questionnaire.model_validate(body["data"]["fhirResource"])
        assert body["data"]["fhirResource"]["url"] == f"urn:ketafollow:Questionnaire:{row.code}"
    body = await gql(client, query, {"t": "AuditEvent", "id": str(audited.id)}, token=tokens.user("admin@demo.test"))
    FhirAuditEvent.model_validate(body["data"]["fhirResource"])
    refused = await gql(
        client, query, {"t": "AuditEvent", "id": str(audited.id)}, token=tokens.user("dr.rivera@demo.test")
    )
    assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_writers_running_while_a_client_syncs_leave_it_with_the_servers_state(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    """Patients check in and message, a provider works the alert queue, a patient out of the
    client's reach writes too; the client pulls throughout, then catches up once they stop."""
    token = tokens.client("demo-ehr")
    ehr = SyncingClient(app, client, token, page=5)
    now = tokens.clock.now()
    send = "mutation($input: SendMessageInput!) { sendMessage(input: $input) { result { __typename } } }"
    with use_database(app.state.database):
        threads = {
            email: str(relay.GlobalID("MessageThread", str((await MessageThread.get(patient__user__email=email)).id)))
            for email in ("alex@demo.test", "blair@demo.test")
        }
    stop = asyncio.Event()

    async def patient(email: str, count: int) -> None:
        for number in range(count):
            await check_in(client, tokens.user(email), now - timedelta(minutes=count - number), number % 11)
            if email in threads and number % 3 == 0:
                message = {"idempotencyKey": str(uuid.uuid4()), "threadId": threads[email], "body": f"note {number}"}
                await gql(client, send, {"input": message}, token=tokens.user(email))

    async def sync() -> None:
        while not stop.is_set():
            await ehr.pull()
            await asyncio.sleep(0)

    syncing = asyncio.create_task(sync())
    await asyncio.gather(patient("alex@demo.test", 12), patient("blair@demo.test", 12), patient("casey@demo.test", 6))
    stop.set()
    await syncing
    await ehr.catch_up()
    assert ehr.copy == await server_state(client, token, app, "demo-ehr")
    keys = [key for key, _, _ in ehr.received]
    repeated = {key for key in keys if keys.count(key) > 1}
    assert all(kind in ("Patient", "CarePlan", "MedicationRequest", "Flag") for kind, _ in repeated), repeated


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite has one writer at a time: sequence order is commit order")
async def test_a_change_that_commits_late_is_not_skipped(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, settings: Any
) -> None:
    """Transaction A takes a sequence number, B takes the next one and commits first: the feed
    holds B back until A commits, then serves both, A first; a client's cursor never passes A."""
    token = tokens.client("demo-ehr")
    ehr = SyncingClient(app, client, token)
    await ehr.catch_up()
    with use_database(app.state.database):
        alex = await Patient.get(user__email="alex@demo.test")
    late = await asyncpg.connect(_asyncpg_dsn(settings.database_url))
    try:
        transaction = late.transaction()
        await transaction.start()
        await late.execute(
            "INSERT INTO domain_event (type, resource_type, resource_id, patient_id, operation, version, occurred_at, "
            "payload) VALUES ('Patient.updated', 'Patient', $1, $1, 'UPDATED', 2, now(), '{}')",
            alex.id,
        )
        await check_in(client, tokens.user("alex@demo.test"), tokens.clock.now(), 2)  # B: commits now
        held = len(ehr.received)
        await ehr.pull()
        assert ehr.received[held:] == []  # B waits for A: serving it now would let the cursor pass A
        await transaction.commit()
    finally:
        await late.close()
    before = len(ehr.received)
    await ehr.catch_up()
    kinds = [key[0] for key, _, _ in ehr.received[before:]]
    assert kinds == ["Patient", "Observation"]
