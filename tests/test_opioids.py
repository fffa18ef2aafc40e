"""Opioid use in MME: the CDC 2022 worked examples, patches, refusals, and the API."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from models.clock import ManualClock
from models.opioids import CATALOGUE, Intake, daily_mme, dose_mme, mme_flags, opioid_interaction
from tests.clinical import start_input
from tests.conftest import Tokens
from tests.graphql import gql

MONDAY = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)  # 09:00 in New York


def per_day(*doses: tuple[str, str, int]) -> Decimal:
    """MME/day of a day's intakes: (drug, strength, how many times that day)."""
    intakes = [
        Intake(drug, Decimal(strength), Decimal(1), MONDAY + timedelta(hours=3 * n))
        for drug, strength, times in doses
        for n in range(times)
    ]
    return daily_mme(intakes, MONDAY.date(), MONDAY.date(), "America/New_York")[MONDAY.date()]


# CLINICAL.md §10: the worked examples the guideline's table gives.
@pytest.mark.parametrize(
    ("doses", "mme"),
    [
        ((("oxycodone", "10", 4),), Decimal(60)),
        ((("hydrocodone", "10", 3),), Decimal(30)),
        ((("methadone", "10", 3),), Decimal(141)),
        ((("tramadol", "50", 4),), Decimal(40)),
        ((("morphine", "30", 2), ("oxycodone", "5", 2)), Decimal(75)),
    ],
)
def test_the_cdc_worked_examples(doses: tuple[tuple[str, str, int], ...], mme: Decimal) -> None:
    assert per_day(*doses) == mme


def test_a_25_mcg_per_hour_fentanyl_patch_is_60_mme_on_every_day_it_is_worn() -> None:
    applied = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)  # 08:00 Monday in New York; off 08:00 Thursday
    days = daily_mme(
        [Intake("fentanyl patch", Decimal(25), Decimal(1), applied)],
        date(2026, 11, 22),
        date(2026, 11, 27),
        "America/New_York",
    )
    assert [days[date(2026, 11, d)] for d in range(22, 28)] == [0, 60, 60, 60, 60, 0]


def test_buprenorphine_is_recorded_but_not_converted() -> None:
    assert dose_mme("buprenorphine", Decimal(8), Decimal(2)) is None
    assert CATALOGUE["buprenorphine"].not_converted_because


@pytest.mark.parametrize(
    ("mme", "flags"),
    [(Decimal(49), []), (Decimal(50), ["AT_OR_ABOVE_50"]), (Decimal(90), ["AT_OR_ABOVE_50", "AT_OR_ABOVE_90"])],
)
def test_the_50_and_90_mme_flags(mme: Decimal, flags: list[str]) -> None:
    assert mme_flags(mme) == flags


LOG = """
mutation Log($input: LogOpioidUseInput!) {
  logOpioidUse(input: $input) {
    result { __typename ... on OpioidDose { drug mme } ... on ValidationError { field message } }
  }
}
"""
USE = (
    "{ me { patient { opioidUse { currentMmePerDay flags daily(days: 3) { date mme } "
    "regimen { drug dosesPerDay mmePerDay } } } } }"
)


