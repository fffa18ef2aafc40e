"""`make load`: the load test on SQLite (one worker), then PostgreSQL with one, two and four workers.

Each configuration gets a fresh database (migrated and seeded by `ketafollow migrate` and
`ketafollow seed`, plus patients to make 20), its own `ketafollow serve` processes, sign-ins
through `/auth/token`, LOAD_SECONDS (30) of traffic, and the checks of bench/load/checks.py.
Prints a table per configuration and, at the end, one for docs/benchmarks.md and the targets
of issue #18 beside this run's figures (server CPU per request and requests per core with one
worker; throughput per worker with two and four against one: the scale-out). Exits 1 when something
acknowledged was lost or reached the EHR client twice; latencies and error rates are figures,
never a failure (the machine is shared and noisy).

Environment: LOAD_SECONDS, LOAD_ONLY (e.g. `sqlite-1,postgres-2`), LOAD_PATIENTS (20, the four demo patients included),
LOAD_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres, a maintenance database: each
run creates and drops its own database there). Without PostgreSQL only SQLite runs; without
Redis on 127.0.0.1:6379 the two- and four-worker configurations are left out. Everything listens on loopback.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.load import checks
from bench.load.patients import PASSWORD
from bench.load.servers import (
    DEMO_PATIENTS,
    DEMO_PROVIDERS,
    Configuration,
    Server,
    extra_patient_emails,
    free_port,
    fresh_database,
    postgres_answers,
    prepare_database,
    redis_answers,
    server_environment,
)
from bench.load.traffic import (
    EHR_CLIENT,
    FeedCopy,
    Ledger,
    Patient,
    catch_up,
    ehr_loop,
    patient_loop,
    prepare_patient,
    provider_loop,
)
from bench.load.wire import Recorder, Session

SECONDS = float(os.environ.get("LOAD_SECONDS", "30"))
PATIENTS = int(os.environ.get("LOAD_PATIENTS", "20"))
PROVIDER_SESSIONS = 3  # Dr Rivera in two browser tabs, Dr Okafor in one
POSTGRES_URL = os.environ.get("LOAD_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
CATCH_UP_WITHIN = 30.0
LOGS = Path(__file__).resolve().parents[2] / "var" / "load"  # the servers' output of the last run
SIGN_INS_AT_ONCE = 4

SQLITE_1 = Configuration("sqlite-1", "sqlite", 1)
POSTGRES_1 = Configuration("postgres-1", "postgres", 1)
POSTGRES_2 = Configuration("postgres-2", "postgres", 2)
POSTGRES_4 = Configuration("postgres-4", "postgres", 4)
# Targets of issue #18 (a quiet 2-core machine, PostgreSQL, one worker).
TARGET_CPU_MS = 4.0
TARGET_PER_CORE = 250.0
TARGET_SCALE_OUT = 0.8  # throughput per worker with more workers, against one worker


@dataclass
class Result:
    configuration: Configuration
    label: str
    recorder: Recorder
    seconds: float
    server_cpu: float
    generator_cpu: float
    verdict: checks.Verdict
    setup: Recorder
    prepared_in: float
    server_log: list[str]  # the servers' ERROR lines and tracebacks


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def database_label(configuration: Configuration, database_url: str) -> str:
    if configuration.database == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    connection = await asyncpg.connect(database_url)
    try:
        version = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    return f"PostgreSQL {str(version).split()[0]}"


async def sign_in_everyone(patients: list[Patient], providers: list[tuple[str, Session]], ehr: Session) -> None:
    """Tokens from the real `/auth/token`: password grant for people, client credentials for the EHR."""
    gate = asyncio.Semaphore(SIGN_INS_AT_ONCE)

    async def one(session: Session, form: dict[str, str]) -> None:
        async with gate:
            await session.sign_in(form)

    forms = [(p.session, {"grant_type": "password", "username": p.email, "password": PASSWORD}) for p in patients]
    forms += [(s, {"grant_type": "password", "username": email, "password": PASSWORD}) for email, s in providers]
    forms.append(
        (ehr, {"grant_type": "client_credentials", "client_id": EHR_CLIENT, "client_secret": f"{EHR_CLIENT}-secret"})
    )
    await asyncio.gather(*(one(session, form) for session, form in forms))


async def run(configuration: Configuration, folder: Path) -> Result:
    everyone = {**DEMO_PATIENTS, **extra_patient_emails(max(PATIENTS - len(DEMO_PATIENTS), 0))}
    sharing = {email for email, in_ehr_team in everyone.items() if in_ehr_team}
    async with fresh_database(configuration, folder, POSTGRES_URL) as database_url:
        workers = f"{configuration.workers} worker" + ("s" if configuration.workers > 1 else "")
        label = f"{await database_label(configuration, database_url)}, {workers}"
        print(f"\n== {label}: preparing (migrate, seed, {len(everyone)} patients)", flush=True)
        preparing = time.monotonic()
        await prepare_database(database_url, folder, {e: s for e, s in everyone.items() if e not in DEMO_PATIENTS})
        before = await checks.stored_ids(database_url)
        environment = server_environment(database_url, configuration.workers, uuid.uuid4().hex[:10])
        servers = [Server(free_port(), LOGS / f"{configuration.name}-{n}.log") for n in range(configuration.workers)]
        setup = Recorder()
        ports = [server.port for server in servers]
        patients = [
            Patient(email, Session(ports, setup, n), shares) for n, (email, shares) in enumerate(everyone.items())
        ]
        providers = [(DEMO_PROVIDERS[n % 2], Session(ports, setup, n)) for n in range(PROVIDER_SESSIONS)]
        ehr = Session(ports, setup)
        sessions = [p.session for p in patients] + [s for _, s in providers] + [ehr]
        try:
            await asyncio.gather(*(server.start(environment, folder) for server in servers))
            await sign_in_everyone(patients, providers, ehr)
            await asyncio.gather(*(prepare_patient(patient) for patient in patients))
            prepared_in = time.monotonic() - preparing
            load, ledger, copy = Recorder(), Ledger(), FeedCopy()
            for session in sessions:
                session.recorder = load
            print(f"   load: {SECONDS:.0f} s on port(s) {', '.join(map(str, ports))}", flush=True)
            cpu_before, generator_before = [s.cpu_seconds() for s in servers], time.process_time()
            started = time.monotonic()
            deadline = started + SECONDS
            await asyncio.gather(
                *(patient_loop(patient, ledger, deadline, seed=n) for n, patient in enumerate(patients)),
                *(provider_loop(session, deadline, seed=n) for n, (_, session) in enumerate(providers)),
                ehr_loop(ehr, copy, deadline),
            )
            seconds = time.monotonic() - started
            server_cpu = sum(s.cpu_seconds() - b for s, b in zip(servers, cpu_before, strict=True))
            generator_cpu = time.process_time() - generator_before
            ehr.recorder = Recorder()
            await catch_up(ehr, copy, checks.expected_in_feed(ledger, sharing), CATCH_UP_WITHIN)
        finally:
            for session in sessions:
                session.close()
            await asyncio.gather(*(server.stop() for server in servers))
        after = await checks.stored_ids(database_url)
    logged = [line for server in servers for line in server.log.read_text().splitlines()]
    problems = [line for line in logged if "ERROR" in line or "Traceback" in line]
    verdict = checks.judge(ledger, before, after, copy, sharing)
    return Result(configuration, label, load, seconds, server_cpu, generator_cpu, verdict, setup, prepared_in, problems)


Row = tuple[str, int, float, float, float, float, int, int]


def row(name: str, latencies: list[float], seconds: float, errors: int, limited: int) -> Row:
    """(operation, requests, req/s, p50, p95, p99 ms, errors, 429s)."""
    samples = latencies or [0.0]
    p50, p95, p99 = (percentile(samples, fraction) * 1000 for fraction in (0.5, 0.95, 0.99))
    return name, len(latencies), len(latencies) / seconds, p50, p95, p99, errors, limited


def rows(result: Result) -> list[Row]:
    """A row per operation, then one for all of them."""
    operations = sorted(result.recorder.operations.items())
    table = [row(name, s.latencies, result.seconds, s.errors, s.rate_limited) for name, s in operations]
    every = [latency for _, stats in operations for latency in stats.latencies]
    errors, limited = sum(s.errors for _, s in operations), sum(s.rate_limited for _, s in operations)
    return [*table, row("all", every, result.seconds, errors, limited)]


def error_rate(errors: int, requests: int) -> str:
    return f"{errors} ({100 * errors / requests:.1f}%)" if requests else str(errors)


def report(result: Result) -> None:
    total = sum(stats.requests for stats in result.recorder.operations.values())
    print(f"\n{result.label}: {result.seconds:.1f} s")
    print(f"{'operation':34}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'errors':>14}{'429':>6}")
    for name, requests, rate, p50, p95, p99, errors, limited in rows(result):
        print(
            f"{name:34}{requests:9d}{rate:8.1f}{p50:8.0f}{p95:8.0f}{p99:8.0f}"
            f"{error_rate(errors, requests):>14}{limited:6d}"
        )
    print(
        f"server CPU {1000 * result.server_cpu / max(total, 1):.1f} ms per request "
        f"({result.server_cpu / result.seconds:.2f} cores busy); load generator "
        f"{result.generator_cpu / result.seconds:.2f} cores"
    )
    sign_ins = result.setup.operations["/auth/token (before the load)"].latencies
    print(
        f"before the load ({result.prepared_in:.0f} s: database, servers, sign-ins, threads, consents): "
        f"{len(sign_ins)} tokens from /auth/token, p50 {1000 * percentile(sign_ins, 0.5):.0f} ms"
    )
    for name, stats in sorted(result.recorder.operations.items()):
        for example in stats.examples:
            print(f"  error in {name}: {example}")
    print(f"server logs ({LOGS}): {len(result.server_log)} ERROR lines and tracebacks")
    for line in result.server_log[:5]:
        print(f"  {line[:300]}")
    for line in result.verdict.lines:
        print(f"  {line}")


def markdown(results: list[Result]) -> None:
    print("\n| configuration | operation | req/s | p50 / p95 / p99 ms | errors | 429 |")
    print("|---|---|---|---|---|---|")
    for result in results:
        for n, (name, requests, rate, p50, p95, p99, errors, limited) in enumerate(rows(result)):
            label = result.label if n == 0 else ""
            print(
                f"| {label} | {name} | {rate:.1f} | {p50:.0f} / {p95:.0f} / {p99:.0f} | "
                f"{error_rate(errors, requests)} | {limited} |"
            )


def requests_of(result: Result) -> int:
    return sum(stats.requests for stats in result.recorder.operations.values())


# A patient's day of app traffic, estimated from what the app sends (docs/apps.md): the home
# screen on each of 6 openings, a token refresh on each (access tokens live 15 minutes), a check-in,
# a survey answer most days, 2 messages sent and 3 thread reads, the device registration refreshed
# daily, and the patient's share of their providers' panel and alert reads and of the EHR sync
# (about 6). Requests of the mix's average cost: the home screen and a refresh cost less, the panel
# more.
PATIENT_REQUESTS_PER_DAY = 6 + 6 + 1 + 1 + 2 + 3 + 1 + 6
# The busiest hour carries this many times the day's average hourly rate (waking hours, evenings).
PEAK_FACTOR = 3.0


def patients_per_core(per_core: float) -> int:
    """How many patients one core serves at the mix's cost per request, in the busiest hour."""
    per_patient_per_second = PATIENT_REQUESTS_PER_DAY * PEAK_FACTOR / 86_400
    return int(per_core / per_patient_per_second)


