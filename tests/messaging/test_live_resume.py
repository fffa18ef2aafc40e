"""Live updates that resume and survive the bus: `since` replays what a client missed from the
outbox, then goes live; a Redis outage never ends a stream and loses no event (issue #20)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from httpx_ws import AsyncWebSocketSession
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from api.bus import LIVE_HORIZON, Dispatcher, InProcessBus
from api.database import use_database
from api.settings import Settings
from jobs import surveys as survey_jobs
from models.kernel.audit import AuditAction, AuditEvent, AuditOutcome
from models.kernel.clock import ManualClock
from models.kernel.events import BusEvent, DomainEvent, Operation, record_event
from tests.conftest import REDIS_URL, Tokens, client_of, job_env, redis_answers, running_app
from tests.support.clinical import REPORT_SIDE_EFFECT, complete, start
from tests.support.graphql import gql
from tests.support.messaging import SEND, next_payload, subscribed, thread_of
from tests.support.sockets import PROTOCOL, served

MESSAGES = "subscription($t: ID!, $since: DateTime) { messageAdded(threadId: $t, since: $since) { id body } }"
ALERTS = "subscription($since: DateTime) { alertRaised(since: $since) { summary patient { givenName } } }"
SURVEYS = "subscription($since: DateTime) { surveyAvailable(since: $since) { instrument status } }"


async def send(client: httpx.AsyncClient, token: str, thread: str, body: str) -> None:
    reply = await gql(client, SEND, {"input": {"threadId": thread, "body": body}}, token=token)
    assert reply["data"]["sendMessage"]["result"]["__typename"] == "Message", reply


async def bodies(socket: AsyncWebSocketSession, count: int) -> list[str]:
    return [(await next_payload(socket))["data"]["messageAdded"]["body"] for _ in range(count)]


async def nothing_more(socket: AsyncWebSocketSession) -> None:
    try:
        extra = await socket.receive_json(timeout=0.8)
    except TimeoutError:
        return
    raise AssertionError(f"nothing more was expected, got {extra}")


async def test_a_client_that_resubscribes_with_since_gets_every_missed_message_in_order_then_live_ones(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    thread = await thread_of(app, "alex@demo.test")
    alex = tokens.user("alex@demo.test")
    rivera = tokens.user("dr.rivera@demo.test")
    async with subscribed(app, rivera, MESSAGES, {"t": thread}) as before_the_drop:
        await asyncio.sleep(0.1)
        await send(client, alex, thread, "seen before the drop")
        assert await bodies(before_the_drop, 1) == ["seen before the drop"]
    clock.advance(timedelta(minutes=5))
    last_seen = clock.now()
    for body in ("missed one", "missed two", "missed three"):
        await send(client, alex, thread, body)
        clock.advance(timedelta(seconds=1))
    variables = {"t": thread, "since": last_seen.isoformat()}
    async with subscribed(app, rivera, MESSAGES, variables) as provider:
        replayed = await bodies(provider, 3)
        await send(client, alex, thread, "live")
        live = await bodies(provider, 1)
        await nothing_more(provider)
    assert replayed == ["missed one", "missed two", "missed three"]
    assert live == ["live"]


SEEN = "subscription($t: ID!, $since: DateTime) { messageAdded(threadId: $t, since: $since) { id body sentAt } }"


async def messages_until(socket: ClientConnection, last: str) -> list[dict[str, Any]]:
    """The messages a socket receives up to the one whose body is `last` (at most 20)."""
    received: list[dict[str, Any]] = []
    while not received or received[-1]["body"] != last:
        assert len(received) < 20, received
        frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=5))
        assert frame["type"] == "next", frame
        received.append(frame["payload"]["data"]["messageAdded"])
    return received


async def all_published(app: Starlette) -> None:
    """Wait until the app's bus has published every event stored so far."""
    with use_database(app.state.database):
        last = await DomainEvent.all().order_by("-seq").first()
    assert last is not None
    for _ in range(100):
        if app.state.bus.last_seq >= last.seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the bus never published event {last.seq}")


