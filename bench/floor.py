"""The floor of the home-screen benchmark: the same answer from the stack's lowest parts.

What the patient home screen costs with nothing of ours above the libraries every request needs
anyway: a Starlette route (no middleware), PyJWT for the access token, and the database driver
itself (aiosqlite on SQLite, asyncpg on PostgreSQL) with hand-written SQL, in the fewest
statements that still do the same work:

1. the login, the account and the patient's profile in one (the login must be active and the
   account active, as `api.auth.authenticate` requires);
2. the current treatment plan (the oldest active or on-hold plan, else the newest; as
   `models.care.plans.current_plans`);
3. the open surveys and the next one due (`surveyAssignments(status: [AVAILABLE])` and
   `nextSurveyDueAt`), one statement;
4. the last check-ins;
5. the unread count across the patient's threads (after the patient's read marks, others'
   messages only);
6. the audit rows the GraphQL route writes (one per resource type read), in one INSERT.

`bench.bench_home` checks that this answer is equal to the GraphQL one before it measures, so the
floor cannot take a shortcut the service may not (issue #18). It answers nothing but the home
screen: an error is a 401 or an exception, never a partial answer.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.settings import Settings

CURRENT = ("ACTIVE", "ON_HOLD")
ACCOUNT = """
SELECT p.id, p.given_name, u.email
FROM session_family f JOIN user_account u ON u.id = f.user_id JOIN patient p ON p.user_id = u.id
WHERE f.id = ? AND f.user_id = ? AND f.revoked_at IS NULL AND f.expires_at > ? AND u.is_active
  AND u.role = 'PATIENT'
"""
PLAN = """
SELECT id, status, formulation, dose, dose_unit, sessions_per_week FROM treatment_plan WHERE patient_id = ?
ORDER BY CASE WHEN status IN ('ACTIVE', 'ON_HOLD') THEN 0 ELSE 1 END,
  CASE WHEN status IN ('ACTIVE', 'ON_HOLD') THEN created_at END, created_at DESC
