"""Benchmark: the provider panel query at 500 patients, each with 30 days of history.

`make bench` runs it on SQLite (a temporary file) and, when 127.0.0.1:5432 answers, on
PostgreSQL (a new database on the server of `BENCH_POSTGRES_URL`, dropped afterwards;
`BENCH_PANEL_DATABASE_URL=postgres://…/db` names an existing, empty database instead), each in a
process of its own. Prints median and p95 latency of the whole HTTP request and the SQL
statements per request, and at the end the target of issue #18 (PostgreSQL, a page of the first
50 patients: p95 ≤ 60 ms) beside each run's figure. Figures, not assertions: this machine is
shared and noisy.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx

from api.app import create_app
from api.auth.tokens import issue_access_token
from api.commands.service import seed_database
from api.database import migrate, open_database, use_database
from api.settings import BucketPolicy, Environment, Settings
from bench.bench_scheduler import NOW, summary
from bench.harness import measure_on_both, percentile
from models.identity.accounts import User
from models.kernel.clock import ManualClock
from tests.conftest import start_logins
from tests.support.panel_data import PANEL, add_panel_patients, counting_statements

PATIENTS = int(os.environ.get("BENCH_PANEL_PATIENTS", "500"))
HISTORY_DAYS = 30
RUNS = int(os.environ.get("BENCH_PANEL_RUNS", "30"))
PORTAL_PAGE = 50
TARGET_P95_MS = 60  # issue #18: PostgreSQL, the first 50 patients


async def fill(settings: Settings) -> None:
    async with open_database(settings):
        await migrate()
        await seed_database(settings, now=NOW - timedelta(hours=1))
        await add_panel_patients(PATIENTS - 2, "bench", now=NOW, history_days=HISTORY_DAYS)  # + Alex and Blair


async def measure(settings: Settings) -> dict[int, dict[str, float]]:
    clock = ManualClock(NOW)
    # The whole panel on one page: its cost (6 objects a patient) may pass the default limit. The
    # clock stands still, so the provider's rate-limit bucket would never refill.
    unlimited = BucketPolicy(burst=1_000_000, per_minute=1_000_000)
    wide = replace(
        settings,
        max_page_size=max(PATIENTS, 50),
        max_query_cost=max(settings.max_query_cost, 10 * PATIENTS),
        user_rate=unlimited,
    )
    app = create_app(wide, clock=clock)
    async with app.router.lifespan_context(app):
        with use_database(app.state.database):
            provider = await User.get(email="dr.rivera@demo.test")
            logins = await start_logins({provider.email: provider.id}, clock.now())
        token = issue_access_token(
            settings, subject_kind="user", subject_id=provider.id, now=clock.now(), session_id=logins[provider.email]
        )
        headers = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            return {page: await measure_page(http, headers, page) for page in sorted({PORTAL_PAGE, PATIENTS})}


async def measure_page(http: httpx.AsyncClient, headers: dict[str, str], page: int) -> dict[str, float]:
    payload = {"query": PANEL, "variables": {"first": page}}
    latencies, statements = [], set()
    for _ in range(RUNS + 2):  # the first two warm up
        with counting_statements() as counter:
            started = time.perf_counter()
            response = await http.post("/graphql", json=payload, headers=headers)
            latencies.append(time.perf_counter() - started)
        body = response.json()
        if response.status_code != 200 or "errors" in body:
            raise SystemExit(f"panel query failed: {response.status_code} {body}")
        statements.add(counter.count)
    shown = len(body["data"]["patients"]["edges"])
    print(f"panel query, first {shown:>3} of {PATIENTS} patients (HTTP, in process) {summary(latencies[2:])}")
    print(f"  SQL statements per request: {', '.join(str(n) for n in sorted(statements))}")
    print(f"  response size: {len(response.content) / 1024:.0f} KiB")
    measured = latencies[2:]
    return {"median_ms": statistics.median(measured) * 1000, "p95_ms": percentile(measured, 0.95) * 1000}


async def measure_here(label: str, database_url: str, out: str) -> None:
    """One database's run (in a process of its own): fill, measure, figures to `out`."""
    settings = Settings(env=Environment.TEST, database_url=database_url)
    print(f"\n{label}:")
    started = time.perf_counter()
    await fill(settings)
    print(f"filled in {time.perf_counter() - started:.1f} s")
    figures = await asyncio.wait_for(measure(settings), timeout=600)
    Path(out).write_text(json.dumps(figures))  # noqa: ASYNC240 (once, after the measurement)


async def main() -> None:
    print(f"ketafollow panel benchmark: {PATIENTS} patients, {HISTORY_DAYS} days of check-ins and doses each")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    runs = await measure_on_both("bench.bench_panel", "bench-panel.sqlite3", "BENCH_PANEL_DATABASE_URL")
    print("\ntargets (issue #18), today's figures:")
    for database, figures in runs.items():
        now = figures[str(PORTAL_PAGE)]  # JSON keys are strings
        which = "" if database == "PostgreSQL" else " (the target is PostgreSQL's; for comparison)"
        print(
            f"  {database}: panel, first {PORTAL_PAGE} patients, p95 ≤ {TARGET_P95_MS} ms: "
            f"now {now['p95_ms']:.0f} ms (median {now['median_ms']:.0f} ms){which}"
        )
    if "PostgreSQL" not in runs:
        print("  PostgreSQL: not measured (127.0.0.1:5432 did not answer)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:
        asyncio.run(measure_here(*sys.argv[2:5]))
    else:
        asyncio.run(main())
