"""A fresh database, migrated and seeded by the real CLI, more patients, and `ketafollow serve`
processes on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from bench.harness import scratch_postgres_database

ROOT = Path(__file__).resolve().parents[2]  # the checkout: `bench.load.patients` runs from it
DEMO_PATIENTS = {"alex@demo.test": True, "blair@demo.test": True, "casey@demo.test": False, "devon@demo.test": False}
DEMO_PROVIDERS = ("dr.rivera@demo.test", "dr.okafor@demo.test")
EHR_TEAM = "North"  # the demo EHR client's care team
START_WITHIN = 60.0
STOP_WITHIN = 20.0
# Limits far above what the load can spend: the test measures throughput, not refusals.
UNLIMITED = "100000", "1000000"


@dataclass(frozen=True)
class Configuration:
    name: str
    database: str  # "sqlite" or "postgres"
    workers: int


def extra_patient_emails(count: int) -> dict[str, bool]:
    """Patients added to the demo clinic, half in the EHR client's care team: e-mail -> in it."""
    return {f"patient{n:02d}@load.test": n % 2 == 1 for n in range(1, count + 1)}


@contextlib.asynccontextmanager
async def fresh_database(configuration: Configuration, folder: Path, postgres_url: str) -> AsyncIterator[str]:
    """The URL of an empty database, removed afterwards (PostgreSQL: a new database on the server
    of `postgres_url`, which names its maintenance database)."""
    if configuration.database == "sqlite":
        yield f"sqlite://{folder / f'load-{configuration.name}.sqlite3'}"
        return
    async with scratch_postgres_database(postgres_url, "ketafollow_load") as url:
        yield url


async def postgres_answers(url: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        connection = await asyncio.wait_for(asyncpg.connect(url), timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as failure:
        return f"{type(failure).__name__}: {failure}"
    await connection.close()
    return None


def redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def cli_environment(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    # Said explicitly: on PostgreSQL an unset KETAFOLLOW_ENV refuses to start (api.settings.exposure_problems).
    return {
        "PATH": os.environ.get("PATH", ""),
        # This checkout's code, not whatever the virtualenv's editable install points at (a
        # worktree shares the main checkout's virtualenv).
        "PYTHONPATH": str(ROOT),
        "KETAFOLLOW_ENV": "development",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        **(extra or {}),
    }


async def run_cli(*arguments: str, environment: dict[str, str], workdir: Path, module: str = "api.cli") -> None:
    """`ketafollow …` as a user types it (the working directory is ours, so no `.env` is read)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *arguments, cwd=workdir, env={**environment, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{module} {' '.join(arguments)} failed:\n{output.decode()}")


async def prepare_database(database_url: str, workdir: Path, patients: dict[str, bool]) -> None:
    """`ketafollow migrate`, `ketafollow seed`, then the extra patients (bench/load/patients.py)."""
    environment = cli_environment(database_url)
    await run_cli("migrate", environment=environment, workdir=workdir)
    await run_cli("seed", environment=environment, workdir=workdir)
    teams = [f"{email}={EHR_TEAM if in_ehr_team else 'South'}" for email, in_ehr_team in patients.items()]
    await run_cli(*teams, environment=environment, workdir=workdir, module="bench.load.patients")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """One `ketafollow serve` (uvicorn, one worker), its output in a log file."""

    port: int
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self, environment: dict[str, str], workdir: Path) -> None:
        with self.log.open("wb") as output:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                cwd=workdir, env=environment, stdout=output, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_WITHIN
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise SystemExit(f"the server exited at start:\n{self.log.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise SystemExit(f"the server was not ready within {START_WITHIN:.0f} s:\n{self.log.read_text()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (Linux /proc)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_WITHIN)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def server_environment(database_url: str, workers: int, run: str) -> dict[str, str]:
    """What every replica gets: the database, one secret, limits out of the way and, with several
    replicas, Redis for the event bus and the rate limits (this run's own channel and keys)."""
    user_burst, per_minute = UNLIMITED
    environment = cli_environment(
        database_url,
        {
            "KETAFOLLOW_ENV": "development",  # the demo logins are refused in production
            "SECRET_KEY": f"load-test-{run}-{uuid.uuid4().hex}",
            **{f"RATE_LIMIT_{who}_BURST": user_burst for who in ("USER", "CLIENT", "ANONYMOUS")},
            **{f"RATE_LIMIT_{who}_PER_MINUTE": per_minute for who in ("USER", "CLIENT", "ANONYMOUS")},
        },
    )
    if workers > 1:
        environment["EVENT_BUS_URL"] = "redis://127.0.0.1:6379/0"
        environment["EVENT_BUS_CHANNEL"] = f"kf-load:{run}:events"
        environment["RATE_LIMIT_KEY_PREFIX"] = f"kf-load:{run}:rate:"
    return environment
