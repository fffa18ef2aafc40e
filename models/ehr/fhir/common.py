"""What every FHIR mapping module uses: the code systems, the small builders of FHIR datatypes, the
patient-record access check, and the two shapes a module declares its resources in (`Readable`,
`Records`; see the package's docstring for how they are collected).

Codes are the ones CLINICAL.md gives (or the HL7 code systems' own); where a record has no
standard code it carries text only, never a guessed code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from tortoise.models import Model

from models.identity.access import Viewer, clinical_patient
from models.identity.accounts import Patient
from models.kernel.errors import NotFound

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
HL7 = "http://terminology.hl7.org/CodeSystem"
# Our own code systems, named like the instruments' (seeds/instruments/*.json: `.../instrument-items`).
KETAFOLLOW_CODE_SYSTEMS = "https://ketafollow.example/fhir/CodeSystem"
QUESTIONNAIRE_CANONICAL = "urn:ketafollow:Questionnaire"

Resource = dict[str, Any]


def instant(moment: datetime) -> str:
    return moment.isoformat()


def meta(updated_at: datetime, version: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"lastUpdated": instant(updated_at)}
    if version is not None:
        found["versionId"] = str(version)
    return found


def period(start: datetime, end: datetime | None) -> dict[str, str]:
    return {"start": instant(start)} | ({"end": instant(end)} if end is not None else {})


def category(code: str, display: str) -> list[dict[str, Any]]:
    """An Observation's category from HL7's observation-category code system."""
    return [{"coding": [{"system": f"{HL7}/observation-category", "code": code, "display": display}]}]


def reference(resource_type: str, resource_id: UUID | str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{resource_id}"}


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def questionnaire_canonical(code: str, version: str | None = None) -> str:
    """The canonical of an instrument (a CarePlan's survey task, a response's questionnaire)."""
    return f"{QUESTIONNAIRE_CANONICAL}:{code}" + (f"|{version}" if version else "")


def record_id(resource_id: str) -> UUID:
    """A resource id that must be one of our UUIDs: `NotFound` for any other (not a bad input: a
    FHIR read of an id we never issued is a read of a resource that does not exist)."""
    try:
        return UUID(resource_id)
    except ValueError:
        raise NotFound("resource") from None


M = TypeVar("M", bound=Model)


async def owned_record(viewer: Viewer, model: type[M], resource_id: UUID, resource_type: str) -> M:
    """A record of a patient's chart, if the viewer may read that patient's clinical record
    (`clinical_patient`: the patient's care team, the patient, an EHR client with consent; audited
    either way); `NotFound` otherwise, as for one that does not exist."""
    record = await model.get_or_none(id=resource_id)
    if record is None:
        raise NotFound("resource")
    await clinical_patient(viewer, record.patient_id, resource_type)  # type: ignore[attr-defined]
    return record


R = TypeVar("R")
Loader = Callable[[Viewer, str], Awaitable[R]]


def _any_id(resource_id: str) -> bool:
    return True


@dataclass(frozen=True)
class Readable(Generic[R]):
    """How `fhirResource(resourceType, id)` serves one resource type, or one shape of its ids when
    several records map to the type (a check-in, a session's reading and a survey's score are all
    Observations).

    `load` finds what the viewer asked for and may read, and is where the access check lives: it
    raises `NotFound` for a record that does not exist or that the viewer may not see, whichever
    rule refused it. `render` maps what was loaded, None when there is no such resource (a reading
    that was not measured). `claims` says whether an id has this reader's shape."""

    resource_type: str
    load: Loader[R]
    render: Callable[[R], Resource | None]
    claims: Callable[[str], bool] = _any_id

    async def read(self, viewer: Viewer, resource_id: str) -> Resource:
        resource = self.render(await self.load(viewer, resource_id))
        if resource is None:
            raise NotFound("resource")
        return resource


@dataclass(frozen=True)
class Records:
    """A kind of record that reaches the change feed (named as the domain events name it,
    `DosingSession`) and the patient Bundle, and the resources each record becomes, in order.

    `by_ids` renders the records that still exist among `ids` (one query per kind of record, or
    a fixed few); `of_patient` renders the whole of one patient's records, oldest first, for the
    Bundle (None: not part of the Bundle). Neither checks access: their callers have."""

    event_type: str
    resource_types: tuple[str, ...]
    by_ids: Callable[[list[UUID]], Awaitable[dict[UUID, list[Resource]]]]
    of_patient: Callable[[Patient], Awaitable[list[Resource]]] | None = None


def patient_row(resource_type: str, model: type[M], render: Callable[[M], Resource]) -> Readable[M]:
    """A resource that is one row of `model` in a patient's chart, its id the row's UUID, read
    under the chart's rule (`owned_record`)."""

    async def load(viewer: Viewer, resource_id: str) -> M:
        return await owned_record(viewer, model, record_id(resource_id), resource_type)

    return Readable(resource_type, load, render)


def patient_rows(
    event_type: str,
    resource_types: tuple[str, ...],
    model: type[M],
    render: Callable[[M], list[Resource]],
    *,
    oldest_first: tuple[str, ...],
) -> Records:
    """`Records` of a model whose rows map one by one, with no other row needed (`oldest_first`:
    the Bundle's order, by the record's own time then its id)."""

    async def by_ids(ids: list[UUID]) -> dict[UUID, list[Resource]]:
        return {row.pk: render(row) for row in await model.filter(id__in=ids)}

    async def of_patient(patient: Patient) -> list[Resource]:
        rows = await model.filter(patient_id=patient.id).order_by(*oldest_first)
        return [resource for row in rows for resource in render(row)]

    return Records(event_type, resource_types, by_ids, of_patient)
