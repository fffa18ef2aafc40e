"""Clinic policy, not constants (CLINICAL.md, introduction): thresholds, deadlines and quiet hours
are read from the clinic's policy file (CLINIC_POLICY_FILE), and the rules follow what it says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.database import use_database
from api.settings import Settings, SettingsError
from models.alerts.alerts import Alert
from models.care.plan_rules import DEFAULT_SURVEY_SCHEDULE
from models.kernel.clock import ManualClock
from models.kernel.policy import (
    DEFAULT_POLICY,
    EMERGENCY_INSTRUCTIONS,
    BloodPressure,
    DoseLimit,
    PolicyFileError,
    policy_overrides,
)
from models.notifications.quiet_hours import QuietHours, after_quiet_hours, in_quiet_hours
from models.surveys.schedule import follow_up_schedule
from tests.conftest import Tokens, client_of, running_app
from tests.support.clinical import CREATE_PLAN, complete, patient_global_id, plan_of, start
from tests.support.graphql import gql

CLINIC = {
    "pre_dose_urgent": "170/105",
    "spo2_high_below": 96,
    "urgent_response": 10,
    "quiet_hours": "21:00-09:00",
    "dose_limits": {"SUBLINGUAL_TABLET": [25, 400]},
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"pre_dose_urgent": "170/105"}, {"pre_dose_urgent": BloodPressure(170, 105)}),
        ({"urgent_response": 10, "high_response": 120},
         {"urgent_response": timedelta(minutes=10), "high_response": timedelta(hours=2)}),
        ({"spo2_urgent_below": 88, "routine_response_business_days": 1},
         {"spo2_urgent_below": 88, "routine_response_business_days": 1}),
        ({"quiet_hours": "21:30-07:00"}, {"quiet_hours": QuietHours(time(21, 30), time(7, 0))}),
        ({"dose_limits": {"ORAL": [50, 400], "INTRAMUSCULAR": [0.1, 0.5]}},
         {"dose_limits": (DoseLimit("ORAL", Decimal(50), Decimal(400)),
                          DoseLimit("INTRAMUSCULAR", Decimal("0.1"), Decimal("0.5")))}),
        ({}, {}),
    ],
)  # fmt: skip
def test_a_policy_file_names_the_fields_it_changes(data: dict[str, Any], expected: dict[str, Any]) -> None:
    assert policy_overrides(data) == expected


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"crisis_threshold": 3}, "crisis_threshold: not a clinic policy field"),
        ({"pre_dose_urgent": 180}, 'pre_dose_urgent: a blood pressure as "systolic/diastolic"'),
        ({"urgent_response": "15m"}, "urgent_response: a number of minutes above 0"),
        ({"urgent_response": 0}, "urgent_response: a number of minutes above 0"),
        ({"quiet_hours": "25:00-08:00"}, "quiet_hours: quiet hours as"),
        ({"spo2_high_below": True}, "spo2_high_below: a whole number"),
        ({"spo2_high_below": 85}, "spo2_high_below: must be between spo2_urgent_below and 100"),
        ({"default_bp_ceiling": "170/95"}, "default_bp_ceiling: must not be above highest_bp_ceiling"),
        ({"crisis_phrases": []}, "crisis_phrases: not a clinic policy field"),
        ({"dose_limits": [25, 400]}, "dose_limits: an object of formulation codes and [lowest, highest] doses"),
        ({"dose_limits": {"ORAL": 400}}, "dose_limits: an object of formulation codes"),
        ({"dose_limits": {"ORAL": [25, "lots"]}}, "dose_limits: an object of formulation codes"),
        (
            {"dose_limits": {"ORAL": [400, 25]}},
            "dose_limits: ORAL: the lowest dose is above 0 and not above the highest",
        ),
        ({"dose_limits": {"ORAL": [0, 25]}}, "dose_limits: ORAL: the lowest dose is above 0"),
        ([1, 2], "a JSON object"),
    ],
)
def test_a_policy_file_that_cannot_be_right_is_refused_naming_the_key(data: Any, problem: str) -> None:
    with pytest.raises(PolicyFileError) as refused:
        policy_overrides(data)
    assert problem in str(refused.value)


def test_the_server_refuses_to_start_with_a_bad_policy_file_naming_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"spo2_urgent_below": "ninety"}))
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"CLINIC_POLICY_FILE": str(path)}, env_file=None)
    assert any(p.startswith(f"CLINIC_POLICY_FILE: {path}: spo2_urgent_below") for p in refused.value.problems)
    with pytest.raises(SettingsError) as missing:
        Settings.from_env({"CLINIC_POLICY_FILE": str(tmp_path / "absent.json")}, env_file=None)
    assert "cannot be read as JSON" in missing.value.problems[0]


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"ORAL": [25, 900]}, "dose_limits: ORAL 25-900 mg is wider than the product's guard rails, 25-800 mg: "
                              "a clinic may narrow them, never widen them"),
        ({"INTRANASAL_KETAMINE": [5, 100]}, "dose_limits: INTRANASAL_KETAMINE 5-100 mg is wider"),
        ({"LOZENGE": [25, 100]}, "dose_limits: LOZENGE is not a formulation"),
    ],
)  # fmt: skip
def test_the_server_refuses_to_start_with_dose_limits_wider_than_the_guard_rails(
    tmp_path: Path, limits: dict[str, list[int]], problem: str
) -> None:
    """CLINICAL.md §1: a clinic may narrow the dose limits in settings, never widen them."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"dose_limits": limits}))
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"CLINIC_POLICY_FILE": str(path)}, env_file=None)
    assert any(p.startswith(f"CLINIC_POLICY_FILE: {path}: {problem}") for p in refused.value.problems), refused


