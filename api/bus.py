"""The event bus (ARCHITECTURE.md decision 3) and the dispatcher that feeds it from the outbox.

Writes append `DomainEvent` rows in their own transactions; the dispatcher reads committed rows
in `seq` order and publishes them. Two buses:
- in-process (the default): every replica runs its own dispatcher over the shared table and
  publishes to its own subscribers, so an event committed through replica A reaches a subscriber
  on replica B through the database;
- Redis pub/sub (`EVENT_BUS_URL=redis://…`): dispatchers publish what follows a shared position
  (a row in the database) to Redis, then move the position with a conditional update; every
  replica relays what Redis delivers to its own subscribers, dropping any `seq` it has already
  delivered (publication is at least once: a crash republishes rather than loses).

On PostgreSQL a `seq` can commit after a higher one (two transactions racing). The dispatcher
remembers such gaps for a while and publishes a late event when it appears, so nothing is lost
(at worst it arrives slightly out of order). A client that reconnects asks for what it missed
with `since` (schema.live replays the outbox, then goes live) or through queries.

The bus never ends a stream (issue #20): when the Redis listener fails (a dropped connection, or
one silent for two heartbeats: a hung Redis), the replica marks the bus
degraded and relays new events straight from the outbox (polling by `seq`, as the in-process bus
does) until the listener is subscribed again; then it catches up from the outbox past the last
event it relayed and only then goes back to Redis alone. Events Redis carried while no listener
was there are therefore read from the database, never lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from models.kernel.events import BusEvent, DispatchCursor, DomainEvent

logger = logging.getLogger("ketafollow.bus")

QUEUE_SIZE = 1000
POLL_SECONDS = 0.2
BATCH = 200
GAP_MEMORY_SECONDS = 60.0
# A dispatcher starting on a shared bus publishes what is still unpublished back to this long
# before the newest event (Dispatcher.start_at_the_end).
LIVE_HORIZON = timedelta(minutes=10)
# Redis listener: a quiet connection is pinged every heartbeat and given up after two silent
# ones; reconnection attempts back off up to the maximum (the outbox covers the meantime).
HEARTBEAT_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 5.0
STARTUP_WAIT_SECONDS = 10.0
FALLBACK_LOOKBACK = 1000  # events, well within RECENT_SEQS
RECENT_SEQS = 10_000


class InProcessBus:
    """Fan-out to this process's subscribers. A subscriber too slow to keep 1,000 events queued
    is disconnected (its iterator ends) rather than slowing everyone down."""

    shared = False

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[BusEvent | None]] = set()
        # Publication is at least once (see Dispatcher): the same seq twice is delivered once.
        self._recent: collections.OrderedDict[int, None] = collections.OrderedDict()
        # The highest `seq` relayed to this process's subscribers: where a fallback starts.
        self.last_seq = 0

    @property
    def status(self) -> str:
        """For `/readyz`: "ok", or "degraded" while live events come from the outbox, not the bus."""
        return "ok"

    async def publish(self, event: BusEvent) -> None:
        self.deliver(event)

    def deliver(self, event: BusEvent) -> None:
        if event.seq in self._recent:
            return
        self._recent[event.seq] = None
        self.last_seq = max(self.last_seq, event.seq)
        while len(self._recent) > RECENT_SEQS:
            self._recent.popitem(last=False)
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._disconnect(queue)

    def _disconnect(self, queue: asyncio.Queue[BusEvent | None]) -> None:
        """End a slow subscriber's stream: its client resubscribes with `since` and catches up."""
        self._queues.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[BusEvent]]:
        queue: asyncio.Queue[BusEvent | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._queues.add(queue)

        async def events() -> AsyncIterator[BusEvent]:
            while (event := await queue.get()) is not None:
                yield event

        try:
            yield events()
        finally:
            self._queues.discard(queue)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for queue in list(self._queues):
            self._disconnect(queue)


class RedisBus(InProcessBus):
    """Publishes through Redis; relays every event Redis delivers to this process's subscribers."""

    shared = True

    def __init__(self, url: str, channel: str) -> None:
        super().__init__()
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Publication runs in the background dispatcher: a hung Redis fails it in seconds (the
        # dispatcher retries; its position moves only after a publication succeeded).
        self._redis = redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        # The listener's own connection never reconnects by itself: a silent reconnection would
        # skip what Redis carried meanwhile. Every drop reaches `_listen`, which catches up.
        name = "ketafollow-bus:" + "".join(c if c.isprintable() and not c.isspace() else "_" for c in channel)
        self._listening = redis.from_url(
            url, retry=Retry(NoBackoff(), 0), client_name=name, socket_connect_timeout=HEARTBEAT_SECONDS * 2
        )
        # Per deployment: a foreign event on our channel would be relayed, and its `seq` would
        # make the relay drop our own event of the same number as a repeat.
        self._channel = channel
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        # While the listener is away: relays the outbox to local subscribers (see the docstring).
        self._fallback: Dispatcher | None = None
        self._started_at: int | None = None
        self._polling: asyncio.Task[None] | None = None

    @property
    def status(self) -> str:
        return "degraded" if self._fallback is not None else "ok"

    async def publish(self, event: BusEvent) -> None:
        await self._redis.publish(self._channel, json.dumps(event.as_json()))

    async def start(self) -> None:
        try:
            latest = await DomainEvent.all().order_by("-seq").first()
            self.last_seq = self._started_at = latest.seq if latest else 0
        except Exception:  # no database (a bare bus): a fallback starts at the outbox's end
            logger.warning("event bus started without the outbox's position")
        self._listener = asyncio.create_task(self._listen())
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=STARTUP_WAIT_SECONDS)
        except TimeoutError:
            logger.error("the Redis event bus does not answer; starting degraded")
            self._degrade()

    async def _listen(self) -> None:
        """Relay Redis to local subscribers; on a lost or silent connection, log, relay from the
        outbox meanwhile and reconnect with back-off; once subscribed again, catch up, then stop
        polling."""
        delay = 0.5
        while True:
            pubsub = self._listening.pubsub()
            try:
                await asyncio.wait_for(pubsub.subscribe(self._channel), HEARTBEAT_SECONDS * 2)
                await self._confirmed(pubsub)
                # Subscribed: what Redis carries from now on is buffered for us. What it carried
                # before, while nobody here listened, is in the outbox: relay that first.
                await self._recover()
                self._ready.set()
                delay = 0.5
                await self._relay(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("lost the Redis event bus; relaying from the outbox, reconnecting in %.1f s", delay)
                self._degrade()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), HEARTBEAT_SECONDS)  # type: ignore[no-untyped-call]

    async def _confirmed(self, pubsub: Any) -> None:
        """Wait for Redis to confirm the subscription (until then a publication could pass us by)."""
        deadline = time.monotonic() + HEARTBEAT_SECONDS * 2
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=HEARTBEAT_SECONDS)
            if message is not None and message.get("type") == "subscribe":
                return
        raise ConnectionError("Redis did not confirm the event bus subscription")

    async def _relay(self, pubsub: Any) -> None:
        """Deliver what Redis sends; when it has been quiet for a heartbeat, ping it, and treat a
        connection that answers nothing for two heartbeats as lost (a hung Redis)."""
        heard = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=HEARTBEAT_SECONDS)
            if message is not None:
                heard = time.monotonic()
                if message.get("type") == "message":
                    self.deliver(BusEvent.from_json(json.loads(message["data"])))
                continue
            if time.monotonic() - heard > HEARTBEAT_SECONDS * 2:
                raise ConnectionError("the Redis event bus stopped answering")
            await asyncio.wait_for(pubsub.ping(), HEARTBEAT_SECONDS)

    def _degrade(self) -> None:
        if self._fallback is None:
            self._fallback = Dispatcher(_LocalRelay(self))
            # A little before the last event relayed: one that committed late (a lower `seq`)
            # and had not arrived yet is relayed now; those already relayed are dropped as repeats.
            self._fallback.cursor = (
                None if self._started_at is None else max(self._started_at, self.last_seq - FALLBACK_LOOKBACK)
            )  # None (a bus without the outbox's position): from the outbox's end
        if self._polling is None:
            self._polling = asyncio.create_task(self._fallback.run_forever(), name="event-bus-fallback")
        self._ready.set()  # a replica that starts during a Redis outage serves from the outbox

    async def _recover(self) -> None:
        """Relay everything past the last event relayed here, then leave the fallback."""
        fallback = self._fallback
        if fallback is None:
            return
        await self._stop_polling()
        while await fallback.run_once():
            pass
        self._fallback = None
        logger.info("the Redis event bus is back; caught up to event %d", self.last_seq)

    async def _stop_polling(self) -> None:
        if self._polling is not None:
            self._polling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._polling
            self._polling = None

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self._stop_polling()
        for client in (self._redis, self._listening):
            with contextlib.suppress(Exception):
                await client.aclose()
        await super().close()


