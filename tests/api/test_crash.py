"""Crash safety: a real `ketafollow serve` is killed (SIGKILL) in the middle of a stream of writes.

Patients keep sending check-ins and messages, each with an idempotency key; the server dies with
requests in flight; it is started again and the clients retry every write they did not hear back
about, with the same key and the same input. Afterwards every write is stored exactly once and
whole (its domain event, its audit row, its key, the thread's numbering), the SQLite file is
sound, and the survey jobs pick up what fell due while nothing ran.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from strawberry import relay
from tortoise.connection import get_connection

from api.auth.tokens import issue_access_token
from api.database import open_database
from api.settings import Environment, Settings
from models.identity.accounts import Patient, User
from models.kernel.audit import AuditAction, AuditEvent, AuditOutcome
from models.kernel.events import DomainEvent
from models.kernel.idempotency import IdempotencyKey
from models.messaging.messaging import Message, MessageThread, ThreadReadState, participants
from models.notifications.notifications import Notification, NotificationStatus
from models.reports.checkins import CheckIn
from models.surveys.schedule import POST_SESSION
from models.surveys.survey_records import AssignmentStatus, SurveyAssignment
from tests.conftest import start_logins

PATIENTS = ("alex@demo.test", "blair@demo.test")
ACKNOWLEDGED_BEFORE_THE_KILL = 30
# Bounds on waiting for something that must happen (the test fails when one runs out). The survey
# jobs run as the server starts, then every 30 s (delivery every 15 s): a survey that fell due
# during the downtime is announced well within 25 s, unless start-up skipped the catch-up.
START_WITHIN = 30.0
JOBS_WITHIN = 25.0
SECRET = "crash-test-secret-key-0123456789-abcdefghij"

CHECK_IN = """
mutation ($input: SubmitCheckInInput!) {
  submitCheckIn(input: $input) { result { __typename ... on CheckIn { id } ... on Error { message } } }
}
"""
SEND = """
mutation ($input: SendMessageInput!) {
  sendMessage(input: $input) { result { __typename ... on Message { id } ... on Error { message } } }
}
"""
NEW_THREAD = """
mutation ($input: CreateMessageThreadInput!) {
  createMessageThread(input: $input) { result { __typename ... on MessageThread { id } } }
}
"""


@dataclass
class Write:
    """One write as the client knows it: what it sent and, once acknowledged, the id it got."""

    email: str
    mutation: str
    variables: dict[str, Any]
    acknowledged_id: uuid.UUID | None = None
    retried: bool = False

    @property
    def operation(self) -> str:
        return "submitCheckIn" if self.mutation is CHECK_IN else "sendMessage"

    @property
    def key(self) -> str:
        return str(self.variables["input"]["idempotencyKey"])


@dataclass
class Server:
    """`ketafollow serve` as a child process on a loopback port, its output in a log file."""

    database_url: str
    port: int
    workdir: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    async def start(self) -> None:
        self.starts += 1
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "KETAFOLLOW_ENV": "test",
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": SECRET,
            "LOG_LEVEL": "WARNING",
        }
        with self.log.open("wb") as output:
            # The working directory is the test's own, so no developer's `.env` is read.
            self.process = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.workdir,
                env=environment,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_WITHIN
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(f"the server exited at start:\n{self.log.read_text()}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"the server was not ready within {START_WITHIN} s:\n{self.log.read_text()}")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), 10)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            await self.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(env=Environment.TEST, database_url=database_url, secret_key=SECRET)


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    running = Server(database_url, free_port(), tmp_path)
    yield running
    await running.stop()


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[None]:
    """The server's database, opened in the test too (to set the scene and to inspect it)."""
    async with open_database(settings):
        yield


@dataclass
class Patients:
    settings: Settings
    user_ids: dict[str, uuid.UUID]
    logins: dict[str, uuid.UUID]
    thread_ids: dict[str, str] = field(default_factory=dict)

    def headers(self, email: str) -> dict[str, str]:
        token = issue_access_token(
            self.settings,
            subject_kind="user",
            subject_id=self.user_ids[email],
            now=datetime.now(UTC),
            session_id=self.logins[email],
        )
        return {"Authorization": f"Bearer {token}"}


