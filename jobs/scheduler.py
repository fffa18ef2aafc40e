"""Builds the APScheduler that runs the periodic jobs, in the app's lifespan or `ketafollow worker`.

The jobs claim due rows in the database (ARCHITECTURE.md decision 1), so the scheduler keeps no
state of its own: no job store, nothing pickled, and several replicas may run it at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from jobs.environment import JobEnvironment
from jobs.registry import PERIODIC_JOBS

logger = logging.getLogger("ketafollow.jobs")

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
    scheduler = JobScheduler(timezone=UTC, job_defaults=JOB_DEFAULTS)
    # APScheduler reads `next_run_time=None` as "paused", so the option is left out, not set to None.
    first: dict[str, Any] = {} if first_run_at is None else {"next_run_time": first_run_at}
    for job in PERIODIC_JOBS:
        run = scheduler.tracked(job.run)
        scheduler.add_job(run, "interval", seconds=job.every_seconds, args=[env], id=job.name, **first)
    return scheduler


# How long stopping waits for running jobs. A notification batch stops itself well before this
# (models.notifications.notifications), a claim is a few milliseconds.
FINISH_WITHIN = 20.0


class JobScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """An AsyncIOScheduler that lets running jobs finish when it stops.

    APScheduler's asyncio executor cancels the running jobs at `shutdown()`, whatever `wait`
    says. A job cancelled between two of its statements leaves its work half done: a notification
    handed to the push gateway but not yet marked sent stays leased, and is sent a second time
    once the lease runs out. `stop()` starts no new run, waits for the running ones, then shuts down.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.in_progress: set[asyncio.Task[Any]] = set()

    def tracked(
        self, run: Callable[[JobEnvironment], Awaitable[object]]
    ) -> Callable[[JobEnvironment], Awaitable[object]]:
        async def job(env: JobEnvironment) -> object:
            task = asyncio.current_task()
            assert task is not None
            self.in_progress.add(task)
            try:
                return await run(env)
            finally:
                self.in_progress.discard(task)

        return job

    async def stop(self, *, within: float = FINISH_WITHIN) -> None:
        self.pause()
        await asyncio.sleep(0)  # a run submitted just before the pause enters `in_progress`
        if self.in_progress:
            _, unfinished = await asyncio.wait(set(self.in_progress), timeout=within)
            if unfinished:
                logger.warning("%d job(s) still running after %.0f s are cancelled", len(unfinished), within)
        self.shutdown(wait=False)
