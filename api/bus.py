"""The event bus (ARCHITECTURE.md decision 3) and the dispatcher that feeds it from the outbox.

Writes append `DomainEvent` rows in their own transactions; the dispatcher reads committed rows
in `seq` order and publishes them. Two buses:
- in-process (the default): every replica runs its own dispatcher over the shared table and
  publishes to its own subscribers, so an event committed through replica A reaches a subscriber
  on replica B through the database;
- Redis pub/sub (`EVENT_BUS_URL=redis://…`): one dispatcher at a time claims a range of events
  (a conditional update on a shared cursor row) and publishes it to Redis; every replica relays
  what Redis delivers to its own subscribers.

On PostgreSQL a `seq` can commit after a higher one (two transactions racing). The dispatcher
remembers such gaps for a while and publishes a late event when it appears, so nothing is lost
(at worst it arrives slightly out of order). A client that reconnects asks for what it missed
through queries (`messages(after:)`, `alerts`), which read the database, not the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from models.events import BusEvent, DispatchCursor, DomainEvent

logger = logging.getLogger("ketafollow.bus")

CHANNEL = "ketafollow:events"
QUEUE_SIZE = 1000
POLL_SECONDS = 0.2
BATCH = 200
GAP_MEMORY_SECONDS = 60.0


class InProcessBus:
    """Fan-out to this process's subscribers. A subscriber too slow to keep 1,000 events queued
    is disconnected (its iterator ends) rather than slowing everyone down."""

    shared = False

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[BusEvent | None]] = set()

    async def publish(self, event: BusEvent) -> None:
        self.deliver(event)

    def deliver(self, event: BusEvent) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
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
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._queues.clear()


class RedisBus(InProcessBus):
    """Publishes through Redis; relays every event Redis delivers to this process's subscribers."""

    shared = True

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def publish(self, event: BusEvent) -> None:
        await self._redis.publish(CHANNEL, json.dumps(event.as_json()))

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(CHANNEL)
        self._ready.set()
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self.deliver(BusEvent.from_json(json.loads(message["data"])))
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._redis.aclose()
        await super().close()


def make_bus(url: str | None) -> InProcessBus:
    return RedisBus(url) if url else InProcessBus()


class Dispatcher:
    """Publishes committed events in order (see the module docstring)."""

    def __init__(self, bus: InProcessBus) -> None:
        self.bus = bus
        self.cursor: int | None = None
        self.gaps: dict[int, float] = {}

    async def start_at_the_end(self) -> None:
        """Live subscribers want what happens from now on; history is for queries."""
        latest = await DomainEvent.all().order_by("-seq").first()
        self.cursor = latest.seq if latest else 0
        if self.bus.shared:
            await DispatchCursor.get_or_create(name="bus", defaults={"last_seq": self.cursor})

    async def run_once(self) -> int:
        """One pass: publish what committed since the last one; returns how many were published."""
        if self.cursor is None:
            await self.start_at_the_end()
        assert self.cursor is not None
        published = await self._recover_gaps()
        start = self.cursor
        if self.bus.shared:
            shared = await DispatchCursor.get(name="bus")
            start = max(start, shared.last_seq)
        events = list(await DomainEvent.filter(seq__gt=start).order_by("seq").limit(BATCH))
        if not events:
            return published
        if self.bus.shared:
            # Claim the range: of two dispatchers, exactly one moves the shared cursor.
            claimed = await DispatchCursor.filter(name="bus", last_seq=start).update(last_seq=events[-1].seq)
            if claimed != 1:
                return published
        expected = start + 1
        for event in events:
            for missing in range(expected, event.seq):
                self.gaps.setdefault(missing, time.monotonic())
            expected = event.seq + 1
            await self.bus.publish(BusEvent.of(event))
        self.cursor = events[-1].seq
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
