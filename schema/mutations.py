"""What every mutation resolver does the same way: turn input into domain values and domain
refusals into members of the payload's error union (`payload`, and `written` for a patient's write,
whose payload also carries the advice of CLINICAL.md §0 and §7)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar, cast
from uuid import UUID

from models.kernel import errors as domain
from models.kernel.idempotency import Outcome
from schema.errors import Error, Forbidden, advice_of, error_type_for
from schema.ids import node_id

Result = TypeVar("Result")
Payload = TypeVar("Payload")

RECORDED_AT = (
    "When the patient did this on the phone, for writes sent late from an offline queue (by default at "
    "most 5 minutes ahead of the server and 30 days old). Without it, the server's time."
)


@dataclass
class Attempt(Generic[Result]):
    """A domain call's result, or the error member and the advice that came with its refusal."""

    value: Result | None = None
    error: Error | None = None
    advice: dict[str, Any] = field(default_factory=dict)


async def attempt(call: Callable[[], Awaitable[Result]]) -> Attempt[Result]:
    try:
        return Attempt(value=await call())
    except domain.Forbidden as refusal:
        raise Forbidden(refusal.message) from refusal
    except domain.DomainError as refusal:
        return Attempt(error=error_type_for(refusal), advice=advice_of(refusal))


async def payload(
    make: Callable[..., Payload], call: Callable[[], Awaitable[Result]], convert: Callable[[Result], Any]
) -> Payload:
    """`make(result=...)`: the call's value converted (`convert` may be async), or the error member
    of its refusal. Forbidden is no member: it is the request-level error."""
    outcome = await attempt(call)
    if outcome.error is not None:
        return make(result=outcome.error)
    member = convert(cast(Result, outcome.value))
    if inspect.isawaitable(member):
        member = await member
    return make(result=member)


async def written(
    call: Callable[[], Awaitable[tuple[Outcome, Any]]], convert: Callable[[Any], Any]
) -> tuple[Any, dict[str, str | None]]:
    """Run a patient write: the payload's `result` member, and its advice as payload fields
    (`safetyInstructions`, `crisisResources`), whether the write succeeded or was refused."""
    result = await attempt(call)
    if result.error is not None:
        return result.error, advice_fields(result.advice)
    assert result.value is not None
    outcome, record = result.value
    return convert(record), advice_fields(outcome.advice)


def advice_fields(advice: dict[str, Any]) -> dict[str, str | None]:
    return {"safety_instructions": advice.get("safetyInstructions"), "crisis_resources": advice.get("crisisResources")}


def aware(value: datetime | None, field_name: str) -> datetime | None:
    """Times from clients must say their offset (a phone's local time is ambiguous)."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise domain.InvalidInput(
            field_name, f"{field_name} must include a time zone offset, e.g. 2026-11-25T14:00:00Z"
        )
    return value


class LenientInput:
    """Reads a patient's write without refusing it: what cannot be read (a time without its
    offset, an id of another type) is collected in `problems` and handed to the domain operation,
    which refuses it only after the safety screen has seen the request (CLINICAL.md §0)."""

    def __init__(self) -> None:
        self._problems: list[domain.InvalidInput] = []

    @property
    def problems(self) -> tuple[domain.InvalidInput, ...]:
        return tuple(self._problems)

    def time(self, value: datetime | None, field_name: str) -> datetime | None:
        try:
            return aware(value, field_name)
        except domain.InvalidInput as problem:
            self._problems.append(problem)
            return value

    def id(self, raw: str | None, type_name: str, field_name: str) -> UUID | None:
        if raw is None:
            return None
        try:
            return node_id(raw, type_name, field_name)
        except domain.InvalidInput as problem:
            self._problems.append(problem)
            return None


def decimal(value: float, field_name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation as error:  # pragma: no cover - GraphQL Floats are finite
        raise domain.InvalidInput(field_name, f"{field_name} must be a number") from error
    if not number.is_finite():
        raise domain.InvalidInput(field_name, f"{field_name} must be a number")
    return number
