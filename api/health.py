"""`/healthz` (the process answers) and `/readyz` (it can serve: database, schema, scheduler).

`/readyz` answers within 2 s whatever the database does: each database check gets
READY_TIMEOUT_SECONDS; one that does not answer in time is reported as "timeout" (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.bus import bus_check
from api.database import database_answers, pending_migrations

T = TypeVar("T")


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _within(seconds: float, check: Awaitable[T]) -> T | None:
    """The check's answer, or None when it did not come within `seconds` (it is cancelled)."""
    try:
        async with asyncio.timeout(seconds):
            return await check
    except TimeoutError:
        return None


async def readyz(request: Request) -> JSONResponse:
    deadline = asyncio.get_running_loop().time() + request.app.state.settings.ready_timeout
    answered = await _within(request.app.state.settings.ready_timeout, database_answers())
    database = answered is True
    pending: list[str] | None = []
    if database:
        pending = await _within(max(0.0, deadline - asyncio.get_running_loop().time()), _pending())
    scheduler = request.app.state.scheduler
    checks = {
        "database": "ok" if database else ("timeout" if answered is None else "unreachable"),
        "migrations": (
            "unknown" if not database or pending is None else (f"{len(pending)} pending" if pending else "ok")
        ),
        "scheduler": "running"
        if scheduler is not None and scheduler.running
        else ("disabled" if scheduler is None else "stopped"),
        "bus": bus_check(request.app.state.bus),  # "degraded" still serves (api.bus)
        "rate_limits": request.app.state.limiter.status,  # "degraded" still limits (api.rate_limit)
    }
    ready = database and checks["migrations"] == "ok" and checks["scheduler"] in {"running", "disabled"}
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


async def _pending() -> list[str] | None:
    try:
        return await pending_migrations()
    except Exception:
        return None