class _LocalRelay(InProcessBus):
    """A dispatcher's target that hands events to one bus's local subscribers (the fallback)."""

    def __init__(self, bus: InProcessBus) -> None:
        super().__init__()
        self._bus = bus

    async def publish(self, event: BusEvent) -> None:
        self._bus.deliver(event)


def bus_check(bus: InProcessBus | None) -> str:
    """`/readyz`'s bus check: "ok", or "degraded" while live events are relayed from the outbox
    (the replica still serves and delivers; it is not a reason to stop sending it traffic)."""
    return "unavailable" if bus is None else bus.status


def make_bus(url: str | None, channel: str) -> InProcessBus:
    return RedisBus(url, channel) if url else InProcessBus()


class Dispatcher:
    """Publishes committed events in order (see the module docstring)."""

    def __init__(self, bus: InProcessBus) -> None:
        self.bus = bus
        self.cursor: int | None = None
        self.gaps: dict[int, float] = {}

    async def start_at_the_end(self) -> None:
        """Live subscribers want what happens from now on; history is for queries (and `since`).

        With a shared bus, other replicas may be running: events they committed and have not yet
        published (they poll every POLL_SECONDS) lie past the shared position, and skipping them
        would lose them for every live subscriber. So this dispatcher starts at the shared position,
        which it moves forward only past events older than LIVE_HORIZON before the newest one: those
        no running dispatcher left unpublished, and nobody was listening for them (after a full
        restart, a long backlog is history, not live news).
        """
        latest = await DomainEvent.all().order_by("-seq").first()
        if not self.bus.shared:
            self.cursor = latest.seq if latest else 0
            return
        position, _ = await DispatchCursor.get_or_create(name="bus", defaults={"last_seq": latest.seq if latest else 0})
        if latest is not None:
            stale = (
                await DomainEvent.filter(occurred_at__lt=latest.occurred_at - LIVE_HORIZON, seq__gt=position.last_seq)
                .order_by("-seq")
                .first()
            )
            if stale is not None:
                await DispatchCursor.filter(name="bus", last_seq__lt=stale.seq).update(last_seq=stale.seq)
                position = await DispatchCursor.get(name="bus")
        self.cursor = position.last_seq

    async def run_once(self) -> int:
        """One pass: publish what committed since the last one; returns how many were published."""
        if self.cursor is None:
            await self.start_at_the_end()
        assert self.cursor is not None
        published = await self._recover_gaps()
        start = self.cursor
        shared_at = None
        if self.bus.shared:
            shared_at = (await DispatchCursor.get(name="bus")).last_seq
            start = max(start, shared_at)
        events = list(await DomainEvent.filter(seq__gt=start).order_by("seq").limit(BATCH))
        if not events:
            self.cursor = start
            return published
        expected = start + 1
        for event in events:
            for missing in range(expected, event.seq):
                self.gaps.setdefault(missing, time.monotonic())
            expected = event.seq + 1
            await self.bus.publish(BusEvent.of(event))
        self.cursor = events[-1].seq
        if shared_at is not None:
            # Moved only after publishing: a crash mid-batch republishes (receivers drop repeats)
            # rather than losing events; two dispatchers racing both publish, one moves it.
            await DispatchCursor.filter(name="bus", last_seq=shared_at).update(last_seq=self.cursor)
        return published + len(events)

    async def _recover_gaps(self) -> int:
        if not self.gaps:
            return 0
        now = time.monotonic()
        self.gaps = {seq: seen for seq, seen in self.gaps.items() if now - seen < GAP_MEMORY_SECONDS}
        late = list(await DomainEvent.filter(seq__in=list(self.gaps)).order_by("seq"))
        for event in late:
            self.gaps.pop(event.seq, None)
            await self.bus.publish(BusEvent.of(event))
        return len(late)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database or Redis hiccup: log it and try again
                logger.exception("event dispatch failed; retrying")
            await asyncio.sleep(POLL_SECONDS)
