"""When surveys open, close and remind (CLINICAL.md §6), as pure functions of times, offsets and
the patient's time zone: the follow-up schedule after each session, the weekly surveys' openings,
the reminders and quiet hours. `models.surveys.assignments` and `models.surveys.delivery` write
what these compute.

Times are computed in the patient's time zone (DST-correct) and stored in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from models.care.plan_records import ScheduledSurvey
from models.notifications.quiet_hours import QuietHours, after_quiet_hours

POST_SESSION = "POST-SESSION"
# The default plan's post-session window (CLINICAL.md §6), for a plan that does not schedule one.
DEFAULT_POST_SESSION_WINDOW_MINUTES = 6 * 60
# CLINICAL.md §6: reminders at half the window and 2 h before expiry.
LAST_REMINDER_BEFORE_EXPIRY = timedelta(hours=2)


def reminder_times(available_at: datetime, expires_at: datetime, time_zone: str, quiet: QuietHours) -> list[datetime]:
    """At most two reminders, at half the window and 2 h before expiry, never in quiet hours
    (moved to their end, dropped if that is past expiry) (CLINICAL.md §6)."""
    wanted = [available_at + (expires_at - available_at) / 2, expires_at - LAST_REMINDER_BEFORE_EXPIRY]
    times: list[datetime] = []
    for moment in wanted:
        shifted = after_quiet_hours(moment, time_zone, quiet)
        if available_at < shifted < expires_at and shifted not in times:
            times.append(shifted)
    return sorted(times)


def after_offset(moment: datetime, minutes: int, time_zone: str) -> datetime:
    """CLINICAL.md §6: `moment` plus an offset: whole days on the patient's wall clock (a survey "7 days later"
    opens at the same local time across a DST change), anything shorter in elapsed time."""
    if minutes % (24 * 60):
        return moment + timedelta(minutes=minutes)
    zone = ZoneInfo(time_zone)
    local = moment.astimezone(zone).replace(tzinfo=None) + timedelta(minutes=minutes)
    return local.replace(tzinfo=zone).astimezone(moment.tzinfo)


@dataclass(frozen=True)
class PlannedAssignment:
    instrument: str
    available_at: datetime
    expires_at: datetime
    notify_at: datetime
    reminders: tuple[datetime, ...]


def follow_up_schedule(
    ended_at: datetime, schedule: tuple[ScheduledSurvey, ...], *, back_to_baseline: bool, time_zone: str,
    quiet: QuietHours,
) -> list[PlannedAssignment]:  # fmt: skip
    """The surveys a completed session calls for (CLINICAL.md §6): each at its offset after the
    session's end, open for its window. The post-session check is due at once when the patient
    was not back to baseline, and it is a safety check: its notification ignores quiet hours."""
    planned = []
    for item in schedule:
        due_at_once = item.instrument == POST_SESSION and not back_to_baseline
        available_at = ended_at if due_at_once else after_offset(ended_at, item.offset_minutes, time_zone)
        expires_at = after_offset(available_at, item.window_minutes, time_zone)
        notify_at = notify_from(item.instrument, available_at, time_zone, quiet)
        planned.append(
            PlannedAssignment(
                item.instrument,
                available_at,
                expires_at,
                min(notify_at, expires_at),
                tuple(reminder_times(available_at, expires_at, time_zone, quiet)),
            )
        )
    return planned


def breaks_quiet_hours(instrument: str) -> bool:
    """CLINICAL.md §6: the post-session check is a safety check: quiet hours do not hold its
    notification (its reminders still keep to them). Every other survey's wait until they end."""
    return instrument == POST_SESSION


def notify_from(instrument: str, moment: datetime, time_zone: str, quiet: QuietHours) -> datetime:
    """When a survey's notification may go out: never in quiet hours, unless it
    `breaks_quiet_hours` (CLINICAL.md §6)."""
    return moment if breaks_quiet_hours(instrument) else after_quiet_hours(moment, time_zone, quiet)


# CLINICAL.md §6: weekly PHQ-9, GAD-7 and safety survey while the plan is ACTIVE (opening on the
# plan's weekday at 10:00 local, open 72 h), and a daily check-in reminder at 19:00 local.
WEEKLY_SURVEYS = ("PHQ-9", "GAD-7", "WEEKLY-SAFETY")
WEEKLY_OPENS_AT = time(10, 0)
WEEKLY_WINDOW = timedelta(hours=72)
SKIP_WEEKLY_IF_SESSION_SURVEY_WITHIN = timedelta(days=3)
# The weekly surveys a session's own follow-up stands in for (the weekly safety survey has none).
SESSION_STANDS_IN_FOR = frozenset({"PHQ-9", "GAD-7"})
DAILY_REMINDER_AT = time(19, 0)


def next_weekly_opening(plan_start: datetime, now: datetime, time_zone: str) -> datetime:
    """CLINICAL.md §6: the next weekly opening at or after `now`: the plan's weekday, 10:00 on the patient's clock."""
    zone = ZoneInfo(time_zone)
    anchor = plan_start.astimezone(zone).date()
    today = now.astimezone(zone).date()
    days_ahead = (anchor.weekday() - today.weekday()) % 7
    opening = datetime.combine(today + timedelta(days=days_ahead), WEEKLY_OPENS_AT, tzinfo=zone)
    if opening < now:
        opening = datetime.combine(opening.date() + timedelta(days=7), WEEKLY_OPENS_AT, tzinfo=zone)
    return opening.astimezone(now.tzinfo)


def weekly_overlap(instrument: str, opens_at: datetime) -> tuple[datetime, datetime] | None:
    """CLINICAL.md §6: a weekly PHQ-9 or GAD-7 is skipped when a session's own one is due within
    3 days of it (`SKIP_WEEKLY_IF_SESSION_SURVEY_WITHIN`). For a survey of `instrument` opening at
    `opens_at` (a weekly one or a session's), the span in which the other kind opening is one too
    many; None when the rule does not apply to `instrument`."""
    if instrument not in SESSION_STANDS_IN_FOR:
        return None
    return opens_at - SKIP_WEEKLY_IF_SESSION_SURVEY_WITHIN, opens_at + SKIP_WEEKLY_IF_SESSION_SURVEY_WITHIN
