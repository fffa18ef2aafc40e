"""Opioid use in MME: the CDC 2022 worked examples, patches, refusals, and the API."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest

from models.kernel.clock import ManualClock
from models.kernel.policy import DEFAULT_POLICY
from models.outcomes.mme import DAY, Intake, Total, daily_totals, dose_mme, mme_flags, total_between
from models.outcomes.opioids import CATALOGUE, opioid_interaction, summarize
from tests.conftest import Tokens
from tests.support.clinical import start_input
from tests.support.graphql import gql

MONDAY = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)  # 09:00 in New York
WEAR = DEFAULT_POLICY.patch_wear  # 72 h
LATER = datetime(2027, 1, 1, tzinfo=UTC)  # "now", after every wear below has ended


def one_day(*doses: tuple[str, str, int]) -> Decimal:
    """MME of 24 hours: (drug, strength, how many times in them), the first at the start (a patch
    applied then is worn all 24 hours)."""
    intakes = [
        Intake(drug, Decimal(strength), Decimal(1), MONDAY + timedelta(hours=3 * n))
        for drug, strength, times in doses
        for n in range(times)
    ]
    return total_between(intakes, MONDAY, MONDAY + DAY, wear=WEAR, now=LATER).mme


# CLINICAL.md §10: the worked examples of the guideline's table.
@pytest.mark.parametrize(
    ("doses", "mme"),
    [
        ((("oxycodone", "10", 4),), Decimal(60)),
        ((("hydrocodone", "10", 3),), Decimal(30)),
        ((("methadone", "10", 3),), Decimal(141)),
        ((("fentanyl patch", "25", 1),), Decimal(60)),
        ((("tramadol", "50", 4),), Decimal(40)),
        ((("morphine", "30", 2), ("oxycodone", "5", 2)), Decimal(75)),
    ],
)
def test_the_cdc_worked_examples(doses: tuple[tuple[str, str, int], ...], mme: Decimal) -> None:
    assert one_day(*doses) == mme


def applied(first_day: date, *patches: tuple[int, int]) -> list[Intake]:
    """Patches of (mcg/hr, hours after 08:00 on `first_day` in New York) applied."""
    eight_am = datetime.combine(first_day, time(8), tzinfo=ZoneInfo("America/New_York"))
    return [Intake("fentanyl patch", Decimal(mcg), Decimal(1), eight_am + timedelta(hours=h)) for mcg, h in patches]


# CLINICAL.md §10: a patch counts by the hours it is worn each local day, a new one ends the
# previous one's wear: never a whole patch on each calendar day it touches.
@pytest.mark.parametrize(
    ("patches", "wear", "first_day", "per_day"),
    [
        pytest.param(
            applied(date(2026, 11, 10), (25, 0), (25, 72), (25, 144), (25, 216)),
            WEAR,
            date(2026, 11, 9),
            [0, 40, *[60] * 11, 20, 0],
            id="9 days, three changes every 72 h: 60 on every whole day, change days included",
        ),
        pytest.param(
            applied(date(2026, 11, 10), (25, 0), (25, 48), (25, 96), (25, 144)),
            WEAR,
            date(2026, 11, 9),
            [0, 40, *[60] * 8, 20, 0],
            id="changed after 48 h: the new patch ends the old one's wear",
        ),
        pytest.param(
            applied(date(2026, 11, 10), (25, 0), (25, 80)),
            WEAR,
            date(2026, 11, 9),
            [0, 40, 60, 60, 40, 60, 60, 40, 0],
            id="changed 8 h late: the hours without a patch count nothing",
        ),
        pytest.param(
            applied(date(2026, 11, 10), (25, 0), (12, 0), (25, 72), (12, 72)),
            WEAR,
            date(2026, 11, 9),
            [0, 59.2, *[88.8] * 5, 29.6, 0],
            id="25 and 12 mcg/hr applied together are worn together",
        ),
        pytest.param(
            applied(date(2026, 11, 10), (25, 0)),
            timedelta(hours=48),
            date(2026, 11, 9),
            [0, 40, 60, 20, 0],
            id="a clinic whose patches are worn 48 h",
        ),
        pytest.param(
            applied(date(2026, 10, 31), (25, 0)),
            WEAR,
            date(2026, 10, 30),
            [0, 40, 62.5, 60, 17.5, 0],
            id="the 25-hour day daylight saving time ends on",
        ),
    ],
)
def test_a_fentanyl_patch_counts_by_the_hours_it_is_worn_each_day(
    patches: list[Intake], wear: timedelta, first_day: date, per_day: list[float]
) -> None:
    last_day = first_day + timedelta(days=len(per_day) - 1)
    days = daily_totals(patches, first_day, last_day, "America/New_York", wear=wear, now=LATER)
    assert [float(total.mme) for total in days.values()] == per_day
    assert not any(total.incomplete for total in days.values())


# CLINICAL.md §10: the current figure is the total of the last 24 hours.
@pytest.mark.parametrize(
    ("intakes", "mme"),
    [
        ([Intake("oxycodone", Decimal(10), Decimal(1), MONDAY - timedelta(hours=23))], 15),
        ([Intake("oxycodone", Decimal(10), Decimal(1), MONDAY - timedelta(hours=25))], 0),
        ([Intake("oxycodone", Decimal(10), Decimal(1), MONDAY + timedelta(minutes=3))], 15),  # phone clock ahead
        ([Intake("fentanyl patch", Decimal(25), Decimal(1), MONDAY - timedelta(hours=10))], 25),  # on for 10 h
        ([Intake("fentanyl patch", Decimal(25), Decimal(1), MONDAY - timedelta(hours=80))], 40),  # off 8 h ago
        ([Intake("fentanyl patch", Decimal(25), Decimal(1), MONDAY - timedelta(hours=h)) for h in (1, 73)], 60),
    ],
)
def test_the_current_figure_is_the_total_of_the_last_24_hours(intakes: list[Intake], mme: int) -> None:
    summary = summarize(intakes, "America/New_York", None, now=MONDAY, policy=DEFAULT_POLICY)
    assert summary.current_mme_per_day == mme


def morphine(mg: str, at: datetime) -> Intake:
    return Intake("morphine", Decimal(mg), Decimal(1), at)


# CLINICAL.md §10: the flags look at the highest day of the last 7 (today so far included).
@pytest.mark.parametrize(
    ("intakes", "flags"),
    [
        ([morphine("49.9", MONDAY)], []),
        ([morphine("50", MONDAY)], ["AT_OR_ABOVE_50"]),
        ([morphine("100", MONDAY - timedelta(days=6)), morphine("10", MONDAY)], ["AT_OR_ABOVE_50", "AT_OR_ABOVE_90"]),
        ([morphine("100", MONDAY - timedelta(days=7)), morphine("10", MONDAY)], []),
        ([morphine("45", MONDAY - timedelta(days=1)), morphine("45", MONDAY - timedelta(hours=3))], []),  # two days
    ],
)
def test_the_flags_look_at_the_highest_day_of_the_last_7(intakes: list[Intake], flags: list[str]) -> None:
    summary = summarize(intakes, "America/New_York", None, now=MONDAY, policy=DEFAULT_POLICY)
    assert [flag.code for flag in summary.flags] == flags


@pytest.mark.parametrize(
    ("highest", "codes", "figure"),
    [
        (Total(Decimal("49.9")), [], None),
        (Total(Decimal("50.0")), ["AT_OR_ABOVE_50"], "50.0 MME/day"),
        (Total(Decimal("90.0")), ["AT_OR_ABOVE_50", "AT_OR_ABOVE_90"], "90.0 MME/day"),
        (
            Total(Decimal("60.0"), ("buprenorphine", "fentanyl buccal")),
            ["AT_OR_ABOVE_50"],
            "at least 60.0 MME/day (buprenorphine, fentanyl buccal not converted)",
        ),
    ],
)
def test_the_50_and_90_mme_flags_read_at_least_when_a_drug_is_left_out(
    highest: Total, codes: list[str], figure: str | None
) -> None:
    flags = mme_flags(highest)
    assert [flag.code for flag in flags] == codes
    assert [flag.message.split(", at or above")[0] for flag in flags] == [
        f"Highest day of the last 7: {figure}" for _ in codes
    ]
    assert [flag.message.split(", at or above ")[1][:2] for flag in flags] == [code[-2:] for code in codes]


def test_buprenorphine_is_recorded_but_not_converted() -> None:
    assert dose_mme("buprenorphine", Decimal(8), Decimal(2)) is None
    assert CATALOGUE["buprenorphine"].not_converted_because


# CLINICAL.md §10: a drug without a factor is never converted, never guessed, never silently dropped.
@pytest.mark.parametrize(
    ("unconverted", "days_ago", "first_session_days_ago", "day_left_out", "flag_reads_at_least"),
    [
        ("buprenorphine", 0, None, ("buprenorphine",), True),
        ("fentanyl nasal", 3, None, (), True),  # another day of the flags' 7
        ("buprenorphine", 10, None, (), False),  # in the trend, not in the flags' days
        ("buprenorphine", 100, 95, (), False),  # only in the baseline week
    ],
)
def test_a_figure_that_leaves_a_drug_out_says_so(
    unconverted: str,
    days_ago: int,
    first_session_days_ago: int | None,
    day_left_out: tuple[str, ...],
    flag_reads_at_least: bool,
) -> None:
    intakes = [
        Intake(unconverted, Decimal(8), Decimal(1), MONDAY - timedelta(days=days_ago, hours=1)),
        *(Intake("oxycodone", Decimal(10), Decimal(1), MONDAY - timedelta(hours=h)) for h in (1, 4, 7)),
    ]
    first = MONDAY - timedelta(days=first_session_days_ago) if first_session_days_ago else None
    summary = summarize(intakes, "America/New_York", first, now=MONDAY, policy=DEFAULT_POLICY)
    assert summary.current_mme_per_day == 45
    assert summary.daily[MONDAY.date()] == Total(Decimal(45), day_left_out)
    assert summary.incomplete
    assert summary.left_out == (unconverted,)
    assert [flag.code for flag in summary.flags] == []
    higher = [*intakes, Intake("oxycodone", Decimal(10), Decimal(1), MONDAY - timedelta(hours=2))]
    flagged = summarize(higher, "America/New_York", first, now=MONDAY, policy=DEFAULT_POLICY)
    assert [flag.code for flag in flagged.flags] == ["AT_OR_ABOVE_50"]
    assert ("at least 60.0 MME/day" in flagged.flags[0].message) is flag_reads_at_least


LOG = """
mutation Log($input: LogOpioidUseInput!) {
  logOpioidUse(input: $input) {
    result { __typename ... on OpioidDose { drug mme } ... on ValidationError { field message } }
  }
}
"""
USE = (
    "{ me { patient { opioidUse { currentMmePerDay incomplete unconvertedDrugs flags daily(days: 3) { date mme } "
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
    assert (use["incomplete"], use["unconvertedDrugs"]) == (False, [])
    assert use["flags"] == []
    assert [day["mme"] for day in use["daily"]] == [45, 45, 0]
    assert use["regimen"] == [{"drug": "oxycodone", "dosesPerDay": 3, "mmePerDay": 45}]


TREND = """
{ me { patient { id opioidUse {
  currentMmePerDay incomplete unconvertedDrugs daily(days: 30) { date mme incomplete unconvertedDrugs }
  flags flagDetails { code message }
} } } }
"""
OUTCOMES = "query($id: ID!) { patient(id: $id) { outcomes { mmeCurrent mmeIncomplete mmeUnconvertedDrugs } } }"


async def log(client: httpx.AsyncClient, token: object, drug: str, strength: int, unit: str, at: datetime) -> None:
    dose = {"drug": drug, "strength": strength, "strengthUnit": unit, "quantity": 1, "takenAt": at.isoformat()}
    body = await gql(client, LOG, {"input": dose}, token=token)
    assert body["data"]["logOpioidUse"]["result"]["__typename"] == "OpioidDose", body


async def test_a_patient_wearing_patches_with_buprenorphine_reads_at_least_figures_naming_it(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    devon = tokens.user("devon@demo.test")  # Los Angeles; no opioids in the demo history
    assert clock.now() == datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 07:00 in Los Angeles
    for day in (13, 16, 19, 22):  # 08:00 in Los Angeles, every 72 h: three changes
        await log(client, devon, "fentanyl patch", 25, "mcg/hr", datetime(2026, 11, day, 16, 0, tzinfo=UTC))
    await log(client, devon, "buprenorphine", 8, "mg", datetime(2026, 11, 24, 18, 0, tzinfo=UTC))
    await log(client, devon, "oxycodone", 10, "mg", datetime(2026, 11, 25, 14, 0, tzinfo=UTC))
    patient = (await gql(client, TREND, token=devon))["data"]["me"]["patient"]
    use = patient["opioidUse"]
    assert use["currentMmePerDay"] == 75  # the patch's last 24 hours and 15 of oxycodone
    assert (use["incomplete"], use["unconvertedDrugs"]) == (True, ["buprenorphine"])
    daily = {day["date"]: day for day in use["daily"]}
    assert (min(daily), max(daily), len(daily)) == ("2026-10-27", "2026-11-25", 30)
    assert [daily[f"2026-11-{d}"]["mme"] for d in range(12, 26)] == [0, 40, *[60] * 11, 32.5]
    assert [day["date"] for day in use["daily"] if day["incomplete"]] == ["2026-11-24"]
    assert daily["2026-11-24"]["unconvertedDrugs"] == ["buprenorphine"]
    assert use["flags"] == ["AT_OR_ABOVE_50"]
    assert use["flagDetails"][0]["message"].startswith(
        "Highest day of the last 7: at least 60.0 MME/day (buprenorphine not converted), at or above 50 MME/day."
    )
    outcomes = await gql(client, OUTCOMES, {"id": patient["id"]}, token=tokens.user("dr.okafor@demo.test"))
    assert outcomes["data"]["patient"]["outcomes"] == {
        "mmeCurrent": 75,
        "mmeIncomplete": True,
        "mmeUnconvertedDrugs": ["buprenorphine"],
    }


async def test_the_demo_patch_is_60_mme_on_every_whole_day_never_a_patch_per_calendar_day(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    """Casey (Denver) has changed a 25 mcg/hr patch every 72 h since 08:00 29 days ago."""
    use = (await gql(client, TREND, token=tokens.user("casey@demo.test")))["data"]["me"]["patient"]["opioidUse"]
    daily = {day["date"]: day["mme"] for day in use["daily"]}
    assert (use["currentMmePerDay"], use["incomplete"], use["flags"]) == (60, False, ["AT_OR_ABOVE_50"])
    assert daily["2026-10-27"] == 40  # applied at 08:00
    assert daily["2026-11-01"] == 62.5  # 25 hours: daylight saving time ends
    assert daily["2026-11-25"] == 20  # today until 08:00
    assert set(daily.values()) == {40, 60, 62.5, 20}
    assert list(daily.values()).count(60) == 27


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
    warning = opioid_interaction([Intake(drug, strength, Decimal(1), MONDAY - before)], MONDAY, wear=WEAR)
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
