"""Audit log rows as FHIR AuditEvents (ARCHITECTURE.md decision 6: they map 1:1), read under the
audit log's own rule (`get_audit_event`: admins; a patient, their own record's, without
addresses).
"""

from __future__ import annotations

from typing import Any

from models.ehr.fhir.common import Readable, instant, record_id, reference
from models.identity.access import Viewer
from models.kernel.audit import ActorType, AuditEvent, AuditOutcome
from models.kernel.audit_log import get_audit_event

_AUDIT_OUTCOME = {AuditOutcome.SUCCESS: "0", AuditOutcome.DENIED: "4", AuditOutcome.FAILED: "8"}


def audit_event(event: AuditEvent) -> dict[str, Any]:
    """An audit row as a FHIR AuditEvent (ARCHITECTURE.md decision 6: they map 1:1)."""
    who: dict[str, Any] = {"display": event.actor_label or event.actor_type.value.lower()}
    if event.actor_id is not None:
        who["identifier"] = {"system": f"urn:ketafollow:{event.actor_type.value.lower()}", "value": str(event.actor_id)}
    agent: dict[str, Any] = {"who": who, "requestor": event.actor_type is not ActorType.SYSTEM}
    if event.actor_role:
        agent["type"] = {"text": event.actor_role}
    if event.client_address:
        agent["network"] = {"address": event.client_address, "type": "2"}
    entities: list[dict[str, Any]] = []
    if event.patient_id is not None:
        entities.append({"what": reference("Patient", event.patient_id), "role": _coding_role("1", "Patient")})
    if event.resource_id:
        entities.append({"what": {"display": f"{event.resource_type}/{event.resource_id}"}})
    elif event.resource_type:
        entities.append({"what": {"display": event.resource_type}})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(event.id),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "action": event.action.value,
        "recorded": instant(event.occurred_at),
        "outcome": _AUDIT_OUTCOME[event.outcome],
        "agent": [agent],
        "source": {"observer": {"display": "ketafollow"}},
    }
    if event.operation:
        resource["subtype"] = [{"system": "urn:ketafollow:graphql-operation", "code": event.operation}]
    if event.detail:
        resource["outcomeDesc"] = event.detail
    if entities:
        resource["entity"] = entities
    return resource


def _coding_role(code: str, display: str) -> dict[str, str]:
    return {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": code, "display": display}


async def _audit_event(viewer: Viewer, resource_id: str) -> AuditEvent:
    return await get_audit_event(viewer, record_id(resource_id))


AUDIT_EVENT = Readable("AuditEvent", _audit_event, audit_event)
