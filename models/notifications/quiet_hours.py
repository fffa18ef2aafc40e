"""Quiet hours (CLINICAL.md §6): by default 22:00-08:00 on the patient's clock, when nothing but a
safety check is pushed to them. The hours are the clinic's (`ClinicPolicy.quiet_hours`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class QuietHours:
    start: time = time(22, 0)
    end: time = time(8, 0)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def in_quiet_hours(moment: datetime, time_zone: str, quiet: QuietHours) -> bool:
    """CLINICAL.md §6: whether `moment` falls in the quiet hours on the patient's clock (in their
    IANA zone, so DST-correct); the start is inside them, the end is not."""
    local = moment.astimezone(ZoneInfo(time_zone)).time()
    if quiet.start <= quiet.end:  # quiet hours inside one day, e.g. 13:00-15:00
        return quiet.start <= local < quiet.end
    return local >= quiet.start or local < quiet.end


def after_quiet_hours(moment: datetime, time_zone: str, quiet: QuietHours) -> datetime:
    """`moment`, or the end of the quiet hours it falls in (08:00 local by default), CLINICAL.md §6."""
    if not in_quiet_hours(moment, time_zone, quiet):
        return moment
    zone = ZoneInfo(time_zone)
    local = moment.astimezone(zone)
    day = local.date() if local.time() < quiet.end else local.date() + timedelta(days=1)
    return datetime.combine(day, quiet.end, tzinfo=zone).astimezone(moment.tzinfo)
