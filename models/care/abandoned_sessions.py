"""The job behind CLINICAL.md §3's abandonment rule: a session left in progress past the limit is
closed as ABANDONED and the care team is alerted. The session record and its writes are
`models.care.dosing`'s.
"""

from __future__ import annotations

from datetime import datetime

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models.alerts import alert_rules
from models.alerts.alerts import raise_alerts
from models.care.dosing import record_session_written
from models.care.dosing_records import DosingSession, SessionStatus
from models.identity.accounts import Patient
from models.kernel.events import Operation
from models.kernel.policy import ClinicPolicy


async def close_abandoned_sessions(*, now: datetime, policy: ClinicPolicy) -> int:
    """Job: sessions still IN_PROGRESS past the limit become ABANDONED, each with a HIGH alert
    for the care team (CLINICAL.md §3). Each is claimed with a conditional update.

    A start replayed from an offline phone may already be past the limit when it arrives; its
    completion follows in the same queue, so it is left alone for `policy.replay_grace` after
    it was received."""
    cutoff = now - policy.abandon_after
    received = Q(start_received_at__isnull=True) | Q(start_received_at__lte=now - policy.replay_grace)
    closed = 0
    for session in await DosingSession.filter(received, status=SessionStatus.IN_PROGRESS, started_at__lte=cutoff):
        async with in_transaction():
            claimed = await DosingSession.filter(id=session.id, status=SessionStatus.IN_PROGRESS).update(
                status=SessionStatus.ABANDONED, version=session.version + 1, updated_at=now
            )
            if claimed != 1:
                continue
            session.status, session.version = SessionStatus.ABANDONED, session.version + 1
            patient = await Patient.get(id=session.patient_id)  # type: ignore[attr-defined]
            spec = alert_rules.abandoned_session_alert(policy.abandon_after.total_seconds() / 3600)
            await raise_alerts(
                [spec], patient=patient, source_type="DosingSession", source_id=session.id, now=now, policy=policy
            )
            await record_session_written(None, session, "DosingSession.abandoned", Operation.UPDATED, now)
            closed += 1
    return closed
