"""Secure messaging between a patient and their care team: threads, messages, read state.

Messages are numbered within their thread (under a lock on the thread row), and a participant's
read state is the highest number they have read, so unread counts stay exact however reads and
sends interleave. The participants of a thread are the patient and the providers of the
patient's care team (as the team is now, not as it was). A patient's words are scanned for
crisis wording (CLINICAL.md §7): the message is still delivered, the care team is alerted, and
the patient gets the crisis resources.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from tortoise import fields
from tortoise.expressions import Q, Subquery
from tortoise.functions import Count
from tortoise.queryset import QuerySet, QuerySetSingle, ValuesListQuery
from tortoise.transactions import in_transaction

from models.identity.access import Viewer
from models.identity.accounts import Patient, Provider, Role, User
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, audit_patient_read, denied
from models.kernel.base import Entity
from models.kernel.errors import Forbidden, InvalidInput, NotFound
from models.kernel.events import record_created
from models.kernel.idempotency import Outcome, answered_record, run_once
from models.kernel.policy import ClinicPolicy
from models.kernel.prepared import prepared, prepared_read
from models.notifications import notifications
from models.safety.rules import crisis_findings
from models.safety.screen import Submission, screened_write

MAX_BODY = 4000
MAX_SUBJECT = 120


class MessageThread(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="message_threads", on_delete=fields.RESTRICT
    )
    subject = fields.CharField(max_length=MAX_SUBJECT)
    message_count = fields.IntField(default=0)
    last_message_at = fields.DatetimeField(null=True)

    class Meta:
        table = "message_thread"
        indexes = (("patient_id", "last_message_at"),)


class Message(Entity):
    thread: fields.ForeignKeyRelation[MessageThread] = fields.ForeignKeyField(
        "ketafollow.MessageThread", related_name="messages", on_delete=fields.RESTRICT
    )
    number = fields.IntField()
    sender: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "ketafollow.User", related_name="messages_sent", on_delete=fields.RESTRICT
    )
    body = fields.TextField()
    sent_at = fields.DatetimeField()
    reply_to_id = fields.UUIDField(null=True)

    class Meta:
        table = "message"
        unique_together = (("thread_id", "number"),)


class ThreadReadState(Entity):
    thread: fields.ForeignKeyRelation[MessageThread] = fields.ForeignKeyField(
        "ketafollow.MessageThread", related_name="read_states", on_delete=fields.RESTRICT
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "ketafollow.User", related_name="thread_read_states", on_delete=fields.RESTRICT
    )
    last_read_number = fields.IntField(default=0)
    last_read_at = fields.DatetimeField()

    class Meta:
        table = "thread_read_state"
        unique_together = (("thread_id", "user_id"),)


def _threads_visible_to(viewer: Viewer) -> Q:
    """A patient's own threads; a provider's care teams' patients' threads. Nobody else."""
    return Q(**_visible_thread_filters(viewer))


def _visible_thread_filters(viewer: Viewer) -> dict[str, Any]:
    """`_threads_visible_to` as filters (a prepared read takes them as values)."""
    if viewer.is_role(Role.PATIENT) and viewer.patient_id is not None:
        return {"patient_id": viewer.patient_id}
    if viewer.is_role(Role.PROVIDER):
        return {"patient__care_team_id__in": sorted(viewer.care_team_ids)}
    return {"pk": None}


def _require_participant_role(viewer: Viewer, action: AuditAction, resource_type: str = "MessageThread") -> None:
    if not (viewer.is_role(Role.PATIENT) or viewer.is_role(Role.PROVIDER)):
        raise denied(viewer, Forbidden("messages are between a patient and their care team"), action, resource_type)


async def get_thread(viewer: Viewer, thread_id: UUID) -> MessageThread:
    """The thread, if the viewer takes part in it; `NotFound` otherwise (audited)."""
    thread: MessageThread | None = await prepared(
        _visible_thread, thread_id=thread_id, **_visible_thread_filters(viewer)
    )
    if thread is None:
        viewer.audit.add(AuditEntry(AuditAction.READ, "MessageThread", AuditOutcome.DENIED, resource_id=str(thread_id)))
        raise NotFound("thread")
    audit_patient_read(viewer, thread.patient_id, "MessageThread")  # type: ignore[attr-defined]
    return thread


@prepared_read(MessageThread)
def _visible_thread(thread_id: UUID, **visible: Any) -> QuerySetSingle[MessageThread | None]:
    return MessageThread.filter(id=thread_id, **visible).first()


@dataclass(frozen=True)
class ThreadCursor:
    last_message_at: datetime
    id: UUID


async def list_threads(viewer: Viewer, *, limit: int, after: ThreadCursor | None = None) -> list[MessageThread]:
    """The viewer's threads, the most recently active first."""
    _require_participant_role(viewer, AuditAction.READ)
    moment, thread_id = (after.last_message_at, after.id) if after is not None else (None, None)
    visible = _visible_thread_filters(viewer)
    threads: list[MessageThread] = list(
        await prepared(_threads_page, limit=limit, moment=moment, thread_id=thread_id, **visible)
    )
    for thread in threads:
        audit_patient_read(viewer, thread.patient_id, "MessageThread")  # type: ignore[attr-defined]
    return threads


