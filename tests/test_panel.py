"""The provider panel and outcomes: urgency order, CLINICAL.md §5 outcomes, and no N+1."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.database import use_database
from api.settings import Settings
from models import outcomes
from models.clock import ManualClock
from tests.conftest import Tokens
from tests.graphql import gql
from tests.panel_data import PANEL, add_panel_patients, counting_statements


async def statements_for_panel(app: Starlette, token: str, first: int) -> tuple[int, int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        await gql(http, "{ me { role } }", token=token)  # the login check is cached from here on (api.logins)
        with counting_statements() as counter:
            body = await gql(http, PANEL, {"first": first}, token=token)
    assert "errors" not in body, body
    return counter.count, len(body["data"]["patients"]["edges"])


async def test_the_panel_costs_the_same_statements_for_5_patients_and_for_500(
    settings: Settings, clock: ManualClock, tokens: Tokens, app: Starlette
) -> None:
    wide = create_app(replace(settings, max_page_size=500), clock=clock)
    async with wide.router.lifespan_context(wide):
        token = tokens.user("dr.rivera@demo.test")
        with use_database(app.state.database):
            await add_panel_patients(3, "a", now=clock.now(), history_days=3)  # Alex, Blair and 3 more
        few, shown_few = await statements_for_panel(wide, token, 500)
        with use_database(app.state.database):
            await add_panel_patients(495, "b", now=clock.now(), history_days=3)
        many, shown_many = await statements_for_panel(wide, token, 500)
    assert (shown_few, shown_many) == (5, 500)
    assert 0 < few == many, f"{few} statements for 5 patients, {many} for 500"


async def test_the_panel_puts_the_most_urgent_first_and_filters(client: httpx.AsyncClient, tokens: Tokens) -> None:
    body = await gql(client, PANEL, {"first": 10}, token=tokens.user("dr.rivera@demo.test"))
    rows = [(e["node"]["givenName"], e["node"]["highestAlertSeverity"]) for e in body["data"]["patients"]["edges"]]
    assert rows == [("Blair", "HIGH"), ("Alex", None)]
    only_alerts = await gql(
        client,
        "{ patients(filter: {hasOpenAlerts: false}) { edges { node { givenName } } } }",
        token=tokens.user("dr.rivera@demo.test"),
    )
    assert [e["node"]["givenName"] for e in only_alerts["data"]["patients"]["edges"]] == ["Alex"]


@pytest.mark.parametrize(
    ("has_open_alerts", "expected"),
    [(True, ["Blair"]), (False, ["Alex"]), (None, ["Blair", "Alex"])],  # by family name
)
async def test_the_alert_filter_holds_in_name_order_too(
    client: httpx.AsyncClient, tokens: Tokens, has_open_alerts: bool | None, expected: list[str]
) -> None:
    body = await gql(
        client,
        "query($f: PatientFilter) { patients(filter: $f, orderBy: NAME) { edges { node { givenName } } } }",
        {"f": {"hasOpenAlerts": has_open_alerts}},
        token=tokens.user("dr.rivera@demo.test"),
    )
    assert [e["node"]["givenName"] for e in body["data"]["patients"]["edges"]] == expected


async def test_outcomes_show_response_for_alex_and_none_for_blair(client: httpx.AsyncClient, tokens: Tokens) -> None:
    body = await gql(client, PANEL, {"first": 10}, token=tokens.user("dr.rivera@demo.test"))
    by_name = {e["node"]["givenName"]: e["node"]["outcomes"] for e in body["data"]["patients"]["edges"]}
    assert by_name["Alex"]["phq9"]["response"] is True
    assert by_name["Blair"]["phq9"]["response"] is False
    assert by_name["Alex"]["mmeCurrent"] < 60  # tapering from 60 MME/day


@pytest.mark.parametrize(
    ("baseline", "latest", "response", "remission", "pain"),
    [
        (Decimal(16), Decimal(8), True, False, "SUBSTANTIAL"),
        (Decimal(16), Decimal(4), True, True, "SUBSTANTIAL"),
        (Decimal(10), Decimal(7), False, False, "MEANINGFUL"),
        (Decimal(10), Decimal(8), False, False, "NONE"),
        (None, Decimal(4), None, True, None),
    ],
)
def test_outcome_definitions(
    baseline: Decimal | None, latest: Decimal, response: bool | None, remission: bool, pain: str | None
) -> None:
    assert outcomes.responded(baseline, latest) is response
    assert outcomes.in_remission(latest) is remission
    assert outcomes.pain_improvement(baseline, latest) == pain
