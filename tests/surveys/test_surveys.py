"""Surveys: published scoring, the follow-up schedule, and the jobs that must lose nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from strawberry import relay

from api.app import create_app
from api.database import use_database
from api.settings import Settings
from jobs import surveys as survey_jobs
from models.alerts.alerts import Alert
from models.care.plan_rules import DEFAULT_SURVEY_SCHEDULE
from models.identity.accounts import Patient
from models.kernel.audit import AuditEvent
from models.kernel.clock import ManualClock
from models.kernel.errors import InvalidInput
from models.kernel.policy import DEFAULT_POLICY
from models.notifications.notifications import Notification, OutgoingNotification
from models.surveys import assignments, schedule, survey_records
from models.surveys.instruments import InstrumentDefinition, score
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment, SurveyResponse
from seeds.loader import INSTRUMENTS
from tests.conftest import Tokens, job_env
from tests.support.clinical import complete, start
from tests.support.graphql import gql

VERSIONS = {
    (definition.code, definition.version): definition
    for definition in (InstrumentDefinition.parse(json.loads(path.read_text())) for path in INSTRUMENTS.glob("*.json"))
}
# The latest version of each instrument, as `definition_of` serves it.
DEFINITIONS = {
    code: VERSIONS[(code, version)]
    for code, version in sorted(VERSIONS, key=lambda key: tuple(int(part) for part in key[1].split(".")))
}


def answers(*values: int) -> dict[str, int]:
    return {str(index + 1): value for index, value in enumerate(values)}


# Reference cases from the published scoring rules (Kroenke 2001; Spitzer 2006; Krebs 2009).
@pytest.mark.parametrize(
    ("code", "given", "total", "band"),
    [
        ("PHQ-9", answers(0, 0, 0, 0, 0, 0, 0, 0, 0), Decimal(0), "MINIMAL"),
        ("PHQ-9", answers(1, 1, 1, 1, 0, 0, 0, 0, 0), Decimal(4), "MINIMAL"),
        ("PHQ-9", answers(1, 1, 1, 1, 1, 0, 0, 0, 0), Decimal(5), "MILD"),
        ("PHQ-9", answers(2, 2, 1, 1, 1, 1, 1, 0, 0), Decimal(9), "MILD"),
        ("PHQ-9", answers(2, 2, 2, 2, 1, 1, 0, 0, 0), Decimal(10), "MODERATE"),
        ("PHQ-9", answers(3, 3, 2, 2, 2, 2, 1, 0, 0), Decimal(15), "MODERATELY_SEVERE"),
        ("PHQ-9", answers(3, 3, 3, 3, 2, 2, 2, 1, 0), Decimal(19), "MODERATELY_SEVERE"),
        ("PHQ-9", answers(3, 3, 3, 3, 3, 2, 2, 1, 0), Decimal(20), "SEVERE"),
        ("PHQ-9", answers(3, 3, 3, 3, 3, 3, 3, 3, 3), Decimal(27), "SEVERE"),
        # The difficulty item (10) is not scored.
        ("PHQ-9", {**answers(1, 1, 1, 1, 1, 0, 0, 0, 0), "10": 3}, Decimal(5), "MILD"),
        ("GAD-7", answers(0, 0, 1, 1, 1, 1, 0), Decimal(4), "MINIMAL"),
        ("GAD-7", answers(1, 1, 1, 1, 1, 0, 0), Decimal(5), "MILD"),
        ("GAD-7", answers(2, 2, 2, 1, 1, 1, 1), Decimal(10), "MODERATE"),
        ("GAD-7", answers(3, 2, 2, 2, 2, 2, 1), Decimal(14), "MODERATE"),
        ("GAD-7", answers(3, 3, 2, 2, 2, 2, 1), Decimal(15), "SEVERE"),
        ("GAD-7", answers(3, 3, 3, 3, 3, 3, 3), Decimal(21), "SEVERE"),
        ("PEG-3", answers(7, 8, 6), Decimal("7.0"), None),
        ("PEG-3", answers(5, 6, 8), Decimal("6.3"), None),
        ("PEG-3", answers(4, 4, 5), Decimal("4.3"), None),
        ("PEG-3", answers(2, 3, 3), Decimal("2.7"), None),
        ("PAIN-NRS", answers(6), Decimal(6), None),
        ("POST-SESSION", answers(1, 0, 0, 0, 0, 0, 0, 0, 0, 0), None, None),
    ],
)
def test_scores_and_bands_follow_the_published_rules(
    code: str, given: dict[str, int], total: Decimal | None, band: str | None
) -> None:
    result = score(DEFINITIONS[code], given)
    assert result.total == total
    assert result.severity == band


@pytest.mark.parametrize(
    ("code", "given", "rules"),
    [
        ("PHQ-9", answers(0, 0, 0, 0, 0, 0, 0, 0, 1), ["PHQ9_ITEM9"]),
        ("PHQ-9", answers(3, 3, 3, 3, 3, 2, 2, 1, 0), ["PHQ9_SEVERE"]),
        ("PHQ-9", answers(3, 3, 3, 3, 3, 3, 2, 0, 2), ["PHQ9_ITEM9", "PHQ9_SEVERE"]),
        ("PHQ-9", answers(3, 3, 3, 3, 2, 2, 2, 1, 0), []),
        ("GAD-7", answers(3, 3, 2, 2, 2, 2, 1), ["GAD7_SEVERE"]),
        ("GAD-7", answers(3, 2, 2, 2, 2, 2, 1), []),
        ("POST-SESSION", answers(0, 0, 0, 0, 0, 0, 0, 0, 0, 0), ["POST_NOT_BASELINE"]),
        ("POST-SESSION", answers(1, 0, 3, 0, 0, 0, 0, 0, 0, 0), ["POST_SEVERE_SYMPTOM"]),
        ("POST-SESSION", answers(1, 0, 0, 0, 0, 0, 0, 0, 1, 0), ["POST_CHEST"]),
        ("POST-SESSION", answers(1, 0, 0, 0, 0, 0, 0, 0, 0, 1), ["POST_SELF_HARM"]),
        ("POST-SESSION", answers(1, 2, 2, 2, 2, 2, 2, 1, 0, 0), []),
        ("WEEKLY-SAFETY", answers(0, 0, 1, 0, 0), ["WEEKLY_BLOOD"]),
        ("WEEKLY-SAFETY", answers(1, 0, 0, 0, 0), ["WEEKLY_YES"]),
        ("WEEKLY-SAFETY", answers(0, 0, 0, 0, 0), []),
    ],
)
def test_alert_rules_fire_as_clinical_md_says(code: str, given: dict[str, int], rules: list[str]) -> None:
    assert [rule.id for rule in score(DEFINITIONS[code], given).alerts] == rules


@pytest.mark.parametrize(
    ("pain", "baseline", "rules"),
    [
        (8, None, ["PAIN_NRS_HIGH_NO_BASELINE"]),
        (10, None, ["PAIN_NRS_HIGH_NO_BASELINE"]),
        (7, None, []),
        (8, Decimal(4), ["PAIN_NRS_RISE"]),
        (8, Decimal(5), ["PAIN_NRS_RISE"]),
        (8, Decimal(6), []),
        (7, Decimal(2), []),
        (10, Decimal(0), ["PAIN_NRS_RISE"]),
    ],
)
def test_a_pain_of_8_alerts_3_points_above_the_baseline_or_when_there_is_none_yet(
    pain: int, baseline: Decimal | None, rules: list[str]
) -> None:
    assert DEFINITIONS["PAIN-NRS"].version == "1.1.0"
    assert [rule.id for rule in score(DEFINITIONS["PAIN-NRS"], answers(pain), baseline=baseline).alerts] == rules


@pytest.mark.parametrize(
    ("baseline", "fires"), [(None, False), (Decimal(4), True), (Decimal(5), True), (Decimal(6), False)]
)
def test_the_first_pain_nrs_version_still_scores_as_it_did(baseline: Decimal | None, fires: bool) -> None:
    # A stored version never changes: version 1.0.0 alerted only above a known baseline.
    assert bool(score(VERSIONS[("PAIN-NRS", "1.0.0")], answers(8), baseline=baseline).alerts) is fires


@pytest.mark.parametrize(
    ("code", "given", "field"),
    [
        ("PHQ-9", answers(1, 1, 1, 1, 1, 1, 1, 1), "answers.9"),
        ("PHQ-9", answers(1, 1, 1, 1, 4, 1, 1, 1, 1), "answers.5"),
        ("PHQ-9", {**answers(0, 0, 0, 0, 0, 0, 0, 0, 0), "11": 1}, "answers.11"),
        ("PEG-3", answers(5, 11, 5), "answers.2"),
        ("PAIN-NRS", answers(-1), "answers.1"),
    ],
)
def test_incomplete_or_out_of_range_answers_are_refused_with_the_item_named(
    code: str, given: dict[str, int], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        score(DEFINITIONS[code], given)
    assert refused.value.field == field


QUIET = DEFAULT_POLICY.quiet_hours


def test_the_schedule_opens_each_survey_at_its_offset_and_keeps_quiet_hours() -> None:
    # A session ending at 20:30 in New York (01:30 UTC the next day).
    ended = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)
    planned = {
        p.instrument: p
        for p in schedule.follow_up_schedule(
            ended, DEFAULT_SURVEY_SCHEDULE, back_to_baseline=True, time_zone="America/New_York", quiet=QUIET
        )
    }
    post = planned["POST-SESSION"]
    assert post.available_at == ended + timedelta(hours=2)  # 22:30 local, quiet hours...
    assert post.notify_at == post.available_at  # ...but a safety check is notified at once
    pain = planned["PAIN-NRS"]
    assert pain.available_at == datetime(2026, 11, 27, 1, 30, tzinfo=UTC)  # 20:30 local next day
    assert pain.expires_at == datetime(2026, 11, 28, 1, 30, tzinfo=UTC)
    # Reminders at half the window (08:30 local, fine) and 2 h before expiry (18:30 local).
    assert [r.astimezone(UTC).hour for r in pain.reminders] == [13, 23]
    phq9 = planned["PHQ-9"]
    assert phq9.available_at == datetime(2026, 12, 3, 1, 30, tzinfo=UTC)


def test_a_survey_due_in_quiet_hours_is_notified_at_eight() -> None:
    ended = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # 22:00 New York
    planned = schedule.follow_up_schedule(
        ended, DEFAULT_SURVEY_SCHEDULE, back_to_baseline=True, time_zone="America/New_York", quiet=QUIET
    )
    pain = next(p for p in planned if p.instrument == "PAIN-NRS")
    assert pain.available_at == datetime(2026, 11, 27, 3, 0, tzinfo=UTC)  # 22:00 local
    assert pain.notify_at == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)  # 08:00 local


def test_whole_day_offsets_keep_the_local_time_across_a_dst_change() -> None:
    # Ends 16:00 EDT on Saturday 31 October 2026; clocks fall back on Sunday 1 November.
    ended = datetime(2026, 10, 31, 20, 0, tzinfo=UTC)
    planned = schedule.follow_up_schedule(
        ended, DEFAULT_SURVEY_SCHEDULE, back_to_baseline=False, time_zone="America/New_York", quiet=QUIET
    )
    by_code = {p.instrument: p for p in planned}
    assert by_code["POST-SESSION"].available_at == ended  # not back to baseline: due at once
    # +72 h of PEG-3 is three local days: 16:00 EST on 3 November, i.e. 21:00 UTC.
    assert by_code["PEG-3"].available_at == datetime(2026, 11, 3, 21, 0, tzinfo=UTC)
    assert by_code["PHQ-9"].available_at == datetime(2026, 11, 7, 21, 0, tzinfo=UTC)


class RecordingSender:
    """The edge of the world: records what would have been pushed."""

    def __init__(self) -> None:
        self.sent: list[OutgoingNotification] = []

    async def __call__(self, notification: OutgoingNotification) -> None:
        self.sent.append(notification)


async def run_jobs(clock: ManualClock, sender: RecordingSender) -> None:
    env = job_env(clock, sender)
    await survey_jobs.expire_overdue_surveys(env)
    await survey_jobs.open_due_surveys(env)
    await survey_jobs.send_survey_reminders(env)
    await survey_jobs.deliver_notifications(env)


async def complete_a_session(client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock) -> str:
    alex = tokens.fresh("alex@demo.test")
    session = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(hours=2, minutes=30))
    await complete(client, alex, session["id"])
    return str(session["id"])


async def alex_assignments(app: Starlette, session: str | None = None) -> dict[str, survey_records.SurveyAssignment]:
    with use_database(app.state.database):
        rows = await survey_records.SurveyAssignment.filter(patient__user__email="alex@demo.test").order_by(
            "-created_at"
        )
    return {row.instrument: row for row in reversed(rows)}


async def test_a_completed_session_schedules_its_surveys_which_open_remind_and_expire(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    await complete_a_session(client, tokens, clock)
    ended = clock.now()
    sender = RecordingSender()
    assigned = await alex_assignments(app)
    assert assigned["POST-SESSION"].available_at == ended + timedelta(hours=2)
    with use_database(app.state.database):
        clock.advance(timedelta(hours=1, minutes=59))
        await run_jobs(clock, sender)
        assert sender.sent == []
        clock.advance(timedelta(minutes=1))
        await run_jobs(clock, sender)
        assert [n.kind for n in sender.sent] == ["SURVEY_AVAILABLE"]
        assert sender.sent[0].text == "A check-in is ready for you."  # no health information
        # Nobody answers: a reminder at half the 6 h window, then the check expires and alerts.
        clock.advance(timedelta(hours=3))
        await run_jobs(clock, sender)
        assert [n.kind for n in sender.sent] == ["SURVEY_AVAILABLE", "SURVEY_REMINDER"]
        clock.advance(timedelta(hours=3, minutes=1))
        await run_jobs(clock, sender)
        post = await survey_records.SurveyAssignment.get(id=assigned["POST-SESSION"].id)
        assert post.status is survey_records.AssignmentStatus.EXPIRED
        alert = await Alert.get(kind="SAFETY_CHECK_UNANSWERED", source_id=post.id)
    assert alert.severity.value == "HIGH"


SUBMIT = """
mutation Submit($input: SubmitSurveyResponseInput!) {
  submitSurveyResponse(input: $input) {
    result { __typename ... on SurveyResponse { id instrument totalScore severity }
             ... on Error { message } ... on ValidationError { field } }
    safetyInstructions
    crisisResources
  }
}
"""


def as_input(given: dict[str, int]) -> list[dict[str, Any]]:
    return [{"linkId": key, "value": value} for key, value in given.items()]


async def test_a_phq9_with_item_9_above_zero_alerts_urgently_and_answers_with_crisis_resources(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    given = answers(2, 2, 2, 2, 1, 2, 1, 1, 1)
    body = await gql(
        client,
        SUBMIT,
        {"input": {"instrument": "PHQ-9", "answers": as_input(given)}},
        token=tokens.user("alex@demo.test"),
    )
    payload = body["data"]["submitSurveyResponse"]
    assert payload["result"]["totalScore"] == 14
    assert payload["result"]["severity"] == "MODERATE"
    assert "988" in payload["crisisResources"]
    with use_database(app.state.database):
        alert = await Alert.get(patient__user__email="alex@demo.test", kind="SURVEY_ANSWER")
    assert alert.severity.value == "URGENT"
    assert alert.summary.startswith("PHQ-9:")


async def test_answering_an_assignment_completes_it_once(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    await complete_a_session(client, tokens, clock)
    post = (await alex_assignments(app))["POST-SESSION"]
    assignment_id = f"{post.id}"
    from strawberry import relay

    global_id = str(relay.GlobalID("SurveyAssignment", assignment_id))
    given = as_input(answers(1, 0, 1, 0, 0, 1, 0, 0, 0, 0))
    early = await gql(
        client, SUBMIT, {"input": {"assignmentId": global_id, "answers": given}}, token=tokens.fresh("alex@demo.test")
    )
    # Timing never discards an answer (CLINICAL.md §5): kept as an unscheduled, EARLY response;
    # the assignment keeps its status and is still to be answered.
    unscheduled = early["data"]["submitSurveyResponse"]["result"]
    assert unscheduled["instrument"] == "POST-SESSION"
    with use_database(app.state.database):
        kept = await SurveyResponse.get(id=relay.GlobalID.from_id(unscheduled["id"]).node_id)
        assert (kept.assignment_id, kept.intended_assignment_id, kept.timing) == (None, post.id, "EARLY")
        assert (await SurveyAssignment.get(id=post.id)).status is AssignmentStatus.SCHEDULED
    clock.advance(timedelta(hours=2))
    with use_database(app.state.database):
        await survey_jobs.open_due_surveys(job_env(clock))
    done = await gql(
        client, SUBMIT, {"input": {"assignmentId": global_id, "answers": given}}, token=tokens.fresh("alex@demo.test")
    )
    assert done["data"]["submitSurveyResponse"]["result"]["instrument"] == "POST-SESSION"
    again = await gql(
        client, SUBMIT, {"input": {"assignmentId": global_id, "answers": given}}, token=tokens.fresh("alex@demo.test")
    )
    assert again["data"]["submitSurveyResponse"]["result"]["message"] == "this survey is already answered"
    listed = await gql(
        client,
        "{ me { patient { surveyAssignments(status: [COMPLETED], first: 1) "
        "{ edges { node { instrument responseId } } } } } }",
        token=tokens.fresh("alex@demo.test"),
    )
    [edge] = listed["data"]["me"]["patient"]["surveyAssignments"]["edges"]
    assert edge["node"]["instrument"] == "POST-SESSION"
    assert edge["node"]["responseId"] is not None


async def test_only_the_four_open_instruments_may_be_taken_without_an_assignment(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    body = await gql(
        client,
        SUBMIT,
        {"input": {"instrument": "WEEKLY-SAFETY", "answers": as_input(answers(0, 0, 0, 0, 0))}},
        token=tokens.user("alex@demo.test"),
    )
    assert body["data"]["submitSurveyResponse"]["result"]["field"] == "instrument"
    incomplete = await gql(
        client,
        SUBMIT,
        {"input": {"instrument": "GAD-7", "answers": as_input(answers(1, 1, 1))}},
        token=tokens.user("alex@demo.test"),
    )
    assert incomplete["data"]["submitSurveyResponse"]["result"] == {
        "__typename": "ValidationError",
        "message": "GAD-7 item 4 is not answered",
        "field": "answers.4",
    }


async def test_surveys_due_during_downtime_are_delivered_once_after_a_restart(
    settings: Settings, clock: ManualClock, tokens: Tokens, client: httpx.AsyncClient, app: Starlette
) -> None:
    await complete_a_session(client, tokens, clock)
    # The service is down for a day and a half: several surveys fall due meanwhile.
    clock.advance(timedelta(hours=30))
    sender = RecordingSender()
    restarted = create_app(settings, clock=clock, sender=sender)
    async with restarted.router.lifespan_context(restarted):
        scheduler = restarted.state.scheduler
        for _ in range(3):  # run every job several times: nothing may be sent twice
            for job_id in ("expire_overdue_surveys", "open_due_surveys", "deliver_notifications"):
                scheduler.get_job(job_id).modify(next_run_time=datetime.now(UTC))
                await _wait_for_run(scheduler, job_id)
    assigned = await alex_assignments(app)
    # The post-session check (+2 h, 6 h window) expired during the downtime; the pain NRS
    # (+24 h, 24 h window) is open and was announced exactly once.
    assert assigned["POST-SESSION"].status is survey_records.AssignmentStatus.EXPIRED
    assert assigned["PAIN-NRS"].status is survey_records.AssignmentStatus.AVAILABLE
    alex_links = {f"survey/{assignment.id}" for assignment in assigned.values()}
    assert [n.link for n in sender.sent if n.link in alex_links] == [f"survey/{assigned['PAIN-NRS'].id}"]
    # Other patients' surveys that fell due meanwhile were announced too, each once.
    announced = [n.link for n in sender.sent if n.kind == "SURVEY_AVAILABLE"]
    assert len(set(announced)) == len(announced)


async def _wait_for_run(scheduler: Any, job_id: str, *, seconds: float = 10) -> None:
    """Until the real scheduler has run the job just made due (its next run moves on)."""
    for _ in range(int(seconds / 0.02)):
        job = scheduler.get_job(job_id)
        if job.next_run_time > datetime.now(UTC) + timedelta(seconds=1):
            await asyncio.sleep(0.05)  # let the run's own awaits finish
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the scheduler did not run {job_id} in time")


async def test_two_replicas_running_the_jobs_at_once_send_each_notification_once(
    settings: Settings, clock: ManualClock, tokens: Tokens, client: httpx.AsyncClient, app: Starlette
) -> None:
    for _ in range(3):
        await complete_a_session(client, tokens, clock)
        clock.advance(timedelta(hours=48))
    sender = RecordingSender()
    replicas = [create_app(settings, clock=clock, sender=sender) for _ in range(2)]
    async with replicas[0].router.lifespan_context(replicas[0]), replicas[1].router.lifespan_context(replicas[1]):

        async def replica_pass(replica: Starlette) -> None:
            with use_database(replica.state.database):
                await run_jobs(clock, sender)

        for _ in range(3):
            await asyncio.gather(*(replica_pass(replica) for replica in replicas))
            clock.advance(timedelta(hours=6))
    links = [notification.link for notification in sender.sent if notification.kind == "SURVEY_AVAILABLE"]
    assert links
    assert len(links) == len(set(links))
    reminders = [(n.link, n.id) for n in sender.sent if n.kind == "SURVEY_REMINDER"]
    assert len(reminders) == len(set(reminders))


def test_the_weekly_surveys_open_on_the_plans_weekday_at_ten_local() -> None:
    plan_start = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)  # a Monday
    now = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wednesday
    opening = schedule.next_weekly_opening(plan_start, now, "America/Chicago")
    assert opening == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # Monday 10:00 CST
    monday_morning = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 09:00 CST: today's is still ahead
    assert schedule.next_weekly_opening(plan_start, monday_morning, "America/Chicago") == opening


@pytest.mark.parametrize(
    ("instrument", "breaks"),
    [("POST-SESSION", True), ("PAIN-NRS", False), ("PEG-3", False), ("PHQ-9", False), ("WEEKLY-SAFETY", False)],
)
def test_only_the_post_session_check_breaks_quiet_hours(instrument: str, breaks: bool) -> None:
    """§6: one rule for the follow-up schedule, the check made due at once and the opening job."""
    assert schedule.breaks_quiet_hours(instrument) is breaks
    night = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)  # 23:00 in New York
    expected = night if breaks else datetime(2026, 11, 26, 13, 0, tzinfo=UTC)  # 08:00 local
    assert schedule.notify_from(instrument, night, "America/New_York", QUIET) == expected


@pytest.mark.parametrize(
    ("instrument", "overlap"),
    [("PHQ-9", True), ("GAD-7", True), ("WEEKLY-SAFETY", False), ("POST-SESSION", False), ("PEG-3", False)],
)
def test_a_weekly_phq9_or_gad7_within_three_days_of_a_session_s_own_is_one_too_many(
    instrument: str, overlap: bool
) -> None:
    """§6: one span for both queries, the weekly job's skip and the follow-up's cancel."""
    opens = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    span = (opens - timedelta(days=3), opens + timedelta(days=3))
    assert schedule.weekly_overlap(instrument, opens) == (span if overlap else None)


async def test_recurring_surveys_are_scheduled_once_and_cancelled_when_the_plan_is_held(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    with use_database(app.state.database):
        await survey_jobs.schedule_recurring_surveys(job_env(clock))
        assert await survey_jobs.schedule_recurring_surveys(job_env(clock)) == 0  # idempotent
        weekly = await survey_records.SurveyAssignment.filter(
            patient__user__email="alex@demo.test", recurrence_key__isnull=False
        ).values_list("instrument", flat=True)
        # Alex's last session's PHQ-9 and GAD-7 are due within 3 days: only the safety survey.
        session_surveys = await survey_records.SurveyAssignment.filter(
            patient__user__email="alex@demo.test", instrument="PHQ-9", status=survey_records.AssignmentStatus.SCHEDULED
        ).exists()
    assert sorted(weekly) == (["WEEKLY-SAFETY"] if session_surveys else ["GAD-7", "PHQ-9", "WEEKLY-SAFETY"])
    plan = (await gql(client, "{ me { patient { treatmentPlan { id } } } }", token=tokens.user("alex@demo.test")))[
        "data"
    ]["me"]["patient"]["treatmentPlan"]["id"]
    hold = 'mutation($p: ID!) { holdTreatmentPlan(input: {planId: $p, reason: "review"}) { result { __typename } } }'
    await gql(client, hold, {"p": plan}, token=tokens.user("dr.rivera@demo.test"))
    with use_database(app.state.database):
        statuses = await survey_records.SurveyAssignment.filter(
            patient__user__email="alex@demo.test", recurrence_key__isnull=False
        ).values_list("status", flat=True)
    assert set(statuses) == {survey_records.AssignmentStatus.CANCELLED}


async def test_the_daily_check_in_reminder_comes_at_seven_pm_local_once_and_not_after_a_check_in(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    sender = RecordingSender()
    # 18:59 in New York (Alex), 17:59 in Chicago (Blair).
    clock.set(datetime(2026, 11, 25, 23, 59, tzinfo=UTC))
    await gql(
        client,
        "mutation($at: DateTime!) { submitCheckIn(input: {recordedAt: $at, pain: 3}) { result { __typename } } }",
        {"at": clock.now().isoformat()},
        token=tokens.fresh("blair@demo.test"),
    )
    with use_database(app.state.database):
        await survey_jobs.remind_daily_check_ins(job_env(clock, sender))
        assert sender.sent == []
        clock.advance(timedelta(minutes=2))  # 19:01 New York
        await survey_jobs.remind_daily_check_ins(job_env(clock, sender))
        await survey_jobs.remind_daily_check_ins(job_env(clock, sender))
        await survey_jobs.deliver_notifications(job_env(clock, sender))
        clock.advance(timedelta(hours=1))  # 19:01 Chicago: Blair already checked in today
        await survey_jobs.remind_daily_check_ins(job_env(clock, sender))
        await survey_jobs.deliver_notifications(job_env(clock, sender))
        alex = await Patient.get(user__email="alex@demo.test").prefetch_related("user")
    reminders = [n for n in sender.sent if n.kind == "CHECK_IN_REMINDER"]
    assert [n.recipient_id for n in reminders] == [alex.user.id]


async def test_a_retried_answer_with_its_key_replays_the_first_result_and_its_crisis_resources(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    given = as_input(answers(1, 1, 1, 1, 1, 1, 1, 1, 2))
    variables = {"input": {"instrument": "PHQ-9", "answers": given, "idempotencyKey": "phq9-2026-11-25"}}
    first = await gql(client, SUBMIT, variables, token=tokens.user("alex@demo.test"))
    second = await gql(client, SUBMIT, variables, token=tokens.user("alex@demo.test"))
    assert first == second
    assert "988" in second["data"]["submitSurveyResponse"]["crisisResources"]


async def test_concurrent_retries_of_an_assigned_survey_all_get_the_first_answer(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    # The retries that lose the race find the survey answered: they answer with the winner's result.
    await complete_a_session(client, tokens, clock)
    post = (await alex_assignments(app))["POST-SESSION"]
    clock.advance(timedelta(hours=2))
    given = as_input(answers(1, 0, 1, 0, 0, 1, 0, 0, 0, 0))
    values = {"assignmentId": str(relay.GlobalID("SurveyAssignment", str(post.id))), "answers": given}
    variables = {"input": {**values, "idempotencyKey": "post-session-check"}}
    alex = tokens.user("alex@demo.test")
    bodies = await asyncio.gather(*(gql(client, SUBMIT, variables, token=alex) for _ in range(6)))
    results = [body["data"]["submitSurveyResponse"]["result"] for body in bodies]
    assert results[0]["__typename"] == "SurveyResponse"
    assert all(result == results[0] for result in results)
    with use_database(app.state.database):
        assert await survey_records.SurveyResponse.filter(assignment_id=post.id).count() == 1


async def test_after_downtime_nothing_is_pushed_in_quiet_hours_and_answered_surveys_are_not_announced(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    await complete_a_session(client, tokens, clock)  # ends 17:30 UTC (12:30 New York)
    assigned = await alex_assignments(app)
    sender = RecordingSender()
    # Back up at 03:00 New York the next day: the pain NRS (due 12:30) waits until 08:00.
    clock.set(datetime(2026, 11, 27, 8, 0, tzinfo=UTC))
    with use_database(app.state.database):
        await run_jobs(clock, sender)
        pain = await survey_records.SurveyAssignment.get(id=assigned["PAIN-NRS"].id)
        assert pain.status is survey_records.AssignmentStatus.AVAILABLE
        assert [n.kind for n in sender.sent] == []
        queued = await Notification.get(dedup_key=f"survey-available:{pain.id}")
        assert queued.not_before == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
    # Alex answers at 07:00 local, before the held notification would have gone out.
    clock.set(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    from strawberry import relay

    answer = {"assignmentId": str(relay.GlobalID("SurveyAssignment", str(pain.id))), "answers": as_input(answers(3))}
    await gql(client, SUBMIT, {"input": answer}, token=tokens.fresh("alex@demo.test"))
    clock.set(datetime(2026, 11, 27, 13, 30, tzinfo=UTC))
    with use_database(app.state.database):
        await run_jobs(clock, sender)
    assert f"survey/{pain.id}" not in [n.link for n in sender.sent]


async def test_a_hold_then_resume_brings_the_weekly_surveys_back(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, app: Starlette
) -> None:
    with use_database(app.state.database):
        await survey_jobs.schedule_recurring_surveys(job_env(clock))
    plan = (await gql(client, "{ me { patient { treatmentPlan { id } } } }", token=tokens.user("blair@demo.test")))[
        "data"
    ]["me"]["patient"]["treatmentPlan"]["id"]
    rivera = tokens.user("dr.rivera@demo.test")
    for mutation in ("holdTreatmentPlan", "resumeTreatmentPlan"):
        query = (
            f'mutation($p: ID!) {{ {mutation}(input: {{planId: $p, reason: "review"}}) {{ result {{ __typename }} }} }}'
        )
        await gql(client, query, {"p": plan}, token=rivera)
    with use_database(app.state.database):
        await survey_jobs.schedule_recurring_surveys(job_env(clock))
        statuses = await survey_records.SurveyAssignment.filter(
            patient__user__email="blair@demo.test", recurrence_key__isnull=False
        ).values_list("status", flat=True)
    assert statuses
    assert set(statuses) == {survey_records.AssignmentStatus.SCHEDULED}


async def test_the_jobs_open_remind_and_expire_at_local_times_across_a_dst_change(app: Starlette) -> None:
    with use_database(app.state.database):
        patient = await Patient.get(user__email="alex@demo.test").prefetch_related("user")
        # A session ended at 16:00 EDT on Saturday 31 October 2026; clocks fall back on Sunday.
        ended = datetime(2026, 10, 31, 20, 0, tzinfo=UTC)
        await assignments.schedule_follow_up(
            patient,
            uuid.uuid4(),
            ended,
            DEFAULT_SURVEY_SCHEDULE,
            back_to_baseline=True,
            now=ended,
            policy=DEFAULT_POLICY,
        )
        peg = (
            await survey_records.SurveyAssignment.filter(patient=patient, instrument="PEG-3")
            .order_by("-created_at")
            .first()
        )
        assert peg is not None
        clock = ManualClock(datetime(2026, 11, 3, 20, 59, tzinfo=UTC))  # 15:59 EST
        sender = RecordingSender()
        await run_jobs(clock, sender)
        assert (
            await survey_records.SurveyAssignment.get(id=peg.id)
        ).status is survey_records.AssignmentStatus.SCHEDULED
        clock.set(datetime(2026, 11, 3, 21, 0, tzinfo=UTC))  # 16:00 EST: three local days later
        await run_jobs(clock, sender)
        assert (
            await survey_records.SurveyAssignment.get(id=peg.id)
        ).status is survey_records.AssignmentStatus.AVAILABLE
        # 48 h window: reminders at 16:00 EST on 4 November (half) and 14:00 EST on 5 November.
        clock.set(datetime(2026, 11, 4, 21, 0, tzinfo=UTC))
        await run_jobs(clock, sender)
        clock.set(datetime(2026, 11, 5, 19, 0, tzinfo=UTC))
        await run_jobs(clock, sender)
        clock.set(datetime(2026, 11, 5, 21, 0, tzinfo=UTC))
        await run_jobs(clock, sender)
        assert (await survey_records.SurveyAssignment.get(id=peg.id)).status is survey_records.AssignmentStatus.EXPIRED
    kinds = [n.kind for n in sender.sent if n.link == f"survey/{peg.id}"]
    assert kinds == ["SURVEY_AVAILABLE", "SURVEY_REMINDER", "SURVEY_REMINDER"]


RESPONSE_FIELDS = """id instrument instrumentVersion totalScore severity submittedAt recordedAt assignmentId
    answers { linkId value } timing intendedAssignmentId"""


@pytest.mark.parametrize(
    ("instrument", "given"),
    [("PEG-3", answers(7, 4, 5)), ("PHQ-9", answers(1, 2, 0, 3, 1, 0, 2, 1, 0)), ("PAIN-NRS", answers(6))],
)
async def test_a_submitted_response_answers_with_what_a_later_read_of_it_returns(
    client: httpx.AsyncClient,
    tokens: Tokens,
    app: Starlette,
    clock: ManualClock,
    instrument: str,
    given: dict[str, int],
) -> None:
    """The write answers with the record it made, without reading it again: the same JSON as the
    stored record read afterwards (a fractional PEG-3 mean included), its read audited once."""
    token = tokens.user("alex@demo.test")
    recorded = (clock.now() - timedelta(minutes=5)).isoformat()
    body = await gql(
        client,
        f"mutation Submit($input: SubmitSurveyResponseInput!) {{ submitSurveyResponse(input: $input) {{"
        f" result {{ __typename ... on SurveyResponse {{ {RESPONSE_FIELDS} }} ... on Error {{ message }} }} }} }}",
        {"input": {"instrument": instrument, "answers": as_input(given), "recordedAt": recorded}},
        token=token,
    )
    answered = body["data"]["submitSurveyResponse"]["result"]
    assert answered["__typename"] == "SurveyResponse", answered
    read = await gql(
        client,
        f"{{ me {{ patient {{ surveyResponses(first: 1) {{ edges {{ node {{ {RESPONSE_FIELDS} }} }} }} }} }} }}",
        token=token,
    )
    (stored,) = read["data"]["me"]["patient"]["surveyResponses"]["edges"]
    assert stored["node"] == {key: value for key, value in answered.items() if key != "__typename"}
    response_id = str(relay.GlobalID.from_id(answered["id"]).node_id)
    with use_database(app.state.database):
        created = await AuditEvent.filter(resource_type="SurveyResponse", action="C", resource_id=response_id)
        assert len(created) == 1
        first_request = created[0].request_id
        reads = await AuditEvent.filter(resource_type="SurveyResponse", action="R", request_id=first_request)
    assert len(reads) == 1  # the answer's read, written with the creation
