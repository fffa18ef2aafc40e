"""Benchmark: an EHR client paging through 100,000 changes of the feed.

`make bench` runs it on SQLite (a temporary file) and, when 127.0.0.1:5432 answers, on
PostgreSQL (a new database on the server of `BENCH_POSTGRES_URL`, dropped afterwards;
`BENCH_CHANGES_DATABASE_URL=postgres://…/db` names an existing, empty database instead), each in
a process of its own. The demo clinic is loaded, then each consented demo patient gets check-ins
(each with its event, as `submitCheckIn` writes them) until the feed holds BENCH_CHANGES changes.
Prints changes per second and the latency of a page, for the default page size and the largest
one, and at the end the target of issue #18 (PostgreSQL, pages of 100: ≥ 5,000 changes/s) beside
each run's figure. Figures, not assertions: this machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
from tortoise.connection import get_connection
from tortoise.transactions import in_transaction

from api.app import create_app
from api.auth.tokens import issue_access_token
from api.commands.service import seed_database
from api.database import migrate, open_database, use_database
from api.settings import BucketPolicy, Environment, Settings
from bench.bench_scheduler import NOW, summary
from bench.harness import measure_on_both, percentile
from models.identity.accounts import ApiClient, DataSharingConsent, client_credential
from models.kernel.clock import ManualClock
from models.kernel.events import DomainEvent, Operation
from models.reports.checkins import CheckIn

CHANGES = int(os.environ.get("BENCH_CHANGES", "100000"))
BATCH = 5_000
PAGES = (100, 1000)
TARGET_PER_SECOND = 5_000  # issue #18: PostgreSQL, pages of 100
QUERY = """
query($after: String, $first: Int) {
  changes(after: $after, first: $first) {
    edges { node { sequence resourceType resourceId action version resource } }
    pageInfo { endCursor hasNextPage }
  }
}
"""


async def fill(settings: Settings) -> int:
    """The demo clinic plus check-ins of the consented patients: returns the feed's length."""
    async with open_database(settings):
        await migrate()
        await seed_database(settings, now=NOW - timedelta(days=400))
        client = await ApiClient.get(client_id="demo-ehr")
        patients = [c.patient_id for c in await DataSharingConsent.filter(api_client=client, revoked_at=None)]  # type: ignore[attr-defined]
        existing = await DomainEvent.filter(patient_id__in=patients).count()
        wanted = max(CHANGES - existing, 0)
        start = NOW - timedelta(days=365)
        for first in range(0, wanted, BATCH):
            rows, events = [], []
            for number in range(first, min(first + BATCH, wanted)):
                at = start + timedelta(minutes=5 * number)
                row = CheckIn(
                    id=uuid.uuid4(), patient_id=patients[number % len(patients)], recorded_at=at,
                    received_at=at, pain=number % 11, mood=5, sleep=6,
                )  # fmt: skip
                rows.append(row)
                events.append(
                    DomainEvent(
                        type="CheckIn.created",
                        resource_type="CheckIn",
                        resource_id=row.id,
                        patient_id=row.patient_id,
                        operation=Operation.CREATED,
                        version=1,
                        occurred_at=at,
                        payload={},
                    )
                )
            async with in_transaction():
                await CheckIn.bulk_create(rows)
                await DomainEvent.bulk_create(events)
        connection = get_connection("default")
        if connection.capabilities.dialect == "postgres":
            await connection.execute_script("ANALYZE")  # what autovacuum does after a bulk load
        return existing + wanted


async def measure(settings: Settings) -> dict[int, dict[str, float]]:
    clock = ManualClock(NOW)
    unlimited = BucketPolicy(burst=1_000_000, per_minute=1_000_000)
    app = create_app(replace(settings, max_page_size=1000, client_rate=unlimited), clock=clock)
    async with app.router.lifespan_context(app):
        with use_database(app.state.database):
            client = await ApiClient.get(client_id="demo-ehr")
        scopes = frozenset({"patients:read", "clinical:read", "changes:read"})
        token = issue_access_token(
            settings, subject_kind="client", subject_id=client.id, now=clock.now(), scopes=scopes,
            credential=client_credential(client.secret_hash),
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as http:
            return {page: await page_through(http, headers, page) for page in PAGES}


async def page_through(http: httpx.AsyncClient, headers: dict[str, str], page: int) -> dict[str, float]:
    """Pages of `page` from the start to the end: changes per second and a page's latency."""
    after, received, latencies = None, 0, []
    seen: dict[tuple[str, str], int] = {}
    started = time.perf_counter()
    while True:
        began = time.perf_counter()
        response = await http.post(
            "/graphql", json={"query": QUERY, "variables": {"after": after, "first": page}}, headers=headers
        )
        latencies.append(time.perf_counter() - began)
        body = response.json()
        if response.status_code != 200 or "errors" in body:
            raise SystemExit(f"changes query failed: {response.status_code} {body}")
        edges = body["data"]["changes"]["edges"]
        received += len(edges)
        for edge in edges:
            key = (edge["node"]["resourceType"], edge["node"]["resourceId"])
            seen[key] = seen.get(key, 0) + 1
        after = body["data"]["changes"]["pageInfo"]["endCursor"]
        if not body["data"]["changes"]["pageInfo"]["hasNextPage"]:
            break
    elapsed = time.perf_counter() - started
    again = {key: count for key, count in seen.items() if count > 1}
    if again:  # only a record written while paging (the app's own jobs run) may come again
        print(f"  came again (changed while paging): {again}")
    print(
        f"changes feed, pages of {page:>4}: {received} changes in {elapsed:.1f} s = {received / elapsed:,.0f} changes/s"
    )
    print(f"  one page {summary(latencies)}")
    return {
        "per_second": received / elapsed,
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
    }


async def measure_here(label: str, database_url: str, out: str) -> None:
    """One database's run (in a process of its own): fill, page through, figures to `out`."""
    settings = Settings(env=Environment.TEST, database_url=database_url)
    print(f"\n{label}:")
    started = time.perf_counter()
    total = await fill(settings)
    print(f"filled in {time.perf_counter() - started:.1f} s ({total} changes of the consented patients)")
    figures = await asyncio.wait_for(measure(settings), timeout=900)
    Path(out).write_text(json.dumps(figures))  # noqa: ASYNC240 (once, after the measurement)


async def main() -> None:
    print(f"ketafollow change-feed benchmark: {CHANGES} changes for the demo EHR client, SQLite and PostgreSQL")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    runs = await measure_on_both("bench.bench_changes", "bench-changes.sqlite3", "BENCH_CHANGES_DATABASE_URL")
    print("\ntargets (issue #18), today's figures:")
    for database, figures in runs.items():
        now = figures[str(PAGES[0])]  # JSON keys are strings
        which = "" if database == "PostgreSQL" else " (the target is PostgreSQL's; for comparison)"
        print(
            f"  {database}: change feed ≥ {TARGET_PER_SECOND:,} changes/s, pages of {PAGES[0]}: "
            f"now {now['per_second']:,.0f} changes/s (a page p95 {now['p95_ms']:.0f} ms){which}"
        )
    if "PostgreSQL" not in runs:
        print("  PostgreSQL: not measured (127.0.0.1:5432 did not answer)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:
        asyncio.run(measure_here(*sys.argv[2:5]))
    else:
        asyncio.run(main())
