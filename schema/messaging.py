"""Messaging and live updates in the API: threads, messages, read state, and subscriptions."""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry import relay
from strawberry.types import Info

from models.alerts import alerts as alert_ops
from models.identity import directory
from models.identity.access import Viewer
from models.identity.accounts import Role
from models.kernel import errors as domain
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome
from models.kernel.events import REPLAY_WINDOW, BusEvent, events_since
from models.messaging import messaging
from models.surveys import assignments
from schema.accounts import PatientType
from schema.clinical import AlertType, cursor_time
from schema.context import Context
from schema.errors import (
    BadUserInput,
    ClientError,
    Forbidden,
    IdempotencyConflict,
    NotFound,
    RecordNotFound,
    ValidationError,
)
from schema.extensions import public_error
from schema.loaders import loader
from schema.mutations import LenientInput, attempt, node_id, written
from schema.pagination import Connection, page_size
from schema.permissions import viewer_of
from schema.surveys import SurveyAssignmentType


@strawberry.type(name="MessageSender")
class MessageSenderType:
    id: strawberry.ID
    role: str
    name: str


@strawberry.type(name="Message")
class MessageType(relay.Node):
    id: relay.NodeID[str]
    number: int = strawberry.field(description="Position in its thread: 1, 2, 3…")
    body: str
    sent_at: datetime
    reply_to_id: strawberry.ID | None
    sender_id: strawberry.Private[uuid.UUID]
    thread_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, message: messaging.Message) -> MessageType:
        reply = message.reply_to_id
        return cls(
            id=str(message.id),
            number=message.number,
            body=message.body,
            sent_at=message.sent_at,
            reply_to_id=strawberry.ID(str(relay.GlobalID("Message", str(reply)))) if reply else None,
            sender_id=message.sender_id,  # type: ignore[attr-defined]
            thread_id=message.thread_id,  # type: ignore[attr-defined]
        )

    @strawberry.field
    async def sender(self, info: Info[Context, None]) -> MessageSenderType:
        user = await loader(info, "senders", _senders).load(self.sender_id)
        if user is None:  # pragma: no cover - users are never deleted
            raise RecordNotFound("sender not found")
        return user


async def _senders(viewer: Any, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, MessageSenderType]:
    """Who wrote messages the viewer may read: a name to show, no contact details."""
    return {
        user_id: MessageSenderType(id=strawberry.ID(str(sender.user_id)), role=sender.role.value, name=sender.name)
        for user_id, sender in (await messaging.message_senders(user_ids)).items()
    }


_MESSAGES = "messages"
_THREADS = "threads"


