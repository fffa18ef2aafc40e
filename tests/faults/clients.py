"""The suite's clients: every HTTP answer recorded with how long it took and whether it had its
shape; patients whose writes carry idempotency keys and are retried until acknowledged; live and
resuming subscribers over a real WebSocket (graphql-transport-ws)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

CHECK_IN = """
mutation CheckIn($input: SubmitCheckInInput!) {
  submitCheckIn(input: $input) { result { __typename ... on CheckIn { id } ... on Error { message } } }
}
"""
SIDE_EFFECT = """
mutation Report($input: ReportSideEffectInput!) {
  reportSideEffect(input: $input) { result { __typename ... on SideEffectReport { id } ... on Error { message } } }
}
"""
SEND = """
mutation Send($input: SendMessageInput!) {
  sendMessage(input: $input) { result { __typename ... on Message { id } ... on Error { message } } }
}
"""
PROBE = "query Probe { threads(first: 1) { edges { node { id } } } }"  # signs in and reads: the database
MESSAGES = "subscription Live($t: ID!, $since: DateTime) { messageAdded(threadId: $t, since: $since) { id sentAt } }"
ALERTS = "subscription Alerts($since: DateTime) { alertRaised(since: $since) { id createdAt } }"
ALERT_STREAM = "alerts"  # the stream key of alertRaised (the others are thread ids)
PROTOCOL = Subprotocol("graphql-transport-ws")
# What a write is, what it answers with, and the marker column it is found by in the database.
KINDS = {
    "check-in": (CHECK_IN, "submitCheckIn", "CheckIn"),
    "side effect": (SIDE_EFFECT, "reportSideEffect", "SideEffectReport"),
    "message": (SEND, "sendMessage", "Message"),
}
RETRY_PAUSE = 0.25
THINK = 0.1  # between one acknowledged write and the next
MARKERS = itertools.count(1)


def node_id(global_id: str) -> str:
    """The UUID inside a Relay global id."""
    return base64.b64decode(global_id).decode().split(":", 1)[1]


class Phase:
    """Which part of the run it is (a scenario's name, or "steady"): what each write and answer is
    attributed to."""

    def __init__(self) -> None:
        self.label = "steady"


@dataclass
class Answer:
    """One HTTP exchange as a client saw it. `kind`: ok, unavailable (503 in its shape), limited
    (429 in its shape), not ready (/readyz 503), bad shape, no answer (refused, reset, closed),
    timeout (the client gave up)."""

    what: str
    replica: int
    started: float
    seconds: float
    status: int | None
    kind: str
    detail: str = ""
    phase: str = "steady"  # the part of the run it was sent in

    @property
    def in_shape(self) -> bool:
        return self.kind in {"ok", "unavailable", "limited", "not ready"}


def _json(response: httpx.Response) -> Any:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        return response.json()
    except ValueError:
        return None


def classify_graphql(response: httpx.Response) -> tuple[str, str]:
    """(kind, detail) of a `/graphql` answer: success, or a 503 whose GraphQL errors say
    SERVICE_UNAVAILABLE, or a 429 in JSON; anything else is out of shape."""
    body = _json(response)
    sample = f"{response.status_code} {response.headers.get('content-type', '-')} {response.text[:160]!r}"
    if body is None:
        return "bad shape", sample
    errors = body.get("errors") or []
    codes = {(error.get("extensions") or {}).get("code") for error in errors if isinstance(error, dict)}
    if response.status_code == 200 and body.get("data") and not errors:
        return "ok", ""
    if response.status_code == 503 and codes == {"SERVICE_UNAVAILABLE"}:
        return "unavailable", ""
    if response.status_code == 429:
        return "limited", ""
    return "bad shape", sample


class Api:
    """One HTTP client per replica; every answer lands in `answers`."""

    def __init__(self, ports: list[int], phase: Phase, client_wait: float) -> None:
        self.ports = ports
        self.phase = phase
        self.client_wait = client_wait
        self.answers: list[Answer] = []
        self.readiness: list[Answer] = []
        self._clients = [
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                timeout=httpx.Timeout(client_wait),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
            for port in ports
        ]

    async def graphql(
        self, replica: int, token: str, query: str, variables: dict[str, Any] | None = None, *, what: str
    ) -> dict[str, Any] | None:
        """The answer's `data` when it succeeded, else None (recorded either way)."""
        started, label = time.monotonic(), self.phase.label
        headers = {"Authorization": f"Bearer {token}"}
        try:
            response = await self._clients[replica].post(
                "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
            )
        except httpx.TimeoutException as failure:
            self._record(self.answers, what, replica, started, None, "timeout", repr(failure), label)
            return None
        except httpx.TransportError as failure:
            self._record(self.answers, what, replica, started, None, "no answer", repr(failure), label)
            return None
        kind, detail = classify_graphql(response)
        self._record(self.answers, what, replica, started, response.status_code, kind, detail, label)
        return response.json()["data"] if kind == "ok" else None

    async def ready(self, replica: int) -> Answer:
        """`GET /readyz`, recorded in `readiness`: 200 or 503, in JSON."""
        started, label = time.monotonic(), self.phase.label
        try:
            response = await self._clients[replica].get("/readyz")
        except httpx.TimeoutException as failure:
            return self._record(self.readiness, "/readyz", replica, started, None, "timeout", repr(failure), label)
        except httpx.TransportError as failure:
            return self._record(self.readiness, "/readyz", replica, started, None, "no answer", repr(failure), label)
        body = _json(response)
        if body is None or response.status_code not in (200, 503):
            kind = "bad shape"
        else:
            kind = "ok" if response.status_code == 200 else "not ready"
        detail = json.dumps(body.get("checks")) if isinstance(body, dict) else response.text[:160]
        return self._record(self.readiness, "/readyz", replica, started, response.status_code, kind, detail, label)

    def _record(
        self,
        into: list[Answer],
        what: str,
        replica: int,
        started: float,
        status: int | None,
        kind: str,
        detail: str,
        phase: str,
    ) -> Answer:
        answer = Answer(what, replica, started, time.monotonic() - started, status, kind, detail, phase)
        into.append(answer)
        return answer

    async def close(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients))