async def test_a_client_whose_socket_is_lost_mid_stream_resumes_from_the_last_event_it_saw(
    settings: Settings, clock: ManualClock, tokens: Tokens, app: Starlette
) -> None:
    """What the client of docs/api.md does: its socket is lost (the TCP connection is gone: no close
    frame, no `complete`) while messages keep coming; it reconnects with `since` = the `sentAt` of
    the last message it received, drops repeats by `id`, and has every message of the outage, in
    order, then the live ones. Over real TCP (uvicorn on a loopback port)."""
    thread = await thread_of(app, "alex@demo.test")
    alex = tokens.user("alex@demo.test")
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {tokens.user('dr.rivera@demo.test')}"}}

    async def follow(since: str | None) -> ClientConnection:
        socket = await connect(server.ws_url.replace("http", "ws", 1), subprotocols=[Subprotocol(PROTOCOL)])
        await socket.send(json.dumps(init))
        assert json.loads(await asyncio.wait_for(socket.recv(), timeout=5))["type"] == "connection_ack"
        payload = {"query": SEEN, "variables": {"t": thread, "since": since}}
        await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        await asyncio.sleep(0.2)  # the subscription listens
        return socket

    clock.advance(timedelta(minutes=5))  # the demo thread's messages are older than the replay's overlap
    async with served(settings, clock) as server:
        first = await follow(None)
        await send(server.http, alex, thread, "seen before the loss")
        [seen] = await messages_until(first, "seen before the loss")
        first.transport.abort()  # the socket is lost mid-stream
        for body in ("raised while away", "raised while away, too"):
            clock.advance(timedelta(seconds=20))
            await send(server.http, alex, thread, body)
        await all_published(server.app)  # gone out live, to nobody: only a replay brings them back
        clock.advance(timedelta(seconds=20))
        second = await follow(seen["sentAt"])
        try:
            resumed = await messages_until(second, "raised while away, too")
            await send(server.http, alex, thread, "live again")
            resumed += await messages_until(second, "live again")
        finally:
            await second.close()
    shown = {seen["id"]: seen}
    for message in resumed:
        shown.setdefault(message["id"], message)
    assert [m["body"] for m in shown.values()] == [
        "seen before the loss",
        "raised while away",
        "raised while away, too",
        "live again",
    ]
    assert [m["sentAt"] for m in shown.values()] == sorted(m["sentAt"] for m in shown.values())


