"""Clinical safety jobs: close abandoned dosing sessions, escalate overdue alerts."""

from __future__ import annotations

from jobs.environment import JobEnvironment
from models.alerts import alerts
from models.care import abandoned_sessions


async def close_abandoned_sessions(env: JobEnvironment) -> int:
    """Sessions still in progress past the limit are closed and the care team alerted (CLINICAL.md §3)."""
    return await abandoned_sessions.close_abandoned_sessions(now=env.clock.now(), policy=env.policy)


async def escalate_overdue_alerts(env: JobEnvironment) -> int:
    """Alerts not acknowledged by their deadline go to the whole care team, then on call (§9)."""
    return await alerts.escalate_overdue_alerts(now=env.clock.now(), policy=env.policy)
