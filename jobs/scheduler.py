"""Builds the APScheduler that runs the periodic jobs, in the app's lifespan or `ketafollow worker`.

The jobs claim due rows in the database (ARCHITECTURE.md decision 1), so the scheduler keeps no
state of its own: no job store, nothing pickled, and several replicas may run it at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from jobs.environment import JobEnvironment
from jobs.registry import PERIODIC_JOBS

# A job that was due while the process was down or busy runs as soon as it can (no misfire
# window), once (coalesced), and never overlaps itself.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


def build_scheduler(env: JobEnvironment, *, first_run_at: datetime | None = None) -> AsyncIOScheduler:
    """A scheduler with every periodic job registered; the caller starts and stops it.

    Jobs read `now` from `env.clock`, so tests drive them with a manual clock. The scheduler must
    be started where the database is the current one: its jobs run in tasks that inherit it.

    Without `first_run_at` a job first runs one interval after start. A serving process passes the
    time it starts, so work that fell due while it was down (a survey, a notification, an overdue
    alert) is done at start-up rather than up to an hour later (ARCHITECTURE.md decision 1).
    """
    scheduler = AsyncIOScheduler(timezone=UTC, job_defaults=JOB_DEFAULTS)
    # APScheduler reads `next_run_time=None` as "paused", so the option is left out, not set to None.
    first: dict[str, Any] = {} if first_run_at is None else {"next_run_time": first_run_at}
    for job in PERIODIC_JOBS:
        scheduler.add_job(job.run, "interval", seconds=job.every_seconds, args=[env], id=job.name, **first)
    return scheduler
