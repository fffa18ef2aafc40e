"""The probes a GraphQL auditing tool sends (graphql-cop style), against the production app.

One request per probe, each named after the attack it tries. Every refusal is a typed error
(`extensions.code`), never a 500, and no probe gets data, schema names or internals back.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.auth.tokens import issue_access_token
from api.database import use_database
from api.settings import Settings
from models.kernel.clock import ManualClock
from models.reports.checkins import CheckIn
from tests.conftest import Tokens

PATIENT = "alex@demo.test"
CHECK_IN = (
    'mutation { submitCheckIn(input: { recordedAt: "2026-11-25T14:00:00Z", pain: 4 }) { result { __typename } } }'
)
# What must never reach a client: internals that tell an attacker what runs inside.
LEAKS = re.compile(r"Traceback|File \"|\.py\b|SELECT |INSERT |sqlite|asyncpg|tortoise|Error\(|Exception", re.IGNORECASE)


async def _post(client: httpx.AsyncClient, token: str, query: str, **extra: Any) -> httpx.Response:
    return await client.post("/graphql", json={"query": query, **extra}, headers={"Authorization": f"Bearer {token}"})


def _refused(response: httpx.Response, *, code: str = "GRAPHQL_VALIDATION_FAILED") -> list[dict[str, Any]]:
    """The response refuses the whole document, with typed errors only; returns them."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None
    assert body["errors"]
    assert {error["extensions"]["code"] for error in body["errors"]} == {code}, body
    return list(body["errors"])


@pytest.fixture
def patient_token(production_settings: Settings, tokens: Tokens, clock: ManualClock) -> str:
    return issue_access_token(
        production_settings,
        subject_kind="user",
        subject_id=tokens.user_ids[PATIENT],
        now=clock.now(),
        session_id=tokens.logins[PATIENT],
    )


async def _check_in_count(app: Starlette) -> int:
    with use_database(app.state.database):
        return await CheckIn.all().count()


async def test_introspection_probe_is_refused(production_client: httpx.AsyncClient, production_token: str) -> None:
    response = await _post(production_client, production_token, "{ __schema { queryType { name } } }")
    errors = _refused(response)
    assert any("introspection" in error["message"].lower() for error in errors)


async def test_type_introspection_probe_is_refused(production_client: httpx.AsyncClient, production_token: str) -> None:
    response = await _post(production_client, production_token, '{ __type(name: "Patient") { fields { name } } }')
    _refused(response)
    assert "givenName" not in response.text


async def test_circular_introspection_probe_is_refused(
    production_client: httpx.AsyncClient, production_token: str
) -> None:
    circular = "{ __schema { types { fields { type { fields { type { fields { type { name } } } } } } } } }"
    response = await _post(production_client, production_token, circular)
    _refused(response)


async def test_alias_overloading_is_refused(production_client: httpx.AsyncClient, production_token: str) -> None:
    aliases = " ".join(f"alias{i}: __typename" for i in range(101))
    response = await _post(production_client, production_token, f"{{ {aliases} }}")
    errors = _refused(response)
    assert any("aliases" in error["message"] for error in errors)


async def test_array_based_query_batching_is_refused(
    production_client: httpx.AsyncClient, production_token: str
) -> None:
    batch = [{"query": "{ me { role } }"} for _ in range(10)]
    response = await production_client.post(
        "/graphql", json=batch, headers={"Authorization": f"Bearer {production_token}"}
    )
    assert response.status_code == 400
    assert "PROVIDER" not in response.text


async def test_directive_overloading_is_refused_with_one_error(
    production_client: httpx.AsyncClient, production_token: str
) -> None:
    directives = "@include(if: true) " * 200
    response = await _post(production_client, production_token, f"{{ me {{ role {directives} }} }}")
    [error] = _refused(response)
    assert "directives" in error["message"]


async def test_unknown_directive_overloading_is_refused_with_one_error(
    production_client: httpx.AsyncClient, production_token: str
) -> None:
    # graphql-cop's probe: ten unknown directives answered with ten errors means each was processed.
    response = await _post(production_client, production_token, "query cop { __typename " + "@aa" * 10 + " }")
    [error] = _refused(response)
    assert "directives" in error["message"]


async def test_field_duplication_is_refused(production_client: httpx.AsyncClient, production_token: str) -> None:
    response = await _post(production_client, production_token, "query cop { " + "__typename " * 500 + "}")
    [error] = _refused(response)
    assert "same field" in error["message"]


async def test_field_duplication_through_fragments_is_refused(
    production_client: httpx.AsyncClient, production_token: str
) -> None:
    spreads = " ".join(f"...F{i}" for i in range(100))
    fragments = " ".join(f"fragment F{i} on Query {{ me {{ role }} }}" for i in range(100))
    response = await _post(production_client, production_token, f"{{ {spreads} }} {fragments}")
    [error] = _refused(response)
    assert "same field" in error["message"]


