"""Alerts as FHIR Flags: active until resolved, the severity in the text (PRODUCT.md capability
10). Read under the patient's chart rule (`patient_row`).
"""

from __future__ import annotations

from typing import Any

from models.alerts.alerts import Alert, AlertStatus
from models.ehr.fhir.common import HL7, concept, meta, patient_row, patient_rows, period, reference


def flag(alert: Alert) -> dict[str, Any]:
    """An alert as a Flag: active until resolved, its severity in the text."""
    return {
        "resourceType": "Flag",
        "id": str(alert.id),
        "meta": meta(alert.updated_at, alert.version),
        "status": "inactive" if alert.status is AlertStatus.RESOLVED else "active",
        "category": [concept(f"{HL7}/flag-category", "clinical", "Clinical")],
        "code": {"text": f"{alert.severity.value}: {alert.summary}"},
        "subject": reference("Patient", alert.patient_id),  # type: ignore[attr-defined]
        "period": period(alert.raised_at, alert.resolved_at),
    }


FLAG = patient_row("Flag", Alert, flag)

ALERTS = patient_rows("Alert", ("Flag",), Alert, lambda row: [flag(row)], oldest_first=("raised_at", "id"))
