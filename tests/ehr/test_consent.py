"""A patient can always withdraw a consent they still have (issue #16, finding 10): also when they
moved to another care team, or the EHR client was deactivated, since the grant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.identity.accounts import ApiClient, CareTeam, DataSharingConsent, Patient
from tests.conftest import Tokens
from tests.support.graphql import gql

ALEX = "alex@demo.test"
CHOICES = "query($id: ID!) { patient(id: $id) { dataSharing { client { clientId } shared } } }"
REVOKE = """
mutation { revokeDataSharingConsent(input: { clientId: "demo-ehr" }) {
  result { __typename ... on DataSharingConsent { revokedAt } ... on Error { message } } } }
"""
GRANT = """
mutation { grantDataSharingConsent(input: { clientId: "demo-ehr" }) {
  result { __typename ... on Error { message } } } }
"""


async def alex_moves_to_south(app: Starlette) -> None:
    with use_database(app.state.database):
        south = await CareTeam.get(name="South")
        await Patient.filter(user__email=ALEX).update(care_team_id=south.id)


async def the_client_is_deactivated(app: Starlette) -> None:
    with use_database(app.state.database):
        await ApiClient.filter(client_id="demo-ehr").update(is_active=False)


@pytest.mark.parametrize("since_the_grant", [alex_moves_to_south, the_client_is_deactivated])
async def test_a_consent_to_a_client_that_no_longer_serves_the_patient_can_still_be_withdrawn(
    client: httpx.AsyncClient,
    tokens: Tokens,
    app: Starlette,
    since_the_grant: Callable[[Starlette], Awaitable[None]],
) -> None:
    with use_database(app.state.database):
        alex = await Patient.get(user__email=ALEX)
    await since_the_grant(app)
    token = tokens.user(ALEX)
    choices = await gql(client, CHOICES, {"id": str(relay.GlobalID("Patient", str(alex.id)))}, token=token)
    # Still listed, as shared: the patient sees what they can withdraw.
    assert {"client": {"clientId": "demo-ehr"}, "shared": True} in choices["data"]["patient"]["dataSharing"]
    revoked = await gql(client, REVOKE, token=token)
    result = revoked["data"]["revokeDataSharingConsent"]["result"]
    assert result["__typename"] == "DataSharingConsent" and result["revokedAt"] is not None
    with use_database(app.state.database):
        assert not await DataSharingConsent.exists(patient_id=alex.id, revoked_at=None)
    # Withdrawn, it is no longer offered; and it cannot be granted again to a client not serving them.
    again = await gql(client, CHOICES, {"id": str(relay.GlobalID("Patient", str(alex.id)))}, token=token)
    assert {"client": {"clientId": "demo-ehr"}, "shared": True} not in again["data"]["patient"]["dataSharing"]
    grant = await gql(client, GRANT, token=token)
    assert grant["data"]["grantDataSharingConsent"]["result"] == {
        "__typename": "NotFound",
        "message": "API client not found",
    }


async def test_withdrawing_a_consent_already_withdrawn_is_not_found(client: httpx.AsyncClient, tokens: Tokens) -> None:
    token = tokens.user(ALEX)
    assert (await gql(client, REVOKE, token=token))["data"]["revokeDataSharingConsent"]["result"]["revokedAt"]
    body = await gql(client, REVOKE, token=token)
    assert body["data"]["revokeDataSharingConsent"]["result"] == {
        "__typename": "NotFound",
        "message": "consent not found",
    }