@prepared_read(MessageThread)
def _threads_page(
    limit: int, moment: datetime | None, thread_id: UUID | None, **visible: Any
) -> QuerySet[MessageThread]:
    """Visible threads, the most recently active first, after (`moment`, `thread_id`) when given."""
    query = MessageThread.filter(**visible)
    if moment is not None:
        query = query.filter(Q(last_message_at__lt=moment) | Q(last_message_at=moment, id__lt=thread_id))
    return query.order_by("-last_message_at", "-id").limit(limit)


async def list_messages(
    viewer: Viewer, thread_id: UUID, *, limit: int, before_number: int | None = None
) -> list[Message]:
    """A thread's messages, newest first; `before_number` continues a page."""
    thread = await get_thread(viewer, thread_id)
    return list(await prepared(_messages_page, thread_id=thread.id, limit=limit, before_number=before_number))


@prepared_read(Message)
def _messages_page(thread_id: UUID, limit: int, before_number: int | None) -> QuerySet[Message]:
    query = Message.filter(thread_id=thread_id)
    if before_number is not None:
        query = query.filter(number__lt=before_number)
    return query.order_by("-number").limit(limit)


async def messages_after(viewer: Viewer, thread_id: UUID, number: int) -> list[Message]:
    """What a reconnecting client missed: messages after `number`, oldest first (at most 500)."""
    thread = await get_thread(viewer, thread_id)
    return list(await Message.filter(thread_id=thread.id, number__gt=number).order_by("number").limit(500))


async def unread_counts(viewer: Viewer, thread_ids: list[UUID]) -> dict[UUID, int]:
    """Unread messages per thread for the viewer: others' messages after their read mark (two
    queries for any number of threads)."""
    if not thread_ids:
        return {}
    marks = dict(await prepared(_thread_marks, user_id=viewer.id, thread_ids=thread_ids))
    past = [marks.get(thread_id, 0) for thread_id in thread_ids]
    counts = dict.fromkeys(thread_ids, 0)
    for thread_id, count in await prepared(_unread_per_thread, user_id=viewer.id, thread_ids=thread_ids, past=past):
        counts[UUID(str(thread_id))] = int(count)
    return counts


@prepared_read(ThreadReadState)
def _thread_marks(user_id: UUID, thread_ids: list[UUID]) -> ValuesListQuery[Any]:
    marks = ThreadReadState.filter(user_id=user_id, thread_id__in=thread_ids)
    return marks.values_list("thread_id", "last_read_number")


@prepared_read(Message)
def _unread_per_thread(user_id: UUID, thread_ids: list[UUID], past: list[int]) -> ValuesListQuery[Any]:
    """Others' messages past `past[i]` in `thread_ids[i]`, counted per thread."""
    unread = Q(
        *[Q(thread_id=thread_id, number__gt=mark) for thread_id, mark in zip(thread_ids, past, strict=True)],
        join_type="OR",
    )
    counted = Message.filter(unread).exclude(sender_id=user_id).annotate(unread=Count("id")).group_by("thread_id")
    return counted.values_list("thread_id", "unread")


