"""Secure messages as FHIR Communications between a patient and their care team (PRODUCT.md
capability 10). A message is read under its thread's patient's chart rule (`clinical_patient`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from models.ehr.fhir.common import Readable, Records, Resource, instant, meta, record_id, reference
from models.identity.access import Viewer, clinical_patient
from models.identity.accounts import Patient, Provider
from models.kernel.errors import NotFound
from models.messaging.messaging import Message, MessageThread


def communication(message: Message, thread: MessageThread, patient: Patient, sender: dict[str, str]) -> dict[str, Any]:
    """A message as a Communication between the patient and their care team; `sender` is the
    reference to the patient or the provider who wrote it."""
    from_patient = sender["reference"] == f"Patient/{patient.id}"
    team = reference("CareTeam", patient.care_team_id)  # type: ignore[attr-defined]
    return {
        "resourceType": "Communication",
        "id": str(message.id),
        "meta": meta(message.updated_at),
        "status": "completed",
        "subject": reference("Patient", patient.id),
        "topic": {"text": thread.subject},
        "sent": instant(message.sent_at),
        "sender": sender,
        "recipient": [team if from_patient else reference("Patient", patient.id)],
        "payload": [{"contentString": message.body}],
        **({"inResponseTo": [reference("Communication", message.reply_to_id)]} if message.reply_to_id else {}),
    }


async def sender_references(patients: list[Patient], user_ids: set[UUID]) -> dict[UUID, dict[str, str]]:
    """References for message senders: one of the patients, or a provider (one query)."""
    found = {patient.user_id: reference("Patient", patient.id) for patient in patients}  # type: ignore[attr-defined]
    for provider in await Provider.filter(user_id__in=list(user_ids - set(found))):
        found[provider.user_id] = reference("Practitioner", provider.id)  # type: ignore[attr-defined]
    return {user_id: found.get(user_id, {"display": "care team"}) for user_id in user_ids}


async def _message(viewer: Viewer, resource_id: str) -> tuple[Message, MessageThread, Patient, dict[str, str]]:
    message = await Message.get_or_none(id=record_id(resource_id)).select_related("thread")
    if message is None:
        raise NotFound("resource")
    patient = await clinical_patient(viewer, message.thread.patient_id, "Communication")  # type: ignore[attr-defined]
    senders = await sender_references([patient], {message.sender_id})  # type: ignore[attr-defined]
    return message, message.thread, patient, senders[message.sender_id]  # type: ignore[attr-defined]


COMMUNICATION = Readable("Communication", _message, lambda found: communication(*found))


async def _messages(ids: list[UUID]) -> dict[UUID, list[Resource]]:
    messages = await Message.filter(id__in=ids).select_related("thread", "thread__patient")
    patients = {message.thread.patient.id: message.thread.patient for message in messages}
    senders = await sender_references(list(patients.values()), {message.sender_id for message in messages})  # type: ignore[attr-defined]
    return {
        message.id: [
            communication(message, message.thread, message.thread.patient, senders[message.sender_id])  # type: ignore[attr-defined]
        ]
        for message in messages
    }


async def _messages_of(patient: Patient) -> list[Resource]:
    threads = {thread.id: thread for thread in await MessageThread.filter(patient_id=patient.id)}
    messages = await Message.filter(thread_id__in=list(threads)).order_by("sent_at", "number")
    senders = await sender_references([patient], {message.sender_id for message in messages})  # type: ignore[attr-defined]
    return [
        communication(message, threads[message.thread_id], patient, senders[message.sender_id])  # type: ignore[attr-defined]
        for message in messages
    ]


MESSAGES = Records("Message", ("Communication",), _messages, _messages_of)
