"""Benchmark: the patient app's main read and main write, GraphQL against a bare Starlette route.

The read is the home screen (current plan, next survey, open surveys, recent check-ins, unread
messages); the write is `submitCheckIn` with an idempotency key. The bare routes live in the same
app (same middleware, same authentication, same database connections) and call the same
`models/` operations, so they run the same SQL statements (checked and printed before the
measurement) and answer the same JSON; only the GraphQL layer differs.

Run with `make bench` (SQLite in a temporary file; `BENCH_HOME_DATABASE_URL=postgres://…/db` for an
existing, empty PostgreSQL database). The server is `uvicorn` in a child process on a loopback port
(one worker, as `ketafollow serve` runs); the load comes from this process over keep-alive
HTTP/1.1 connections, a small hand-written client so that the load generator costs little CPU
on a two-core machine. Figures, not assertions: this machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth.authenticate import NotAuthenticated, authenticate, bearer_token
from api.auth.tokens import issue_access_token
from api.cli import seed_database
from api.database import migrate, open_database
from api.settings import Environment, Settings
from models.care import plans
from models.identity import directory
from models.identity.access import Viewer
from models.identity.accounts import User
from models.kernel.audit import AuditTrail
from models.kernel.errors import DomainError
from models.messaging import messaging
from models.outcomes import outcomes
from models.reports import checkins
from models.surveys import assignments, survey_records
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


# ------------------------------------------------------------------ the bare routes


def _global_id(type_name: str, value: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{value}".encode()).decode()


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _viewer(request: Request, settings: Settings, now: datetime) -> Viewer:
    """What `/graphql` does before any GraphQL runs (api.graphql_view)."""
    trail = AuditTrail(
        request_id=request.scope.get("state", {}).get("request_id"),
        client_address=request.client.host if request.client else None,
    )
    authenticated = await authenticate(
        settings,
        bearer_token(request.headers.get("authorization")),
        now=now,
        trail=trail,
        logins=request.app.state.logins,
    )
    return authenticated.viewer


def bare_routes(settings: Settings) -> list[Route]:
    """The home screen and the check-in without GraphQL: the same `models/` calls the resolvers
    make (concurrently where GraphQL resolves fields concurrently), JSON built by hand."""

    async def home(request: Request) -> Response:
        now = datetime.now(UTC)
        try:
            viewer = await _viewer(request, settings, now)
        except NotAuthenticated as refusal:
            return JSONResponse({"errors": [{"message": refusal.message}]}, status_code=401)
        viewer.audit.operation = "Home"
        assert viewer.patient_id is not None
        patient = await directory.get_patient(viewer, viewer.patient_id)
        current, facts, open_surveys, recent, unread = await asyncio.gather(
            plans.current_plans(viewer, [patient.id]),
            outcomes.panel_facts(viewer, [patient.id], now=now),
            assignments.list_assignments(
                viewer, patient.id, statuses=[survey_records.AssignmentStatus.AVAILABLE], limit=4
            ),
            checkins.list_check_ins(viewer, patient.id, limit=8),
            messaging.unread_by_patient(viewer, [patient.id]),
        )
        plan = current.get(patient.id)
        fact = facts.get(patient.id)
        body = {
            "givenName": patient.given_name,
            "treatmentPlan": None
            if plan is None
            else {
                "id": _global_id("TreatmentPlan", plan.id),
                "status": plan.status.name,
                "formulation": plan.formulation.name,
                "dose": float(plan.dose),
                "doseUnit": plan.dose_unit.name,
                "sessionsPerWeek": plan.sessions_per_week,
            },
            "nextSurveyDueAt": _time(fact.next_survey_due if fact else None),
            "surveyAssignments": {
                "edges": [
                    {
                        "node": {
                            "id": _global_id("SurveyAssignment", a.id),
                            "instrument": a.instrument,
                            "availableAt": _time(a.available_at),
                            "expiresAt": _time(a.expires_at),
                        }
                    }
                    for a in open_surveys[:3]
                ]
            },
            "checkIns": {
                "edges": [
                    {
                        "node": {
                            "id": _global_id("CheckIn", c.id),
                            "recordedAt": _time(c.recorded_at),
                            "pain": c.pain,
                            "mood": c.mood,
                            "sleep": c.sleep,
                            "note": c.note,
                        }
                    }
                    for c in recent[:7]
                ]
            },
            "unreadMessages": unread.get(patient.id, 0),
        }
        await viewer.audit.flush(viewer, now)
        return JSONResponse({"data": {"me": {"patient": body}}})

    async def check_in(request: Request) -> Response:
        now = datetime.now(UTC)
        try:
            viewer = await _viewer(request, settings, now)
        except NotAuthenticated as refusal:
            return JSONResponse({"errors": [{"message": refusal.message}]}, status_code=401)
        viewer.audit.operation = "CheckIn"
        given = (await request.json())["input"]
        data = checkins.NewCheckIn(
            recorded_at=datetime.fromisoformat(given["recordedAt"]),
            pain=given["pain"],
            mood=given.get("mood"),
            sleep=given.get("sleep"),
            note=given.get("note", ""),
            idempotency_key=given.get("idempotencyKey"),
        )
        try:
            outcome = await checkins.submit_check_in(viewer, data, now=now, policy=settings.clinic_policy)
        except DomainError as refusal:
            result: dict[str, Any] = {"__typename": type(refusal).__name__, "message": refusal.message}
            advice: dict[str, Any] = {}
        else:
            stored = await checkins.CheckIn.get(id=outcome.resource_id)
            result = {
                "__typename": "CheckIn",
                "id": _global_id("CheckIn", stored.id),
                "recordedAt": _time(stored.recorded_at),
                "pain": stored.pain,
                "mood": stored.mood,
                "sleep": stored.sleep,
                "note": stored.note,
            }
            advice = outcome.advice
        await viewer.audit.flush(viewer, now)
        payload = {"result": result, "crisisResources": advice.get("crisisResources")}
        return JSONResponse({"data": {"submitCheckIn": payload}})

    return [Route("/bare/home", home, methods=["POST"]), Route("/bare/check-in", check_in, methods=["POST"])]


def bench_app(settings: Settings) -> Starlette:
    from api.app import create_app

    app = create_app(settings)
    app.router.routes[:0] = bare_routes(settings)
    return app


def serve(port: int) -> None:
    """The child process: the app as `ketafollow serve` runs it, plus the bare routes."""
    import uvicorn

    from api.log import configure_logging

    settings = Settings.from_env(env_file=None)
    configure_logging(settings.log_level, settings.log_format)
    config = uvicorn.Config(
        bench_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
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


SCENARIOS: dict[str, tuple[Endpoint, Endpoint]] = {
    "home screen (read)": (
        Endpoint("GraphQL", "/graphql", home_body),
        Endpoint("bare", "/bare/home", lambda: bare(home_body())),
    ),
    "submitCheckIn (write)": (
        Endpoint("GraphQL", "/graphql", check_in_body),
        Endpoint("bare", "/bare/check-in", lambda: bare(check_in_body())),
    ),
}


def raw_request(path: str, body: dict[str, Any], token: str) -> bytes:
    content = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): less disturbed by neighbours on
    a shared machine than req/s, which counts the time the server waited for a core."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# ------------------------------------------------------------------ the run


async def fill(settings: Settings) -> tuple[uuid.UUID, uuid.UUID]:
    """The demo clinic, and the patient's id and login."""
    async with open_database(settings):
        await migrate()
        await seed_database(settings, now=datetime.now(UTC) - timedelta(hours=1))
        user_id = (await User.get(email=PATIENT)).id
        logins = await start_logins({PATIENT: user_id}, datetime.now(UTC))
        return user_id, logins[PATIENT]


