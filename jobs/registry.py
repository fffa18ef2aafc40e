"""The periodic jobs, each with its cadence. An area's jobs are added here when the area lands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from jobs import clinical, mail, sessions, surveys
from jobs.environment import JobEnvironment


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    every_seconds: int
    run: Callable[[JobEnvironment], Awaitable[object]]


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("close_abandoned_sessions", 60, clinical.close_abandoned_sessions),
    PeriodicJob("escalate_overdue_alerts", 30, clinical.escalate_overdue_alerts),
    PeriodicJob("open_due_surveys", 30, surveys.open_due_surveys),
    PeriodicJob("send_survey_reminders", 60, surveys.send_survey_reminders),
    PeriodicJob("expire_overdue_surveys", 60, surveys.expire_overdue_surveys),
    PeriodicJob("schedule_recurring_surveys", 3600, surveys.schedule_recurring_surveys),
    PeriodicJob("remind_daily_check_ins", 300, surveys.remind_daily_check_ins),
    PeriodicJob("deliver_notifications", 15, surveys.deliver_notifications),
    PeriodicJob("end_expired_login_devices", 300, sessions.end_expired_login_devices),
    PeriodicJob("send_password_resets", 10, mail.send_password_resets),
    PeriodicJob("deliver_mail", 15, mail.deliver_mail),
)
