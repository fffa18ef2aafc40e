"""The bare routes of the home-screen benchmark: the same `models/` calls as the GraphQL resolvers.

They live in the same app (same middleware, token check, audit flush and connections) as
`/graphql`, so what they cost less is the GraphQL layer's share (bench.bench_home).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth.authenticate import NotAuthenticated, authenticate, bearer_token
from api.settings import Settings
from models.care import plans
from models.identity import directory
from models.identity.access import Viewer
from models.kernel.audit import AuditTrail
from models.kernel.errors import DomainError
from models.messaging import messaging
from models.outcomes import outcomes
from models.reports import checkins
from models.surveys import assignments, survey_records


def _global_id(type_name: str, value: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{value}".encode()).decode()


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _viewer(request: Request, settings: Settings, now: datetime) -> Viewer:
    """What `/graphql` does before any GraphQL runs (api.graphql_view)."""
    trail = AuditTrail(
        request_id=request.scope.get("state", {}).get("request_id"),
        client_address=request.client.host if request.client else None,
    )
    authenticated = await authenticate(
        settings,
        bearer_token(request.headers.get("authorization")),
        now=now,
        trail=trail,
        logins=request.app.state.logins,
    )
    return authenticated.viewer


def bare_routes(settings: Settings) -> list[Route]:
    """The home screen and the check-in without GraphQL: the same `models/` calls the resolvers
    make (concurrently where GraphQL resolves fields concurrently), JSON built by hand."""

    async def home(request: Request) -> Response:
        now = datetime.now(UTC)
        try:
            viewer = await _viewer(request, settings, now)
        except NotAuthenticated as refusal:
            return JSONResponse({"errors": [{"message": refusal.message}]}, status_code=401)
        viewer.audit.operation = "Home"
        assert viewer.patient_id is not None
        patient = await directory.own_patient(viewer, viewer.patient_id)
        current, facts, open_surveys, recent, unread = await asyncio.gather(
            plans.current_plans(viewer, [patient.id]),
            outcomes.panel_facts(viewer, [patient.id], now=now, wanted=frozenset({outcomes.PanelFact.NEXT_SURVEY})),
            assignments.list_assignments(
                viewer, patient.id, statuses=[survey_records.AssignmentStatus.AVAILABLE], limit=4
            ),
            checkins.list_check_ins(viewer, patient.id, limit=8),
            messaging.unread_by_patient(viewer, [patient.id]),
        )
        plan = current.get(patient.id)
        fact = facts.get(patient.id)
        body = {
            "givenName": patient.given_name,
            "treatmentPlan": None
            if plan is None
            else {
                "id": _global_id("TreatmentPlan", plan.id),
                "status": plan.status.name,
                "formulation": plan.formulation.name,
                "dose": float(plan.dose),
                "doseUnit": plan.dose_unit.name,
                "sessionsPerWeek": plan.sessions_per_week,
            },
            "nextSurveyDueAt": _time(fact.next_survey_due if fact else None),
            "surveyAssignments": {
                "edges": [
                    {
                        "node": {
                            "id": _global_id("SurveyAssignment", a.id),
                            "instrument": a.instrument,
                            "availableAt": _time(a.available_at),
                            "expiresAt": _time(a.expires_at),
                        }
                    }
                    for a in open_surveys[:3]
                ]
            },
            "checkIns": {
                "edges": [
                    {
                        "node": {
                            "id": _global_id("CheckIn", c.id),
                            "recordedAt": _time(c.recorded_at),
                            "pain": c.pain,
                            "mood": c.mood,
                            "sleep": c.sleep,
                            "note": c.note,
                        }
                    }
                    for c in recent[:7]
                ]
            },
            "unreadMessages": unread.get(patient.id, 0),
        }
        await viewer.audit.flush(viewer, now)
        return JSONResponse({"data": {"me": {"patient": body}}})

    async def check_in(request: Request) -> Response:
        now = datetime.now(UTC)
        try:
            viewer = await _viewer(request, settings, now)
        except NotAuthenticated as refusal:
            return JSONResponse({"errors": [{"message": refusal.message}]}, status_code=401)
        viewer.audit.operation = "CheckIn"
        given = (await request.json())["input"]
        data = checkins.NewCheckIn(
            recorded_at=datetime.fromisoformat(given["recordedAt"]),
            pain=given["pain"],
            mood=given.get("mood"),
            sleep=given.get("sleep"),
            note=given.get("note", ""),
            idempotency_key=given.get("idempotencyKey"),
        )
        try:
            outcome = await checkins.submit_check_in(viewer, data, now=now, policy=settings.clinic_policy)
        except DomainError as refusal:
            result: dict[str, Any] = {"__typename": type(refusal).__name__, "message": refusal.message}
            advice: dict[str, Any] = {}
        else:
            stored = await checkins.submitted_check_in(viewer, outcome)
            result = {
                "__typename": "CheckIn",
                "id": _global_id("CheckIn", stored.id),
                "recordedAt": _time(stored.recorded_at),
                "pain": stored.pain,
                "mood": stored.mood,
                "sleep": stored.sleep,
                "note": stored.note,
            }
            advice = outcome.advice
        await viewer.audit.flush(viewer, now)
        payload = {"result": result, "crisisResources": advice.get("crisisResources")}
        return JSONResponse({"data": {"submitCheckIn": payload}})

    return [Route("/bare/home", home, methods=["POST"]), Route("/bare/check-in", check_in, methods=["POST"])]