async def same_work(settings: Settings, token: str) -> None:
    """In process: both routes answer the same JSON with the same number of SQL statements."""
    app = bench_app(settings)
    headers = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            for scenario, endpoints in SCENARIOS.items():
                answers, counts = [], []
                for endpoint in endpoints:
                    with counting_statements() as counter:
                        response = await http.post(endpoint.path, json=endpoint.body(), headers=headers)
                    answer = response.json()
                    if response.status_code != 200 or "errors" in answer:
                        raise SystemExit(f"{endpoint.name} {scenario} failed: {response.text[:300]}")
                    answers.append(_without_new_ids(answer))
                    counts.append(counter.count)
                same = "same JSON" if answers[0] == answers[1] else f"DIFFERENT JSON: {answers}"
                print(f"  {scenario}: SQL statements per request GraphQL {counts[0]}, bare {counts[1]}; {same}")


def _without_new_ids(answer: dict[str, Any]) -> dict[str, Any]:
    """A check-in's answer minus what differs between two writes (its id and timestamps)."""
    result = answer["data"].get("submitCheckIn", {}).get("result")
    if result:
        result.pop("id", None)
        result.pop("recordedAt", None)
    return answer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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


async def measure(settings: Settings, token: str) -> None:
    port = free_port()
    server = await start_server(settings, port)
    try:
        rows = []
        for scenario, endpoints in SCENARIOS.items():
            rates: dict[str, list[float]] = {e.name: [] for e in endpoints}
            latencies: dict[str, list[float]] = {e.name: [] for e in endpoints}
            cpu: dict[str, list[float]] = {e.name: [] for e in endpoints}
            for endpoint in endpoints:  # warm up: imports, caches, connections
                await load(port, endpoint, token, 1.0)
            for _ in range(ROUNDS):  # alternate, so a noisy neighbour hurts both sides alike
                for endpoint in endpoints:
                    before = cpu_seconds(server.pid)
                    rate, samples = await load(port, endpoint, token, SECONDS)
                    cpu[endpoint.name].append((cpu_seconds(server.pid) - before) / len(samples))
                    rates[endpoint.name].append(rate)
                    latencies[endpoint.name] += samples
            rows.append((scenario, rates, latencies, cpu))
    finally:
        server.terminate()
        await server.wait()
    print(f"\n{'':24}{'endpoint':>9}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'CPU ms':>8}   GraphQL ÷ bare: req/s, CPU")
    for scenario, rates, latencies, cpu in rows:
        median = {name: statistics.median(values) for name, values in rates.items()}
        cost = {name: statistics.median(values) * 1000 for name, values in cpu.items()}
        for name in rates:
            ratios = f"   {median['GraphQL'] / median['bare']:.2f}, {cost['GraphQL'] / cost['bare']:.2f}"
            print(
                f"{scenario:24}{name:>9}{median[name]:8.0f}{percentile(latencies[name], 0.5) * 1000:8.1f}"
                f"{percentile(latencies[name], 0.95) * 1000:8.1f}{cost[name]:8.1f}{ratios if name == 'GraphQL' else ''}"
            )
            scenario = ""
    print(
        f"(median req/s and server CPU per request of {ROUNDS} rounds of {SECONDS:.0f} s, the two sides "
        f"alternating; latencies over all rounds; {CONNECTIONS} connections)"
    )


async def main() -> None:
    url = os.environ.get("BENCH_HOME_DATABASE_URL")
    with tempfile.TemporaryDirectory() as folder:
        database_url = url or f"sqlite://{Path(folder) / 'bench-home.sqlite3'}"
        settings = Settings(env=Environment.TEST, database_url=database_url, secret_key=SECRET, run_scheduler=False)
        print(f"ketafollow home-screen benchmark: GraphQL vs bare Starlette on {database_url.split(':')[0]}")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        user_id, login = await fill(settings)
        # Long enough for the whole run (the server checks expiry with its own clock).
        token = issue_access_token(
            replace(settings, access_token_ttl=timedelta(hours=1)),
            subject_kind="user",
            subject_id=user_id,
            now=datetime.now(UTC),
            session_id=login,
        )
        await same_work(settings, token)
        await measure(settings, token)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]))
    else:
        asyncio.run(main())
