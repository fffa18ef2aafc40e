"""The pain baseline (CLINICAL.md §5): one rule, the same for the pain alert, outcomes and the panel."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.database import use_database
from models.identity.access import load_user_viewer
from models.identity.accounts import Patient
from models.kernel.audit import AuditTrail
from models.kernel.clock import ManualClock
from models.kernel.policy import DEFAULT_POLICY
from models.outcomes.baselines import RecordedValue, latest_before_first_session, pain_baseline
from models.outcomes.outcomes import outcomes_for
from tests.conftest import Tokens
from tests.support.clinical import ALERTS, SUBMIT_CHECK_IN, complete, enrol_patient, start
from tests.support.graphql import gql

FIRST_SESSION = datetime(2026, 11, 1, 20, 0, tzinfo=UTC)
WINDOW = timedelta(days=30)


def days_before(days: float, **later: float) -> datetime:
    return FIRST_SESSION - timedelta(days=days) + timedelta(**later)


def nrs(value: int, answered: datetime, *, received: datetime | None = None) -> RecordedValue:
    """A Pain NRS answer; `received` later than `answered` is one replayed from an offline phone."""
    if received is None:  # sent live: the phone sends no recordedAt
        return RecordedValue.of_response(None, answered, Decimal(value))
    return RecordedValue.of_response(answered, received, Decimal(value))


def check_in(value: int, recorded: datetime, *, received: datetime | None = None) -> RecordedValue:
    return RecordedValue.of_check_in(recorded, received or recorded, value)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([nrs(7, days_before(3)), check_in(5, days_before(1))], (5, "CheckIn"), id="check-in-after-nrs"),
        pytest.param(
            [check_in(4, days_before(3)), nrs(6, days_before(2))], (6, "SurveyResponse"), id="nrs-after-check-in"
        ),
        pytest.param(
            [nrs(6, days_before(2), received=days_before(0, hours=-1)), check_in(5, days_before(1))],
            (5, "CheckIn"),
            id="an-nrs-received-last-but-recorded-first-is-not-the-latest",
        ),
        pytest.param(
            [check_in(4, days_before(4), received=days_before(0, hours=-1)), nrs(7, days_before(3))],
            (7, "SurveyResponse"),
            id="a-check-in-received-last-but-recorded-first-is-not-the-latest",
        ),
        pytest.param(
            [check_in(3, days_before(2)), nrs(6, days_before(1), received=FIRST_SESSION + timedelta(days=2))],
            (6, "SurveyResponse"),
            id="recorded-before-the-session-received-after-it-counts",
        ),
        pytest.param([check_in(3, days_before(2)), nrs(9, days_before(0, hours=3))], (3, "CheckIn"), id="after-it"),
        pytest.param([check_in(5, days_before(30))], (5, "CheckIn"), id="exactly-30-days-before-counts"),
        pytest.param([check_in(5, days_before(30, seconds=-1))], None, id="30-days-and-a-second-before-does-not"),
        pytest.param([check_in(5, FIRST_SESSION)], None, id="at-the-session-start-is-not-before-it"),
        pytest.param([check_in(5, days_before(45)), nrs(2, days_before(-1))], None, id="nothing-in-the-window"),
        pytest.param([], None, id="no-value-at-all"),
        pytest.param(
            [check_in(4, days_before(1)), nrs(6, days_before(1))], (6, "SurveyResponse"), id="a-tie-the-higher"
        ),
    ],
)
def test_the_baseline_is_the_latest_value_recorded_in_the_30_days_before_the_first_session(
    values: list[RecordedValue], expected: tuple[int, str] | None
) -> None:
    found = latest_before_first_session(values, FIRST_SESSION, WINDOW)
    assert (None if found is None else (found.value, found.source)) == expected
    if found is not None:
        assert found.first_session_at == FIRST_SESSION


def test_without_a_completed_session_there_is_no_baseline() -> None:
    assert latest_before_first_session([nrs(6, days_before(1)), check_in(5, days_before(2))], None, WINDOW) is None


def test_a_shorter_window_leaves_an_older_value_out() -> None:
    values = [check_in(4, days_before(20))]
    assert latest_before_first_session(values, FIRST_SESSION, timedelta(days=21)) is not None
    assert latest_before_first_session(values, FIRST_SESSION, timedelta(days=14)) is None


# ---------------------------------------------------------------- through the app

SUBMIT_PAIN = """
mutation Pain($input: SubmitSurveyResponseInput!) {
  submitSurveyResponse(input: $input) {
    result { __typename ... on SurveyResponse { id totalScore } ... on Error { message } }
  }
}
"""
PAIN_OUTCOME = "query($id: ID!) { patient(id: $id) { outcomes { pain { baseline } } } }"
PANEL_PAIN = "{ patients(first: 50) { edges { node { givenName outcomes { pain { baseline } } } } } }"


async def answer_pain(
    client: httpx.AsyncClient, token: object, value: int, recorded_at: datetime | None = None
) -> None:
    given: dict[str, Any] = {"instrument": "PAIN-NRS", "answers": [{"linkId": "1", "value": value}]}
    if recorded_at is not None:
        given["recordedAt"] = recorded_at.isoformat()
    body = await gql(client, SUBMIT_PAIN, {"input": given}, token=token)
    assert body["data"]["submitSurveyResponse"]["result"]["__typename"] == "SurveyResponse", body


async def check_in_pain(client: httpx.AsyncClient, token: object, value: int, recorded_at: datetime) -> None:
    body = await gql(
        client, SUBMIT_CHECK_IN, {"input": {"pain": value, "recordedAt": recorded_at.isoformat()}}, token=token
    )
    assert body["data"]["submitCheckIn"]["result"]["__typename"] == "CheckIn", body


async def first_session(client: httpx.AsyncClient, token: object, clock: ManualClock) -> None:
    started = await start(client, token, clock.now())
    assert started["result"]["__typename"] == "DosingSession", started
    clock.advance(timedelta(hours=2, minutes=30))
    completed = await complete(client, token, started["result"]["id"])
    assert completed["result"]["status"] == "COMPLETED", completed


async def pain_alerts(client: httpx.AsyncClient, tokens: Tokens, given_name: str) -> list[str]:
    body = await gql(client, ALERTS, {"status": ["OPEN"]}, token=tokens.user("dr.rivera@demo.test"))
    return [
        edge["node"]["summary"]
        for edge in body["data"]["alerts"]["edges"]
        if edge["node"]["patient"]["givenName"] == given_name and edge["node"]["summary"].startswith("PAIN-NRS")
    ]


RISE = "PAIN-NRS: Pain 8 or more and at least 3 points above the patient's baseline."
NO_BASELINE = "PAIN-NRS: Pain 8 or more, and no baseline yet to compare it with."


@pytest.mark.parametrize(
    ("session_before", "baseline", "alerts"),
    [
        pytest.param(False, None, [NO_BASELINE], id="no-session-yet"),
        pytest.param(True, None, [NO_BASELINE], id="a-session-but-nothing-recorded-before-it"),
        pytest.param(True, 6, [], id="baseline-6"),
        pytest.param(True, 5, [RISE], id="baseline-5"),
    ],
)
async def test_a_pain_of_8_alerts_with_no_baseline_yet_or_3_points_above_it(
    client: httpx.AsyncClient,
    tokens: Tokens,
    clock: ManualClock,
    app: Starlette,
    session_before: bool,
    baseline: int | None,
    alerts: list[str],
) -> None:
    email, _ = await enrol_patient(app, client, tokens, "Robin")
    robin = tokens.fresh(email)
    clock.advance(timedelta(days=1))
    if baseline is not None:
        await check_in_pain(client, robin, baseline, clock.now())
    clock.advance(timedelta(days=1))
    if session_before:
        await first_session(client, robin, clock)
    clock.advance(timedelta(days=1))
    await answer_pain(client, robin, 8)
    assert await pain_alerts(client, tokens, "Robin") == alerts


async def test_outcomes_and_the_panel_show_the_baseline_the_alert_compared_against(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    email, patient_id = await enrol_patient(app, client, tokens, "Sasha")
    sasha = tokens.fresh(email)
    session_at = clock.now() + timedelta(days=10)
    clock.set(session_at - timedelta(days=3))
    await answer_pain(client, sasha, 7)  # sent live
    clock.set(session_at - timedelta(days=1))
    await check_in_pain(client, sasha, 5, clock.now())  # sent live: the latest recorded before the session
    clock.set(session_at - timedelta(hours=1))
    # The phone comes back online and sends its queue: answers given earlier, received last.
    await answer_pain(client, sasha, 6, recorded_at=session_at - timedelta(days=2))
    await check_in_pain(client, sasha, 4, session_at - timedelta(days=4))
    clock.set(session_at)
    await first_session(client, sasha, clock)
    clock.advance(timedelta(days=1))
    await answer_pain(client, sasha, 8)  # 3 above 5 (by the received order it would be 2 above 6)

    rivera = tokens.user("dr.rivera@demo.test")
    assert await pain_alerts(client, tokens, "Sasha") == [RISE]
    outcome = await gql(client, PAIN_OUTCOME, {"id": patient_id}, token=rivera)
    assert outcome["data"]["patient"]["outcomes"]["pain"]["baseline"] == 5
    panel = await gql(client, PANEL_PAIN, token=rivera)
    rows = {edge["node"]["givenName"]: edge["node"]["outcomes"] for edge in panel["data"]["patients"]["edges"]}
    assert rows["Sasha"]["pain"]["baseline"] == 5
    with use_database(app.state.database):
        found = await pain_baseline(uuid.UUID(relay.GlobalID.from_id(patient_id).node_id), policy=DEFAULT_POLICY)
    assert found is not None
    assert (found.value, found.source, found.recorded_at) == (5, "CheckIn", session_at - timedelta(days=1))


async def test_the_clinic_policy_sets_how_far_back_a_baseline_may_be(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    email, _ = await enrol_patient(app, client, tokens, "Kim")
    kim = tokens.fresh(email)
    clock.advance(timedelta(days=1))
    await check_in_pain(client, kim, 4, clock.now())
    clock.advance(timedelta(days=20))
    await first_session(client, kim, clock)
    two_weeks = replace(DEFAULT_POLICY, baseline_window=timedelta(days=14))
    with use_database(app.state.database):
        patient = await Patient.get(user__email=email)
        rivera = await load_user_viewer(tokens.user_ids["dr.rivera@demo.test"], AuditTrail())
        assert rivera is not None
        by_default = await pain_baseline(patient.id, policy=DEFAULT_POLICY)
        narrower = await pain_baseline(patient.id, policy=two_weeks)
        outcomes = await outcomes_for(rivera, [patient.id], now=clock.now(), policy=two_weeks)
    assert by_default is not None and by_default.value == 4
    assert narrower is None
    assert outcomes[patient.id].pain.baseline is None


PEG_OUTCOME = """
query($id: ID!) {
  patient(id: $id) { outcomes { peg3 { baseline latest changePercent improvement } peg3Series { value } } }
}
"""


async def answer_peg(client: httpx.AsyncClient, token: object, *items: int) -> None:
    answers = [{"linkId": str(number), "value": value} for number, value in enumerate(items, start=1)]
    body = await gql(client, SUBMIT_PAIN, {"input": {"instrument": "PEG-3", "answers": answers}}, token=token)
    assert body["data"]["submitSurveyResponse"]["result"]["__typename"] == "SurveyResponse", body


async def test_peg3_is_an_outcome_against_its_own_baseline_meaningful_from_30_percent(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    """CLINICAL.md §5: PEG-3's score (the mean of its 3 items) against the latest score before the
    first completed session; ≥ 30 % less is meaningful, ≥ 50 % substantial."""
    email, patient_id = await enrol_patient(app, client, tokens, "Robin")
    robin, rivera = tokens.fresh(email), tokens.fresh("dr.rivera@demo.test")

    async def peg() -> dict[str, Any]:
        body = await gql(client, PEG_OUTCOME, {"id": patient_id}, token=rivera)
        return dict(body["data"]["patient"]["outcomes"])

    clock.advance(timedelta(days=1))
    await answer_peg(client, robin, 8, 8, 8)
    clock.advance(timedelta(days=1))
    await answer_peg(client, robin, 7, 6, 8)  # 7.0: the latest before the first session
    before = await peg()
    assert before["peg3"] == {"baseline": None, "latest": 7.0, "changePercent": None, "improvement": None}

    clock.advance(timedelta(days=1))
    await first_session(client, robin, clock)
    clock.advance(timedelta(days=3))
    await answer_peg(client, robin, 5, 5, 5)  # 5.0: 28.6 % less, not yet meaningful
    assert (await peg())["peg3"] == {"baseline": 7.0, "latest": 5.0, "changePercent": -28.6, "improvement": "NONE"}
    clock.advance(timedelta(days=7))
    await answer_peg(client, robin, 5, 4, 5)  # 4.7: 32.9 % less
    assert (await peg())["peg3"]["improvement"] == "MEANINGFUL"
    clock.advance(timedelta(days=7))
    await answer_peg(client, robin, 3, 4, 3)  # 3.3: 52.9 % less
    after = await peg()
    assert after["peg3"] == {"baseline": 7.0, "latest": 3.3, "changePercent": -52.9, "improvement": "SUBSTANTIAL"}
    assert [point["value"] for point in after["peg3Series"]] == [8.0, 7.0, 5.0, 4.7, 3.3]
