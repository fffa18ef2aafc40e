"""A query is refused before it runs when its answer may hold more objects than the limit.

The depth limit lets `patients(first: 100) → careTeam → patients(first: 100) → …` through: a
million patients at the third connection, twelve levels deep. The cost counts the objects an
answer may hold, multiplying page sizes through nested lists (schema/query_cost.py), and refuses
above GRAPHQL_MAX_COST.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import graphql
import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.database import use_database
from api.settings import Settings, SettingsError
from models.kernel.audit import AuditEvent
from models.kernel.clock import ManualClock
from schema import build_schema
from schema.query_cost import DEFAULT_MAX_QUERY_COST, operation_cost
from tests.conftest import Tokens
from tests.support.graphql import gql
from tests.support.panel_data import PANEL


def nested_teams(levels: int, first: int | str = 100) -> str:
    """`patients(first) { edges { node { careTeam { patients(first) … { id } } } } }`, `levels`
    connections deep (three are twelve levels: the most the depth limit allows)."""
    inner = f"patients(first: {first}) {{ edges {{ node {{ id }} }} }}"
    for _ in range(levels - 1):
        inner = f"patients(first: {first}) {{ edges {{ node {{ careTeam {{ {inner} }} }} }} }}"
    return inner


ATTACK = f"{{ {nested_teams(3)} }}"
# Per level: the connection, its edges and nodes (and their care teams), then what is under them.
ATTACK_COST = 301 + 100 * (301 + 100 * 201)

SCHEMA = build_schema()._schema


@pytest.mark.parametrize(
    ("document", "variables", "cost"),
    [
        ("{ me { role } }", {}, 1),
        ("{ me { role scopes } instruments { code } }", {}, 1 + 20),  # a list without `first`: 20
        ("{ patients { edges { node { givenName } } } }", {}, 1 + 20 + 20),  # the default page
        ("{ patients(first: 100) { edges { node { careTeam { name } } } } }", {}, 1 + 300),
        ("{ patients(first: 5000) { edges { node { id } } } }", {}, 1 + 200),  # refused when run; counted at 100
        ("{ patients(first: 7) { pageInfo { endCursor } edges { cursor } } }", {}, 1 + 1 + 7),
        ("query($n: Int) { patients(first: $n) { edges { node { id } } } }", {"n": 7}, 1 + 14),
        ("query($n: Int = 3) { patients(first: $n) { edges { node { id } } } }", {}, 1 + 6),
        ("query($n: Int) { patients(first: $n) { edges { node { id } } } }", {"n": None}, 1 + 40),
        ("query($n: Int) { patients(first: $n) { edges { node { id } } } }", {"n": "ten"}, 1 + 200),
        (f"{{ {nested_teams(2)} }}", {}, 301 + 100 * 201),
        (ATTACK, {}, ATTACK_COST),
        (f"query($n: Int) {{ {nested_teams(3, '$n')} }}", {"n": 100}, ATTACK_COST),
        # Aliases add up; a fragment costs what its fields cost, wherever it is spread.
        (
            "{ a: patients(first: 50) { edges { node { id } } } b: patients(first: 50) { edges { node { id } } } }",
            {},
            202,
        ),
        ("{ patients(first: 50) { ...page } } fragment page on PatientConnection { edges { node { id } } }", {}, 101),
        ("{ instruments { items { options { label } } } }", {}, 20 + 20 * 20 + 20 * 20 * 20),
        ("{ __schema { types { name fields { name } } } }", {}, 0),  # introspection is not the clinic's data
    ],
)
def test_the_cost_is_the_objects_an_answer_may_hold(document: str, variables: dict[str, Any], cost: int) -> None:
    parsed = graphql.parse(document)
    assert not graphql.validate(SCHEMA, parsed)
    assert operation_cost(SCHEMA, parsed, None, variables, default_page_size=20, max_page_size=100) == cost


async def test_nested_connections_of_connections_are_refused_before_anything_runs(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    with use_database(app.state.database):
        audited = await AuditEvent.all().count()
    body = await gql(client, ATTACK, token=tokens.user("admin@demo.test"))
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": ATTACK_COST, "limit": DEFAULT_MAX_QUERY_COST}
    assert error["message"] == (
        f"the query may return {ATTACK_COST} objects, more than the limit of {DEFAULT_MAX_QUERY_COST}: "
        "ask for smaller pages (first) or nest fewer lists"
    )
    with use_database(app.state.database):
        assert await AuditEvent.all().count() == audited  # no patient was read


async def test_aliases_multiply_the_cost_of_a_query_that_passes_alone(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    once = nested_teams(2, 50)  # 151 + 50 * 101 = 5,201: allowed
    alone = await gql(client, f"{{ {once} }}", token=tokens.user("admin@demo.test"))
    assert "errors" not in alone
    twice = await gql(client, f"{{ a: {once} b: {once} }}", token=tokens.user("admin@demo.test"))
    assert twice["errors"][0]["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": 2 * 5201, "limit": 10_000}


async def test_page_sizes_passed_as_variables_count_as_written_ones(client: httpx.AsyncClient, tokens: Tokens) -> None:
    query = f"query($n: Int) {{ {nested_teams(3, '$n')} }}"
    small = await gql(client, query, {"n": 5}, token=tokens.user("dr.rivera@demo.test"))
    assert "errors" not in small
    big = await gql(client, query, {"n": 100}, token=tokens.user("dr.rivera@demo.test"))
    assert big["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"


async def test_the_limit_is_a_setting(settings: Settings, clock: ManualClock, tokens: Tokens) -> None:
    assert Settings.from_env({"GRAPHQL_MAX_COST": "500"}, env_file=None).max_query_cost == 500
    with pytest.raises(SettingsError, match="GRAPHQL_MAX_COST must be between 100 and 10000000"):
        Settings.from_env({"GRAPHQL_MAX_COST": "10"}, env_file=None)
    strict = create_app(replace(settings, max_query_cost=500), clock=clock)
    async with strict.router.lifespan_context(strict):
        transport = httpx.ASGITransport(app=strict)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            token = tokens.user("dr.rivera@demo.test")
            assert "errors" not in await gql(http, PANEL, {"first": 50}, token=token)  # 301
            refused = await gql(http, PANEL, {"first": 100}, token=token)  # 601
    assert refused["errors"][0]["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": 601, "limit": 500}
