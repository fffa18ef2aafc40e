"""Interactions to surface before a dose (CLINICAL.md §8): warnings, not refusals.

Each class of concomitant medication on the plan (`models.plans.MedicationClass`) returns its
warning on every `startDosingSession`, beside the one for an opioid logged in the 4 hours before
the start (`models.opioids`); `start_warnings` gives them all, in the shape the payload shows and
the session keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from models.errors import NotFound
from models.opioids import InteractionWarning, session_warnings
from models.plans import MedicationClass, TreatmentPlan

_SEDATION = "adds to sleepiness and may make ketamine work less well: keep your monitor with you during the session."
_BLOOD_PRESSURE = (
    "can raise your blood pressure further: measure it before the session as usual, and tell your care team if "
    "it is high."
)

# CLINICAL.md §8, one sentence for the patient per class, in the order they are shown.
INTERACTION_WARNINGS: dict[MedicationClass, str] = {
    MedicationClass.OPIOID: (
        "Your plan lists an opioid. Together with ketamine, opioids add to sleepiness and can slow breathing: keep "
        "your monitor with you, and if breathing becomes slow or shallow, or you cannot be woken, your monitor "
        "should call 911."
    ),
    MedicationClass.BENZODIAZEPINE: f"Your plan lists a benzodiazepine. Together with ketamine it {_SEDATION}",
    MedicationClass.NON_BENZODIAZEPINE_HYPNOTIC: (
        f"Your plan lists a sleep medicine (such as zolpidem). Together with ketamine it {_SEDATION}"
    ),
    MedicationClass.OTHER_SEDATIVE: (
        f"Your plan lists another medicine that makes you sleepy. Together with ketamine it {_SEDATION}"
    ),
    MedicationClass.PSYCHOSTIMULANT: (
        "Your plan lists a stimulant (such as amphetamine, methylphenidate or modafinil). Together with ketamine it "
        f"{_BLOOD_PRESSURE}"
    ),
    MedicationClass.MAOI: f"Your plan lists an MAOI antidepressant. Together with ketamine it {_BLOOD_PRESSURE}",
    MedicationClass.THEOPHYLLINE: (
        "Your plan lists theophylline or aminophylline. Together with ketamine it may make a seizure more likely: "
        "if you have a seizure, your monitor should call 911."
    ),
    MedicationClass.LAMOTRIGINE: (
        "Your plan lists lamotrigine, which may make ketamine work less well: tell your care team how this "
        "session went."
    ),
    MedicationClass.MEMANTINE: (
        "Your plan lists memantine, which acts on the same receptor in the brain as ketamine: tell your care team "
        "how this session went."
    ),
}


def interaction_warnings(classes: Iterable[MedicationClass]) -> list[InteractionWarning]:
    """CLINICAL.md §8: the warning of each class of concomitant medication given, each once, in
    the table's order (its code is the class, e.g. `BENZODIAZEPINE`)."""
    present = set(classes)
    return [
        InteractionWarning(kind.value, message) for kind, message in INTERACTION_WARNINGS.items() if kind in present
    ]


async def start_warnings(plan_id: UUID, started_at: datetime) -> list[InteractionWarning]:
    """Every CLINICAL.md §8 warning of a session started at `started_at` under a plan: an opioid
    logged in the 4 hours before it (`OPIOID_WITHIN_4_HOURS`), then each class of concomitant
    medication on the plan. What `startDosingSession` returns beside its result and keeps on the
    session (as the REMS form does)."""
    plan = await TreatmentPlan.get_or_none(id=plan_id)
    if plan is None:
        raise NotFound("treatment plan")
    patient_id: UUID = plan.patient_id  # type: ignore[attr-defined]
    recent_opioid = await session_warnings(patient_id, started_at)
    return [*recent_opioid, *interaction_warnings(entry.medication_class for entry in plan.medications)]