async def post(http: httpx.AsyncClient, patients: Patients, write: Write) -> uuid.UUID:
    """Send a write; its record's id when acknowledged. Transport errors propagate (no answer)."""
    response = await http.post(
        "/graphql", json={"query": write.mutation, "variables": write.variables}, headers=patients.headers(write.email)
    )
    assert response.status_code == 200, response.text
    [payload] = response.json()["data"].values()
    result = payload["result"]
    assert result["__typename"] in {"CheckIn", "Message"}, result
    return uuid.UUID(relay.GlobalID.from_id(result["id"]).node_id)


async def keep_writing(http: httpx.AsyncClient, patients: Patients, writes: list[Write], make: Iterator[Write]) -> None:
    """Send writes one after another until one goes unanswered (the server died)."""
    for write in make:
        writes.append(write)
        try:
            write.acknowledged_id = await post(http, patients, write)
        except httpx.TransportError:
            return


def check_ins(email: str, numbers: Iterator[int]) -> Iterator[Write]:
    for n in numbers:
        recorded = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        note = f"stream check-in {n}"
        data = {"idempotencyKey": f"crash-{uuid.uuid4()}", "recordedAt": recorded, "pain": n % 11, "note": note}
        yield Write(email, CHECK_IN, {"input": data})


def messages(email: str, thread_id: str, numbers: Iterator[int]) -> Iterator[Write]:
    for n in numbers:
        data = {"idempotencyKey": f"crash-{uuid.uuid4()}", "threadId": thread_id, "body": f"stream message {n}"}
        yield Write(email, SEND, {"input": data})


async def schedule_post_session_check(email: str, due: datetime) -> uuid.UUID:
    """A scheduled survey as session completion leaves it (POST-SESSION: sent even in quiet hours)."""
    patient = await Patient.get(user__email=email)
    assignment = await SurveyAssignment.create(
        patient=patient,
        instrument=POST_SESSION,
        status=AssignmentStatus.SCHEDULED,
        available_at=due,
        expires_at=due + timedelta(hours=6),
        notify_at=due,
        reminder_times=[],
    )
    return assignment.id


async def wait_until_announced(assignment_ids: list[uuid.UUID]) -> None:
    """Until the restarted server's jobs have opened the surveys and sent their notifications."""
    deadline = time.monotonic() + JOBS_WITHIN
    while time.monotonic() < deadline:
        links = [f"survey/{assignment_id}" for assignment_id in assignment_ids]
        sent = await Notification.filter(link__in=links, status=NotificationStatus.SENT).count()
        if sent >= len(assignment_ids):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the surveys were not announced within {JOBS_WITHIN} s after the restart")


async def test_writes_survive_a_killed_server_exactly_once_and_due_work_resumes(
    server: Server, settings: Settings, database: None
) -> None:
    users = {user.email: user.id for user in await User.filter(email__in=PATIENTS)}
    patients = Patients(settings, users, await start_logins(users, datetime.now(UTC)))
    due_before_start = await schedule_post_session_check("alex@demo.test", datetime.now(UTC) - timedelta(minutes=1))
    await server.start()

    writes: list[Write] = []
    numbers = itertools.count()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for email in PATIENTS:
            created = await http.post(
                "/graphql",
                json={"query": NEW_THREAD, "variables": {"input": {"subject": "Between sessions"}}},
                headers=patients.headers(email),
            )
            patients.thread_ids[email] = created.json()["data"]["createMessageThread"]["result"]["id"]
        streams = [
            asyncio.create_task(keep_writing(http, patients, writes, make))
            for email in PATIENTS
            for make in (check_ins(email, numbers), messages(email, patients.thread_ids[email], numbers))
        ]
        while sum(w.acknowledged_id is not None for w in writes) < ACKNOWLEDGED_BEFORE_THE_KILL:
            assert not any(stream.done() for stream in streams), "a stream stopped before the kill"
            await asyncio.sleep(0.005)
        # Due a moment after the kill: it falls due while no server runs.
        due_while_down = await schedule_post_session_check("alex@demo.test", datetime.now(UTC) + timedelta(seconds=1))
        await server.kill()
        await asyncio.gather(*streams)
    unanswered = [write for write in writes if write.acknowledged_id is None]
    # Each stream had one write in flight or about to go when the server died.
    assert len(unanswered) == len(streams)

    await asyncio.sleep(
        max(0.0, (await SurveyAssignment.get(id=due_while_down)).available_at.timestamp() - time.time())
    )
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for write in unanswered:
            write.acknowledged_id = await post(http, patients, write)
            write.retried = True
        # A retry of a write that was acknowledged answers the same record and writes nothing.
        for write in [w for w in writes if not w.retried][-2:]:
            assert await post(http, patients, write) == write.acknowledged_id

    await assert_each_check_in_stored_once_and_whole([w for w in writes if w.operation == "submitCheckIn"])
    await assert_each_message_stored_once_and_whole([w for w in writes if w.operation == "sendMessage"], patients)
    await wait_until_announced([due_before_start, due_while_down])
    await assert_each_survey_opened_and_announced_once([due_before_start, due_while_down])
    if settings.database_url.startswith("sqlite"):
        connection = get_connection("default")
        assert await connection.execute_query_dict("PRAGMA integrity_check") == [{"integrity_check": "ok"}]
        assert await connection.execute_query_dict("PRAGMA foreign_key_check") == []


