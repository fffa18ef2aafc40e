"""Each protection of the GraphQL endpoint refuses its attack with a clear error, never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Tokens
from tests.support.graphql import error_messages, gql

DEEP = "{ me { careTeam { patients { careTeam { patients { careTeam { patients { careTeam { patients {"
DEEP += " careTeam { patients { careTeam { patients { id } } } } } } } } } } } } } }"


@pytest.fixture
def token(tokens: Tokens) -> str:
    return tokens.user("dr.rivera@demo.test")


async def test_a_query_deeper_than_the_limit_is_refused(client: httpx.AsyncClient, token: str) -> None:
    body = await gql(client, DEEP, token=token)
    assert body.get("data") is None
    assert any("exceeds maximum operation depth" in m for m in error_messages(body))


async def test_a_query_with_too_many_aliases_is_refused(client: httpx.AsyncClient, token: str) -> None:
    aliases = " ".join(f"a{i}: __typename" for i in range(50))
    body = await gql(client, f"{{ {aliases} }}", token=token)
    assert body.get("data") is None
    assert any("aliases" in m for m in error_messages(body))


async def test_a_document_with_too_many_tokens_is_refused(client: httpx.AsyncClient, token: str) -> None:
    fields = " ".join("__typename" for _ in range(3000))
    body = await gql(client, f"{{ {fields} }}", token=token)
    assert body.get("data") is None
    assert any("more than 2000 tokens" in m for m in error_messages(body))


async def test_queries_over_get_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{ __typename }"})
    assert response.status_code in {400, 405}
    assert "__typename" not in response.text


async def test_a_form_encoded_post_is_refused(client: httpx.AsyncClient, token: str) -> None:
    # What a cross-site HTML form can send without a CORS preflight.
    response = await client.post("/graphql", data={"query": "{ __typename }"}, headers=_bearer(token))
    assert response.status_code == 400
    assert "Unsupported content type" in response.text


async def test_batched_operations_are_refused(client: httpx.AsyncClient, token: str) -> None:
    batch = [{"query": "{ __typename }"}, {"query": "{ __typename }"}]
    response = await client.post("/graphql", json=batch, headers=_bearer(token))
    assert response.status_code == 400


async def test_an_announced_oversized_body_is_refused_with_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql",
        content=json.dumps({"query": "{ __typename }", "variables": {"pad": "x" * 300_000}}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


async def test_a_streamed_oversized_body_is_refused_with_413(client: httpx.AsyncClient, token: str) -> None:
    async def chunks():  # no Content-Length: the size is only known while reading
        yield b'{"query": "{ __typename }", "variables": {"pad": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}}'

    headers = {"content-type": "application/json", **_bearer(token)}
    response = await client.post("/graphql", content=chunks(), headers=headers)
    assert response.status_code == 413


async def test_malformed_json_is_a_400_not_a_500(client: httpx.AsyncClient, token: str) -> None:
    headers = {"content-type": "application/json", **_bearer(token)}
    response = await client.post("/graphql", content=b"{not json", headers=headers)
    assert response.status_code == 400


NODE_TYPES = [
    "Alert",
    "CareTeam",
    "CheckIn",
    "DosingSession",
    "Message",
    "MessageThread",
    "OpioidDose",
    "Patient",
    "Provider",
    "SideEffectReport",
    "SurveyAssignment",
    "SurveyResponse",
    "TreatmentPlan",
]


async def test_typename_in_each_member_of_a_union_is_not_taken_for_field_duplication(
    client: httpx.AsyncClient, token: str
) -> None:
    # What Apollo Client sends: `__typename` added to every selection set, so once per fragment.
    fragments = " ".join(f"... on {name} {{ __typename id }}" for name in NODE_TYPES)
    body = await gql(client, f'{{ node(id: "UGF0aWVudDox") {{ __typename {fragments} }} }}', token=token)
    assert body == {"data": {"node": None}}


async def test_field_suggestions_are_not_given(client: httpx.AsyncClient, token: str) -> None:
    body = await gql(client, "{ mee { id } }", token=token)
    messages = error_messages(body)
    assert messages == ["Cannot query field 'mee' on type 'Query'."]


async def test_introspection_works_in_development(client: httpx.AsyncClient, token: str) -> None:
    body = await gql(client, "{ __schema { queryType { name } } }", token=token)
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_graphiql_is_served_in_development(client: httpx.AsyncClient) -> None:
    # Production serves no IDE: tests/api/test_security_probes.py.
    development = await client.get("/graphql", headers={"accept": "text/html"})
    assert development.status_code == 200
    assert "graphiql" in development.text.lower()


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_refused(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/graphql", json={"query": "{ __typename }"})
    assert response.status_code == 405


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "{ __typename }", "variables": {"x": "a\\u0000b"}}',
        b"grant_type=password&username=a%00b&password=x",
    ],
)
async def test_a_nul_character_anywhere_is_refused_at_the_door(
    client: httpx.AsyncClient, token: str, body: bytes
) -> None:
    form = body.startswith(b"grant_type")
    response = await client.post(
        "/auth/token" if form else "/graphql",
        content=body,
        headers={
            "content-type": "application/x-www-form-urlencoded" if form else "application/json",
            **({} if form else _bearer(token)),
        },
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "message": "NUL characters are not allowed"}


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($s: [AlertStatus!]) { alerts(status: $s) { edges { cursor } } }", {"s": ["OPN"]}),
        (
            "mutation($t: DateTime!) { submitCheckIn(input: { recordedAt: $t, pain: 1 }) { result { __typename } } }",
            {"t": "yesterday"},
        ),
        ("query($first: Int) { patients(first: $first) { edges { cursor } } }", {"first": "ten"}),
    ],
    ids=["enum", "datetime", "int"],
)
async def test_a_variable_that_does_not_fit_its_type_is_bad_user_input_not_an_internal_error(
    client: httpx.AsyncClient, token: str, query: str, variables: dict[str, object]
) -> None:
    # These were masked as INTERNAL_SERVER_ERROR: graphql-core reports them with a cause attached.
    body = await gql(client, query, variables, token=token)
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert error["message"].startswith("Variable '$")


@pytest.mark.parametrize(
    ("query", "code"),
    [("{ me { role ", "GRAPHQL_PARSE_FAILED"), ("{ me { rank } }", "GRAPHQL_VALIDATION_FAILED")],
)
async def test_every_error_about_the_document_carries_a_code(
    client: httpx.AsyncClient, token: str, query: str, code: str
) -> None:
    body = await gql(client, query, token=token)
    assert [error["extensions"] for error in body["errors"]] == [{"code": code}]
