"""A real `ketafollow serve`: SIGTERM ends it within SHUTDOWN_TIMEOUT_SECONDS, even with a request
stuck on the database (another connection holds the lock it waits for, longer than the shutdown
bound); a request failing on the database is answered and its keep-alive connection serves on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from seeds.demo import DEMO_PASSWORD
from tests.support.faults import SEND, free_port, writes_held

REPOSITORY = Path(__file__).resolve().parents[2]
SHUTDOWN_TIMEOUT = 4
# What Python and the operating system need to end a process once it decided to.
EXIT_MARGIN = 2
SECRET = "shutdown-test-secret-0123456789-abcdefghij"


@contextlib.asynccontextmanager
async def serving(
    database_url: str, workdir: Path, **settings: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, Path]]:
    port = free_port()
    log = workdir / "server.log"
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPOSITORY),
        "KETAFOLLOW_ENV": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET,
        "LOG_LEVEL": "INFO",
        "RUN_SCHEDULER": "false",
        "SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT),
        # The database waits longer than the shutdown bound allows.
        "REQUEST_TIMEOUT_SECONDS": "30",
        "SQLITE_BUSY_TIMEOUT_SECONDS": "30",
        "DB_STATEMENT_TIMEOUT_SECONDS": "30",
        **settings,
    }
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,  # no developer's `.env`
            env=environment,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as http:
            for _ in range(300):
                assert process.returncode is None, log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the server did not become ready:\n{log.read_text()}")
        yield process, url, log
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_ends_the_server_within_its_bound_with_a_request_stuck_on_the_database(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        serving(database_url, tmp_path) as (process, url, log),
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        signed_in = await http.post(
            "/auth/token", data={"grant_type": "password", "username": "alex@demo.test", "password": DEMO_PASSWORD}
        )
        headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        threads = await http.post("/graphql", json={"query": "{ threads { edges { node { id } } } }"}, headers=headers)
        thread = threads.json()["data"]["threads"]["edges"][0]["node"]["id"]
        async with writes_held(database_url, "message"):
            stuck = asyncio.create_task(
                http.post(
                    "/graphql",
                    json={"query": SEND, "variables": {"input": {"threadId": thread, "body": "Still here"}}},
                    headers=headers,
                )
            )
            await asyncio.sleep(0.5)  # the request is in, waiting on the lock
            assert not stuck.done()
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), SHUTDOWN_TIMEOUT + EXIT_MARGIN)
            except TimeoutError:
                pytest.fail(f"still running {SHUTDOWN_TIMEOUT + EXIT_MARGIN} s after SIGTERM:\n{log.read_text()}")
            took = time.monotonic() - started
            answer = await stuck
    assert took <= SHUTDOWN_TIMEOUT + EXIT_MARGIN, log.read_text()
    # The request cut short by the shutdown was answered: retry (another replica will serve it).
    assert answer.status_code == 503
    assert answer.headers["retry-after"]
    assert answer.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert "stopping" in answer.json()["errors"][0]["message"]
    # The lifespan's steps ended within their bounds; what was left (a driver's thread in a busy
    # wait) was ended by the watchdog, or had ended by itself.
    assert "Application shutdown complete" in log.read_text(), log.read_text()


async def test_a_request_failing_on_the_database_is_answered_and_its_keep_alive_connection_serves_on(
    database_url: str, tmp_path: Path
) -> None:
    quick = {"SQLITE_BUSY_TIMEOUT_SECONDS": "0.2", "DB_STATEMENT_TIMEOUT_SECONDS": "0.3"}
    async with serving(database_url, tmp_path, **quick) as (_, url, _log):
        # A sign-in writes its login outside GraphQL: what once was a bare 500 closing the connection.
        form = f"grant_type=password&username=alex%40demo.test&password={DEMO_PASSWORD}".encode()
        write = (
            "POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(form)}\r\n\r\n"
        ).encode() + form
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with writes_held(database_url, "session_family"):
                writer.write(write)
                await writer.drain()
                first = await _response(reader)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection
            await writer.drain()
            second = await _response(reader)
        finally:
            writer.close()
    assert first.startswith(b"HTTP/1.1 503"), first
    assert b"temporarily_unavailable" in first
    assert b"connection: close" not in first.lower()
    assert second.startswith(b"HTTP/1.1 200"), second


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def test_the_watchdog_ends_a_process_whose_shutdown_hangs_past_its_bound(tmp_path: Path) -> None:
    """The last resort of `ketafollow serve` (api.commands.service): from the first SIGTERM, a process still
    running SHUTDOWN_TIMEOUT_SECONDS later says so and exits with status 1."""
    script = tmp_path / "hangs.py"
    script.write_text(
        "import logging, signal, sys, time\n"
        "from api.commands.service import watch_shutdown\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "class Server:\n"
        "    def handle_exit(self, sig, frame):\n"
        "        with open('stopping', 'w') as mark:\n"
        "            mark.write('uvicorn was told')\n"
        "server = Server()\n"
        "watch_shutdown(server, 0.5)\n"
        "signal.signal(signal.SIGTERM, server.handle_exit)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)  # a shutdown that never ends\n"
    )
    process = subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPOSITORY)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert status == 1
    assert (tmp_path / "stopping").read_text() == "uvicorn was told"  # its own handler still runs
    assert process.stderr is not None
    assert "shutdown did not finish within SHUTDOWN_TIMEOUT_SECONDS (0.5 s)" in process.stderr.read()
