"""Clinical safety jobs: close abandoned dosing sessions, escalate overdue alerts."""

from __future__ import annotations

from models import alerts, dosing
from models.clock import Clock
from models.policy import ClinicPolicy


async def close_abandoned_sessions(clock: Clock, policy: ClinicPolicy) -> int:
    """Sessions still in progress past the limit are closed and the care team alerted (CLINICAL.md §3)."""
    return await dosing.close_abandoned_sessions(now=clock.now(), policy=policy)


async def escalate_overdue_alerts(clock: Clock, policy: ClinicPolicy) -> int:
    """Alerts not acknowledged by their deadline go to the whole care team, then on call (§9)."""
    return await alerts.escalate_overdue_alerts(now=clock.now(), policy=policy)