def targets(results: list[Result]) -> None:
    """The targets of issue #18 with this run's figures beside them. Per core is counted from the
    servers' own CPU time (requests per second of server CPU), which neighbours on a shared
    machine disturb less than the wall-clock rate."""
    print("\ntargets (issue #18), this run's figures:")
    for result in results:
        requests = requests_of(result)
        cpu_ms = 1000 * result.server_cpu / max(requests, 1)
        per_core = requests / result.server_cpu if result.server_cpu else 0.0
        print(
            f"  {result.label}: mix ≤ {TARGET_CPU_MS:.0f} ms server CPU per request: now {cpu_ms:.1f} ms; "
            f"≥ {TARGET_PER_CORE:.0f} req/s per core: now {per_core:.0f} (one core: about "
            f"{patients_per_core(per_core):,} patients at {PATIENT_REQUESTS_PER_DAY} requests a day each, "
            f"the busiest hour {PEAK_FACTOR:.0f} times the average)"
        )
    alone = next((r for r in results if r.configuration == POSTGRES_1), None)
    for result in results:
        if alone is None or result.configuration.database != "postgres" or result.configuration.workers == 1:
            continue
        workers = result.configuration.workers
        one = requests_of(alone) / alone.seconds
        each = requests_of(result) / result.seconds / workers
        print(
            f"  scale-out, {workers} workers: throughput per worker within {100 * (1 - TARGET_SCALE_OUT):.0f} % "
            f"of one worker's: now {each:.1f} req/s per worker against {one:.1f} ({each / one:.2f} of it; "
            f"{os.cpu_count()} cores shared with PostgreSQL, Redis and the load generator)"
        )


async def main() -> int:
    print(
        f"ketafollow load test: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}; {SECONDS:.0f} s per configuration, {PATIENTS} patients, "
        f"{PROVIDER_SESSIONS} provider sessions, 1 EHR client"
    )
    LOGS.mkdir(parents=True, exist_ok=True)
    configurations = [SQLITE_1]
    if (why := await postgres_answers(POSTGRES_URL)) is not None:
        print(f"PostgreSQL is not reachable at {POSTGRES_URL} ({why}): SQLite only")
    else:
        configurations.append(POSTGRES_1)
        if redis_answers():
            configurations += [POSTGRES_2, POSTGRES_4]
        else:
            print("Redis is not reachable at 127.0.0.1:6379: no two-worker configuration (it needs shared state)")
    if only := os.environ.get("LOAD_ONLY"):
        configurations = [c for c in configurations if c.name in only.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="ketafollow-load-") as folder:
        for configuration in configurations:
            results.append(await run(configuration, Path(folder)))
            report(results[-1])
    markdown(results)
    targets(results)
    failed = [result.label for result in results if result.verdict.failed]
    if failed:
        print(f"\nA check failed (see FAILED above) in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
