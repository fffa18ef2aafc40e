"""The faults, one after another, on one pair of replicas under steady traffic, and what each one
must not break (issue #20). Bounds and durations are here; the run and the report are in
__main__.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.load.servers import Server
from tests.faults.clients import PROBE, Answer, Api, Phase, Subscriber
from tests.faults.proxy import FaultProxy

SHORT = os.environ.get("FAULTS_SHORT", "") not in ("", "0")
# What the replicas are started with (their own bounds, shorter than the defaults so the suite is
# quick), and the suite's bounds derived from them.
REQUEST_TIMEOUT = 3.0  # REQUEST_TIMEOUT_SECONDS
SHUTDOWN_TIMEOUT = 5.0  # SHUTDOWN_TIMEOUT_SECONDS
SERVER_SETTINGS = {
    "REQUEST_TIMEOUT_SECONDS": f"{REQUEST_TIMEOUT:g}",
    "DB_STATEMENT_TIMEOUT_SECONDS": "2",
    "DB_POOL_TIMEOUT_SECONDS": "2",
    "READY_TIMEOUT_SECONDS": "1",
    "SHUTDOWN_TIMEOUT_SECONDS": f"{SHUTDOWN_TIMEOUT:g}",
    "ACCESS_TOKEN_TTL_SECONDS": "3600",  # no token runs out during the run
}
SLACK = 1.0  # "its deadline plus a second"
WAIT_BOUND = REQUEST_TIMEOUT + SLACK  # no request waits longer, whatever the fault
READY_WITHIN = 2.0  # /readyz says 503 within this of a database hang
EXIT_BOUND = SHUTDOWN_TIMEOUT + SLACK  # SIGTERM ends the process within its shutdown timeout
CLIENT_WAIT = REQUEST_TIMEOUT + 5.0  # a client gives up here (a wait this long already failed the bound)
RECOVER_WITHIN = 60.0  # after a fault ends, both replicas answer again within this, or it fails
SETTLE = 2.0 if SHORT else 5.0  # of steady traffic between two faults
SIGTERM_AFTER = 1.0  # into a database hang, so that requests are stuck in the replica


@dataclass(frozen=True)
class Scenario:
    name: str
    backend: str | None  # "database", "redis", or None (a signal only)
    fault: str | None  # "cut" or "hang"
    seconds: float  # how long the fault lasts
    sigterm: bool = False  # replica 2 is sent SIGTERM (SIGTERM_AFTER into the fault, if any)

    @property
    def describe(self) -> str:
        what = f"{self.backend} {self.fault} {self.seconds:g} s" if self.backend else "no backend fault"
        return what + (", SIGTERM to replica 2" if self.sigterm else "")


def plan(short: bool = SHORT) -> list[Scenario]:
    """Every fault once, the long Redis cut 30 s (5 s in the short mode)."""
    seconds = (3, 5, 1, 5, 3) if short else (10, 15, 1, 30, 10)
    database_cut, database_hang, redis_short, redis_long, redis_hang = seconds
    return [
        Scenario("database cut", "database", "cut", database_cut),
        Scenario("database hang", "database", "hang", database_hang),
        Scenario("SIGTERM in database hang", "database", "hang", EXIT_BOUND + SIGTERM_AFTER + 2, sigterm=True),
        Scenario(f"Redis cut {redis_short} s", "redis", "cut", redis_short),
        Scenario(f"Redis cut {redis_long} s", "redis", "cut", redis_long),
        Scenario("Redis hang", "redis", "hang", redis_hang),
        Scenario("SIGTERM under load", None, None, 0, sigterm=True),
    ]


@dataclass
class Outcome:
    """What was measured during one scenario (writes and events are judged at the end, when the
    database and the subscribers are read)."""

    scenario: Scenario
    ready_503_after: list[float | None] = field(default_factory=list)  # per replica, from the hang
    exit_after: float | None = None  # from SIGTERM to the end of the process (None: killed)
    recovery: float | None = None  # from the end of the fault to a success on every replica
    restart: float | None = None  # start-up of the replica again after SIGTERM
    sigterm_at: datetime | None = None  # wall clock
    restarted_at: tuple[datetime, datetime] | None = None  # replica 2 started again: from, ready at
    window: tuple[float, float] = (0.0, 0.0)  # from the fault to the recovery: answers in flight then are its
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """Everything a scenario acts on."""

    api: Api
    phase: Phase
    proxies: dict[str, FaultProxy]
    servers: list[Server]
    environment: dict[str, str]
    folder: Path
    logs: Path
    probe_token: str
    resumer: Subscriber
    restarts: int = 0

    async def restart(self, number: int) -> float:
        """Start replica `number` again on its port, its output in a new log; how long it took."""
        self.restarts += 1
        old = self.servers[number]
        server = Server(old.port, self.logs / f"replica-{number + 1}.restart-{self.restarts}.log")
        self.servers[number] = server
        started = time.monotonic()
        await server.start(self.environment, self.folder)
        return time.monotonic() - started


async def terminate(server: Server, wait: float) -> float | None:
    """SIGTERM; seconds until the process ended, or None when it had not after `wait` (then it is
    killed)."""
    assert server.process is not None
    sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(server.process.wait(), wait)
    except TimeoutError:
        server.process.kill()
        await server.process.wait()
        return None
    return time.monotonic() - sent


async def watch_readiness(run: Run, since: float, stop: asyncio.Event) -> list[float | None]:
    """Ask every replica's /readyz every 0.2 s (each question on its own, so one that hangs does
    not delay the next) until `stop`; per replica, when the first 503 arrived, from `since`."""
    first: list[float | None] = [None] * len(run.servers)
    pending: set[asyncio.Task[Answer]] = set()

    async def ask(replica: int) -> Answer:
        answer = await run.api.ready(replica)
        if answer.kind == "not ready" and first[replica] is None:
            first[replica] = answer.started + answer.seconds - since
        return answer

    while not stop.is_set():
        for replica in range(len(run.servers)):
            task = asyncio.create_task(ask(replica))
            pending.add(task)
            task.add_done_callback(pending.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    await asyncio.gather(*pending, return_exceptions=True)  # each bounded by the client's wait
    return first


async def recover(run: Run, scenario: Scenario, since: float) -> float | None:
    """From `since`, how long until every replica answered a signed-in read (and, after a Redis
    fault, /readyz says the bus is ok again); None when one did not within RECOVER_WITHIN."""

    async def replica_back(replica: int) -> float | None:
        deadline = since + RECOVER_WITHIN
        while time.monotonic() < deadline:
            answered = await run.api.graphql(replica, run.probe_token, PROBE, what="probe")
            bus_ok = True
            if answered is not None and scenario.backend == "redis":
                ready = await run.api.ready(replica)
                with contextlib.suppress(ValueError, AttributeError):
                    bus_ok = json.loads(ready.detail).get("bus", "ok") == "ok"
            if answered is not None and bus_ok:
                return time.monotonic() - since
            await asyncio.sleep(0.1)
        return None

    times = await asyncio.gather(*(replica_back(n) for n in range(len(run.servers))))
    return None if None in times else max(t for t in times if t is not None)


async def run_scenario(run: Run, scenario: Scenario) -> Outcome:
    outcome = Outcome(scenario)
    run.phase.label = scenario.name
    await run.resumer.drop()  # the resuming client goes into a tunnel for the fault
    started = time.monotonic()
    proxy = run.proxies[scenario.backend] if scenario.backend else None
    stop_watching = asyncio.Event()
    watching: asyncio.Task[list[float | None]] | None = None
    if scenario.backend == "database" and scenario.fault == "hang" and not scenario.sigterm:
        watching = asyncio.create_task(watch_readiness(run, started, stop_watching))
    if proxy is not None:
        await (proxy.cut() if scenario.fault == "cut" else _hang(proxy))
    terminating: asyncio.Task[float | None] | None = None
    if scenario.sigterm:
        if proxy is not None:
            await asyncio.sleep(SIGTERM_AFTER)
        outcome.sigterm_at = datetime.now(UTC)
        terminating = asyncio.create_task(terminate(run.servers[1], EXIT_BOUND + 5))
    await asyncio.sleep(max(0.0, started + scenario.seconds - time.monotonic()))
    if proxy is not None:
        await proxy.resume()
    ended = time.monotonic()
    if watching is not None:
        stop_watching.set()
        outcome.ready_503_after = await watching
    if terminating is not None:
        outcome.exit_after = await terminating
        ended = time.monotonic() if proxy is None else ended
        starting = datetime.now(UTC)
        outcome.restart = await run.restart(1)
        outcome.restarted_at = (starting, datetime.now(UTC))
    outcome.recovery = await recover(run, scenario, ended)
    outcome.window = (started, time.monotonic())
    try:
        await run.resumer.resume()
    except RuntimeError as failure:
        outcome.notes.append(str(failure))
    run.phase.label = "steady"
    await asyncio.sleep(SETTLE)
    return outcome


async def _hang(proxy: FaultProxy) -> None:
    proxy.hang()