@dataclass
class Write:
    """One write as its client knows it: a marker unique to it (the check-in's or report's note,
    the message's body), the ids it was acknowledged with (more than one: a duplicate), the
    scenario during which it was first sent."""

    kind: str
    marker: str
    patient: str
    scenario: str
    thread: str = ""
    ids: set[str] = field(default_factory=set)
    attempts: int = 0
    refused: str = ""
    acknowledged_by: int | None = None  # replica index
    acknowledged_at: datetime | None = None

    @property
    def acknowledged(self) -> bool:
        return bool(self.ids)


@dataclass
class Patient:
    email: str
    token: str
    thread_id: str  # a Relay id
    writes: list[Write] = field(default_factory=list)


def _input(write: Write, key: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    if write.kind == "check-in":
        return {
            "idempotencyKey": key,
            "recordedAt": now.isoformat(),
            "pain": 3,
            "mood": 6,
            "sleep": 6,
            "note": write.marker,
        }
    if write.kind == "side effect":
        onset = (now - timedelta(minutes=10)).isoformat()
        # Moderate: an alert for the care team (each report its own), no hold of the plan.
        return {"idempotencyKey": key, "code": "NAUSEA", "grade": "MODERATE", "onsetAt": onset, "note": write.marker}
    return {"idempotencyKey": key, "threadId": write.thread, "body": write.marker}


async def submit(api: Api, patient: Patient, write: Write, first_replica: int, give_up_at: float) -> None:
    """Send `write` until it is acknowledged (same key, same input, the next replica each time), it
    is refused, or `give_up_at` passes."""
    query, field_name, typename = KINDS[write.kind]
    variables = {"input": _input(write, f"fault-{uuid.uuid4()}")}
    replica = first_replica
    while time.monotonic() < give_up_at:
        write.attempts += 1
        data = await api.graphql(replica % len(api.ports), patient.token, query, variables, what=write.kind)
        replica += 1
        if data is not None:
            result = data[field_name]["result"]
            if result["__typename"] == typename:
                write.ids.add(node_id(result["id"]))
                write.acknowledged_by = (replica - 1) % len(api.ports)
                write.acknowledged_at = datetime.now(UTC)
                return
            write.refused = json.dumps(result)[:200]
            return
        await asyncio.sleep(RETRY_PAUSE)


async def patient_loop(
    api: Api, patient: Patient, phase: Phase, stop: asyncio.Event, give_up_at: float, seed: int
) -> None:
    """Writes one after another, in turn check-in, side-effect report, message, until `stop`."""
    order = ["message", "check-in", "message", "side effect"]
    kinds = itertools.cycle([*order[seed % 4 :], *order[: seed % 4]])
    replica = seed
    while not stop.is_set():
        kind = next(kinds)
        marker = f"fault {kind} {next(MARKERS)} ({phase.label})"
        write = Write(kind, marker, patient.email, phase.label, thread=patient.thread_id)
        patient.writes.append(write)
        await submit(api, patient, write, replica, give_up_at)
        replica += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), THINK)


