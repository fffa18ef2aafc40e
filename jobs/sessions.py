"""Sign-in jobs: a login that expired stops its phones' pushes, as a logout does."""

from __future__ import annotations

from jobs.environment import JobEnvironment
from models.notifications import devices


async def end_expired_login_devices(env: JobEnvironment) -> int:
    """Devices registered under a login that has expired are deactivated (models.notifications.devices)."""
    return await devices.end_expired_login_devices(now=env.clock.now())
