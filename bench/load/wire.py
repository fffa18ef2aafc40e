"""A small HTTP/1.1 client over keep-alive loopback connections, and what it records.

Hand-written like the one of bench/harness.py (the home-screen benchmark), for the same reason: on a two-core
machine every millisecond the load generator spends is taken from the servers, and this client
costs a few tens of microseconds a request (it only writes a request and reads a
`Content-Length` body).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

# An error's first words are kept for the report, a few per operation.
KEPT_ERRORS = 3


class NoAnswer(Exception):
    """The connection failed or closed before a whole response came back."""


class ClosedBeforeAnswering(ConnectionError):
    """The connection ended before the first byte of a response."""


class Connection:
    """One keep-alive connection to one server, opened on first use and again after a failure."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, content_type: str, token: str | None) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        if token is not None:
            head += f"Authorization: Bearer {token}\r\n"
        request = head.encode() + b"\r\n" + body
        reused = self._writer is not None
        try:
            try:
                status, answer, keep_alive = await self._exchange(request)
            except ClosedBeforeAnswering:
                if not reused:
                    raise
                # The server closed the idle connection (uvicorn after 5 s) as we sent: the
                # request was not read, so it goes again on a new connection, as browsers do.
                self.close()
                status, answer, keep_alive = await self._exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as failure:
            self.close()
            raise NoAnswer(f"{type(failure).__name__}: {failure}") from failure
        if not keep_alive:
            self.close()
        return status, answer

    async def _exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        self._writer.write(request)
        return await _read_response(self._reader)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise ClosedBeforeAnswering("the server closed the connection")
    status = int(status_line.split()[1])
    length, keep_alive = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
        elif name == b"transfer-encoding":
            raise ValueError("a chunked response (this client reads Content-Length bodies only)")
    return status, await reader.readexactly(length), keep_alive


@dataclass
class OperationStats:
    latencies: list[float] = field(default_factory=list)  # seconds, every answered request
    errors: int = 0  # HTTP other than 200 and 429, GraphQL errors, a refusal in `result`, no answer
    rate_limited: int = 0  # HTTP 429
    examples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies)


class Recorder:
    """Per operation name: latencies, errors, 429s."""

    def __init__(self) -> None:
        self.operations: dict[str, OperationStats] = defaultdict(OperationStats)

    def ok(self, name: str, seconds: float) -> None:
        self.operations[name].latencies.append(seconds)

    def error(self, name: str, seconds: float | None, detail: str) -> None:
        stats = self.operations[name]
        if seconds is not None:
            stats.latencies.append(seconds)
        stats.errors += 1
        if len(stats.examples) < KEPT_ERRORS:
            stats.examples.append(detail[:300])

    def rate_limited(self, name: str, seconds: float) -> None:
        self.operations[name].latencies.append(seconds)
        self.operations[name].rate_limited += 1


class Session:
    """A signed-in user (or client) of the API: one connection per server, used in turn, the way a
    round-robin load balancer spreads requests over replicas."""

    def __init__(self, ports: list[int], recorder: Recorder, first: int = 0) -> None:
        self.connections = [Connection(port) for port in ports]
        self.recorder = recorder
        self.token: str | None = None
        self._turn = first

    def _next(self) -> Connection:
        connection = self.connections[self._turn % len(self.connections)]
        self._turn += 1
        return connection

    async def sign_in(self, form: dict[str, str]) -> None:
        """`POST /auth/token` (password or client_credentials grant): keeps the access token."""
        started = time.perf_counter()
        status, raw = await self._next().post(
            "/auth/token", urlencode(form).encode(), "application/x-www-form-urlencoded", None
        )
        self.recorder.ok("/auth/token (before the load)", time.perf_counter() - started)
        if status != 200:
            raise SystemExit(f"sign-in refused: {status} {raw[:300]!r}")
        self.token = json.loads(raw)["access_token"]

    async def graphql(
        self, name: str, query: str, variables: dict[str, Any] | None = None, *, expect: str | None = None
    ) -> dict[str, Any] | None:
        """The operation's `data`, or None after recording why not. `expect` is the `__typename`
        a mutation's `result` must have (anything else, e.g. `ValidationError`, is an error)."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        started = time.perf_counter()
        try:
            status, raw = await self._next().post("/graphql", body, "application/json", self.token)
        except NoAnswer as failure:
            self.recorder.error(name, None, f"no answer: {failure}")
            return None
        seconds = time.perf_counter() - started
        if status == 429:
            self.recorder.rate_limited(name, seconds)
            return None
        if status != 200:
            self.recorder.error(name, seconds, f"HTTP {status}: {raw[:200]!r}")
            return None
        answer = json.loads(raw)
        if answer.get("errors") or not answer.get("data"):
            self.recorder.error(name, seconds, f"GraphQL errors: {answer.get('errors')}")
            return None
        data: dict[str, Any] = answer["data"]
        if expect is not None:
            [payload] = data.values()
            if payload["result"]["__typename"] != expect:
                self.recorder.error(name, seconds, f"result: {payload['result']}")
                return None
        self.recorder.ok(name, seconds)
        return data

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
