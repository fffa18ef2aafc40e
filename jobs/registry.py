"""The periodic jobs, each with its cadence. An area's jobs are added here when the area lands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from models.clock import Clock


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    every_seconds: int
    run: Callable[[Clock], Awaitable[object]]


PERIODIC_JOBS: tuple[PeriodicJob, ...] = ()
