"""Logged opioid doses as FHIR MedicationStatements (CLINICAL.md §10: RxNorm ingredient where the
catalogue has one; PRODUCT.md capability 10). Read under the patient's chart rule (`patient_row`).
"""

from __future__ import annotations

from typing import Any

from models.ehr.fhir.common import (
    RXNORM,
    concept,
    instant,
    meta,
    patient_row,
    patient_rows,
    period,
    reference,
)
from models.kernel.policy import DEFAULT_POLICY
from models.outcomes.mme import CATALOGUE as OPIOIDS
from models.outcomes.opioids import OpioidDose


def medication_statement(dose: OpioidDose) -> dict[str, Any]:
    """A logged opioid dose (CLINICAL.md §10): RxNorm ingredient where the catalogue has one, the
    strength and count as taken; a patch covers the time it is worn."""
    opioid = OPIOIDS[dose.drug]
    medication = concept(RXNORM, opioid.rxnorm, dose.drug) if opioid.rxnorm else {"text": dose.drug}
    unit = dose.strength_unit.value
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": str(dose.id),
        "meta": meta(dose.updated_at),
        "status": "completed",
        "medicationCodeableConcept": medication,
        "subject": reference("Patient", dose.patient_id),  # type: ignore[attr-defined]
        "dateAsserted": instant(dose.recorded_at),
        "informationSource": reference("Patient", dose.patient_id),  # type: ignore[attr-defined]
        "dosage": [{"text": f"{dose.quantity.normalize():f} x {dose.strength.normalize():f} {unit}"}],
    }
    if opioid.transdermal:  # the clinic default's wear (a later patch may have ended it sooner)
        resource["effectivePeriod"] = period(dose.taken_at, dose.taken_at + DEFAULT_POLICY.patch_wear)
    else:
        resource["effectiveDateTime"] = instant(dose.taken_at)
    return resource


MEDICATION_STATEMENT = patient_row("MedicationStatement", OpioidDose, medication_statement)

DOSES = patient_rows(
    "OpioidDose",
    ("MedicationStatement",),
    OpioidDose,
    lambda row: [medication_statement(row)],
    oldest_first=("taken_at", "id"),
)