async def assert_each_check_in_stored_once_and_whole(writes: list[Write]) -> None:
    ids = [write.acknowledged_id for write in writes]
    assert None not in ids and len(set(ids)) == len(ids)
    stored = await CheckIn.filter(note__startswith="stream check-in ")
    assert sorted(check_in.note for check_in in stored) == sorted(w.variables["input"]["note"] for w in writes)
    assert {check_in.id for check_in in stored} == set(ids)
    await assert_outbox_audit_and_keys("CheckIn", "submitCheckIn", writes)


async def assert_each_message_stored_once_and_whole(writes: list[Write], patients: Patients) -> None:
    ids = [write.acknowledged_id for write in writes]
    assert None not in ids and len(set(ids)) == len(ids)
    stored = await Message.filter(body__startswith="stream message ")
    assert sorted(message.body for message in stored) == sorted(w.variables["input"]["body"] for w in writes)
    assert {message.id for message in stored} == set(ids)
    await assert_outbox_audit_and_keys("Message", "sendMessage", writes)
    events = {
        event.resource_id: event for event in await DomainEvent.filter(type="Message.created", resource_id__in=ids)
    }
    for email in PATIENTS:
        thread = await MessageThread.get(id=relay.GlobalID.from_id(patients.thread_ids[email]).node_id)
        in_thread = await Message.filter(thread_id=thread.id).order_by("number")
        # Numbered 1..n without gap or repeat, the counter agrees, and the sender has read them all.
        assert [message.number for message in in_thread] == list(range(1, thread.message_count + 1))
        assert thread.last_message_at == max(message.sent_at for message in in_thread)
        mark = await ThreadReadState.get(thread_id=thread.id, user_id=patients.user_ids[email])
        assert mark.last_read_number == thread.message_count
        others = len(await participants(thread)) - 1
        for message in in_thread:
            assert events[message.id].payload["number"] == message.number
            assert events[message.id].payload["threadId"] == str(thread.id)
            # Everyone else in the thread (the care team's providers) is told, once each.
            told = await Notification.filter(dedup_key__startswith=f"message:{message.id}:").count()
            assert told == others


async def assert_outbox_audit_and_keys(resource_type: str, operation: str, writes: list[Write]) -> None:
    """Each stored record has exactly one domain event, one audit row and one idempotency key,
    and the key answers that record."""
    ids = [write.acknowledged_id for write in writes]
    events = Counter(
        event.resource_id for event in await DomainEvent.filter(type=f"{resource_type}.created", resource_id__in=ids)
    )
    assert events == Counter(ids)
    audited = Counter(
        uuid.UUID(event.resource_id)
        for event in await AuditEvent.filter(
            action=AuditAction.CREATE, resource_type=resource_type, resource_id__in=[str(i) for i in ids]
        )
    )
    assert audited == Counter(ids)
    assert await AuditEvent.filter(resource_id__in=[str(i) for i in ids], outcome=AuditOutcome.SUCCESS).count() == len(
        ids
    )
    keys = {key.key: key for key in await IdempotencyKey.filter(operation=operation, key__startswith="crash-")}
    assert set(keys) == {write.key for write in writes}
    for write in writes:
        assert keys[write.key].response["id"] == str(write.acknowledged_id)


async def assert_each_survey_opened_and_announced_once(assignment_ids: list[uuid.UUID]) -> None:
    for assignment_id in assignment_ids:
        assignment = await SurveyAssignment.get(id=assignment_id)
        assert assignment.status is AssignmentStatus.AVAILABLE
        announced = await Notification.filter(link=f"survey/{assignment_id}")
        assert [(n.kind, n.status) for n in announced] == [("SURVEY_AVAILABLE", NotificationStatus.SENT)]
        opened = await DomainEvent.filter(resource_id=assignment_id, type="SurveyAssignment.available").count()
        assert opened == 1
