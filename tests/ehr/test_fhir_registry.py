"""The FHIR registry (models/ehr/fhir/registry.py): what `fhirResource` serves and in which order
its readers answer; the reads themselves are tested through the API in tests/test_fhir.py."""

from __future__ import annotations

from uuid import uuid4

import pytest

from models.ehr.fhir import care, reports, surveys
from models.ehr.fhir.registry import READABLE, RECORDS, RESOURCE_TYPES


def test_an_unknown_type_is_refused_with_the_served_types_in_their_documented_order() -> None:
    assert RESOURCE_TYPES == (
        "Patient",
        "MedicationAdministration",
        "Observation",
        "QuestionnaireResponse",
        "AdverseEvent",
        "Flag",
        "Communication",
        "Practitioner",
        "CareTeam",
        "MedicationStatement",
        "CarePlan",
        "MedicationRequest",
        "Questionnaire",
        "Consent",
        "AuditEvent",
    )


def test_every_resource_of_the_change_feed_can_be_read_again_by_its_id() -> None:
    assert {kind for records in RECORDS for kind in records.resource_types} <= set(RESOURCE_TYPES)


SESSION = uuid4()


@pytest.mark.parametrize(
    ("resource_id", "reader"),
    [
        (f"{SESSION}-total", surveys.SCORE_OBSERVATION),
        (f"{SESSION}-bp-pre-total", surveys.SCORE_OBSERVATION),  # a score's shape, not a reading's
        (f"{SESSION}-bp-pre", care.READING_OBSERVATION),
        (f"{SESSION}-spo2-mid", care.READING_OBSERVATION),
        (f"{SESSION}-hr-later", care.READING_OBSERVATION),  # then no such reading: not found
        (str(SESSION), reports.CHECK_IN_OBSERVATION),
        ("not-an-id", reports.CHECK_IN_OBSERVATION),  # then not found
    ],
)
def test_an_observation_id_is_answered_by_the_first_reader_that_claims_its_shape(
    resource_id: str, reader: object
) -> None:
    observations = [candidate for candidate in READABLE if candidate.resource_type == "Observation"]
    assert next(candidate for candidate in observations if candidate.claims(resource_id)) is reader
