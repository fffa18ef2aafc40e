"""Messaging in the API: threads between a patient and their care team, messages, read state
(PRODUCT.md; a patient's crisis wording gets its resources, CLINICAL.md §7). Live updates are schema.live."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.identity import directory
from models.identity.accounts import Role
from models.kernel import errors as domain
from models.messaging import messaging
from schema.accounts import PatientType
from schema.context import Context
from schema.errors import IdempotencyConflict, NotFound, RecordNotFound, ValidationError
from schema.ids import global_id, node_id
from schema.loaders import loader
from schema.mutations import LenientInput, payload, written
from schema.pagination import Connection, Listing, each, moment, paginate
from schema.permissions import viewer_of


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
            reply_to_id=strawberry.ID(global_id("Message", reply)) if reply else None,
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


def _message_number(raw: str) -> int:
    """A message's number in a cursor: decimal digits only, within a GraphQL Int."""
    if not (raw.isascii() and raw.isdecimal()) or int(raw) > 2**31 - 1:
        raise ValueError("not a message number")
    return int(raw)


# A thread's messages, newest first: a cursor is the number of the message it stands at.
_MESSAGES: Listing[messaging.Message, int] = Listing(
    "messages", (_message_number,), lambda number: number, lambda message: [str(message.number)]
)
# The viewer's threads, the most recently active first.
_THREADS: Listing[messaging.MessageThread, messaging.ThreadCursor] = Listing(
    "threads",
    (moment, uuid.UUID),
    messaging.ThreadCursor,
    lambda thread: [(thread.last_message_at or thread.created_at).isoformat(), str(thread.id)],
)


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
    async def patient(self, info: Info[Context, None]) -> PatientType | None:
        patient = await loader(info, "patients", directory.get_patients).load(self.patient_id)
        return PatientType.from_model(patient) if patient else None

    @strawberry.field(description="Newest first. To catch up after a dropped connection, use `missedMessages`.")
    async def messages(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[MessageType]:
        async def fetch(limit: int, before: int | None) -> list[messaging.Message]:
            return await messaging.list_messages(viewer_of(info), uuid.UUID(self.id), limit=limit, before_number=before)

        return await paginate(info.context, _MESSAGES, first, after, fetch, each(MessageType.from_model))

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


@strawberry.type
class MessagingQuery:
    @strawberry.field(description="Your message threads, the most recently active first.")
    async def threads(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[MessageThreadType]:
        async def fetch(limit: int, position: messaging.ThreadCursor | None) -> list[messaging.MessageThread]:
            return await messaging.list_threads(viewer_of(info), limit=limit, after=position)

        return await paginate(info.context, _THREADS, first, after, fetch, each(MessageThreadType.from_model))

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
            return outcome, await messaging.sent_message(viewer, outcome)

        result, advice = await written(call, MessageType.from_model)
        return SendMessagePayload(result=result, **advice)

    @strawberry.mutation(description="Everything in the thread so far is read.")
    async def mark_thread_read(self, info: Info[Context, None], input: MarkThreadReadInput) -> MessageThreadPayload:
        async def call() -> messaging.MessageThread:
            thread_id = node_id(input.thread_id, "MessageThread", "threadId")
            return await messaging.mark_thread_read(viewer_of(info), thread_id, now=info.context.now())

        return await payload(MessageThreadPayload, call, MessageThreadType.from_model)
