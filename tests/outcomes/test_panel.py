"""The provider panel and outcomes: urgency order paged in the database, CLINICAL.md §5 outcomes, and no N+1."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.app import create_app
from api.database import use_database
from api.settings import Settings
from models.alerts.alert_rules import AlertKind, Severity
from models.alerts.alerts import Alert, AlertStatus
from models.identity.accounts import CareTeam, Patient, Role, User
from models.kernel.clock import ManualClock
from models.outcomes import outcomes
from tests.conftest import Tokens
from tests.support.graphql import gql
from tests.support.panel_data import PANEL, add_panel_patients, counting_statements


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


async def test_a_page_of_the_panel_by_urgency_loads_that_page_not_the_whole_panel(
    clock: ManualClock, tokens: Tokens, app: Starlette, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with use_database(app.state.database):
        await add_panel_patients(498, "a", now=clock.now(), history_days=1)  # every fourth with an alert
    loaded: list[Patient] = []
    load = Patient._init_from_db.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Patient], **row: object) -> Patient:
        patient: Patient = load(cls, **row)
        loaded.append(patient)
        return patient

    monkeypatch.setattr(Patient, "_init_from_db", classmethod(counted))
    body = await gql(client, PANEL, {"first": 5}, token=tokens.user("dr.rivera@demo.test"))
    page = [edge["node"]["givenName"] for edge in body["data"]["patients"]["edges"]]
    assert page[0] == "Blair" and len(page) == 5
    # The page's rows (again for each loader of the panel's fields) and the one that says there is
    # a next page; never the other 494.
    assert set(page) < {patient.given_name for patient in loaded}
    assert len({patient.given_name for patient in loaded} - set(page)) == 1
    assert len(loaded) < 50


# Dr Rivera's panel (North) at START: Alex (a resolved alert) and Blair (HIGH, overdue since
# yesterday), and these: (given, family, id, open alerts as (severity, due in hours, status)).
URGENCY_CASES = [
    ("Bo", "Young", "b0000000-0000-4000-8000-000000000000", [("URGENT", 2, "OPEN"), ("ROUTINE", 1, "OPEN")]),
    ("Cy", "Young", "c0000000-0000-4000-8000-000000000000", [("URGENT", 2, "ACKNOWLEDGED")]),
    ("Gil", "Abbot", "90000000-0000-4000-8000-000000000000", [("URGENT", 3, "OPEN")]),
    ("Fay", "Moss", "f0000000-0000-4000-8000-000000000000", [("HIGH", 5, "OPEN")]),
    ("Hal", "Moss", "a0000000-0000-4000-8000-000000000000", [("HIGH", 5, "OPEN")]),
    ("Ada", "Zed", "ad000000-0000-4000-8000-000000000000", [("ROUTINE", 30, "OPEN")]),
    ("Di", "Able", "d0000000-0000-4000-8000-000000000000", [("HIGH", 5, "RESOLVED")]),
    ("Ed", "Able", "e2000000-0000-4000-8000-000000000000", []),
    ("Ed", "Able", "e1000000-0000-4000-8000-000000000000", []),
    ("Ivy", "Zed", "10000000-0000-4000-8000-000000000000", []),
]
# The most urgent open alert (severity, then deadline), then family name, given name and id.
BY_URGENCY = ["Bo", "Cy", "Gil", "Blair", "Fay", "Hal", "Ada", "Di", "Ed e1", "Ed e2", "Alex", "Ivy"]
BY_NAME = ["Gil", "Di", "Ed e1", "Ed e2", "Blair", "Alex", "Fay", "Hal", "Bo", "Cy", "Ada", "Ivy"]


async def add_urgency_cases(now: datetime) -> None:
    north = await CareTeam.get(name="North")
    for given, family, patient_id, alerts in URGENCY_CASES:
        user = await User.create(email=f"{patient_id}@example.test", role=Role.PATIENT, password_hash="x")
        patient = await Patient.create(
            id=uuid.UUID(patient_id), user=user, care_team=north, given_name=given, family_name=family,
            birth_date=date(1980, 1, 1), time_zone="America/New_York",
        )  # fmt: skip
        for number, (severity, hours, status) in enumerate(alerts):
            await Alert.create(
                patient=patient, kind=AlertKind.SIDE_EFFECT, severity=Severity(severity),
                severity_rank=Severity(severity).rank, status=AlertStatus(status), summary="case",
                source_type="test", dedup_key=f"case:{patient_id}:{number}", raised_at=now,
                respond_by=now + timedelta(hours=hours),
            )  # fmt: skip


WITH_OPEN_ALERTS = {"Bo", "Cy", "Gil", "Blair", "Fay", "Hal", "Ada"}


@pytest.mark.parametrize(("order", "in_order"), [("URGENCY", BY_URGENCY), ("NAME", BY_NAME)])
@pytest.mark.parametrize("has_open_alerts", [None, True, False])
@pytest.mark.parametrize("first", [1, 3, 100])
async def test_the_panel_pages_in_its_order_whatever_the_page_size(
    client: httpx.AsyncClient,
    tokens: Tokens,
    app: Starlette,
    clock: ManualClock,
    order: str,
    in_order: list[str],
    has_open_alerts: bool | None,
    first: int,
) -> None:
    with use_database(app.state.database):
        await add_urgency_cases(clock.now())
    query = """
    query($first: Int, $after: String, $order: PatientOrder, $filter: PatientFilter) {
      patients(first: $first, after: $after, orderBy: $order, filter: $filter) {
        edges { node { id givenName } } pageInfo { hasNextPage endCursor }
      }
    }"""
    expected = [name for name in in_order if has_open_alerts in (None, name in WITH_OPEN_ALERTS)]
    seen: list[str] = []
    after = None
    while True:
        variables = {"first": first, "after": after, "order": order, "filter": {"hasOpenAlerts": has_open_alerts}}
        body = await gql(client, query, variables, token=tokens.user("dr.rivera@demo.test"))
        connection = body["data"]["patients"]
        for edge in connection["edges"]:
            name, patient_id = edge["node"]["givenName"], relay.GlobalID.from_id(edge["node"]["id"]).node_id
            seen.append(f"{name} {patient_id[:2]}" if name == "Ed" else name)
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert seen == expected


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
