"""Every look at a patient's record leaves a trace, and nobody can rewrite the trace."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.identity.accounts import DataSharingConsent, Patient
from models.kernel.audit import AuditAction, AuditEvent, AuditOutcome
from models.kernel.clock import ManualClock
from tests.conftest import Tokens
from tests.support.graphql import gql


async def patient_ids(app: Starlette) -> dict[str, str]:
    with use_database(app.state.database):
        patients = await Patient.all().prefetch_related("user")
    return {p.user.email.split("@")[0]: str(relay.GlobalID("Patient", str(p.id))) for p in patients}


async def audit_rows(app: Starlette, **filters: Any) -> list[AuditEvent]:
    with use_database(app.state.database):
        return list(await AuditEvent.filter(**filters).order_by("occurred_at", "id"))


async def test_a_list_read_writes_one_event_per_patient_touched(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    body = await gql(
        client,
        "query Panel { patients(first: 10) { edges { node { givenName careTeam { name } } } } }",
        token=tokens.user("dr.rivera@demo.test"),
    )
    assert [edge["node"]["givenName"] for edge in body["data"]["patients"]["edges"]] == ["Blair", "Alex"]
    reads = await audit_rows(app, action=AuditAction.READ, resource_type="Patient")
    assert len(reads) == 2
    assert {row.actor_label for row in reads} == {"dr.rivera@demo.test"}
    assert {row.operation for row in reads} == {"Panel"}
    assert {row.outcome for row in reads} == {AuditOutcome.SUCCESS}
    assert all(row.request_id for row in reads)


async def test_reading_one_patient_twice_in_a_request_is_one_access(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    alex = (await patient_ids(app))["alex"]
    await gql(
        client,
        "query($id: ID!) { patient(id: $id) { givenName } node(id: $id) { id } }",
        {"id": alex},
        token=tokens.user("dr.rivera@demo.test"),
    )
    assert len(await audit_rows(app, action=AuditAction.READ, resource_type="Patient")) == 1


async def test_a_refused_read_is_audited_against_the_patient(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    casey = (await patient_ids(app))["casey"]
    await gql(
        client,
        "query($id: ID!) { patient(id: $id) { givenName } }",
        {"id": casey},
        token=tokens.user("dr.rivera@demo.test"),
    )
    [denied] = await audit_rows(app, outcome=AuditOutcome.DENIED, resource_type="Patient")
    assert str(relay.GlobalID("Patient", str(denied.patient_id))) == casey
    assert denied.actor_label == "dr.rivera@demo.test"


async def test_a_patient_sees_who_accessed_their_record(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    alex = (await patient_ids(app))["alex"]
    await gql(
        client,
        "query($id: ID!) { patient(id: $id) { givenName } }",
        {"id": alex},
        token=tokens.user("dr.rivera@demo.test"),
    )
    body = await gql(
        client,
        "{ auditEvents(first: 10) { edges { node { actor actorRole action resourceType outcome patientId } } } }",
        token=tokens.user("alex@demo.test"),
    )
    events = [edge["node"] for edge in body["data"]["auditEvents"]["edges"]]
    assert {
        "actor": "dr.rivera@demo.test",
        "actorRole": "PROVIDER",
        "action": "R",
        "resourceType": "Patient",
        "outcome": "SUCCESS",
        "patientId": alex,
    } in events


async def test_the_audit_log_pages_newest_first_without_gaps_or_repeats(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, clock: ManualClock
) -> None:
    for _ in range(5):
        clock.advance(timedelta(seconds=1))
        await gql(
            client,
            "{ patients(first: 10) { edges { node { id } } } }",
            token=tokens.user("dr.rivera@demo.test"),
        )
    with use_database(app.state.database):
        before = await AuditEvent.all().order_by("-occurred_at", "-id").values_list("id", flat=True)
    admin = tokens.user("admin@demo.test")
    seen: list[str] = []
    after = None
    while True:
        # Reading the log is audited too: those new rows are newer than every page's cursor.
        clock.advance(timedelta(seconds=1))
        body = await gql(
            client,
            "query($after: String) { auditEvents(first: 3, after: $after) { edges { node { id } } "
            "pageInfo { hasNextPage endCursor } } }",
            {"after": after},
            token=admin,
        )
        page = body["data"]["auditEvents"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [str(event_id) for event_id in before]
    assert len(before) >= 10


async def test_a_cursor_from_another_list_is_refused(client: httpx.AsyncClient, tokens: Tokens) -> None:
    body = await gql(client, "{ patients(first: 1) { pageInfo { endCursor } } }", token=tokens.user("admin@demo.test"))
    cursor = body["data"]["patients"]["pageInfo"]["endCursor"]
    refused = await gql(
        client,
        "query($c: String) { auditEvents(after: $c) { edges { node { id } } } }",
        {"c": cursor},
        token=tokens.user("admin@demo.test"),
    )
    assert refused["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT"}
    too_many = await gql(
        client, "{ patients(first: 1000) { edges { node { id } } } }", token=tokens.user("admin@demo.test")
    )
    assert too_many["errors"][0]["message"] == "first must be between 1 and 100"


async def test_sign_in_success_and_failure_are_audited(client: httpx.AsyncClient, app: Starlette) -> None:
    await client.post("/auth/token", data={"grant_type": "password", "username": "alex@demo.test", "password": "nope"})
    await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "alex@demo.test", "password": "ketafollow-demo"},
    )
    rows = await audit_rows(app, resource_type="Login")
    assert {(row.outcome, row.actor_label, row.detail) for row in rows} == {
        (AuditOutcome.DENIED, None, "wrong credentials for alex@demo.test"),
        (AuditOutcome.SUCCESS, "alex@demo.test", "signed in"),
    }


async def test_revoking_consent_stops_the_ehr_client_at_once_and_is_audited(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    alex = (await patient_ids(app))["alex"]
    ehr = tokens.client("demo-ehr")
    query = "query($id: ID!) { patient(id: $id) { givenName } }"
    assert (await gql(client, query, {"id": alex}, token=ehr))["data"]["patient"] == {"givenName": "Alex"}
    revoked = await gql(
        client,
        'mutation { revokeDataSharingConsent(input: {clientId: "demo-ehr"}) { result { __typename '
        "... on DataSharingConsent { revokedAt } } } }",
        token=tokens.user("alex@demo.test"),
    )
    assert revoked["data"]["revokeDataSharingConsent"]["result"]["revokedAt"] is not None
    assert (await gql(client, query, {"id": alex}, token=ehr))["data"]["patient"] is None
    [change] = [row for row in await audit_rows(app, resource_type="Consent") if row.detail and "revoked" in row.detail]
    assert change.action is AuditAction.UPDATE
    again = await gql(
        client,
        'mutation { grantDataSharingConsent(input: {clientId: "demo-ehr"}) { result { __typename } } }',
        token=tokens.user("alex@demo.test"),
    )
    assert again["data"]["grantDataSharingConsent"]["result"]["__typename"] == "DataSharingConsent"
    assert (await gql(client, query, {"id": alex}, token=ehr))["data"]["patient"] == {"givenName": "Alex"}


async def test_the_audit_log_cannot_be_changed_or_erased(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    await gql(client, "{ patients(first: 10) { edges { node { id } } } }", token=tokens.user("dr.rivera@demo.test"))
    with use_database(app.state.database):
        row = await AuditEvent.filter(resource_type="Patient").first()
        assert row is not None
        with pytest.raises(Exception, match="append-only"):
            await AuditEvent.filter(id=row.id).update(detail="nothing to see")
        with pytest.raises(Exception, match="append-only"):
            await AuditEvent.filter(id=row.id).delete()
        assert (await AuditEvent.get(id=row.id)).detail is None


async def test_a_patient_does_not_see_other_patients_or_addresses_in_their_log(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    ids = await patient_ids(app)
    query = "query($id: ID!) { patient(id: $id) { givenName } }"
    await gql(client, query, {"id": ids["blair"]}, token=tokens.user("alex@demo.test"))  # refused
    await gql(client, query, {"id": ids["blair"]}, token=tokens.user("dr.rivera@demo.test"))
    body = await gql(
        client,
        "{ auditEvents(first: 100) { edges { node { actor outcome resourceType clientAddress requestId } } } }",
        token=tokens.user("blair@demo.test"),
    )
    events = [
        {key: value for key, value in edge["node"].items() if key != "resourceType"}
        for edge in body["data"]["auditEvents"]["edges"]
        if edge["node"]["resourceType"] == "Patient"
    ]
    assert events == [{"actor": "dr.rivera@demo.test", "outcome": "SUCCESS", "clientAddress": None, "requestId": None}]
    # The admin still sees the refused attempt, with its address.
    admin = await gql(
        client,
        "query($id: ID) { auditEvents(patientId: $id) { edges { node { actor outcome clientAddress } } } }",
        {"id": ids["blair"]},
        token=tokens.user("admin@demo.test"),
    )
    assert {"actor": "alex@demo.test", "outcome": "DENIED", "clientAddress": "127.0.0.1"} in [
        edge["node"] for edge in admin["data"]["auditEvents"]["edges"]
    ]


async def test_reading_the_audit_log_is_audited_and_so_is_a_refusal(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    ids = await patient_ids(app)
    await gql(
        client,
        "query($id: ID!) { patient(id: $id) { id } }",
        {"id": ids["alex"]},
        token=tokens.user("dr.rivera@demo.test"),
    )
    await gql(client, "{ auditEvents { edges { node { id } } } }", token=tokens.user("admin@demo.test"))
    refused = await gql(
        client, "query($id: ID) { auditEvents(patientId: $id) { edges { node { id } } } }",
        {"id": ids["alex"]}, token=tokens.user("dr.rivera@demo.test"),
    )  # fmt: skip
    assert refused["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    rows = await audit_rows(app, resource_type="AuditEvent")
    assert {(row.actor_label, row.outcome) for row in rows} == {
        ("admin@demo.test", AuditOutcome.SUCCESS),
        ("dr.rivera@demo.test", AuditOutcome.DENIED),
    }


async def test_an_absurd_cursor_is_refused_politely(client: httpx.AsyncClient, tokens: Tokens) -> None:
    for cursor in ("[" * 50_000, "W" * 600, "bm90LWpzb24"):
        body = await gql(
            client, "query($c: String) { patients(after: $c) { edges { node { id } } } }", {"c": cursor},
            token=tokens.user("admin@demo.test"),
        )  # fmt: skip
        assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT"}


async def test_concurrent_consent_grants_make_one_consent_and_one_revoke_ends_it(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    blair = tokens.user("blair@demo.test")
    await gql(
        client,
        'mutation { revokeDataSharingConsent(input: {clientId: "demo-ehr"}) { result { __typename } } }',
        token=blair,
    )
    grant = 'mutation { grantDataSharingConsent(input: {clientId: "demo-ehr"}) { result { __typename } } }'
    await asyncio.gather(*(gql(client, grant, token=blair) for _ in range(6)))
    with use_database(app.state.database):
        active = DataSharingConsent.filter(patient__user__email="blair@demo.test", revoked_at=None)
        assert await active.count() == 1
    await gql(
        client,
        'mutation { revokeDataSharingConsent(input: {clientId: "demo-ehr"}) { result { __typename } } }',
        token=blair,
    )
    with use_database(app.state.database):
        assert await active.count() == 0


@pytest.mark.parametrize("operation", ["grantDataSharingConsent", "revokeDataSharingConsent"])
async def test_a_client_id_longer_than_any_client_is_not_found_not_an_internal_error(
    client: httpx.AsyncClient, tokens: Tokens, operation: str
) -> None:
    # Found by tests/schema/test_fuzz.py: the ORM refused to look up a value longer than the column.
    query = f'mutation {{ {operation}(input: {{ clientId: "{"x" * 65}" }}) {{ result {{ __typename }} }} }}'
    body = await gql(client, query, token=tokens.user("alex@demo.test"))
    assert body == {"data": {operation: {"result": {"__typename": "NotFound"}}}}
