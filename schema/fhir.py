"""FHIR R4 JSON in the API: `fhirResource(resourceType, id)`. Read-only; the mapping is models.ehr.fhir."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from models.ehr import changes
from models.ehr.fhir import registry
from models.kernel.events import Operation
from schema.context import Context
from schema.errors import BadUserInput, refusals_as_errors
from schema.ids import node_uuid, parse_uuid
from schema.pagination import Connection, Listing, page_size
from schema.permissions import viewer_of


@strawberry.type
class FhirQuery:
    @strawberry.field(
        description=(
            "One record as FHIR R4 JSON: Patient, MedicationAdministration (a dosing session), Observation "
            "(a check-in; a session's reading `<session id>-<bp|hr|spo2>-<pre|mid|post>`, e.g. `-bp-pre`; "
            "`<response id>-total`), QuestionnaireResponse, "
            "AdverseEvent (a side effect), Flag (an alert), Communication (a message), "
            "MedicationStatement (an opioid dose), CarePlan and MedicationRequest (a treatment plan), "
            "Questionnaire (`<code>-<version>`), Consent, AuditEvent, Practitioner or CareTeam."
        )
    )
    async def fhir_resource(self, info: Info[Context, None], resource_type: str, id: strawberry.ID) -> JSON:
        with refusals_as_errors():
            resource: dict[str, Any] = await registry.fhir_resource(viewer_of(info), resource_type, str(id))
        return resource  # type: ignore[return-value]  # JSON is any JSON value

    @strawberry.field(description="A patient's record as a FHIR R4 `collection` Bundle.")
    async def fhir_patient_bundle(self, info: Info[Context, None], patient_id: strawberry.ID) -> JSON:
        patient = node_uuid(patient_id, "Patient") or parse_uuid(str(patient_id))
        if patient is None:
            raise BadUserInput("patientId is not a patient id")
        with refusals_as_errors():
            bundle = await registry.patient_bundle(viewer_of(info), patient, now=info.context.now())
        return bundle  # type: ignore[return-value]


@strawberry.enum(description="A FHIR R4 resource type that the change feed carries.")
class ResourceType(Enum):
    AdverseEvent = "AdverseEvent"
    CarePlan = "CarePlan"
    Communication = "Communication"
    Consent = "Consent"
    Flag = "Flag"
    MedicationAdministration = "MedicationAdministration"
    MedicationRequest = "MedicationRequest"
    MedicationStatement = "MedicationStatement"
    Observation = "Observation"
    Patient = "Patient"
    QuestionnaireResponse = "QuestionnaireResponse"


ChangeAction = strawberry.enum(Operation, name="ChangeAction", description="What happened to the resource.")
# A place in the commit order (the feed's own page: it moves on even when a page is empty).
_CHANGES: Listing[changes.FeedPosition, changes.FeedPosition] = Listing(
    "changes",
    (int, int, int),
    changes.FeedPosition,
    lambda position: [str(position.xid), str(position.seq), str(position.part)],
)


@strawberry.type(name="Change", description="One resource at its latest version, in commit order (the EHR feed).")
class ChangeType:
    sequence: int = strawberry.field(description="The event's number (several resources of one record share it).")
    resource_type: ResourceType
    resource_id: strawberry.ID
    action: ChangeAction  # type: ignore[valid-type]
    version: int
    occurred_at: datetime
    resource: JSON | None = strawberry.field(description="The FHIR R4 resource; null when it was deleted.")

    @classmethod
    def of(cls, change: changes.Change) -> ChangeType:
        return cls(
            sequence=change.sequence,
            resource_type=ResourceType[change.resource_type],
            resource_id=strawberry.ID(change.resource_id),
            action=change.action,
            version=change.version,
            occurred_at=change.occurred_at,
            resource=change.resource,  # type: ignore[arg-type]
        )


@strawberry.type
class ChangesQuery:
    @strawberry.field(
        description=(
            "Every change the EHR client may see, in commit order, each resource at its latest version "
            "(apply as upserts by resourceType and id). Resume with `after: pageInfo.endCursor`: it moves "
            "on even when a page is empty, and nothing is skipped or repeated."
        )
    )
    async def changes(
        self,
        info: Info[Context, None],
        after: str | None = None,
        first: int | None = None,
        resource_types: list[ResourceType] | None = None,
    ) -> Connection[ChangeType]:
        limit = page_size(first, info.context.max_page_size)
        wanted = frozenset(kind.value for kind in resource_types) if resource_types is not None else None
        if wanted is not None and not wanted:
            raise BadUserInput("resourceTypes must name at least one resource type (or be left out)")
        cursors = info.context.cursors
        with refusals_as_errors():
            position = _CHANGES.open(cursors, after) if after else None
            page = await changes.read_changes(viewer_of(info), after=position, first=limit, resource_types=wanted)
        connection = Connection[ChangeType].build(
            [ChangeType.of(change) for change in page.changes],
            [_CHANGES.at(cursors, change.position) for change in page.changes],
            has_next_page=page.has_next_page,
            after=after,
        )
        if page.end is not None:
            connection.page_info.end = _CHANGES.at(cursors, page.end)
        return connection