async def test_an_event_stored_after_a_later_one_is_replayed_to_a_client_that_saw_the_later_one(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    """Two requests at once on two replicas: the one that started first commits last, so its event
    has the earlier time and the higher seq. A client that saw the other one and resumes with its
    time still gets it (the replay overlaps; the client drops repeats by id)."""
    thread = await thread_of(app, "alex@demo.test")
    alex = tokens.user("alex@demo.test")
    rivera = tokens.user("dr.rivera@demo.test")
    started = clock.now()
    clock.set(started + timedelta(seconds=2))
    await send(client, alex, thread, "committed first, started second")
    seen = clock.now()
    clock.set(started + timedelta(seconds=1))
    await send(client, alex, thread, "started first, committed second")
    clock.set(started + timedelta(seconds=3))
    await all_published(app)  # both already went out live, before this client subscribes
    async with subscribed(app, rivera, MESSAGES, {"t": thread, "since": seen.isoformat()}) as provider:
        replayed = await bodies(provider, 2)
        await nothing_more(provider)
    assert replayed == ["committed first, started second", "started first, committed second"]


async def test_alerts_of_other_care_teams_are_never_replayed(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    since = clock.now()
    report = {"code": "SHORTNESS_OF_BREATH", "grade": "MILD", "onsetAt": clock.now().isoformat()}
    await gql(client, REPORT_SIDE_EFFECT, {"input": report}, token=tokens.user("alex@demo.test"))
    variables = {"since": since.isoformat()}
    async with (
        subscribed(app, tokens.user("dr.rivera@demo.test"), ALERTS, variables) as rivera,
        subscribed(app, tokens.user("dr.okafor@demo.test"), ALERTS, variables) as okafor,
    ):
        payload = await next_payload(rivera)
        await nothing_more(okafor)
        await nothing_more(rivera)
    assert payload["data"]["alertRaised"] == {
        "summary": "Shortness of breath reported as MILD.",
        "patient": {"givenName": "Alex"},
    }


async def test_a_patient_resubscribing_gets_the_survey_that_opened_while_away_and_no_one_elses(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh("alex@demo.test")
    session = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(hours=3))
    await complete(client, alex, session["id"])
    clock.advance(timedelta(hours=2))
    since = clock.now()
    with use_database(app.state.database):
        await survey_jobs.open_due_surveys(job_env(clock))
    variables = {"since": since.isoformat()}
    async with (
        subscribed(app, str(alex), SURVEYS, variables) as patient,
        subscribed(app, str(tokens.fresh("blair@demo.test")), SURVEYS, variables) as other,
    ):
        payload = await next_payload(patient)
        await nothing_more(other)
    assert payload["data"]["surveyAvailable"] == {"instrument": "POST-SESSION", "status": "AVAILABLE"}


@pytest.mark.parametrize(
    ("since", "message"),
    [
        (
            "8 days ago",
            "since is older than the 7-day replay window: read what you missed through queries,"
            " then subscribe again without since",
        ),
        ("no time zone", "since needs a time zone (an ISO 8601 time with an offset, e.g. Z)"),
    ],
)
async def test_a_since_the_outbox_will_not_replay_is_refused_naming_the_field(
    app: Starlette, tokens: Tokens, clock: ManualClock, since: str, message: str
) -> None:
    moment = clock.now() - timedelta(days=8) if since == "8 days ago" else clock.now().replace(tzinfo=None)
    thread = await thread_of(app, "alex@demo.test")
    variables = {"t": thread, "since": moment.isoformat()}
    async with subscribed(app, tokens.user("dr.rivera@demo.test"), MESSAGES, variables) as provider:
        answer = await provider.receive_json(timeout=5)
    assert answer["type"] == "next", answer
    assert [(error["message"], error["extensions"]["code"]) for error in answer["payload"]["errors"]] == [
        (message, "BAD_USER_INPUT")
    ]


class CuttableProxy:
    """A loopback TCP proxy in front of Redis that a test cuts (closing every connection and
    refusing new ones) and restores on the same port, or freezes (connections stay open, nothing
    passes: a hung Redis) and thaws."""

    def __init__(self, target_port: int = 6379) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        sink.close()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


@contextlib.asynccontextmanager
async def proxied_redis() -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


async def bus_check(client: httpx.AsyncClient) -> Any:
    return (await client.get("/readyz")).json()["checks"]["bus"]


async def until_bus_is(client: httpx.AsyncClient, wanted: str) -> None:
    for _ in range(600):
        if await bus_check(client) == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never said bus {wanted}")


@pytest.mark.parametrize("fault", ["cut", "hang"])
async def test_a_redis_outage_neither_ends_a_stream_nor_loses_an_event_raised_during_it(
    settings: Settings, clock: ManualClock, tokens: Tokens, app: Starlette, fault: str
) -> None:
    if not redis_answers():
        pytest.skip("no Redis on 127.0.0.1:6379 (CI has one)")
    thread = await thread_of(app, "alex@demo.test")
    alex = tokens.user("alex@demo.test")
    async with proxied_redis() as proxy:
        shared = replace(
            settings,
            event_bus_url=f"redis://127.0.0.1:{proxy.port}/0",
            event_bus_channel=f"kf-test:{uuid.uuid4().hex[:12]}:events",
        )
        async with (
            running_app(shared, clock) as served,
            client_of(served) as http,
            subscribed(served, tokens.user("dr.rivera@demo.test"), MESSAGES, {"t": thread}) as provider,
        ):
            await asyncio.sleep(0.3)
            await send(http, alex, thread, "before the outage")
            before = await bodies(provider, 1)
            if fault == "cut":
                await proxy.cut()
            else:
                proxy.freeze()
            await until_bus_is(http, "degraded")
            assert (await http.get("/readyz")).status_code == 200  # degraded still serves
            for body in ("during one", "during two"):
                await send(http, alex, thread, body)
            during = await bodies(provider, 2)
            if fault == "cut":
                await proxy.start()
            else:
                proxy.thaw()
            await until_bus_is(http, "ok")
            await send(http, alex, thread, "after the outage")
            after = await bodies(provider, 1)
            await nothing_more(provider)
    assert before == ["before the outage"]
    assert during == ["during one", "during two"]
    assert after == ["after the outage"]


async def test_a_killed_listener_connection_does_not_end_the_stream(
    settings: Settings, clock: ManualClock, tokens: Tokens, app: Starlette
) -> None:
    """Redis drops the replica's listening connection (CLIENT KILL on this test's channel only)."""
    if not redis_answers():
        pytest.skip("no Redis on 127.0.0.1:6379 (CI has one)")
    import redis.asyncio as redis

    thread = await thread_of(app, "alex@demo.test")
    alex = tokens.user("alex@demo.test")
    channel = f"kf-test:{uuid.uuid4().hex[:12]}:events"
    shared = replace(settings, event_bus_url=REDIS_URL, event_bus_channel=channel)
    admin = redis.from_url(REDIS_URL)
    try:
        async with (
            running_app(shared, clock) as served,
            client_of(served) as http,
            subscribed(served, tokens.user("dr.rivera@demo.test"), MESSAGES, {"t": thread}) as provider,
        ):
            await asyncio.sleep(0.3)
            killed = 0
            for line in await admin.client_list():
                if line.get("name") == f"ketafollow-bus:{channel}":
                    await admin.client_kill_filter(_id=line["id"])
                    killed += 1
            for body in ("right after the drop", "a moment later"):
                await send(http, alex, thread, body)
            received = await bodies(provider, 2)
            await nothing_more(provider)
    finally:
        await admin.aclose()
    assert killed == 1
    assert received == ["right after the drop", "a moment later"]


async def test_a_replayed_alert_is_audited_as_its_own_request_like_a_live_one(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    since = clock.now()
    report = {"code": "SHORTNESS_OF_BREATH", "grade": "MILD", "onsetAt": clock.now().isoformat()}
    await gql(client, REPORT_SIDE_EFFECT, {"input": report}, token=tokens.user("alex@demo.test"))
    query = "subscription Resume($since: DateTime) { alertRaised(since: $since) { summary patient { givenName } } }"
    async with subscribed(app, tokens.user("dr.rivera@demo.test"), query, {"since": since.isoformat()}) as rivera:
        await next_payload(rivera)
    with use_database(app.state.database):
        rows = await AuditEvent.filter(operation="Resume", resource_type="Alert")
    assert [(row.action, row.outcome, row.request_id.count(".")) for row in rows] == [
        (AuditAction.READ, AuditOutcome.SUCCESS, 2)  # <socket>.<operation>.<event>
    ]
    assert rows[0].patient_id is not None


async def test_a_replica_that_starts_while_redis_is_away_serves_and_delivers_from_the_outbox(
    settings: Settings, clock: ManualClock, tokens: Tokens, app: Starlette
) -> None:
    if not redis_answers():
        pytest.skip("no Redis on 127.0.0.1:6379 (CI has one)")
    thread = await thread_of(app, "alex@demo.test")
    alex = tokens.user("alex@demo.test")
    async with proxied_redis() as proxy:
        await proxy.cut()
        shared = replace(
            settings,
            event_bus_url=f"redis://127.0.0.1:{proxy.port}/0",
            event_bus_channel=f"kf-test:{uuid.uuid4().hex[:12]}:events",
        )
        async with (
            running_app(shared, clock) as served,
            client_of(served) as http,
            subscribed(served, tokens.user("dr.rivera@demo.test"), MESSAGES, {"t": thread}) as provider,
        ):
            assert await bus_check(http) == "degraded"
            await asyncio.sleep(0.3)
            await send(http, alex, thread, "while Redis is away")
            during = await bodies(provider, 1)
            await proxy.start()
            await until_bus_is(http, "ok")
            await send(http, alex, thread, "once it is back")
            after = await bodies(provider, 1)
            await nothing_more(provider)
    assert (during, after) == (["while Redis is away"], ["once it is back"])


class _SharedRecorder(InProcessBus):
    """A shared bus (as Redis is) that records what a dispatcher publishes to it."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.published: list[int] = []

    async def publish(self, event: BusEvent) -> None:
        self.published.append(event.seq)


async def _event(clock: ManualClock) -> int:
    event = await record_event(
        "Test.happened",
        resource_type="Test",
        resource_id=uuid.uuid4(),
        operation=Operation.CREATED,
        version=1,
        now=clock.now(),
    )
    return event.seq


async def test_a_replica_starting_beside_a_running_one_skips_no_event_the_running_one_has_not_published(
    app: Starlette, clock: ManualClock
) -> None:
    """A deploy or a scale-up: replica B starts while A runs; an event A committed but had not yet
    published (A polls every POLL_SECONDS) is published, not stepped over."""
    running, starting = _SharedRecorder(), _SharedRecorder()
    with use_database(app.state.database):
        a = Dispatcher(running)
        await a.start_at_the_end()
        unpublished = await _event(clock)
        b = Dispatcher(starting)
        await b.start_at_the_end()
        await b.run_once()
        await a.run_once()
        assert unpublished in running.published + starting.published
        after = await _event(clock)
        await a.run_once()
        await b.run_once()
        assert after in running.published + starting.published


async def test_after_a_full_restart_only_the_last_minutes_of_a_backlog_are_published_live(
    app: Starlette, clock: ManualClock
) -> None:
    with use_database(app.state.database):
        first = Dispatcher(_SharedRecorder())
        await first.start_at_the_end()  # the shared position, at the end of the outbox
        old = await _event(clock)
        clock.advance(LIVE_HORIZON + timedelta(minutes=5))  # every replica down meanwhile
        recent = [await _event(clock) for _ in range(2)]
        restarted = _SharedRecorder()
        dispatcher = Dispatcher(restarted)
        await dispatcher.start_at_the_end()
        await dispatcher.run_once()
    assert restarted.published == recent  # the recent ones live; the old one is history (since)
    assert old not in restarted.published
