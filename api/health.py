"""`/healthz` (the process answers) and `/readyz` (it can serve: database, schema, scheduler)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.bus import bus_check
from api.database import database_answers, pending_migrations


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    database = await database_answers()
    pending = await pending_migrations() if database else []
    scheduler = request.app.state.scheduler
    checks = {
        "database": "ok" if database else "unreachable",
        "migrations": "ok" if database and not pending else f"{len(pending)} pending" if pending else "unknown",
        "scheduler": "running"
        if scheduler is not None and scheduler.running
        else ("disabled" if scheduler is None else "stopped"),
        "bus": bus_check(request.app.state.bus),  # "degraded" still serves (api.bus)
        "rate_limits": request.app.state.limiter.status,  # "degraded" still limits (api.rate_limit)
    }
    ready = database and not pending and checks["scheduler"] in {"running", "disabled"}
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )
