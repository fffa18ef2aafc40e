"""Benchmark: service start-up and one claim pass of the survey jobs with 100,000 scheduled rows.

Run with `make bench` (SQLite in a temporary file; `BENCH_DATABASE_URL=postgres://…/db` for an
existing, empty PostgreSQL database). Prints median and p95 over repeated passes. Figures, not
assertions: this machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from api.app import create_app
from api.commands.service import seed_database
from api.database import migrate, open_database, use_database
from api.settings import Environment, Settings
from models.identity.accounts import Patient
from models.kernel.clock import ManualClock
from models.kernel.policy import DEFAULT_POLICY
from models.notifications.notifications import Notification
from models.surveys.delivery import expire_overdue_surveys, open_due_surveys, send_reminders
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment

ROWS = int(os.environ.get("BENCH_ROWS", "100000"))
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


async def fill(settings: Settings) -> None:
    async with open_database(settings):
        await migrate()
        await seed_database(settings, now=NOW - timedelta(hours=1))
        patients = await Patient.all()
        batch: list[SurveyAssignment] = []
        for index in range(ROWS):
            # Spread over the coming 30 days; a sliver (about 1,000 rows) is due now.
            available = NOW + timedelta(minutes=(index * 43_200 // ROWS) - 450)
            batch.append(
                SurveyAssignment(
                    id=uuid.uuid4(),
                    patient=patients[index % len(patients)],
                    instrument="PAIN-NRS",
                    status=AssignmentStatus.SCHEDULED,
                    available_at=available,
                    expires_at=available + timedelta(hours=24),
                    notify_at=available,
                    reminder_times=[],
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
            if len(batch) == 5000:
                await SurveyAssignment.bulk_create(batch)
                batch = []
        if batch:
            await SurveyAssignment.bulk_create(batch)


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms   (n={len(ordered)})"


async def measure(settings: Settings) -> None:
    clock = ManualClock(NOW)
    startups = []
    for _ in range(5):
        started = time.perf_counter()
        app = create_app(settings, clock=clock)
        async with app.router.lifespan_context(app):
            startups.append(time.perf_counter() - started)
    print(f"start-up (lifespan: open, migration check, scheduler) {summary(startups)}")

    async with open_database(settings) as database, asyncio.timeout(600):
        with use_database(database):
            total = await SurveyAssignment.all().count()
            print(f"rows in survey_assignment: {total:,}")
            claims, counts = [], []
            for _ in range(6):
                started = time.perf_counter()
                opened = await open_due_surveys(now=clock.now(), policy=DEFAULT_POLICY)
                claims.append(time.perf_counter() - started)
                counts.append(opened)
                clock.advance(timedelta(minutes=1))
            print(f"open_due_surveys pass (claims up to 500 due rows)   {summary(claims)}")
            print(
                "  per pass: "
                + ", ".join(f"{n} opened in {s * 1000:.0f} ms" for n, s in zip(counts, claims, strict=True))
            )
            quiet = []
            for _ in range(10):
                started = time.perf_counter()
                await send_reminders(now=clock.now(), policy=DEFAULT_POLICY)
                await expire_overdue_surveys(now=clock.now(), policy=DEFAULT_POLICY)
                quiet.append(time.perf_counter() - started)
            print(f"reminder + expiry passes with nothing due         {summary(quiet)}")
            print(f"notifications queued: {await Notification.all().count():,}")


async def main() -> None:
    url = os.environ.get("BENCH_DATABASE_URL")
    with tempfile.TemporaryDirectory() as folder:
        database_url = url or f"sqlite://{Path(folder) / 'bench.sqlite3'}"
        settings = Settings(env=Environment.TEST, database_url=database_url)
        print(f"ketafollow scheduler benchmark: {ROWS:,} scheduled survey rows on {database_url.split(':')[0]}")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        started = time.perf_counter()
        await fill(settings)
        print(f"filled in {time.perf_counter() - started:.1f} s")
        await measure(settings)


if __name__ == "__main__":
    asyncio.run(main())
