"""Benchmark: the patient app's main read and main write through GraphQL, a bare route and the floor.

The read is the home screen (current plan, next survey, open surveys, recent check-ins, unread
messages); the write is `submitCheckIn` with an idempotency key. Three routes answer the read:

- `/graphql`, the service as the app calls it;
- the bare route (bench.bare): same app, middleware, authentication and database connections,
  the same `models/` operations the resolvers call, so the same SQL; only the GraphQL layer is left out;
- the floor (bench.floor): the same answer from Starlette, PyJWT and the database driver alone,
  in six hand-written statements: what the stack's lowest parts cost.

Before measuring, the benchmark checks in process that the routes of a scenario answer the same
JSON (so neither the bare route nor the floor can take a shortcut) and counts their statements.
The write has no floor (issue #18 asks for none).

`make bench` runs it on SQLite (a temporary file) and, when 127.0.0.1:5432 answers, on
PostgreSQL (a new database on the server of `BENCH_POSTGRES_URL`, dropped afterwards;
`BENCH_HOME_DATABASE_URL=postgres://…/db` names an existing, empty database instead), and
prints the two side by side with the targets of issue #18. The server is `uvicorn` in a child
process on a loopback port (one worker, as `ketafollow serve` runs); the load comes from this
process over keep-alive HTTP/1.1 connections, a small hand-written client (bench.harness) so
that the load generator costs little CPU on a two-core machine. Figures, not assertions: this machine is
shared and noisy; server CPU per request (from /proc) is the steadier figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from api.auth.tokens import issue_access_token
from api.commands.service import seed_database
from api.database import migrate, open_database
from api.settings import Environment, Settings
from bench.bare import bare_routes
from bench.floor import floor_app
from bench.harness import cpu_seconds, free_port, percentile, postgres_database, raw_request, read_response
from models.identity.accounts import User
from tests.conftest import start_logins
from tests.support.panel_data import counting_statements

SECRET = "bench-home-secret-key-0123456789-abcdefghij"
PATIENT = "alex@demo.test"
CONNECTIONS = 8
SECONDS = float(os.environ.get("BENCH_HOME_SECONDS", "4"))
ROUNDS = int(os.environ.get("BENCH_HOME_ROUNDS", "3"))

HOME = """
query Home {
  me {
    patient {
      givenName
      treatmentPlan { id status formulation dose doseUnit sessionsPerWeek }
      nextSurveyDueAt
      surveyAssignments(status: [AVAILABLE], first: 3) { edges { node { id instrument availableAt expiresAt } } }
      checkIns(first: 7) { edges { node { id recordedAt pain mood sleep note } } }
      unreadMessages
    }
  }
}
"""
CHECK_IN = """
mutation CheckIn($input: SubmitCheckInInput!) {
  submitCheckIn(input: $input) {
    result { __typename ... on CheckIn { id recordedAt pain mood sleep note } ... on Error { message } }
    crisisResources
  }
}
"""


def bench_app(settings: Settings) -> Starlette:
    from api.app import create_app

    app = create_app(settings)
    app.router.routes[:0] = bare_routes(settings)
    return app


class WithFloor:
    """The app, and beside it (not under its middleware) the floor's bare Starlette app."""

    def __init__(self, settings: Settings) -> None:
        self.app = bench_app(settings)
        self.floor = floor_app(settings)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/floor/"):
            await self.floor(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def serve(port: int) -> None:
    """The child process: the app as `ketafollow serve` runs it, plus the bare routes and the floor."""
    import uvicorn

    from api.log import configure_logging

    settings = Settings.from_env(env_file=None)
    configure_logging(settings.log_level, settings.log_format)
    config = uvicorn.Config(
        WithFloor(settings), host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    uvicorn.Server(config).run()


# ------------------------------------------------------------------ requests and the load


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    body: Callable[[], dict[str, Any]]


def home_body() -> dict[str, Any]:
    return {"query": HOME, "operationName": "Home"}


def check_in_body() -> dict[str, Any]:
    recorded = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    check_in = {"idempotencyKey": uuid.uuid4().hex, "recordedAt": recorded, "pain": 4, "mood": 6, "sleep": 5}
    return {"query": CHECK_IN, "operationName": "CheckIn", "variables": {"input": {**check_in, "note": "bench"}}}


def bare(body: dict[str, Any]) -> dict[str, Any]:
    return {"input": body["variables"]["input"]} if "variables" in body else {}


SCENARIOS: dict[str, tuple[Endpoint, ...]] = {
    "home screen (read)": (
        Endpoint("GraphQL", "/graphql", home_body),
        Endpoint("bare", "/bare/home", lambda: bare(home_body())),
        Endpoint("floor", "/floor/home", lambda: {}),
    ),
    "submitCheckIn (write)": (
        Endpoint("GraphQL", "/graphql", check_in_body),
        Endpoint("bare", "/bare/check-in", lambda: bare(check_in_body())),
    ),
}


async def load(port: int, endpoint: Endpoint, token: str, seconds: float) -> tuple[float, list[float]]:
    """`CONNECTIONS` keep-alive connections sending one request after another for `seconds`:
    requests per second and each request's latency."""
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                request = raw_request(endpoint.path, endpoint.body(), token)
                sent = time.perf_counter()
                writer.write(request)
                status, body = await read_response(reader)
                latencies.append(time.perf_counter() - sent)
                if status != 200 or b'"errors"' in body:
                    raise SystemExit(f"{endpoint.name} {endpoint.path} failed: {status} {body[:300]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return len(latencies) / (time.perf_counter() - started), latencies


# ------------------------------------------------------------------ the run


async def fill(settings: Settings) -> tuple[uuid.UUID, uuid.UUID]:
    """The demo clinic, and the patient's id and login."""
    async with open_database(settings):
        await migrate()
        await seed_database(settings, now=datetime.now(UTC) - timedelta(hours=1))
        user_id = (await User.get(email=PATIENT)).id
        logins = await start_logins({PATIENT: user_id}, datetime.now(UTC))
        return user_id, logins[PATIENT]


async def same_work(settings: Settings, token: str) -> dict[str, list[int]]:
    """In process: every route of a scenario answers the same JSON; the SQL statements of each
    (the floor counts its own: it runs no Tortoise)."""
    served = WithFloor(settings)
    driver = served.floor.state.driver
    headers = {"Authorization": f"Bearer {token}"}
    statements: dict[str, list[int]] = {}
    async with served.app.router.lifespan_context(served.app):
        transport = httpx.ASGITransport(app=served)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            for scenario, endpoints in SCENARIOS.items():
                answers, counts = [], []
                for endpoint in endpoints:
                    await http.post(endpoint.path, json=endpoint.body(), headers=headers)  # login check cached
                    before = driver.statements
                    with counting_statements() as counter:
                        response = await http.post(endpoint.path, json=endpoint.body(), headers=headers)
                    answer = response.json()
                    if response.status_code != 200 or "errors" in answer:
                        raise SystemExit(f"{endpoint.name} {scenario} failed: {response.text[:300]}")
                    answers.append(_without_new_ids(answer))
                    counts.append(counter.count + driver.statements - before)
                if any(answer != answers[0] for answer in answers):
                    raise SystemExit(f"{scenario}: the routes answer DIFFERENT JSON: {answers}")
                names = ", ".join(f"{e.name} {n}" for e, n in zip(endpoints, counts, strict=True))
                print(f"  {scenario}: same JSON; SQL statements per request: {names}")
                statements[scenario] = counts
        await driver.close()
    return statements


def _without_new_ids(answer: dict[str, Any]) -> dict[str, Any]:
    """A check-in's answer minus what differs between two writes (its id and timestamps)."""
    result = answer["data"].get("submitCheckIn", {}).get("result")
    if result:
        result.pop("id", None)
        result.pop("recordedAt", None)
    return answer


async def start_server(settings: Settings, port: int) -> asyncio.subprocess.Process:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),  # the same code as this process runs
        "KETAFOLLOW_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY": SECRET,
        "LOG_LEVEL": "WARNING",
        "RUN_SCHEDULER": "false",
        # One patient asks thousands of times a second here: the per-user limit (60 in a burst)
        # would answer 429 after the first 60 and measure nothing.
        "RATE_LIMIT_USER_BURST": "100000",
        "RATE_LIMIT_USER_PER_MINUTE": "1000000",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_home", "serve", str(port), env=environment
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(300):
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return process
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise SystemExit("the benchmark server did not start")


@dataclass
class Figures:
    """One endpoint's measurements over the rounds."""

    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.cpu) * 1000


async def measure(settings: Settings, token: str) -> dict[str, dict[str, Figures]]:
    port = free_port()
    server = await start_server(settings, port)
    found: dict[str, dict[str, Figures]] = {}
    try:
        for scenario, endpoints in SCENARIOS.items():
            figures = found[scenario] = {e.name: Figures() for e in endpoints}
            for endpoint in endpoints:  # warm up: imports, caches, connections
                await load(port, endpoint, token, 1.0)
            for _ in range(ROUNDS):  # alternate, so a noisy neighbour hurts every side alike
                for endpoint in endpoints:
                    before = cpu_seconds(server.pid)
                    rate, samples = await load(port, endpoint, token, SECONDS)
                    figures[endpoint.name].cpu.append((cpu_seconds(server.pid) - before) / len(samples))
                    figures[endpoint.name].rates.append(rate)
                    figures[endpoint.name].latencies += samples
    finally:
        server.terminate()
        await server.wait()
    return found


@dataclass
class Run:
    database: str
    statements: dict[str, list[int]]
    figures: dict[str, dict[str, Figures]]


def report(runs: list[Run]) -> None:
    heading = "".join(f"{run.database + ': req/s · p50 / p95 ms · CPU ms · SQL':>52}" for run in runs)
    print(f"\n{'':24}{'endpoint':>9}{heading}")
    for scenario, endpoints in SCENARIOS.items():
        for index, endpoint in enumerate(endpoints):
            cells = []
            for run in runs:
                f = run.figures[scenario][endpoint.name]
                p50, p95 = percentile(f.latencies, 0.5) * 1000, percentile(f.latencies, 0.95) * 1000
                sql = run.statements[scenario][index]
                cells.append(f"{f.rate:.0f} · {p50:.1f} / {p95:.1f} · {f.cpu_ms:.2f} · {sql}".rjust(52))
            print(f"{scenario if index == 0 else '':24}{endpoint.name:>9}" + "".join(cells))
        for other in [e.name for e in endpoints[1:]]:
            cells = []
            for run in runs:
                graphql, base = run.figures[scenario]["GraphQL"], run.figures[scenario][other]
                cells.append(f"req/s {graphql.rate / base.rate:.2f}, CPU {graphql.cpu_ms / base.cpu_ms:.2f}".rjust(52))
            print(f"{'':24}{'GraphQL ÷ ' + other:>9}" + "".join(cells))
    print(
        f"(median req/s and server CPU per request of {ROUNDS} rounds of {SECONDS:g} s, the sides "
        f"alternating; latencies over all rounds; {CONNECTIONS} connections)"
    )
    print("\ntargets (issue #18), today's figures:")
    for run in runs:
        home, write = run.figures["home screen (read)"], run.figures["submitCheckIn (write)"]
        ratio = home["GraphQL"].cpu_ms / home["floor"].cpu_ms
        print(f"  {run.database}:")
        costs = f"{home['GraphQL'].cpu_ms:.2f} / {home['floor'].cpu_ms:.2f} ms"
        print(f"    home screen ≤ 3 times the floor's CPU: now {ratio:.1f} times ({costs})")
        print(f"    home screen ≤ 4 ms CPU: now {home['GraphQL'].cpu_ms:.2f} ms")
        print(f"    submitCheckIn ≤ 4 ms CPU: now {write['GraphQL'].cpu_ms:.2f} ms")


async def run_on(database_url: str, label: str) -> Run:
    settings = Settings(env=Environment.TEST, database_url=database_url, secret_key=SECRET, run_scheduler=False)
    print(f"\n{label}:")
    user_id, login = await fill(settings)
    # Long enough for the whole run (the server checks expiry with its own clock).
    token = issue_access_token(
        replace(settings, access_token_ttl=timedelta(hours=1)),
        subject_kind="user",
        subject_id=user_id,
        now=datetime.now(UTC),
        session_id=login,
    )
    statements = await same_work(settings, token)
    return Run(label, statements, await measure(settings, token))


async def measure_in_child(database_url: str, label: str) -> Run:
    """`run_on` in a process of its own: Tortoise keeps one database's dialect per process."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run.json"
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bench_home", "measure", label, database_url, str(out)
        )
        if await child.wait() != 0:
            raise SystemExit(f"the {label} run failed")
        saved = json.loads(out.read_text())
    figures = {
        scenario: {name: Figures(**values) for name, values in by_name.items()}
        for scenario, by_name in saved["figures"].items()
    }
    return Run(saved["database"], saved["statements"], figures)


async def measure_here(label: str, database_url: str, out: str) -> None:
    run = await run_on(database_url, label)
    figures = {scenario: {name: asdict(f) for name, f in by_name.items()} for scenario, by_name in run.figures.items()}
    saved = {"database": run.database, "statements": run.statements, "figures": figures}
    Path(out).write_text(json.dumps(saved))  # noqa: ASYNC240 (once, after the measurement)


async def main() -> None:
    print("ketafollow home-screen benchmark: GraphQL vs bare Starlette vs the floor, SQLite and PostgreSQL")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        runs.append(await measure_in_child(f"sqlite://{Path(folder) / 'bench-home.sqlite3'}", "SQLite"))
    async with postgres_database() as postgres:
        if postgres is not None:
            runs.append(await measure_in_child(postgres, "PostgreSQL"))
    report(runs)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]))
    elif sys.argv[1:2] == ["measure"]:
        asyncio.run(measure_here(*sys.argv[2:5]))
    else:
        asyncio.run(main())