async def test_a_patient_logs_doses_and_reads_daily_mme_in_their_time_zone(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    devon = tokens.fresh("devon@demo.test")  # no opioids in the demo history
    for days_ago in range(1, 8):
        for hour in (9, 15, 21):  # three 10 mg oxycodone a day, in Los Angeles (UTC-8)
            local_day = (clock.now() - timedelta(days=days_ago)).date()
            taken = datetime(local_day.year, local_day.month, local_day.day, tzinfo=UTC) + timedelta(hours=hour + 8)
            body = await gql(
                client,
                LOG,
                {
                    "input": {
                        "drug": "oxycodone",
                        "strength": 10,
                        "strengthUnit": "mg",
                        "quantity": 1,
                        "takenAt": taken.isoformat(),
                    }
                },
                token=devon,
            )
            assert body["data"]["logOpioidUse"]["result"]["mme"] == 15
    use = (await gql(client, USE, token=devon))["data"]["me"]["patient"]["opioidUse"]
    assert use["currentMmePerDay"] == 45
    assert use["flags"] == []
    assert [day["mme"] for day in use["daily"]] == [45, 45, 0]
    assert use["regimen"] == [{"drug": "oxycodone", "dosesPerDay": 3, "mmePerDay": 45}]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"drug": "heroin"}, "drug"),
        ({"drug": "fentanyl patch"}, "strengthUnit"),
        ({"strengthUnit": "g"}, "strengthUnit"),
        ({"strength": 0}, "strength"),
        ({"quantity": 100}, "quantity"),
    ],
)
async def test_unknown_drugs_or_units_are_refused_not_guessed(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, change: dict[str, object], field: str
) -> None:
    values = {
        "drug": "oxycodone",
        "strength": 10,
        "strengthUnit": "mg",
        "quantity": 1,
        "takenAt": clock.now().isoformat(),
    }
    body = await gql(client, LOG, {"input": {**values, **change}}, token=tokens.user("alex@demo.test"))
    assert body["data"]["logOpioidUse"]["result"]["field"] == field


# CLINICAL.md §8: an opioid within 4 hours before a session is a warning, not a refusal.
@pytest.mark.parametrize(
    ("drug", "before", "warned"),
    [
        ("oxycodone", timedelta(minutes=30), True),
        ("oxycodone", timedelta(hours=4), True),
        ("oxycodone", timedelta(hours=4, minutes=1), False),
        ("oxycodone", -timedelta(minutes=5), False),  # after the start: not before the session
        ("fentanyl patch", timedelta(hours=60), True),  # still worn
        ("fentanyl patch", timedelta(hours=73), False),  # taken off
    ],
)
def test_an_opioid_before_a_session_is_a_warning(drug: str, before: timedelta, warned: bool) -> None:
    strength = Decimal(25) if drug == "fentanyl patch" else Decimal(10)
    warning = opioid_interaction([Intake(drug, strength, Decimal(1), MONDAY - before)], MONDAY)
    assert (warning is not None) is warned
    if warning:
        assert warning.code == "OPIOID_WITHIN_4_HOURS"
        assert drug in warning.message


async def test_starting_a_session_after_an_opioid_succeeds_with_a_warning(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh("alex@demo.test")
    taken = clock.now() - timedelta(minutes=90)
    dose = {"drug": "hydrocodone", "strength": 10, "strengthUnit": "mg", "quantity": 1, "takenAt": taken.isoformat()}
    assert (await gql(client, LOG, {"input": dose}, token=alex))["data"]["logOpioidUse"]["result"]["mme"] == 10
    query = (
        "mutation($input: StartDosingSessionInput!) { startDosingSession(input: $input) "
        "{ result { __typename } warnings { code message } } }"
    )
    variables = {"input": start_input(clock.now(), idempotencyKey="start-after-opioid")}
    first = (await gql(client, query, variables, token=alex))["data"]["startDosingSession"]
    assert first["result"]["__typename"] == "DosingSession"
    assert [w["code"] for w in first["warnings"]] == ["OPIOID_WITHIN_4_HOURS"]
    assert "hydrocodone 90 minutes before" in first["warnings"][0]["message"]
    retried = (await gql(client, query, variables, token=alex))["data"]["startDosingSession"]
    assert retried == first  # a retry from a flaky network gets the same answer


async def test_buccal_fentanyl_is_logged_in_mcg_and_recorded_without_mme(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    taken = (clock.now() - timedelta(hours=1)).isoformat()
    dose = {"drug": "fentanyl buccal", "strength": 100, "quantity": 1, "takenAt": taken}
    devon = tokens.user("devon@demo.test")
    wrong = await gql(client, LOG, {"input": {**dose, "strengthUnit": "mcg/hr"}}, token=devon)
    assert wrong["data"]["logOpioidUse"]["result"]["field"] == "strengthUnit"
    logged = await gql(client, LOG, {"input": {**dose, "strengthUnit": "mcg"}}, token=devon)
    assert logged["data"]["logOpioidUse"]["result"] == {
        "__typename": "OpioidDose",
        "drug": "fentanyl buccal",
        "mme": None,
    }
