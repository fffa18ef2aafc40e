"""Survey jobs: open what is due, remind, expire, and deliver the notification outbox."""

from __future__ import annotations

from jobs.environment import JobEnvironment
from models.notifications import notifications
from models.surveys import delivery


async def open_due_surveys(env: JobEnvironment) -> int:
    """Surveys whose time has come become available and their patient is notified (§6)."""
    return await delivery.open_due_surveys(now=env.clock.now(), policy=env.policy)


async def send_survey_reminders(env: JobEnvironment) -> int:
    """At most two reminders per survey, never in quiet hours (§6)."""
    return await delivery.send_reminders(now=env.clock.now(), policy=env.policy)


async def expire_overdue_surveys(env: JobEnvironment) -> int:
    """Unanswered surveys expire; an expired post-session check alerts the care team (§6)."""
    return await delivery.expire_overdue_surveys(now=env.clock.now(), policy=env.policy)


async def schedule_recurring_surveys(env: JobEnvironment) -> int:
    """Next week's PHQ-9, GAD-7 and safety survey for every active plan (§6)."""
    return await delivery.schedule_recurring_surveys(now=env.clock.now(), policy=env.policy)


async def remind_daily_check_ins(env: JobEnvironment) -> int:
    """The 19:00 local check-in reminder, for patients who have not checked in today (§6)."""
    return await delivery.remind_daily_check_ins(now=env.clock.now(), policy=env.policy)


async def deliver_notifications(env: JobEnvironment) -> int:
    """Send due notifications through the configured sender, with retries."""
    return await notifications.deliver_due(env.sender, now=env.clock.now(), policy=env.policy)