@dataclass
class Ending:
    """A stream or socket that ended under a subscriber: when, during which part of the run, which
    operation (None: the socket), why, and the error codes the server sent with it."""

    at: float
    scenario: str
    operation: str | None
    why: str
    codes: frozenset[str] = frozenset()


RESUBSCRIBE_PAUSE = 0.5


class Subscriber:
    """A provider's socket with `messageAdded` on each of some threads and `alertRaised`, written
    like the client in docs/api.md: when a stream ends (`complete`, errors) or the socket is lost, it
    subscribes again with `since` (per stream, the latest `sentAt` or `createdAt` it saw there;
    before any, when it first subscribed) and deduplicates by id. Every ending is recorded. The
    `live` one is never dropped on purpose; the other is told when to drop (`drop()`) and when to
    reconnect (`resume()`), on the replicas in turn."""

    def __init__(
        self, name: str, ports: list[int], token: str, team: str, threads: list[str], phase: Phase, *, live: bool
    ):
        self.name = name
        self.ports = ports
        self.token = token
        self.team = team  # whose alerts it sees
        self.threads = threads
        self.streams = [*threads, ALERT_STREAM]  # operation n is streams[n]
        self.phase = phase
        self.live = live
        self.received: dict[str, int] = {}  # message or alert id (a UUID) -> copies
        self.endings: list[Ending] = []
        self.refusals: list[str] = []
        self.reconnects = 0
        # When it subscribed (wall clock), the since it gave per stream, during which part of the run.
        self.history: list[tuple[datetime, dict[str, str | None], str]] = []
        self.latest: dict[str, str] = {}  # stream -> the latest sentAt or createdAt seen in it
        # Every subscribe sent after the first: (wall clock, operation, since, phase).
        self.resubscriptions: list[tuple[datetime, str, str | None, str]] = []
        self.first_subscribed: str | None = None
        self._errors: dict[str, set[str]] = {}  # operation -> codes of the errors it sent before its end
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._closing = False
        self._turn = 0

    def since(self, stream: str) -> str | None:
        return self.latest.get(stream, self.first_subscribed)

    async def open(self, replica: int | None = None, *, resume: bool = False, within: float = 30.0) -> None:
        """Connect (retrying until `within` runs out), sign in, subscribe to every thread (with
        since when resuming)."""
        deadline = time.monotonic() + within
        while True:
            port = self.ports[(replica if replica is not None else self._turn) % len(self.ports)]
            self._turn += 1
            try:
                await asyncio.wait_for(self._connect(port, resume), timeout=10)
                return
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, RuntimeError) as failure:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} could not subscribe within {within:.0f} s: {failure!r}") from None
                await asyncio.sleep(0.5)

    async def _connect(self, port: int, resume: bool) -> None:
        if self.first_subscribed is None:
            self.first_subscribed = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        socket = await connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=[PROTOCOL], open_timeout=5)
        sinces = {stream: self.since(stream) if resume else None for stream in self.streams}
        try:
            await socket.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}})
            )
            ack = json.loads(await socket.recv())
            if ack.get("type") != "connection_ack":
                raise RuntimeError(f"no connection_ack: {ack}")
            for number, stream in enumerate(self.streams):
                await socket.send(json.dumps(self._subscribe(str(number), stream, sinces[stream])))
        except BaseException:
            await socket.close()
            raise
        self.history.append((datetime.now(UTC), sinces, self.phase.label))
        self._socket = socket
        self._closing = False
        self._reader = asyncio.create_task(self._read(socket))

    def _subscribe(self, operation: str, stream: str, since: str | None) -> dict[str, Any]:
        if stream == ALERT_STREAM:
            query, variables = ALERTS, {"since": since}
        else:
            query, variables = MESSAGES, {"t": stream, "since": since}
        return {"id": operation, "type": "subscribe", "payload": {"query": query, "variables": variables}}

    async def _read(self, socket: ClientConnection) -> None:
        try:
            async for raw in socket:
                message = json.loads(raw)
                kind, operation = message.get("type"), str(message.get("id"))
                if kind == "ping":
                    await socket.send(json.dumps({"type": "pong"}))
                elif kind == "next":
                    payload = message["payload"]
                    if payload.get("errors"):
                        self.refusals.append(json.dumps(payload["errors"])[:300])
                        self._errors.setdefault(operation, set()).update(
                            str((error.get("extensions") or {}).get("code")) for error in payload["errors"]
                        )
                        continue
                    [event] = payload["data"].values()
                    record = node_id(event["id"])
                    self.received[record] = self.received.get(record, 0) + 1
                    stream = self.streams[int(operation)]
                    moment = event.get("sentAt") or event["createdAt"]
                    if moment > self.latest.get(stream, ""):
                        self.latest[stream] = moment
                elif kind in {"complete", "error"}:
                    codes = frozenset(self._errors.pop(operation, set()))
                    why = f"{kind} of operation {operation}: {message.get('payload')}"
                    self.endings.append(Ending(time.monotonic(), self.phase.label, operation, why, codes))
                    task = asyncio.create_task(self._resubscribe(socket, operation))
                    self._pending.add(task)
                    task.add_done_callback(self._pending.discard)
        except ConnectionClosed as closed:
            if not self._closing:
                self.endings.append(Ending(time.monotonic(), self.phase.label, None, f"socket closed: {closed}"))
        if not self._closing:
            asyncio.get_running_loop().call_soon(self._reopen_later)

    async def _resubscribe(self, socket: ClientConnection, operation: str) -> None:
        await asyncio.sleep(RESUBSCRIBE_PAUSE)
        stream = self.streams[int(operation)]
        since = self.since(stream)
        with contextlib.suppress(ConnectionClosed):
            await socket.send(json.dumps(self._subscribe(operation, stream, since)))
            self.resubscriptions.append((datetime.now(UTC), operation, since, self.phase.label))

    def _reopen_later(self) -> None:
        self._reader = asyncio.create_task(self._reopen())

    async def _reopen(self) -> None:
        self.reconnects += 1
        await asyncio.sleep(RESUBSCRIBE_PAUSE)
        with contextlib.suppress(RuntimeError):
            await self.open(resume=True, within=60)

    async def drop(self) -> None:
        """Close the socket (the client went into a tunnel)."""
        self._closing = True
        for task in list(self._pending):
            task.cancel()
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._socket = self._reader = None

    async def resume(self, *, within: float = 30.0) -> None:
        """Reconnect with `since`, on the next replica."""
        self.reconnects += 1
        await self.open(resume=True, within=within)

    async def close(self) -> None:
        await self.drop()