LIMIT 1
"""
SURVEYS = """
SELECT * FROM (
  SELECT 0 AS k, id, instrument, available_at, expires_at FROM survey_assignment
  WHERE patient_id = ? AND status = 'AVAILABLE' ORDER BY available_at DESC, id DESC LIMIT 3
) AS open_surveys
UNION ALL
SELECT 1, NULL, NULL, MIN(available_at), NULL FROM survey_assignment
WHERE patient_id = ? AND status IN ('SCHEDULED', 'AVAILABLE') AND expires_at > ?
ORDER BY 1, 4 DESC, 2 DESC
"""
CHECK_INS = """
SELECT id, recorded_at, pain, mood, sleep, note FROM check_in WHERE patient_id = ?
ORDER BY recorded_at DESC, id DESC LIMIT 7
"""
UNREAD = """
SELECT COUNT(*) FROM message m
JOIN message_thread t ON t.id = m.thread_id
LEFT JOIN thread_read_state r ON r.thread_id = t.id AND r.user_id = ?
WHERE t.patient_id = ? AND m.number > COALESCE(r.last_read_number, 0) AND m.sender_id <> ?
"""
AUDIT_COLUMNS = (
    "id, occurred_at, actor_type, actor_id, actor_role, actor_label, patient_id, action, resource_type, "
    "resource_id, operation, outcome, detail, client_address, request_id"
)
READS = ("Patient", "TreatmentPlan", "Panel", "SurveyAssignment", "CheckIn")


class Driver:
    """The driver's connection(s) and its placeholder style; opened on first use."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.postgres = database_url.startswith(("postgres://", "postgresql://"))
        self._pool: asyncpg.Pool | None = None
        self._sqlite: aiosqlite.Connection | None = None
        self._opening = asyncio.Lock()
        self.statements = 0  # run so far (the benchmark counts a request's)

    async def open(self) -> None:
        async with self._opening:
            if self._pool is not None or self._sqlite is not None:
                return
            if self.postgres:
                self._pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=8)
            else:
                connection = await aiosqlite.connect(self.database_url.removeprefix("sqlite://"), isolation_level=None)
                await connection.execute("PRAGMA busy_timeout = 5000")
                self._sqlite = connection

    def sql(self, statement: str) -> str:
        """`?` placeholders as the driver wants them (`$1`, `$2`, … for asyncpg)."""
        if not self.postgres:
            return statement
        numbers = iter(range(1, 1000))
        return re.sub(r"\?", lambda _: f"${next(numbers)}", statement)

    def value(self, value: Any) -> Any:
        """A parameter as the table stores it (SQLite: text UUIDs and timestamps, as Tortoise writes them)."""
        if self.postgres:
            return value
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat(" ")
        return value

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._sqlite is not None:
            await self._sqlite.close()
        self._pool = self._sqlite = None

    async def rows(self, statement: str, *parameters: Any) -> Sequence[Sequence[Any]]:
        if self._pool is None and self._sqlite is None:
            await self.open()
        self.statements += 1
        values = [self.value(parameter) for parameter in parameters]
        if self._pool is not None:
            return await self._pool.fetch(self.sql(statement), *values)  # type: ignore[no-any-return]
        assert self._sqlite is not None
        async with self._sqlite.execute(statement, values) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, statement: str, *parameters: Any) -> None:
        if self._pool is None and self._sqlite is None:
            await self.open()
        self.statements += 1
        values = [self.value(parameter) for parameter in parameters]
        if self._pool is not None:
            await self._pool.execute(self.sql(statement), *values)
            return
        assert self._sqlite is not None
        await self._sqlite.execute(statement, values)

    def time(self, value: Any) -> str | None:
        """A stored timestamp as GraphQL writes it (ISO 8601, UTC)."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return str(value.astimezone(UTC).isoformat())


def _global_id(type_name: str, value: Any) -> str:
    return base64.b64encode(f"{type_name}:{value}".encode()).decode()


def _claims(settings: Settings, authorization: str | None) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The user and the login of a valid access token (signature, key id, issuer, audience,
    type, expiry), or None."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:
        key = settings.signing_keys.get(str(jwt.get_unverified_header(token).get("kid")))
        if key is None:
            return None
        claims = jwt.decode(
            token.strip(),
            key,
            algorithms=["HS256"],
            audience=settings.token_audience,
            issuer=settings.token_issuer,
            options={"require": ["exp", "iat", "sub", "sid", "typ"]},
        )
        kind, _, subject = str(claims["sub"]).partition(":")
        if kind != "user" or claims["typ"] != "access":
            return None
        return uuid.UUID(subject), uuid.UUID(str(claims["sid"]))
    except (jwt.PyJWTError, ValueError):
        return None


def floor_app(settings: Settings) -> Starlette:
    driver = Driver(settings.database_url)

    async def home(request: Request) -> Response:
        now = datetime.now(UTC)
        subject = _claims(settings, request.headers.get("authorization"))
        account = await driver.rows(ACCOUNT, subject[1], subject[0], now) if subject else []
        if not subject or not account:
            return JSONResponse({"errors": [{"message": "invalid access token"}]}, status_code=401)
        user_id = subject[0]
        patient_id, given_name, email = account[0]
        plan, surveys, check_ins, unread = await asyncio.gather(
            driver.rows(PLAN, patient_id),
            driver.rows(SURVEYS, patient_id, patient_id, now),
            driver.rows(CHECK_INS, patient_id),
            driver.rows(UNREAD, user_id, patient_id, user_id),
        )
        await driver.execute(_audit_insert(driver), *_audit_values(request, now, user_id, email, patient_id))
        *open_surveys, (_, _, _, next_due, _) = surveys
        body = {
            "givenName": given_name,
            "treatmentPlan": None
            if not plan
            else {
                "id": _global_id("TreatmentPlan", plan[0][0]),
                "status": plan[0][1],
                "formulation": plan[0][2],
                "dose": float(plan[0][3]),
                "doseUnit": plan[0][4],
                "sessionsPerWeek": plan[0][5],
            },
            "nextSurveyDueAt": driver.time(next_due),
            "surveyAssignments": {
                "edges": [
                    {
                        "node": {
                            "id": _global_id("SurveyAssignment", row[1]),
                            "instrument": row[2],
                            "availableAt": driver.time(row[3]),
                            "expiresAt": driver.time(row[4]),
                        }
                    }
                    for row in open_surveys
                ]
            },
            "checkIns": {
                "edges": [
                    {
                        "node": {
                            "id": _global_id("CheckIn", row[0]),
                            "recordedAt": driver.time(row[1]),
                            "pain": row[2],
                            "mood": row[3],
                            "sleep": row[4],
                            "note": row[5],
                        }
                    }
                    for row in check_ins
                ]
            },
            "unreadMessages": unread[0][0],
        }
        return JSONResponse({"data": {"me": {"patient": body}}})

    app = Starlette(routes=[Route("/floor/home", home, methods=["POST"])])
    app.state.driver = driver
    return app


def _audit_insert(driver: Driver) -> str:
    """One INSERT of `len(READS)` rows (fixed text: no value is formatted into it)."""
    row = "(" + ", ".join("?" * 15) + ")"
    return f"INSERT INTO audit_event ({AUDIT_COLUMNS}) VALUES " + ", ".join([row] * len(READS))  # noqa: S608


def _audit_values(request: Request, now: datetime, user_id: uuid.UUID, email: str, patient_id: Any) -> list[Any]:
    """The rows the GraphQL route writes: one successful read per resource type, of this patient."""
    request_id = uuid.uuid4().hex
    client = request.client.host if request.client else None
    values: list[Any] = []
    for resource_type in READS:
        values += [uuid.uuid4(), now, "USER", user_id, "PATIENT", email, patient_id, "R", resource_type]
        values += [None, "Home", "SUCCESS", None, client, request_id]
    return values