async def unread_by_patient(viewer: Viewer, patient_ids: list[UUID]) -> dict[UUID, int]:
    """Unread messages per patient for the viewer, across that patient's threads: others'
    messages after the viewer's read mark (two queries: the marks in the visible threads, then the
    messages past them counted per patient; the panel and the home screen ask it every time)."""
    visible = _visible_thread_filters(viewer)
    marks = dict(await prepared(_read_marks, user_id=viewer.id, patient_ids=patient_ids, **visible))
    counted = await prepared(
        _unread_per_patient,
        user_id=viewer.id,
        patient_ids=patient_ids,
        marked=list(marks) or None,
        marks=list(marks.values()) or None,
        **visible,
    )
    totals = dict.fromkeys(patient_ids, 0)
    for patient_id, count in counted:
        totals[UUID(str(patient_id))] += int(count)
    return totals


def _visible_threads(patient_ids: list[UUID], visible: dict[str, Any]) -> Subquery:
    return Subquery(MessageThread.filter(patient_id__in=patient_ids, **visible).values("id"))


@prepared_read(ThreadReadState)
def _read_marks(user_id: UUID, patient_ids: list[UUID], **visible: Any) -> ValuesListQuery[Any]:
    threads = _visible_threads(patient_ids, visible)
    return ThreadReadState.filter(user_id=user_id, thread_id__in=threads).values_list("thread_id", "last_read_number")


@prepared_read(Message)
def _unread_per_patient(
    user_id: UUID, patient_ids: list[UUID], marked: list[UUID] | None, marks: list[int] | None, **visible: Any
) -> ValuesListQuery[Any]:
    """Others' messages in the visible threads past the read marks (`marked` threads at `marks`),
    counted per patient."""
    unread = Message.filter(thread_id__in=_visible_threads(patient_ids, visible)).exclude(sender_id=user_id)
    if marked and marks:
        past_marks = [Q(thread_id=thread_id, number__gt=mark) for thread_id, mark in zip(marked, marks, strict=True)]
        unread = unread.filter(Q(~Q(thread_id__in=marked), *past_marks, join_type="OR"))
    counted = unread.annotate(unread=Count("id")).group_by("thread__patient_id")
    return counted.values_list("thread__patient_id", "unread")


async def total_unread(viewer: Viewer) -> int:
    ids: list[UUID] = [thread.id for thread in await MessageThread.filter(_threads_visible_to(viewer)).only("id")]
    counts = await unread_counts(viewer, ids)
    return sum(counts.values())


async def create_thread(
    viewer: Viewer,
    subject: str,
    *,
    patient_id: UUID | None,
    now: datetime,
    policy: ClinicPolicy,
    idempotency_key: str | None = None,
) -> Outcome:
    """A new thread: a patient's with their care team, or a provider's with a team patient. A
    patient's subject is screened first for crisis wording (CLINICAL.md §0, §7). A retry with the
    same `idempotency_key` and subject gets the first thread back, and creates none."""
    _require_participant_role(viewer, AuditAction.CREATE)
    if not viewer.is_role(Role.PATIENT):
        return await _create_thread(viewer, subject, patient_id=patient_id, now=now, idempotency_key=idempotency_key)
    assert viewer.patient_id is not None
    submission = Submission(
        "createMessageThread", viewer.patient_id, {"subject": subject},
        crisis_findings(subject, "a message subject", policy), idempotency_key=idempotency_key,
    )  # fmt: skip
    return await screened_write(
        submission,
        lambda: _create_thread(viewer, subject, patient_id=viewer.patient_id, now=now, idempotency_key=idempotency_key),
        record_type="MessageThread", now=now, policy=policy,
    )  # fmt: skip


