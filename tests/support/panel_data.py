"""The provider panel query, a filler for a wide panel and a statement counter (tests and `make bench`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, timedelta
from decimal import Decimal

from models.alerts.alert_rules import AlertKind, Severity
from models.alerts.alerts import Alert, AlertStatus
from models.identity.accounts import CareTeam, Patient, Role, User
from models.outcomes.opioids import OpioidDose, StrengthUnit
from models.reports.checkins import CheckIn

PANEL = """
query Panel($first: Int) {
  patients(first: $first) {
    edges { node {
      givenName openAlertCount highestAlertSeverity nextSurveyDueAt lastSessionAt unreadMessages
      treatmentPlan { status }
      outcomes { mmeCurrent phq9 { latest response remission } pain { latestRollingAverage improvement } }
    } }
  }
}
"""


_counting: ContextVar[object | None] = ContextVar("counting_statements", default=None)


class StatementCounter(logging.Handler):
    """Counts the SQL statements run in the counting context and in the tasks it starts (a request's
    DataLoader batches), not those of tasks started before (the background dispatcher's polling)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if _counting.get() is self:
            self.count += 1


@contextmanager
def counting_statements() -> Iterator[StatementCounter]:
    counter = StatementCounter()
    db_log = logging.getLogger("tortoise.db_client")
    previous = db_log.level
    db_log.addHandler(counter)
    db_log.setLevel(logging.DEBUG)
    marker = _counting.set(counter)
    try:
        yield counter
    finally:
        _counting.reset(marker)
        db_log.removeHandler(counter)
        db_log.setLevel(previous)


async def add_panel_patients(how_many: int, batch: str, *, now: datetime, history_days: int = 0) -> None:
    """`how_many` patients in the North team; with `history_days`, each gets daily pain check-ins,
    opioid doses twice a day, and every fourth an open alert (inside the caller's database)."""
    north = await CareTeam.get(name="North")
    users = [
        User(id=uuid.uuid4(), email=f"panel-{batch}-{n}@example.test", role=Role.PATIENT, password_hash="x")
        for n in range(how_many)
    ]
    await User.bulk_create(users)
    patients = [
        Patient(
            id=uuid.uuid4(),
            user_id=user.id,
            care_team_id=north.id,
            given_name=f"P{n}",
            family_name="Panel",
            birth_date=date(1980, 1, 1),
            time_zone="America/New_York",
        )
        for n, user in enumerate(users)
    ]
    await Patient.bulk_create(patients)
    check_ins: list[CheckIn] = []
    doses: list[OpioidDose] = []
    alerts: list[Alert] = []
    for n, patient in enumerate(patients):
        for day in range(history_days):
            moment = now - timedelta(days=history_days - day)
            check_ins.append(
                CheckIn(
                    id=uuid.uuid4(), patient_id=patient.id, recorded_at=moment, received_at=moment, pain=7 - day % 4
                )
            )
            doses += [
                OpioidDose(
                    id=uuid.uuid4(),
                    patient_id=patient.id,
                    drug="oxycodone",
                    strength=Decimal(10),
                    strength_unit=StrengthUnit.MG,
                    quantity=Decimal(1),
                    taken_at=moment + timedelta(hours=hour),
                    recorded_at=moment + timedelta(hours=hour),
                )
                for hour in (0, 12)
            ]
        if history_days and n % 4 == 0:
            alerts.append(
                Alert(
                    id=uuid.uuid4(),
                    patient_id=patient.id,
                    kind=AlertKind.SIDE_EFFECT,
                    severity=Severity.ROUTINE,
                    severity_rank=Severity.ROUTINE.rank,
                    status=AlertStatus.OPEN,
                    summary="Nausea, grade 2",
                    source_type="bench",
                    dedup_key=f"bench:{patient.id}",
                    raised_at=now,
                    respond_by=now + timedelta(hours=24),
                )
            )
    for rows, model in ((check_ins, CheckIn), (doses, OpioidDose), (alerts, Alert)):
        for start in range(0, len(rows), 2000):
            await model.bulk_create(rows[start : start + 2000])  # type: ignore[attr-defined]
