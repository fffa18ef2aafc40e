"""The periodic jobs, each with its cadence. An area's jobs are added here when the area lands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from jobs import clinical
from models.clock import Clock
from models.policy import ClinicPolicy


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    every_seconds: int
    run: Callable[[Clock, ClinicPolicy], Awaitable[object]]


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("close_abandoned_sessions", 60, clinical.close_abandoned_sessions),
    PeriodicJob("escalate_overdue_alerts", 30, clinical.escalate_overdue_alerts),
)