async def _create_thread(
    viewer: Viewer, subject: str, *, patient_id: UUID | None, now: datetime, idempotency_key: str | None
) -> Outcome:
    cleaned = " ".join(subject.split())
    if not cleaned or len(cleaned) > MAX_SUBJECT:
        raise InvalidInput("subject", f"subject must be 1 to {MAX_SUBJECT} characters")
    if viewer.is_role(Role.PATIENT):
        patient = await Patient.get(id=viewer.patient_id)
    else:
        found = await Patient.get_or_none(id=patient_id) if patient_id else None
        if found is None or found.care_team_id not in viewer.care_team_ids:  # type: ignore[attr-defined]
            # Another team's patient, or none at all: one answer, audited.
            raise denied(viewer, NotFound("patient"), AuditAction.CREATE, "MessageThread", patient_id=patient_id)
        patient = found

    async def write() -> Outcome:
        async with in_transaction():
            thread = await MessageThread.create(patient=patient, subject=cleaned, last_message_at=now)
            await record_created(viewer, "MessageThread", thread.id, patient.id, now=now)
        return Outcome(thread.id)

    request = {"subject": cleaned, "patient": str(patient.id)}
    return await run_once(viewer, "createMessageThread", idempotency_key, request, write, now=now)


@dataclass(frozen=True)
class NewMessage:
    thread_id: UUID | None
    body: str
    reply_to_id: UUID | None = None
    idempotency_key: str | None = None
    # Input the API could not read (an id of another type): refused after the screen.
    problems: tuple[InvalidInput, ...] = ()


async def participants(thread: MessageThread) -> list[UUID]:
    """User ids of everyone in the thread: the patient and the care team's providers."""
    ((patient_user, team),) = await prepared(_patient_and_team, patient_id=thread.patient_id)  # type: ignore[attr-defined]
    # A provider invited but not yet signed up (or deactivated) is not told of messages.
    providers: list[UUID] = list(await prepared(_active_team_providers, care_team_id=team))
    return [patient_user, *providers]


@prepared_read(Patient)
def _patient_and_team(patient_id: UUID) -> ValuesListQuery[Any]:
    return Patient.filter(id=patient_id).values_list("user_id", "care_team_id")


@prepared_read(Provider)
def _active_team_providers(care_team_id: UUID) -> ValuesListQuery[Any]:
    return Provider.filter(care_teams__id=care_team_id, user__is_active=True).values_list("user_id", flat=True)


