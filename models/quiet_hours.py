"""Quiet hours (CLINICAL.md §6): 22:00-08:00 on the patient's clock, when nothing but a safety
check is pushed to them."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

QUIET_START, QUIET_END = time(22, 0), time(8, 0)


def in_quiet_hours(moment: datetime, time_zone: str) -> bool:
    local = moment.astimezone(ZoneInfo(time_zone)).time()
    return local >= QUIET_START or local < QUIET_END


def after_quiet_hours(moment: datetime, time_zone: str) -> datetime:
    """`moment`, or the end of the quiet hours it falls in (08:00 local), CLINICAL.md §6."""
    if not in_quiet_hours(moment, time_zone):
        return moment
    zone = ZoneInfo(time_zone)
    local = moment.astimezone(zone)
    day = local.date() if local.time() < QUIET_END else local.date() + timedelta(days=1)
    return datetime.combine(day, QUIET_END, tzinfo=zone).astimezone(moment.tzinfo)