@strawberry.type(name="MessageThread")
class MessageThreadType(relay.Node):
    id: relay.NodeID[str]
    subject: str
    created_at: datetime
    last_message_at: datetime | None
    message_count: int
    patient_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, thread: messaging.MessageThread) -> MessageThreadType:
        return cls(
            id=str(thread.id),
            subject=thread.subject,
            created_at=thread.created_at,
            last_message_at=thread.last_message_at,
            message_count=thread.message_count,
            patient_id=thread.patient_id,  # type: ignore[attr-defined]
        )

    @classmethod
    async def load_nodes(cls, info: Info[Context, None], node_ids: list[str]) -> list[MessageThreadType | None]:
        found: list[MessageThreadType | None] = []
        for raw in node_ids:
            try:
                found.append(cls.from_model(await messaging.get_thread(viewer_of(info), uuid.UUID(raw))))
            except (ValueError, domain.NotFound):
                found.append(None)
        return found

    @strawberry.field(description="Messages from others that the viewer has not read yet.")
    async def unread_count(self, info: Info[Context, None]) -> int:
        return await loader(info, "unread", messaging.unread_counts).load(uuid.UUID(self.id)) or 0

    @strawberry.field
    async def patient(
        self, info: Info[Context, None]
    ) -> Annotated[PatientType, strawberry.lazy("schema.accounts")] | None:
        patient = await loader(info, "patients", directory.get_patients).load(self.patient_id)
        return PatientType.from_model(patient) if patient else None

    @strawberry.field(description="Newest first. To catch up after a dropped connection, use `missedMessages`.")
    async def messages(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[MessageType]:
        limit = page_size(first, info.context.max_page_size)
        before = None
        if after is not None:
            [raw] = info.context.cursors.open(_MESSAGES, after, 1)
            if not (raw.isascii() and raw.isdecimal()) or int(raw) > 2**31 - 1:
                raise BadUserInput("after is not a cursor this list issued")
            before = int(raw)
        rows = await messaging.list_messages(viewer_of(info), uuid.UUID(self.id), limit=limit + 1, before_number=before)
        page = rows[:limit]
        return Connection[MessageType].build(
            [MessageType.from_model(message) for message in page],
            [info.context.cursors.at(_MESSAGES, [str(message.number)]) for message in page],
            has_next_page=len(rows) > limit,
            after=after,
        )

    @strawberry.field(description="Messages after `number` (the last one the client has), oldest first.")
    async def missed_messages(self, info: Info[Context, None], after_number: int) -> list[MessageType]:
        rows = await messaging.messages_after(viewer_of(info), uuid.UUID(self.id), after_number)
        return [MessageType.from_model(message) for message in rows]


# ------------------------------------------------------------- mutations


@strawberry.input
class SendMessageInput:
    idempotency_key: str | None = None
    thread_id: strawberry.ID
    body: str
    reply_to_id: strawberry.ID | None = None


@strawberry.input
class MarkThreadReadInput:
    thread_id: strawberry.ID


@strawberry.input
class CreateMessageThreadInput:
    idempotency_key: str | None = strawberry.field(
        default=None, description="Retry with the same key and subject: the first thread, and no second one."
    )
    subject: str
    patient_id: strawberry.ID | None = strawberry.field(default=None, description="Providers: the patient to write to.")


SendResult = Annotated[
    MessageType | ValidationError | NotFound | IdempotencyConflict, strawberry.union("SendMessageResult")
]
ThreadResult = Annotated[
    MessageThreadType | ValidationError | NotFound | IdempotencyConflict, strawberry.union("MessageThreadResult")
]


@strawberry.type
class SendMessagePayload:
    result: SendResult
    safety_instructions: str | None = None
    crisis_resources: str | None = None


@strawberry.type
class MessageThreadPayload:
    result: ThreadResult
    crisis_resources: str | None = strawberry.field(
        default=None, description="When a patient's subject has crisis wording (CLINICAL.md section 7)."
    )


async def _thread_payload(call: Any) -> MessageThreadPayload:
    outcome = await attempt(call)
    if outcome.error is not None:
        return MessageThreadPayload(result=outcome.error)  # type: ignore[arg-type]
    assert outcome.value is not None
    return MessageThreadPayload(result=MessageThreadType.from_model(outcome.value))


@strawberry.type
class MessagingQuery:
    @strawberry.field(description="Your message threads, the most recently active first.")
    async def threads(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[MessageThreadType]:
        limit = page_size(first, info.context.max_page_size)
        position = None
        if after is not None:
            moment, raw_id = info.context.cursors.open(_THREADS, after, 2)
            try:
                position = messaging.ThreadCursor(cursor_time(moment), uuid.UUID(raw_id))
            except ValueError:
                raise BadUserInput("after is not a cursor this list issued") from None
        try:
            rows = await messaging.list_threads(viewer_of(info), limit=limit + 1, after=position)
        except domain.Forbidden as refusal:
            raise Forbidden(refusal.message) from refusal
        page = rows[:limit]
        return Connection[MessageThreadType].build(
            [MessageThreadType.from_model(thread) for thread in page],
            [
                info.context.cursors.at(_THREADS, [(t.last_message_at or t.created_at).isoformat(), str(t.id)])
                for t in page
            ],
            has_next_page=len(rows) > limit,
            after=after,
        )

    @strawberry.field(description="Unread messages across all your threads.")
    async def unread_message_count(self, info: Info[Context, None]) -> int:
        viewer = viewer_of(info)
        if not (viewer.is_role(Role.PATIENT) or viewer.is_role(Role.PROVIDER)):
            return 0
        return await messaging.total_unread(viewer)


@strawberry.type
class MessagingMutation:
    @strawberry.mutation(description="Start a thread with your care team (patients) or a patient (providers).")
    async def create_message_thread(
        self, info: Info[Context, None], input: CreateMessageThreadInput
    ) -> MessageThreadPayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            patient = node_id(input.patient_id, "Patient", "patientId") if input.patient_id else None
            outcome = await messaging.create_thread(
                viewer, input.subject, patient_id=patient, now=info.context.now(), policy=info.context.policy,
                idempotency_key=input.idempotency_key,
            )  # fmt: skip
            return outcome, await messaging.get_thread(viewer, outcome.resource_id)

        result, advice = await written(call, MessageThreadType.from_model)
        return MessageThreadPayload(result=result, crisis_resources=advice["crisis_resources"])

    @strawberry.mutation(description="Send a message to everyone in the thread.")
    async def send_message(self, info: Info[Context, None], input: SendMessageInput) -> SendMessagePayload:
        viewer = viewer_of(info)

        async def call() -> Any:
            read = LenientInput()
            data = messaging.NewMessage(
                thread_id=read.id(input.thread_id, "MessageThread", "threadId"),
                body=input.body,
                reply_to_id=read.id(input.reply_to_id, "Message", "replyToId"),
                idempotency_key=input.idempotency_key,
                problems=read.problems,
            )
            outcome = await messaging.send_message(viewer, data, now=info.context.now(), policy=info.context.policy)
            return outcome, await messaging.get_message(viewer, outcome.resource_id)

        result, advice = await written(call, MessageType.from_model)
        return SendMessagePayload(result=result, **advice)

    @strawberry.mutation(description="Everything in the thread so far is read.")
    async def mark_thread_read(self, info: Info[Context, None], input: MarkThreadReadInput) -> MessageThreadPayload:
        async def call() -> messaging.MessageThread:
            thread_id = node_id(input.thread_id, "MessageThread", "threadId")
            return await messaging.mark_thread_read(viewer_of(info), thread_id, now=info.context.now())

        return await _thread_payload(call)


# ---------------------------------------------------------- subscriptions


def guarded(
    stream: Callable[..., AsyncGenerator[Any, None]],
) -> Callable[..., AsyncGenerator[Any, None]]:
    """Subscriptions fail like queries do: refusals with their code, the unexpected masked. Each
    holds one of its viewer's live subscriptions while it runs (a cap per viewer, api.sockets)."""

    @functools.wraps(stream)
    async def run(self: Any, info: Info[Context, None], **arguments: Any) -> AsyncGenerator[Any, None]:
        claim = info.context.claim_subscription
        try:
            async with claim() if claim is not None else contextlib.nullcontext():
                async for item in stream(self, info, **arguments):
                    yield item
        except GraphQLError:
            raise
        except Exception as error:
            raise public_error(error, info.context.request_id) from error

    return run


_SINCE = (
    "Resume: first every event since this time that you may see (at least once, in order;"
    " deduplicate by id), then the live ones. At most 7 days back."
)


def _replay_from(info: Info[Context, None], since: datetime | None) -> datetime | None:
    """Checks `since` against the replay window (docs/api.md, "Messages and live updates")."""
    if since is None:
        return None
    if since.tzinfo is None:
        raise BadUserInput("since needs a time zone (an ISO 8601 time with an offset, e.g. Z)")
    if since < info.context.now() - REPLAY_WINDOW:
        raise BadUserInput(
            f"since is older than the {REPLAY_WINDOW.days}-day replay window: read what you missed"
            " through queries, then subscribe again without since"
        )
    return since


async def _events(
    info: Info[Context, None], wanted: str, since: datetime | None, *, patient_id: uuid.UUID | None = None
) -> AsyncGenerator[BusEvent, None]:
    """The events of a type: with `since`, those the outbox holds from then on first, then the
    live ones. Listening starts before the replay, so nothing falls between the two; a live event
    already replayed is dropped by its `seq`."""
    bus = info.context.bus
    if bus is None:  # pragma: no cover - the app always has one
        raise RecordNotFound("live updates are not available")
    async with bus.subscribe() as events:
        replayed: set[int] = set()
        if since is not None:
            async for stored in events_since(wanted, since, patient_id=patient_id):
                replayed.add(stored.seq)
                yield BusEvent.of(stored)
                _end_if_undelivered(info.context)
        async for event in events:
            if event.type == wanted and event.seq not in replayed:
                yield event
                _end_if_undelivered(info.context)


def _end_if_undelivered(context: Context) -> None:
    """The event just sent went out as an error (its audit write failed, e.g. the database is
    away): end the stream with that error rather than go on without it. The client resubscribes
    with `since` (the time of the last event it did receive) and gets this one from the outbox."""
    if context.undelivered is not None:
        error, context.undelivered = context.undelivered, None
        raise error


async def _next_event(info: Info[Context, None]) -> Viewer | None:
    """Each event sent is a request of its own (ARCHITECTURE.md decision 13): a new request id,
    empty loaders, and the viewer as they are now, with a trail of their own, which
    `schema.extensions.AuditFlush` writes (root and nested reads alike) before the event is sent.
    A login that ended, a deactivated account or an expired token ends the stream; a change of role,
    care team or consent applies to this event."""
    context = info.context
    if context.reauthenticate is None:  # pragma: no cover - subscriptions run over WebSocket only
        return viewer_of(info)
    context.next_event()
    try:
        viewer = await context.reauthenticate(context.new_trail())
    except ClientError:
        return None
    context.viewer = viewer
    return viewer


def _delivered(viewer: Viewer, patient_id: uuid.UUID | None, resource_type: str) -> None:
    """Each event a subscriber receives is a read of patient data (written with the event's other reads)."""
    viewer.audit.add(AuditEntry(AuditAction.READ, resource_type, AuditOutcome.SUCCESS, patient_id=patient_id))


@strawberry.type(name="Subscription")
class LiveSubscription:
    @strawberry.subscription(description="New messages in a thread you take part in.")
    @guarded
    async def message_added(
        self,
        info: Info[Context, None],
        thread_id: strawberry.ID,
        since: Annotated[datetime | None, strawberry.argument(description=_SINCE)] = None,
    ) -> AsyncGenerator[MessageType, None]:
        viewer = viewer_of(info)
        start = _replay_from(info, since)
        try:
            thread = await messaging.get_thread(viewer, node_id(thread_id, "MessageThread", "threadId"))
        except (domain.NotFound, domain.InvalidInput) as refusal:
            await viewer.audit.flush(viewer, info.context.now())
            raise RecordNotFound("thread not found") from refusal
        await viewer.audit.flush(viewer, info.context.now())
        async for event in _events(info, "Message.created", start, patient_id=thread.patient_id):  # type: ignore[attr-defined]
            if event.payload.get("threadId") != str(thread.id):
                continue
            current = await _next_event(info)
            if current is None:
                return
            try:
                message = await messaging.get_message(current, event.resource_id)
            except domain.NotFound:
                await current.audit.flush(current, info.context.now())
                return  # no longer in this thread (e.g. moved to another care team): the stream ends
            yield MessageType.from_model(message)

    @strawberry.subscription(description="Alerts raised for your care teams' patients (providers).")
    @guarded
    async def alert_raised(
        self,
        info: Info[Context, None],
        since: Annotated[datetime | None, strawberry.argument(description=_SINCE)] = None,
    ) -> AsyncGenerator[AlertType, None]:
        if not viewer_of(info).is_role(Role.PROVIDER):
            raise Forbidden("alerts are for the providers of the patient's care team")
        async for event in _events(info, "Alert.raised", _replay_from(info, since)):
            current = await _next_event(info)
            if current is None:
                return
            if not current.is_role(Role.PROVIDER):
                return  # no longer a provider: the stream ends
            alert = await alert_ops.raised_alert(current, event.resource_id)
            if alert is not None:
                _delivered(current, alert.patient_id, "Alert")  # type: ignore[attr-defined]
                yield AlertType.from_model(alert)

    @strawberry.subscription(description="Your surveys as they open (patients).")
    @guarded
    async def survey_available(
        self,
        info: Info[Context, None],
        since: Annotated[datetime | None, strawberry.argument(description=_SINCE)] = None,
    ) -> AsyncGenerator[SurveyAssignmentType, None]:
        viewer = viewer_of(info)
        if not viewer.is_role(Role.PATIENT) or viewer.patient_id is None:
            raise Forbidden("surveys are the patient's")
        start = _replay_from(info, since)
        async for event in _events(info, "SurveyAssignment.available", start, patient_id=viewer.patient_id):
            if event.patient_id != viewer.patient_id:
                continue
            current = await _next_event(info)
            if current is None:
                return
            assignment = await assignments.opened_assignment(viewer.patient_id, event.resource_id)
            if assignment is not None:
                _delivered(current, viewer.patient_id, "SurveyAssignment")
                yield SurveyAssignmentType.from_model(assignment)