async def send_message(viewer: Viewer, data: NewMessage, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """Post a message; the others in the thread are notified. A patient's message is screened
    first (CLINICAL.md §0, §7): crisis wording alerts the care team and returns crisis resources,
    also when the message is refused (too long, a thread that is not theirs); an accepted message
    is delivered all the same."""
    _require_participant_role(viewer, AuditAction.CREATE, "Message")
    if not viewer.is_role(Role.PATIENT):
        return await _send(viewer, data, now=now)
    assert viewer.patient_id is not None
    submission = Submission(
        "sendMessage", viewer.patient_id, {"body": data.body}, crisis_findings(data.body, "a message", policy),
        idempotency_key=data.idempotency_key,
    )  # fmt: skip
    return await screened_write(
        submission, lambda: _send(viewer, data, now=now), record_type="Message", now=now, policy=policy
    )


async def _send(viewer: Viewer, data: NewMessage, *, now: datetime) -> Outcome:
    if data.problems:
        raise data.problems[0]
    body = data.body.strip()
    if not body or len(body) > MAX_BODY:
        raise InvalidInput("body", f"a message is 1 to {MAX_BODY} characters")
    assert data.thread_id is not None
    thread = await get_thread(viewer, data.thread_id)
    if data.reply_to_id is not None and not await Message.exists(id=data.reply_to_id, thread_id=thread.id):
        raise InvalidInput("replyToId", "replyToId is not a message of this thread")

    async def write() -> Outcome:
        async with in_transaction():
            locked = await MessageThread.filter(id=thread.id).select_for_update().first()
            assert locked is not None
            locked.message_count += 1
            locked.last_message_at = now
            await locked.save(update_fields=["message_count", "last_message_at", "updated_at"])
            message = await Message.create(
                thread=locked, number=locked.message_count, sender_id=viewer.id, body=body, sent_at=now,
                reply_to_id=data.reply_to_id,
            )  # fmt: skip
            await _mark_read(viewer.id, locked.id, locked.message_count, now)
            patient_id: UUID = locked.patient_id  # type: ignore[attr-defined]
            await record_created(
                viewer, "Message", message.id, patient_id, now=now,
                payload={"threadId": str(locked.id), "number": message.number, "senderId": str(viewer.id)},
            )  # fmt: skip
            for recipient in await participants(locked):
                if recipient != viewer.id:
                    await notifications.enqueue(
                        recipient, "NEW_MESSAGE", f"thread/{locked.id}",
                        dedup_key=f"message:{message.id}:{recipient}", now=now, not_before=now,
                    )  # fmt: skip
        return Outcome(message.id, record=message)

    request = {"thread": str(data.thread_id), "body": body, "replyTo": str(data.reply_to_id)}
    return await run_once(viewer, "sendMessage", data.idempotency_key, request, write, now=now)


async def _mark_read(user_id: UUID, thread_id: UUID, number: int, now: datetime) -> None:
    """Raise the read mark to `number` (never lower it: reads may arrive out of order)."""
    updated = await ThreadReadState.filter(user_id=user_id, thread_id=thread_id, last_read_number__lt=number).update(
        last_read_number=number, last_read_at=now, updated_at=now
    )
    if updated == 0 and not await ThreadReadState.exists(user_id=user_id, thread_id=thread_id):
        await ThreadReadState.create(user_id=user_id, thread_id=thread_id, last_read_number=number, last_read_at=now)


async def mark_thread_read(viewer: Viewer, thread_id: UUID, *, now: datetime) -> MessageThread:
    """Everything in the thread so far is read by the viewer."""
    _require_participant_role(viewer, AuditAction.UPDATE)
    thread = await get_thread(viewer, thread_id)
    async with in_transaction():
        locked = await MessageThread.filter(id=thread.id).select_for_update().first()
        assert locked is not None
        await _mark_read(viewer.id, locked.id, locked.message_count, now)
    return locked


async def sent_message(viewer: Viewer, outcome: Outcome) -> Message:
    """The message `send_message` answered with: as this request wrote it (the thread's read, all
    the answer shows of others' records, is in the request's trail from `get_thread`), or, for a
    retry answered from the idempotency key, read by its id."""
    return await answered_record(outcome, Message, lambda: get_message(viewer, outcome.resource_id))


async def get_message(viewer: Viewer, message_id: UUID) -> Message:
    message = await Message.get_or_none(id=message_id)
    if message is None:
        raise NotFound("message")
    try:
        await get_thread(viewer, message.thread_id)  # type: ignore[attr-defined]
    except NotFound:
        raise NotFound("message") from None  # the same answer as for a message that does not exist
    return message


@dataclass(frozen=True)
class Sender:
    """Who wrote a message: a name to show, no contact details."""

    user_id: UUID
    role: Role
    name: str


async def message_senders(user_ids: list[UUID]) -> dict[UUID, Sender]:
    """The senders of messages the caller may already read (the thread was checked for the messages)."""
    senders = {}
    for user_id, role, provider_given, provider_family, credentials, patient_given, patient_family in await prepared(
        _sender_names, user_ids=user_ids
    ):
        if role is Role.PROVIDER:
            name = f"{provider_given} {provider_family}, {credentials}".rstrip(", ")
        elif role is Role.PATIENT:
            name = f"{patient_given} {patient_family}"
        else:
            name = "Clinic"
        senders[user_id] = Sender(user_id, role, name)
    return senders


@prepared_read(User)
def _sender_names(user_ids: list[UUID]) -> ValuesListQuery[Any]:
    return User.filter(id__in=user_ids).values_list(
        "id", "role", "provider__given_name", "provider__family_name", "provider__credentials",
        "patient__given_name", "patient__family_name",
    )  # fmt: skip