@pytest.mark.parametrize(
    ("query", "variables", "right_name"),
    [
        ("{ mee { role } }", {}, "me"),
        ("{ patients(frist: 5) { edges { cursor } } }", {}, "first"),
        ("{ me { ... on Patiant { givenName } } }", {}, "Patient"),
        ("{ alerts(status: [OPN]) { edges { cursor } } }", {}, "OPEN"),
        (CHECK_IN.replace("pain: 4", "pain: 4, mod: 3"), {}, "mood"),
        ("query($s: [AlertStatus!]) { alerts(status: $s) { edges { cursor } } }", {"s": ["OPN"]}, "OPEN"),
    ],
    ids=["field", "argument", "type", "enum-value", "input-field", "variable-value"],
)
async def test_field_suggestions_are_never_given(
    production_client: httpx.AsyncClient,
    production_token: str,
    query: str,
    variables: dict[str, Any],
    right_name: str,
) -> None:
    response = await _post(production_client, production_token, query, variables=variables)
    _refused(response, code="BAD_USER_INPUT" if variables else "GRAPHQL_VALIDATION_FAILED")
    assert "did you mean" not in response.text.lower()
    assert f"'{right_name}'" not in response.text


@pytest.mark.parametrize("path", ["/graphql", "/graphiql", "/playground", "/graphql/playground", "/altair"])
async def test_no_graphql_ide_is_served(production_client: httpx.AsyncClient, path: str) -> None:
    response = await production_client.get(path, headers={"accept": "text/html"})
    assert response.status_code == 404
    assert not re.search(r"graphiql|playground|altair|<html", response.text, re.IGNORECASE)


async def test_a_query_over_get_is_refused(production_client: httpx.AsyncClient, production_token: str) -> None:
    response = await production_client.get(
        "/graphql", params={"query": "{ me { role } }"}, headers={"Authorization": f"Bearer {production_token}"}
    )
    assert response.status_code in {400, 405}
    assert "PROVIDER" not in response.text


async def test_a_mutation_over_get_is_refused_and_writes_nothing(
    production_app: Starlette, production_client: httpx.AsyncClient, patient_token: str
) -> None:
    before = await _check_in_count(production_app)
    response = await production_client.get(
        "/graphql", params={"query": CHECK_IN}, headers={"Authorization": f"Bearer {patient_token}"}
    )
    assert response.status_code in {400, 405}
    assert await _check_in_count(production_app) == before


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "query=" + CHECK_IN.replace(" ", "+")),
        (
            "multipart/form-data; boundary=cop",
            f'--cop\r\nContent-Disposition: form-data; name="query"\r\n\r\n{CHECK_IN}\r\n--cop--\r\n',
        ),
        ("text/plain", '{"query": "' + CHECK_IN.replace('"', '\\"') + '"}'),
    ],
    ids=["urlencoded", "multipart", "text-plain"],
)
async def test_a_cross_site_form_post_is_refused_and_writes_nothing(
    production_app: Starlette,
    production_client: httpx.AsyncClient,
    patient_token: str,
    content_type: str,
    body: str,
) -> None:
    # What an HTML form on another site can send without a CORS preflight (CSRF).
    before = await _check_in_count(production_app)
    response = await production_client.post(
        "/graphql", content=body, headers={"content-type": content_type, "Authorization": f"Bearer {patient_token}"}
    )
    assert response.status_code == 400
    assert "CheckIn" not in response.text
    assert await _check_in_count(production_app) == before


async def test_no_tracing_is_returned(production_client: httpx.AsyncClient, production_token: str) -> None:
    response = await production_client.post(
        "/graphql",
        json={"query": "{ me { role } }", "extensions": {"tracing": True}},
        headers={"Authorization": f"Bearer {production_token}", "apollo-federation-include-trace": "ftv1"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"me": {"role": "PROVIDER"}}
    assert "extensions" not in body
    assert not re.search(r"tracing|ftv1|startTime|duration", response.text)


async def test_an_unhandled_error_is_masked_with_the_request_id(
    production_app: Starlette, production_client: httpx.AsyncClient, patient_token: str
) -> None:
    # A real failure deep inside: the table the check-ins are read from is gone.
    with use_database(production_app.state.database):
        await production_app.state.database.db().execute_script("ALTER TABLE check_in RENAME TO check_in_moved")
    query = "{ me { patient { checkIns(first: 5) { edges { node { pain } } } } } }"
    response = await _post(production_client, patient_token, query)
    assert response.status_code == 200
    [error] = response.json()["errors"]
    request_id = response.headers["x-request-id"]
    assert error["message"] == f"Unexpected error. Reference: {request_id}"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    assert not LEAKS.search(response.text), response.text
    assert "check_in" not in response.text
