"""Starting a thread is retried safely (issue #16, finding 10): `createMessageThread` takes an
`idempotencyKey`, like every other write a phone may send twice."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.alerts.alerts import Alert
from models.identity.accounts import Patient
from models.messaging.messaging import MessageThread
from tests.conftest import Tokens
from tests.support.graphql import gql

CREATE = """
mutation Create($input: CreateMessageThreadInput!) {
  createMessageThread(input: $input) {
    result { __typename ... on MessageThread { id subject } ... on Error { message } }
    crisisResources
  }
}
"""


async def create(client: httpx.AsyncClient, token: str, **values: Any) -> dict[str, Any]:
    body = await gql(client, CREATE, {"input": values}, token=token)
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["createMessageThread"]
    return payload


async def threads_of(app: Starlette, email: str) -> int:
    with use_database(app.state.database):
        return await MessageThread.filter(patient__user__email=email).count()


@pytest.mark.parametrize("who", ["alex@demo.test", "dr.rivera@demo.test"])
async def test_a_thread_sent_again_with_its_key_is_the_first_one_even_at_once(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette, who: str
) -> None:
    with use_database(app.state.database):
        alex = await Patient.get(user__email="alex@demo.test")
    before = await threads_of(app, "alex@demo.test")
    values = {"subject": "Refill question", "idempotencyKey": "thread-1"}
    if who.startswith("dr."):
        values["patientId"] = str(relay.GlobalID("Patient", str(alex.id)))
    token = tokens.user(who)
    answers = await asyncio.gather(*(create(client, token, **values) for _ in range(4)))
    answers.append(await create(client, token, **values))  # and once more, later
    assert {answer["result"]["__typename"] for answer in answers} == {"MessageThread"}
    assert len({answer["result"]["id"] for answer in answers}) == 1
    assert await threads_of(app, "alex@demo.test") == before + 1


async def test_a_key_used_for_another_subject_is_refused(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    token = tokens.user("alex@demo.test")
    await create(client, token, subject="Refill question", idempotencyKey="thread-1")
    other = await create(client, token, subject="Side effects", idempotencyKey="thread-1")
    assert other["result"] == {
        "__typename": "IdempotencyConflict",
        "message": "this idempotencyKey was already used for a different request",
    }
    without_key = await create(client, token, subject="Refill question")
    assert without_key["result"]["__typename"] == "MessageThread"  # no key: a new thread


async def test_a_crisis_subject_sent_twice_with_its_key_alerts_once_and_answers_with_resources_each_time(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    token = tokens.user("alex@demo.test")
    values = {"subject": "I want to end it all", "idempotencyKey": "thread-crisis"}
    first, again = await create(client, token, **values), await create(client, token, **values)
    assert first["result"]["id"] == again["result"]["id"]
    assert "988" in first["crisisResources"] and "988" in again["crisisResources"]
    with use_database(app.state.database):
        assert await Alert.filter(patient__user__email="alex@demo.test", kind="CRISIS_LANGUAGE").count() == 1


async def test_an_idempotency_key_longer_than_128_characters_is_refused_naming_it(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    answer = await create(client, tokens.user("alex@demo.test"), subject="Hello", idempotencyKey="k" * 129)
    assert answer["result"]["__typename"] == "ValidationError"
    assert "idempotencyKey" in answer["result"]["message"]