def test_the_policy_file_changes_the_policy_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(CLINIC))
    policy = Settings.from_env({"CLINIC_POLICY_FILE": str(path)}, env_file=None).clinic_policy
    assert policy.pre_dose_urgent == BloodPressure(170, 105)
    assert policy.spo2_high_below == 96
    assert policy.urgent_response == timedelta(minutes=10)
    assert policy.quiet_hours == QuietHours(time(21, 0), time(9, 0))
    assert policy.dose_limits == (DoseLimit("SUBLINGUAL_TABLET", Decimal(25), Decimal(400)),)
    unchanged = {"pre_dose_urgent", "spo2_high_below", "urgent_response", "quiet_hours", "dose_limits"}
    assert {k: v for k, v in vars(policy).items() if k not in unchanged} == {
        k: v for k, v in vars(DEFAULT_POLICY).items() if k not in unchanged
    }


def test_quiet_hours_follow_the_clinic() -> None:
    late = QuietHours(time(21, 0), time(9, 0))
    evening = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)  # 21:30 in New York
    assert not in_quiet_hours(evening, "America/New_York", DEFAULT_POLICY.quiet_hours)
    assert in_quiet_hours(evening, "America/New_York", late)
    assert after_quiet_hours(evening, "America/New_York", late) == datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    ended = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)  # a session ending 21:30 in New York
    [pain] = [
        planned
        for planned in follow_up_schedule(
            ended, DEFAULT_SURVEY_SCHEDULE, back_to_baseline=True, time_zone="America/New_York", quiet=late
        )
        if planned.instrument == "PAIN-NRS"
    ]
    assert pain.notify_at == datetime(2026, 11, 27, 14, 0, tzinfo=UTC)  # 09:00 the next morning, not 21:30
    [default] = [
        planned
        for planned in follow_up_schedule(
            ended, DEFAULT_SURVEY_SCHEDULE, back_to_baseline=True, time_zone="America/New_York",
            quiet=DEFAULT_POLICY.quiet_hours,
        )
        if planned.instrument == "PAIN-NRS"
    ]  # fmt: skip
    assert default.notify_at == default.available_at


@pytest.fixture
async def clinic_app(settings: Settings, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Starlette]:
    """The app of a clinic with its own policy file, read from CLINIC_POLICY_FILE like any deployment's."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(CLINIC))
    configured = Settings.from_env({"CLINIC_POLICY_FILE": str(path)}, env_file=None)
    overridden = replace(settings, clinic_policy_overrides=configured.clinic_policy_overrides)
    async with running_app(overridden, clock) as application:
        yield application


@pytest.fixture
async def clinic_client(clinic_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(clinic_app) as http:
        yield http


async def test_the_alert_rules_and_deadlines_follow_the_clinic_policy(
    clinic_app: Starlette, clinic_client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh("alex@demo.test")
    reading = {"systolic": 172, "diastolic": 95, "measuredAt": (clock.now() - timedelta(minutes=2)).isoformat()}
    refused = await start(clinic_client, alex, clock.now(), bloodPressure=reading)
    # 172/95 is HIGH by CLINICAL.md's defaults (over the 140/90 ceiling, under 180/110); this
    # clinic calls 170/105 an urgency, and gives itself 10 minutes to respond.
    assert refused["safetyInstructions"] == EMERGENCY_INSTRUCTIONS
    with use_database(clinic_app.state.database):
        [alert] = await Alert.filter(kind="PRE_DOSE_BP_ABOVE_CEILING", raised_at=clock.now())
    assert alert.severity.value == "URGENT"
    assert alert.respond_by == clock.now() + timedelta(minutes=10)

    clock.advance(timedelta(hours=50))
    session = (await start(clinic_client, alex, clock.now()))["result"]
    clock.advance(timedelta(hours=2, minutes=30))
    done = await complete(
        clinic_client, alex, session["id"], bloodPressure={"systolic": 128, "diastolic": 80, "spo2": 95}
    )
    assert done["result"]["status"] == "COMPLETED"
    with use_database(clinic_app.state.database):
        [low] = await Alert.filter(kind="LOW_OXYGEN_SATURATION")
    assert low.severity.value == "HIGH"  # 95 % is fine by default; this clinic wants 96 % or more


END_PLAN = """
mutation End($plan: ID!) {
  endTreatmentPlan(input: {planId: $plan, status: CANCELLED, reason: "patient moved"}) { result { __typename } }
}
"""


async def test_a_plan_above_the_limit_the_clinic_narrowed_is_refused_naming_it(
    clinic_app: Starlette, clinic_client: httpx.AsyncClient, tokens: Tokens
) -> None:
    """CLINICAL.md §1: this clinic gives sublingual tablets up to 400 mg, not the product's 800."""
    rivera = tokens.user("dr.rivera@demo.test")
    blair = await patient_global_id(clinic_app, "blair@demo.test")
    await gql(clinic_client, END_PLAN, {"plan": (await plan_of(clinic_client, rivera, blair))["id"]}, token=rivera)
    values = {"patientId": blair, "formulation": "SUBLINGUAL_TABLET", "setting": "AT_HOME", "plannedSessions": 8}
    body = await gql(clinic_client, CREATE_PLAN, {"input": {**values, "dose": 450}}, token=rivera)
    assert body["data"]["createTreatmentPlan"]["result"] == {
        "__typename": "ValidationError",
        "message": "SUBLINGUAL_TABLET dose must be between 25 and 400 mg",
        "field": "dose",
    }
    body = await gql(clinic_client, CREATE_PLAN, {"input": {**values, "dose": 400}}, token=rivera)
    assert body["data"]["createTreatmentPlan"]["result"]["__typename"] == "TreatmentPlan"
